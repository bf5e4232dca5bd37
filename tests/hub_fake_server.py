"""A fake Hugging Face Hub over real HTTP (pytest-httpserver): the URL shapes and behaviours the staging engine's
download relies on, copied from the real Hub as huggingface_hub reads it (see :class:`FakeHub`).

In tests, ``FakeHub(httpserver, repo, files)`` on pytest-httpserver's fixture. As a process (the real node's Hub,
in a pod): ``python3 hub_fake_server.py --port 8080 --repo mistralai/Tiny-Instruct DIR`` serves the files of DIR
(or, with ``--mistral-bytes N``, of a generated Mistral-layout model) as the repository's ``main``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import signal
import threading
from collections.abc import Callable
from pathlib import Path


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's object id


class FakeHub:
    """Serves the Hub's URL shapes from commits of files; records every request it answers.

    What it copies from the real Hub (huggingface.co), as huggingface_hub 2.4.0 relies on it:
    - ``GET /api/models/{repo}/revision/{rev}?blobs=true``, ``rev`` a branch or a commit sha, answers the commit the
      revision names now as ``sha`` and that commit's files as ``siblings`` (``size``, ``blobId``, and ``lfs`` with
      ``sha256``/``size`` for LFS files): hf_api.py:3201-3214 model_info(files_metadata=True), hf_api.py:648-680
      RepoSibling; snapshot_download reads ``sha`` as the commit (_snapshot_download.py:279-281).
    - ``GET /{repo}/resolve/{rev}/{file}`` serves the file as of that revision, honours ``Range`` with 206 and names
      the commit in ``X-Repo-Commit`` (constants.py:94, read at file_download.py:1677).
    - A renamed repository answers the URLs of its old name with a redirect whose ``Location`` is relative, on the
      new name (huggingface_hub issue #981, PR #983 "relative ... which is the case for renamed repos"; PR #1999:
      the token must follow it). The status is 307 here; urllib and httpx follow 301/302/303/307/308 alike.
    - With ``cdn`` on, LFS files answer 302 to a signed URL on another host (file_download.py:1812-1822: a CDN url,
      the token is dropped), and that host refuses a request that carries an ``Authorization`` header too, as S3
      does for a presigned URL (400 InvalidArgument "Only one auth mechanism allowed"; hf_transfer PR #42). The
      "CDN" is this same server reached as 127.0.0.1 while the Hub is reached as localhost: another origin.
    """

    def __init__(self, httpserver, repo: str, files: dict[str, bytes], *, token: str | None = None):
        from werkzeug.wrappers import Response

        self.Response = Response
        self.repo = repo
        self.token = token
        self.commits: dict[str, dict[str, bytes]] = {}
        self.refs: dict[str, str] = {}
        self.commit(files, "main")
        self.renamed: dict[str, str] = {}  # old repo id -> repo
        self.cdn = False
        self.down = False  # every answer a 503: "Hub is down (error 500 or 504)", _snapshot_download.py:314
        self.after_file: Callable[[str], None] | None = None  # runs after each file served (moves a branch)
        self.requests: list[tuple[str, str | None]] = []
        self.tokens_seen: list[tuple[str, str | None]] = []  # (host, Authorization) of every request
        self.served: dict[str, int] = {}
        self.truncate_once: set[str] = set()
        self.corrupt: set[str] = set()
        self.endpoint = httpserver.url_for("").rstrip("/")
        # The "CDN" is another origin of the same server: 127.0.0.1 while the Hub is localhost (tests only).
        self.cdn_endpoint = self.endpoint.replace("//localhost:", "//127.0.0.1:")
        httpserver.expect_request(re.compile(".*")).respond_with_handler(self.handle)

    @property
    def files(self) -> dict[str, bytes]:
        return self.commits[self.refs["main"]]

    def commit(self, files: dict[str, bytes], branch: str) -> str:
        """Commit ``files`` on ``branch`` (moving it); return the new commit's sha."""
        sha = hashlib.sha1(repr(sorted(files.items())).encode() + branch.encode()).hexdigest()  # noqa: S324
        self.commits[sha] = files
        self.refs[branch] = sha
        return sha

    def lfs(self, name: str) -> bool:
        return not name.endswith(".json")

    def handle(self, request):
        self.requests.append((request.path, request.headers.get("Range")))
        self.tokens_seen.append((request.host.split(":")[0], request.headers.get("Authorization")))
        if self.down:
            return self.Response("Service Unavailable", status=503)
        if self.cdn_endpoint != self.endpoint and request.host.startswith(
            "127.0.0.1:"
        ):  # the CDN: /cdn/{commit}/{file}?X-Amz-Signature=...
            if "Authorization" in request.headers:
                message = "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query"
                return self.Response(f"<Error><Code>InvalidArgument</Code><Message>{message}...</Message></Error>", 400)
            _empty, _kind, sha, name = request.path.split("/", 3)
            return self.serve(request, name, self.commits[sha][name], sha)
        for old, new in self.renamed.items():
            for prefix in (f"/api/models/{old}/", f"/{old}/"):
                if request.path.startswith(prefix):
                    query = request.query_string.decode()
                    location = prefix.replace(old, new) + request.path[len(prefix) :] + (f"?{query}" if query else "")
                    return self.Response("", status=307, headers={"Location": location})
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return self.Response('{"error":"Invalid credentials in Authorization header"}', status=401)
        info_path = f"/api/models/{self.repo}/revision/"
        if request.path.startswith(info_path) and request.args.get("blobs") == "true":
            rev = request.path[len(info_path) :]
            sha = self.refs.get(rev, rev if rev in self.commits else None)
            if sha is None:
                return self.Response(f'{{"error":"Invalid rev id: {rev}"}}', status=404)
            siblings = []
            for name, data in self.commits[sha].items():
                entry = {"rfilename": name, "size": len(data), "blobId": git_blob_sha1(data)}
                if self.lfs(name):
                    entry["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                siblings.append(entry)
            body = {"id": self.repo, "sha": sha, "siblings": siblings}
            return self.Response(json.dumps(body), content_type="application/json")
        prefix = f"/{self.repo}/resolve/"
        rev, _slash, name = request.path[len(prefix) :].partition("/")
        sha = self.refs.get(rev, rev)
        if not request.path.startswith(prefix) or name not in self.commits.get(sha, {}):
            return self.Response("Entry not found", status=404)
        if self.cdn and self.lfs(name):
            signed = f"{self.cdn_endpoint}/cdn/{sha}/{name}?X-Amz-Signature=0123abcd"
            return self.Response("", status=302, headers={"Location": signed, "X-Repo-Commit": sha})
        return self.serve(request, name, self.commits[sha][name], sha)

    def serve(self, request, name: str, data: bytes, sha: str):
        if name in self.corrupt:
            data = bytes(reversed(data))
        start = 0
        status = 200
        if request.headers.get("Range"):
            start = int(re.fullmatch(r"bytes=(\d+)-", request.headers["Range"]).group(1))
            status = 206
        body = data[start:]
        if name in self.truncate_once:
            self.truncate_once.discard(name)
            body = body[: len(body) // 3]  # the connection "drops" after a third
        self.served[name] = self.served.get(name, 0) + len(body)
        headers = {"X-Repo-Commit": sha}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        response = self.Response(body, status=status, headers=headers, content_type="application/octet-stream")
        if self.after_file is not None:
            self.after_file(name)
        return response


def main(argv: list[str] | None = None) -> None:
    """Serve DIR's files as REPO's main branch until SIGTERM."""
    from pytest_httpserver import HTTPServer

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--host", default="0.0.0.0")  # noqa: S104 - in a pod: reached through its Service
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--repo", required=True)
    parser.add_argument("--token")
    parser.add_argument("--mistral-bytes", type=int, help="serve a generated Mistral-layout model of about this size")
    parser.add_argument("dir", type=Path, nargs="?", help="serve these files")
    args = parser.parse_args(argv)
    if args.mistral_bytes:
        import tempfile

        from ansible_collections.llmops.vllm.tests import model_factory

        args.dir = Path(tempfile.mkdtemp()) / "model"
        model_factory.make_mistral_model(args.dir, target_bytes=args.mistral_bytes)
    files = {p.name: p.read_bytes() for p in sorted(args.dir.iterdir()) if p.is_file()}
    server = HTTPServer(host=args.host, port=args.port, threaded=True)
    server.start()
    hub = FakeHub(server, args.repo, files, token=args.token)
    print(f"fake Hub serving {args.repo}@{hub.refs['main']} ({len(files)} files) on port {args.port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
