# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""HTTP to one :class:`Target`: a request and its whole answer within the timeout, bodies read in bounded chunks,
transport failures named (refused, DNS, TLS, timeout, redirect loop), and readers for answer bodies that know
nothing of the probe's state."""

from __future__ import annotations

import dataclasses
import http.client
import json
import socket
import ssl
import time
import typing as t
import urllib.error
import urllib.parse
import urllib.request

from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.errors import ProbeError
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.target import Target

USER_AGENT = "llmops.vllm-endpoint-probe"

# The most of an answer the probe reads: a chat completion or a model list is kilobytes; more is not an API answer.
MAX_BODY_BYTES = 8 * 1024 * 1024
CHUNK_BYTES = 64 * 1024


@dataclasses.dataclass
class _Answer:
    method: str
    path: str
    status: int
    headers: t.Any
    body: bytes
    elapsed_ms: float

    @property
    def what(self) -> str:
        return f"{self.method} {self.path}"


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 1)


def _snippet(body: bytes | str, limit: int = 160) -> str:
    """The start of a body on one line; binary data is described by its size, never echoed."""
    if isinstance(body, bytes) and (b"\x00" in body[:4096] or _undecodable(body[:4096])):
        return f"<{len(body)} bytes of binary data>"
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _chunks(response: t.Any, start: float, timeout: float, what: str) -> t.Iterator[bytes]:
    """The body as it arrives, within ``timeout`` seconds from ``start`` for all of it (a server that drips a byte
    every few seconds is cut off) and at most MAX_BODY_BYTES; raises socket.timeout or ProbeError."""
    size = 0
    while True:
        if time.perf_counter() - start > timeout:
            raise TimeoutError("the whole answer took longer than the timeout")
        chunk = response.read1(CHUNK_BYTES) if hasattr(response, "read1") else response.read(CHUNK_BYTES)
        if not chunk:
            return
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ProbeError(
                "malformed_response",
                f"the answer to {what} is larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB (Content-Type "
                f"{response.headers.get('Content-Type')!r}): not an API answer",
            )
        yield chunk


