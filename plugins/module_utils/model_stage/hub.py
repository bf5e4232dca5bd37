# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# PRIVATE to the collection; part of the staging engine (see __init__.py): standard library only, relative imports.

"""Download from the Hugging Face Hub (stdlib urllib): listing, Range resume, verification, redirects."""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .common import (
    ENGINE,
    HF_ENDPOINT,
    HTTP_RETRIES,
    HTTP_RETRY_BASE_S,
    HTTP_TIMEOUT_S,
    IO_BUFFER_BYTES,
    MANIFEST_NAME,
    PARTIAL_DIR,
    SCHEMA_VERSION,
    InvalidModelError,
    ModelStageError,
    _fmt_rate,
    _free_bytes,
    _is_int,
    _os_error,
    _Progress,
    _same_file_state,
)
from .layout import inspect_model
from .manifest import _listing, _manifest_files, load_manifest, save_manifest
from .stage import _Outcome


def _origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a url, as huggingface_hub 2.4.0 utils/_http.py:790-793 _url_origin."""
    parsed = urllib.parse.urlsplit(url)
    port = parsed.port or {"http": 80, "https": 443}.get(parsed.scheme, 0)
    return parsed.scheme, (parsed.hostname or "").lower(), port


# The token follows a redirect only to the same origin or a Hub origin; never to a CDN's signed URL
# (huggingface_hub 2.4.0 utils/_http.py:796-810 _HUB_ORIGINS and _is_same_or_hub_host).
HUB_ORIGINS = frozenset(
    _origin(u)
    for u in (HF_ENDPOINT, "https://hub-ci.huggingface.co", os.environ.get("HF_ENDPOINT", HF_ENDPOINT), "https://hf.co")
)


def _http_open(url: str, token: str | None, headers: Mapping[str, str] | None = None, timeout: float = HTTP_TIMEOUT_S):
    import urllib.request  # only downloads need it; it costs the CLI's every start-up 20 ms

    class HubRedirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            new = super().redirect_request(req, fp, code, msg, headers, newurl)
            auth = req.unredirected_hdrs.get("Authorization")
            if new is not None and auth and _origin(newurl) in {_origin(req.full_url), *HUB_ORIGINS}:
                new.add_unredirected_header("Authorization", auth)
            return new

    request = urllib.request.Request(url, headers={"User-Agent": f"{ENGINE}/{SCHEMA_VERSION}", **(headers or {})})
    if token:
        # Unredirected: HubRedirects decides per hop (a renamed repo's 307 keeps it, a CDN's 302 drops it).
        request.add_unredirected_header("Authorization", f"Bearer {token}")
    return urllib.request.build_opener(HubRedirects).open(request, timeout=timeout)


@dataclass(frozen=True)
class _Hub:
    """One repository on one Hub endpoint, and how to ask it: the token (never logged), where it came from, the
    timeout and the retry budget of each request."""

    repo_id: str
    token: str | None = field(repr=False)
    token_env: str | None
    timeout: float
    retries: int


def _http_failure(err: urllib.error.HTTPError, url: str, hub: _Hub) -> ModelStageError:
    repo_id = hub.repo_id
    where = hub.token_env and f"${hub.token_env}" or "the token"
    if err.code in (401, 403):
        return InvalidModelError(
            url,
            "http_auth",
            f"HTTP {err.code}: {where} is missing or invalid, or {repo_id} is gated (accept its terms on the Hub "
            "with the token's account) or does not exist",
            status=err.code,
        )
    if err.code == 404:
        return InvalidModelError(
            url,
            "not_found",
            f"HTTP 404: not found; check the repo id {repo_id!r}, the revision and the file names",
            status=404,
        )
    return ModelStageError(url, "http_error", f"HTTP {err.code} {err.reason}", status=err.code)


def _transient(err: BaseException) -> bool:
    if isinstance(err, urllib.error.HTTPError):
        return err.code in (408, 425, 429) or err.code >= 500
    return isinstance(err, (urllib.error.URLError, ConnectionError, TimeoutError, OSError, EOFError)) or (
        err.__class__.__name__ == "IncompleteRead"
    )


def _hub_files(info: Mapping[str, Any], endpoint: str, repo_id: str) -> dict[str, dict[str, Any]]:
    siblings = info.get("siblings")
    if not isinstance(siblings, list):
        raise ModelStageError(endpoint, "http_error", f"unexpected Hub answer for {repo_id}: no siblings list")
    files: dict[str, dict[str, Any]] = {}
    for entry in siblings:
        if not isinstance(entry, dict) or not isinstance(entry.get("rfilename"), str):
            continue
        lfs = entry.get("lfs") if isinstance(entry.get("lfs"), dict) else None
        size = (lfs or {}).get("size", entry.get("size"))
        files[entry["rfilename"]] = {
            "size": size if _is_int(size) else None,
            "sha256": (lfs or {}).get("sha256") or (lfs or {}).get("oid"),
            "git_sha1": None if lfs else entry.get("blobId"),
        }
    return files


def _select(available: Mapping[str, Any], wanted: list[str] | None, repo_id: str, revision: str) -> list[str]:
    if not wanted:
        return sorted(available)
    chosen: list[str] = []
    for pattern in wanted:
        matches = sorted(n for n in available if n == pattern or fnmatch.fnmatchcase(n, pattern))
        if not matches:
            raise InvalidModelError(
                None,
                "missing_file",
                f"{pattern}: not in {repo_id}@{revision} (files: {', '.join(sorted(available)[:12])})",
            )
        chosen.extend(m for m in matches if m not in chosen)
    return chosen


def _safe_relpath(name: str) -> str:
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts) or parts[0] in (MANIFEST_NAME, PARTIAL_DIR):
        raise InvalidModelError(None, "bad_input", f"refusing to write unsafe file name from the Hub: {name!r}")
    return name


def _file_digests(path: Path, git_sha1: bool) -> tuple[str, str | None]:
    sha = hashlib.sha256()
    sha1 = hashlib.sha1(b"blob %d\0" % path.stat().st_size) if git_sha1 else None  # noqa: S324 - git's object id
    with open(path, "rb", buffering=0) as handle:
        buffer = bytearray(IO_BUFFER_BYTES)
        view = memoryview(buffer)
        while True:
            n = handle.readinto(buffer)
            if not n:
                break
            sha.update(view[:n])
            if sha1 is not None:
                sha1.update(view[:n])
    return sha.hexdigest(), None if sha1 is None else sha1.hexdigest()


def _digests_match(info: Mapping[str, Any], sha256_hex: str, sha1_hex: str | None) -> bool:
    if info.get("sha256"):
        return sha256_hex == info["sha256"]
    if info.get("git_sha1") and sha1_hex is not None:
        return sha1_hex == info["git_sha1"]
    return True


def download(
    repo_id: str,
    revision: str,
    dest: str | os.PathLike,
    files: list[str] | None = None,
    token: str | None = None,
    endpoint: str = HF_ENDPOINT,
    *,
    token_env: str | None = None,
    progress: IO[str] | None = None,
    announce: Callable[[str], None] | None = None,
    timeout: float = HTTP_TIMEOUT_S,
    retries: int = HTTP_RETRIES,
) -> dict[str, Any]:
    """Download a model from the Hugging Face Hub (or a mirror with the same URLs) into ``dest``, verified.

    Learns sizes and hashes from ``GET {endpoint}/api/models/{repo}/revision/{rev}?blobs=true``, downloads
    each file into dest/.partial/ with HTTP Range resume, checks each LFS file's sha256 (the git blob id for
    small files), moves it into place and calls ``announce(name)``; finally verifies the model and writes
    the manifest last and atomically. A model whose manifest matches (same repo, revision and file
    selection, commit; files unchanged on disk) returns with ``changed=False``: without any request when
    ``revision`` is a commit sha, after the one listing request that resolves a branch or tag otherwise.
    Every file is fetched by the commit the listing names, so a branch that moves meanwhile cannot mix commits.
    ``files`` are names or glob patterns; ``token`` is sent only to ``endpoint`` and Hub hosts, never logged.
    """
    start = time.monotonic()
    hub = _Hub(repo_id, token, token_env, timeout, retries)
    root = Path(dest).absolute()
    endpoint = endpoint.rstrip("/")
    spec = {"repo": repo_id, "revision": revision, "files": list(files) if files else None}
    existing = load_manifest(root)
    held = ((existing or {}).get("source") or {}).get("commit")
    complete = existing is not None and _download_complete(root, existing, spec)

    def unchanged() -> dict[str, Any]:
        if existing is None:  # only called for a complete copy, which has its manifest
            raise ValueError("no manifest to keep")
        for entry in existing["files"]:
            if announce:
                announce(entry["path"])
        before = _listing(existing["files"])
        return _download_result(
            _Outcome(changed=False, dest=root, manifest=existing, start=start, before=before, after=before)
        )

    # A commit sha names the same files forever: no request (huggingface_hub 2.4.0 _snapshot_download.py:262-270).
    if complete and held == revision:
        return unchanged()
    quoted_rev = urllib.parse.quote(revision, safe="")
    info_url = f"{endpoint}/api/models/{repo_id}/revision/{quoted_rev}?blobs=true"
    try:
        raw_info = _with_retries(lambda: _read_url(info_url, hub), info_url, hub)
    except ModelStageError as err:
        # Hub unreachable or refusing: the copy already here serves, as snapshot_download falls back to its
        # cached snapshot of the revision (huggingface_hub 2.4.0 _snapshot_download.py:299-345).
        if not complete or err.problem == "not_found":
            raise
        if progress is not None:
            progress.write(f"download: {err}; keeping the verified copy of {revision} ({held}) in {root}\n")
        return unchanged()
    try:
        info = json.loads(raw_info.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ModelStageError(info_url, "http_error", "the Hub's answer is not JSON (wrong --endpoint?)") from None
    if not isinstance(info, dict):
        raise ModelStageError(info_url, "http_error", "the Hub's answer is not a JSON object (wrong --endpoint?)")
    # Resolve the revision once and fetch every file by that commit, as snapshot_download does with repo_info.sha
    # (huggingface_hub 2.4.0 _snapshot_download.py:277-281 and 516-525, revision=commit_hash).
    commit = info.get("sha")
    if not isinstance(commit, str) or not _is_commit(commit):
        raise ModelStageError(info_url, "http_error", "the Hub's answer names no commit sha (wrong --endpoint?)")
    if complete and held == commit:
        return unchanged()
    available = _hub_files(info, endpoint, repo_id)
    chosen = [_safe_relpath(n) for n in _select(available, files, repo_id, revision)]
    try:
        root.mkdir(parents=True, exist_ok=True)
        if existing is not None:  # the old manifest must not vouch for files about to change
            os.unlink(root / MANIFEST_NAME)
    except OSError as err:
        raise _os_error(err, root, "prepare the download directory") from None
    partial_dir = root / PARTIAL_DIR
    pending = []
    vouched = _manifest_files(existing)
    for name in chosen:
        target = root / name
        meta = available[name]
        if target.is_file() and meta["size"] is not None and target.stat().st_size == meta["size"]:
            entry = vouched.get(name, {})
            if meta["sha256"] and entry.get("sha256") == meta["sha256"] and _same_file_state(entry, target.stat()):
                sha_hex, sha1_hex = meta["sha256"], None  # the same blob as our manifest vouched for: not re-read
            else:
                sha_hex, sha1_hex = _file_digests(target, bool(meta["git_sha1"]))
            if _digests_match(meta, sha_hex, sha1_hex):
                meta["computed_sha256"] = sha_hex
                if announce:
                    announce(name)
                continue
        pending.append(name)
    need = sum((available[n]["size"] or 0) - _size_or_zero(partial_dir / n) for n in pending)
    free = _free_bytes(root)
    if need > free:
        raise ModelStageError(
            root,
            "no_space",
            f"destination too small: {need} bytes to download, {free} available",
            needed_bytes=need,
            free_bytes=free,
        )
    total = sum(available[n]["size"] or 0 for n in pending)
    downloaded = 0
    for name in pending:
        meta = available[name]
        url = f"{endpoint}/{repo_id}/resolve/{commit}/{urllib.parse.quote(name)}"
        partial = partial_dir / name
        meta["computed_sha256"] = _download_file(hub, url, (partial, root / name), meta, progress)
        try:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial, root / name)
        except OSError as err:
            raise _os_error(err, root / name, "move the downloaded file into place") from None
        downloaded += meta["size"] or 0
        if announce:
            announce(name)
    with contextlib.suppress(OSError):
        shutil.rmtree(partial_dir)
    manifest = inspect_model(root)
    known = {n: available[n]["computed_sha256"] for n in chosen}
    manifest["files"] = [dict(e, sha256=known[e["path"]]) if e["path"] in known else e for e in manifest["files"]]
    manifest["source"] = dict(spec, endpoint=endpoint, commit=commit)
    save_manifest(root, manifest)
    if progress is not None and total:
        progress.write(f"download: {len(pending)} files, {_fmt_rate(downloaded, total, time.monotonic() - start)}\n")
    after = _listing(manifest["files"])
    return _download_result(_Outcome(True, root, manifest, start, "", after, copied=pending, bytes_copied=downloaded))


def _is_commit(revision: str) -> bool:
    return re.fullmatch(r"[0-9a-f]{40}", revision) is not None  # huggingface_hub 2.4.0 REGEX_COMMIT_HASH


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _download_complete(root: Path, manifest: Mapping[str, Any], spec: Mapping[str, Any]) -> bool:
    source = manifest.get("source") or {}
    if source.get("repo") != spec["repo"] or source.get("revision") != spec["revision"]:
        return False
    entries = _manifest_files(manifest)
    if source.get("files") != spec["files"]:
        wanted = spec["files"]
        # A narrower request of plain names that the manifest already covers is complete too.
        if not wanted or any(any(c in w for c in "*?[") or w not in entries for w in wanted):
            return False
    for rel, entry in entries.items():
        try:
            st = os.stat(root / rel)
        except OSError:
            return False
        if not _same_file_state(entry, st):
            return False
    return True


def _download_result(outcome: _Outcome) -> dict[str, Any]:
    result = outcome.result()
    result["downloaded_files"] = result["copied_files"]
    result["bytes_downloaded"] = result["bytes_copied"]
    return result


def _read_url(url: str, hub: _Hub) -> bytes:
    with _http_open(url, hub.token, timeout=hub.timeout) as response:
        return response.read()


def _with_retries(action: Callable[[], Any], url: str, hub: _Hub) -> Any:
    attempt = 0
    while True:
        try:
            return action()
        except urllib.error.HTTPError as err:
            if not _transient(err) or attempt >= hub.retries:
                raise _http_failure(err, url, hub) from None
        except ModelStageError:
            raise
        except Exception as err:  # noqa: BLE001 - network errors come in many classes
            if not _transient(err) or attempt >= hub.retries:
                raise ModelStageError(url, "http_error", f"download failed: {err}") from None
        time.sleep(HTTP_RETRY_BASE_S * 2**attempt)
        attempt += 1


def _fresh_hashes(meta: Mapping[str, Any]) -> tuple[Any, Any]:
    """A sha256, and git's blob sha1 for small (non-LFS) files, ready for the file's bytes."""
    size = meta.get("size")
    if meta.get("git_sha1") and size is not None:
        return hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)  # noqa: S324 - git's object id
    return hashlib.sha256(), None


def _download_file(
    hub: _Hub, url: str, paths: tuple[Path, Path], meta: Mapping[str, Any], progress: IO[str] | None
) -> str:
    """Fetch one file into its .partial path, resuming with Range; return its verified sha256."""
    partial, target = paths
    size = meta["size"]
    try:
        partial.parent.mkdir(parents=True, exist_ok=True)
        if size is not None and _size_or_zero(partial) > size:
            partial.unlink()
    except OSError as err:
        raise _os_error(err, partial, "prepare") from None
    sha, sha1 = _fresh_hashes(meta)
    have = 0
    if partial.exists():  # resume: the bytes already there count towards the hash
        try:
            with open(partial, "rb") as handle:
                for block in iter(lambda: handle.read(IO_BUFFER_BYTES), b""):
                    sha.update(block)
                    if sha1 is not None:
                        sha1.update(block)
                    have += len(block)
        except OSError as err:
            raise _os_error(err, partial, "read") from None
    meter = _Progress(f"download: {target.name}", size or 0, progress)
    meter.add(have)
    attempt = 0
    while size is None or have < size:
        before = have
        try:
            with _http_open(url, hub.token, {"Range": f"bytes={have}-"} if have else {}, hub.timeout) as response:
                if have and response.status != 206:  # the server ignored Range: start over
                    have = 0
                    sha, sha1 = _fresh_hashes(meta)
                try:
                    out = open(partial, "ab" if have else "wb")
                except OSError as err:
                    raise _os_error(err, partial, "write") from None
                with out:
                    while True:
                        block = response.read(1024 * 1024)
                        if not block:
                            break
                        try:
                            out.write(block)
                            out.flush()  # what `have` counts is in the file if the connection drops next
                        except OSError as err:
                            raise _os_error(err, partial, "write") from None
                        sha.update(block)
                        if sha1 is not None:
                            sha1.update(block)
                        have += len(block)
                        meter.add(len(block))
                    try:
                        os.fsync(out.fileno())
                    except OSError as err:
                        raise _os_error(err, partial, "flush") from None
            if size is None:
                break
            if have < size:  # connection ended early: resume from here
                raise ConnectionError(f"response ended at byte {have} of {size}")
        except ModelStageError:
            raise
        except urllib.error.HTTPError as err:
            if err.code == 416 and size is not None and have >= size:
                break
            if not _transient(err) or attempt >= hub.retries:
                raise _http_failure(err, url, hub) from None
        except Exception as err:  # noqa: BLE001 - URLError, ConnectionError, IncompleteRead, timeouts...
            if not _transient(err) or attempt >= hub.retries:
                raise ModelStageError(url, "http_error", f"download failed after {attempt + 1} tries: {err}") from None
        if have > before:  # progress was made: resume at once, the retry budget is for stalls
            attempt = 0
            continue
        time.sleep(HTTP_RETRY_BASE_S * 2**attempt)
        attempt += 1
    meter.finish()
    if size is not None and have != size:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise ModelStageError(url, "http_error", f"got {have} bytes, the Hub lists {size}")
    digest = sha.hexdigest()
    if meta.get("sha256") and digest != meta["sha256"]:
        with contextlib.suppress(OSError):
            partial.unlink()  # a corrupt partial must not be resumed
        raise InvalidModelError(
            target,
            "sha256_mismatch",
            f"sha256 mismatch: the Hub lists {meta['sha256']}, the download has {digest}",
            expected_sha256=meta["sha256"],
            actual_sha256=digest,
        )
    if sha1 is not None and sha1.hexdigest() != meta["git_sha1"]:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise InvalidModelError(
            target,
            "sha256_mismatch",
            f"git blob id mismatch: the Hub lists {meta['git_sha1']}, the download has {sha1.hexdigest()}",
            expected_git_sha1=meta["git_sha1"],
            actual_git_sha1=sha1.hexdigest(),
        )
    return digest