def _lines(chunks: t.Iterable[bytes]) -> t.Iterator[bytes]:
    """Lines of a server-sent event stream as they complete (the last one even without its newline)."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from complete
    if pending:
        yield pending


def _undecodable(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start < len(head) - 4  # a multi-byte character cut at the end is fine
    return False


def _host_port(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


class _Client:
    """Requests to one target; every request opens its own connection (latencies include connection set-up)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        handlers: list[t.Any] = [urllib.request.ProxyHandler(target.proxies)]
        if target.ssl_context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=target.ssl_context))
        self._opener = urllib.request.build_opener(*handlers)

    def open(self, method: str, path: str, payload: t.Any, timeout: float) -> t.Any:
        """Send a request; return the response (also for HTTP error statuses). Raises ProbeError on transport
        failures."""
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json, text/event-stream, */*"}
        headers.update(self.target.headers)
        data = None
        if payload is not None:
            data = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.target.url(path), data=data, headers=headers, method=method)
        try:
            return self._opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            if 300 <= exc.code < 400:
                # urllib follows redirects; one it gives up on loops (10 hops or a repeat) or has no Location.
                where = exc.headers.get("Location") if exc.headers else None
                raise ProbeError(
                    "redirect",
                    f"{method} {path} at {_host_port(self.target.base_url)} answers {exc.code} and the redirects "
                    f"{'loop (last to ' + where[:200] + ')' if where else 'give no Location'}: a proxy or ingress in "
                    "front of vLLM redirects (often http to https, or a login page); probe the server's own URL",
                    status=exc.code,
                ) from None
            return exc
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            raise self.transport_error(exc, method, path, timeout) from exc

    def call(self, method: str, path: str, payload: t.Any = None, timeout: float = 60.0) -> _Answer:
        """Send a request and read the whole answer, within ``timeout`` for all of it (not per read: a server that
        drips a byte at a time is cut off) and at most MAX_BODY_BYTES."""
        start = time.perf_counter()
        response = self.open(method, path, payload, timeout)
        try:
            with response:
                body = b"".join(_chunks(response, start, timeout, f"{method} {path}"))
        except (OSError, http.client.HTTPException) as exc:
            raise self.transport_error(exc, method, path, timeout) from exc
        status = getattr(response, "status", None) or response.code
        return _Answer(method, path, status, response.headers, body, _ms(time.perf_counter() - start))

    def transport_error(self, exc: BaseException, method: str, path: str, timeout: float) -> ProbeError:
        """Name a transport failure: refused, DNS, TLS, timeout, or a connection that broke."""
        where = _host_port(self.target.base_url)
        host = urllib.parse.urlsplit(self.target.base_url).hostname
        inner = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        what = f"{method} {path}"
        if isinstance(inner, ssl.SSLCertVerificationError):
            detail = getattr(inner, "verify_message", None) or str(inner)
            return ProbeError(
                "tls_error",
                f"TLS certificate verify failed for {where} ({detail}): give ca_path (the CA that signed the "
                "server certificate) or, for a test server only, validate_certs: false",
                error=str(inner),
            )
        if isinstance(inner, ssl.SSLError):
            return ProbeError(
                "tls_error",
                f"TLS handshake with {where} failed ({inner}): does the server speak https (check the URL scheme)?",
                error=str(inner),
            )
        if isinstance(inner, socket.gaierror):
            return ProbeError(
                "dns_failure",
                f"cannot resolve host {host!r} ({inner.strerror or inner}): check the host name in the URL; "
                "cluster-internal names resolve only inside the cluster (use service instead)",
                error=str(inner),
            )
        if isinstance(inner, ConnectionRefusedError):
            # vLLM binds its port before it loads the model but listens only once the engine is built
            # (vllm/entrypoints/openai/api_server.py run_server: create_server_socket, then serve_http).
            return ProbeError(
                "connection_refused",
                f"connection refused by {where}: nothing listens there yet; vLLM refuses connections until the model "
                "is loaded (set wait_timeout to wait for it), else check the server runs and the port is right",
                error=str(inner),
            )
        if isinstance(inner, (socket.timeout, TimeoutError)):
            return ProbeError(
                "timeout",
                f"no answer to {what} from {where} within {timeout:g} s (timeout)",
                error=str(inner) or "timed out",
            )
        if isinstance(inner, str):  # URLError with a text reason, e.g. an unknown URL type
            return ProbeError("connection_error", f"{what} to {where} failed: {inner}", error=inner)
        return ProbeError(
            "connection_error",
            f"{what} to {where} failed without an HTTP answer ({type(inner).__name__}: {inner}): does the server "
            "speak plain http or https (check the URL scheme)?",
            error=f"{type(inner).__name__}: {inner}",
        )


def _json_body(answer: _Answer) -> t.Any:
    try:
        return json.loads(answer.body)
    except ValueError as exc:
        raise ProbeError(
            "malformed_response",
            f"malformed response to {answer.what}: the body is not JSON ({exc}): {_snippet(answer.body)!r}",
            status=answer.status,
        ) from exc


def _error_body(body: bytes) -> tuple[str, dict[str, t.Any]]:
    """The message of an error body (vLLM/OpenAI, FastAPI, vLLM auth or Kubernetes Status), and the body."""
    try:
        doc = json.loads(body)
    except ValueError:
        return _snippet(body), {}
    if not isinstance(doc, dict):
        return _snippet(body), {}
    error = doc.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error), doc
    for key in ("message", "detail", "error"):
        if doc.get(key):
            return str(doc[key]), doc
    return _snippet(body), doc


def _is_kubernetes_status(doc: dict[str, t.Any]) -> bool:
    return doc.get("kind") == "Status" and "apiVersion" in doc
