# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
#
# Standard library only, no ansible imports: the engine is an HTTP client and is tested on its own against a
# fake vLLM server. Keep it importable on Python 3.8+ (the oldest Python ansible-core 2.19 runs modules with).

"""Prove that a vLLM OpenAI-compatible endpoint serves its model, and measure it.

:func:`probe` waits until ``/health`` answers (polling through connection refusals, 502/503/504 answers and
silent ports while the model loads), then runs the selected checks in a fixed order: ``health``, ``models``,
``version``, ``chat``, ``tool_call``, ``stream``, ``metrics`` and, when load settings are given, ``load``
(N streamed requests at concurrency C). It returns plain data: per-check results
(``{"passed", "reason", "msg", "latency_ms", ...}``), the model ids served, the server version, the readiness
wait, streaming latencies and load statistics, and for a failure the first failing check with one line that
says what to do.

Where the requests go is a :class:`Target`: a URL reachable from here (:func:`url_target`), or a Service
reached through the Kubernetes API server's service proxy (:func:`service_target`,
:func:`target_from_kubernetes`).
"""

from __future__ import annotations

import dataclasses
import http
import http.client
import json
import math
import os
import re
import socket
import ssl
import time
import typing as t
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed

CHECKS = ("health", "models", "version", "chat", "tool_call", "stream", "metrics")
DEFAULT_CHECKS = ("health", "models", "version", "chat", "tool_call", "stream")
TOOL_CHOICES = ("auto", "required", "named")

# Machine-readable reasons a failed check carries.
REASONS = (
    "connection_refused",  # nothing listens at host:port
    "dns_failure",  # the host name does not resolve
    "tls_error",  # certificate verify failed, handshake failed, or the TLS files cannot be loaded
    "connection_error",  # connection reset/closed without an HTTP answer (often http vs https)
    "not_ready",  # still loading (503, or no answer) when wait_timeout ran out
    "engine_dead",  # /health 500 (vLLM 0.10) or an empty 503 at the end of the wait (0.11+): the engine died
    "timeout",  # a request got no (complete) answer within timeout
    "unauthorized",  # 401: missing or wrong API key (or Kubernetes credentials)
    "forbidden",  # 403: the Kubernetes user may not use services/proxy
    "service_not_found",  # 404 from the API server: no such Service
    "model_not_found",  # the expected model is not served (listed, or a 404 for it)
    "model_ambiguous",  # several models served and none named
    "tool_calling_disabled",  # tool_choice refused: server lacks --enable-auto-tool-choice / --tool-call-parser
    "no_tool_call",  # a well-formed answer without a tool call
    "no_metrics_endpoint",  # GET /metrics is 404: the server exposes no Prometheus metrics
    "malformed_response",  # an answer does not have the documented shape
    "redirect",  # a redirect that loops (or has no Location): the URL is not the server's own
    "http_error",  # any other unexpected HTTP status
    "not_run",  # an earlier failure made this check impossible
)

DEFAULT_PROMPT = "In one short sentence: what is the capital of France?"
TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city, for example Paris"}},
            "required": ["city"],
        },
    },
}
TOOL_PROMPT = "What is the weather like in Paris right now? Use the get_current_weather tool."
# A call is about 25 tokens of JSON; fewer than this truncates it into arguments that do not parse.
TOOL_MIN_TOKENS = 128
USER_AGENT = "llmops.vllm-endpoint-probe"

# Answers that mean "up, but not serving yet": a gateway or the API server's service proxy in front of a pod
# that is not ready (503 "no endpoints available for service"), or vLLM itself with a dead engine.
_LOADING_STATUS = frozenset((502, 503, 504))
# Transport failures after which no later request can succeed either.
_BLOCKING = frozenset(("connection_refused", "dns_failure", "tls_error", "connection_error", "not_ready"))
_NEEDS_MODEL = frozenset(("chat", "tool_call", "stream", "load"))
_ORDER = CHECKS + ("load",)
_METRIC_NAME = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_REPORTED_METRICS = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:gpu_cache_usage_perc",
    "vllm:kv_cache_usage_perc",
)


class ProbeError(Exception):
    """A check failed: ``reason`` (one of :data:`REASONS`), one actionable line, and structured details."""

    def __init__(self, reason: str, message: str, **details: t.Any) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.details = details


@dataclasses.dataclass(frozen=True)
class Target:
    """Where requests go.

    ``base_url`` is the server root (paths such as ``/v1/models`` are appended). ``proxies`` is ``None`` to use
    the environment's proxy settings, else a urllib proxy mapping (empty: none). ``service`` names the Service
    (``namespace/name:port``) when requests go through the Kubernetes API server's service proxy.
    """

    base_url: str
    headers: t.Mapping[str, str] = dataclasses.field(default_factory=dict)
    ssl_context: ssl.SSLContext | None = None
    proxies: t.Mapping[str, str] | None = None
    service: str | None = None
    sends_api_key: bool = False
    #: The Service object's own URL on the API server (``service`` targets).
    service_url: str | None = None

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url + path


@dataclasses.dataclass(frozen=True)
class LoadSettings:
    """Load mode: ``requests`` streamed chat requests, ``concurrency`` at a time, each up to ``max_tokens``."""

    requests: int = 20
    concurrency: int = 4
    max_tokens: int = 64
    max_errors: int = 0


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
    """What to check and how long to wait; times in seconds."""

    checks: tuple[str, ...] = DEFAULT_CHECKS
    model: str | None = None
    prompt: str = DEFAULT_PROMPT
    max_tokens: int = 32
    tool_choice: str = "auto"
    timeout: float = 60.0
    wait_timeout: float = 0.0
    poll_interval: float = 1.0
    load: LoadSettings | None = None


# ---------------------------------------------------------------------------------------------- targets


def tls_context(
    validate_certs: bool = True,
    ca_path: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
) -> ssl.SSLContext:
    """An SSL context: verify against ``ca_path`` (file or directory) or the system CAs; optional client cert.

    Raises :class:`ProbeError` (``tls_error``) when a file cannot be loaded.
    """
    try:
        if ca_path and os.path.isdir(ca_path):
            context = ssl.create_default_context(capath=ca_path)
        else:
            context = ssl.create_default_context(cafile=ca_path or None)
        if not validate_certs:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if client_cert:
            context.load_cert_chain(client_cert, client_key or None)
    except (OSError, ssl.SSLError) as exc:
        raise ProbeError("tls_error", f"cannot load the TLS files (ca_path/client_cert/client_key): {exc}") from exc
    return context


def url_target(
    url: str,
    api_key: str | None = None,
    validate_certs: bool = True,
    ca_path: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
    proxy: str | None = None,
) -> Target:
    """A target for a URL reachable from here. A trailing ``/v1`` (an OpenAI client's base URL) is dropped.

    Raises ValueError for a URL that is not http(s)://host..., :class:`ProbeError` for TLS files that do not load.
    """
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"url must look like http(s)://host[:port][/prefix], not {url!r}")
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    context = tls_context(validate_certs, ca_path, client_cert, client_key) if parts.scheme == "https" else None
    proxies = {"http": proxy, "https": proxy} if proxy else None
    return Target(base, headers, context, proxies, None, bool(api_key))


def service_target(
    api_host: str,
    namespace: str,
    name: str,
    port: str | int,
    scheme: str = "http",
    headers: t.Mapping[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    proxy: str | None = None,
) -> Target:
    """A target for a Service reached through the API server: ``{api_host}/api/v1/namespaces/{ns}/services/
    [https:]{name}:{port}/proxy``. ``headers`` carry the API server credentials (``Authorization``)."""
    prefix = "https:" if scheme == "https" else ""
    quote = urllib.parse.quote
    services = f"{api_host.rstrip('/')}/api/v1/namespaces/{quote(namespace, safe='')}/services/"
    base = f"{services}{prefix}{quote(name, safe='')}:{quote(str(port), safe='')}/proxy"
    proxies = {"http": proxy, "https": proxy} if proxy else {}
    service = f"{namespace}/{name}:{port}"
    return Target(base, dict(headers or {}), ssl_context, proxies, service, False, services + quote(name, safe=""))


def target_from_kubernetes(
    configuration: t.Any,
    namespace: str,
    name: str,
    port: str | int,
    scheme: str = "http",
    extra_headers: t.Mapping[str, str] | None = None,
) -> Target:
    """A service-proxy target from a ``kubernetes.client.Configuration`` (as its config loader fills it in:
    host, CA, client certificate and key, bearer token or basic auth, proxy)."""
    headers = dict(extra_headers or {})
    token = configuration.get_api_key_with_prefix("authorization")
    if token:
        headers["Authorization"] = token
    elif getattr(configuration, "username", None) and getattr(configuration, "password", None):
        headers["Authorization"] = configuration.get_basic_auth_token()
    host = configuration.host
    context = None
    if host.startswith("https://"):
        context = tls_context(
            bool(configuration.verify_ssl),
            configuration.ssl_ca_cert,
            configuration.cert_file,
            configuration.key_file,
        )
    return service_target(host, namespace, name, port, scheme, headers, context, getattr(configuration, "proxy", None))


# ---------------------------------------------------------------------------------------------- HTTP


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


def _release(version: str | None) -> tuple[int, int] | None:
    """(major, minor) of a vLLM version string such as ``0.9.0.1`` or ``0.33.0+cu130``; None when unknown."""
    match = re.match(r"^v?(\d+)\.(\d+)", str(version or ""))
    return (int(match.group(1)), int(match.group(2))) if match else None


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 1)


# The most of an answer the probe reads: a chat completion or a model list is kilobytes; more is not an API answer.
MAX_BODY_BYTES = 8 * 1024 * 1024
CHUNK_BYTES = 64 * 1024


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


def _not_run(check: str, reason: str | None) -> dict[str, t.Any]:
    return {"passed": False, "reason": "not_run", "msg": f"not run: {check} failed ({reason})"}


# ---------------------------------------------------------------------------------------------- statistics


def percentile(values: t.Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between closest ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    value = ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
    return round(value, 1)


def _summary(values: t.Sequence[float], quantiles: t.Sequence[int] = (50, 95, 99)) -> dict[str, float | None]:
    return {f"p{q}": percentile(values, q) for q in quantiles}


# ---------------------------------------------------------------------------------------------- the probe


class _Probe:
    def __init__(self, target: Target, settings: ProbeSettings) -> None:
        self.target = target
        self.settings = settings
        self.client = _Client(target)
        self.model = settings.model
        self.models: list[str] = []
        self.version: str | None = None
        self.waited_ms = 0.0
        self.ttft_ms: float | None = None
        self.inter_token_ms: float | None = None
        self.load: dict[str, t.Any] | None = None
        self.checks: dict[str, dict[str, t.Any]] = {}

    # ------------------------------------------------------------------------------------------ plan

    def plan(self) -> list[str]:
        wanted = set(self.settings.checks)
        # /health is the readiness signal: it always runs first.
        wanted.add("health")
        if self.settings.load is not None:
            wanted.add("load")
        if self.settings.model is None and wanted & _NEEDS_MODEL:
            wanted.add("models")
        return [name for name in _ORDER if name in wanted]

    def run(self) -> dict[str, t.Any]:
        start = time.perf_counter()
        blocked: tuple[str, str] | None = None  # (check, reason) of a transport failure that stops the rest
        for name in self.plan():
            # A model the server does not serve (or none chosen): skip. A /v1/models that failed otherwise
            # (transformers serve answers 500 when its hub cache is missing) leaves a named model worth trying.
            missing = self.checks.get("models", {}).get("reason") in ("model_not_found", "model_ambiguous")
            if blocked is None and name in _NEEDS_MODEL and (self.model is None or missing):
                # No request for a model the server does not serve: it could only fail the same way again.
                self.checks[name] = _not_run("models", self.checks.get("models", {}).get("reason"))
                continue
            if blocked is not None:
                self.checks[name] = _not_run(*blocked)
                continue
            try:
                entry = dict({"passed": True, "reason": None}, **getattr(self, "check_" + name)())
            except ProbeError as err:
                entry = dict({"passed": False, "reason": err.reason, "msg": err.message}, **err.details)
                # Nothing can pass once the server is out of reach, or not ready (health is the readiness wait).
                if err.reason in _BLOCKING or name == "health":
                    blocked = (name, err.reason)
            self.checks[name] = entry
        return self.result(_ms(time.perf_counter() - start))

    def result(self, elapsed_ms: float) -> dict[str, t.Any]:
        failed = [(name, entry) for name, entry in self.checks.items() if not entry["passed"]]
        first = next(((n, e) for n, e in failed if e["reason"] != "not_run"), failed[0] if failed else None)
        result: dict[str, t.Any] = {
            "url": self.target.base_url,
            "service": self.target.service,
            "model": self.model,
            "models": self.models,
            "version": self.version,
            "waited_ms": self.waited_ms,
            "ttft_ms": self.ttft_ms,
            "inter_token_ms": self.inter_token_ms,
            "load": self.load,
            "checks": self.checks,
            "elapsed_ms": elapsed_ms,
            "failed": first is not None,
        }
        if first is not None:
            name, entry = first
            result.update(failed_check=name, reason=entry["reason"], msg=f"{name}: {entry['msg']}")
        return result

    # ------------------------------------------------------------------------------------------ HTTP

    def get(self, path: str, timeout: float | None = None) -> _Answer:
        return self.client.call("GET", path, None, self.settings.timeout if timeout is None else timeout)

    def post(self, path: str, payload: dict[str, t.Any]) -> _Answer:
        return self.client.call("POST", path, payload, self.settings.timeout)

    def status_error(self, answer: _Answer) -> ProbeError:
        """The ProbeError for an unexpected status, telling vLLM's answers from the API server's own."""
        message, doc = _error_body(answer.body)
        status = answer.status
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = "HTTP status"
        message = message or "(empty body)"
        where = f"{status} {phrase} on {answer.what}"
        from_kubernetes = _is_kubernetes_status(doc)
        details = {"status": status, "error": message}
        if status == 401:
            if from_kubernetes:
                text = "the Kubernetes API server rejected the credentials: check kubeconfig, context or api_key"
            elif self.target.service:
                text = (
                    "vLLM wants an API key, and the API server's service proxy drops the Authorization header: "
                    "probe a server started with --api-key through url (an ingress or a port-forward)"
                )
            elif self.target.sends_api_key:
                text = "the API key was rejected: api_key must equal the server's --api-key (VLLM_API_KEY)"
            else:
                text = "the server requires an API key (vLLM --api-key / VLLM_API_KEY): set api_key"
            return ProbeError("unauthorized", f"{where}: {text}", **details)
        if status == 403:
            text = message
            if from_kubernetes:
                text += " (the Kubernetes user needs the verb get on services/proxy in that namespace)"
            return ProbeError("forbidden", f"{where}: {text}", **details)
        if status == 404 and from_kubernetes and self.service_exists():
            # The API server says "not found" for a Service whose endpoints are not recorded yet, too.
            return ProbeError(
                "not_ready", f"{where}: {message} (the Service exists but has no endpoints yet)", **details
            )
        if status == 404 and from_kubernetes:
            return ProbeError(
                "service_not_found",
                f"404 from the Kubernetes API server on {answer.what}: {message}; check service name and namespace",
                **details,
            )
        if self.names_missing_model(status, doc, message):
            served = ", ".join(self.models) if self.models else "see GET /v1/models"
            return ProbeError("model_not_found", f"{where}: {message} Set model to a served id ({served})", **details)
        if status == 400 and "requires --tool-call-parser" in message:
            # vLLM 0.33 (renderers/online_renderer.py): required and named tool choice go through the parser too.
            return ProbeError(
                "tool_calling_disabled",
                f"{where}: {message}; start vLLM with --tool-call-parser=<parser> (mistral for Mistral models)",
                **details,
            )
        if status == 400 and "enable-auto-tool-choice" in message:
            # Before 0.33, required and named tool choice use guided decoding and need no parser.
            older = _release(self.version) is not None and _release(self.version) < (0, 33)
            return ProbeError(
                "tool_calling_disabled",
                f"{where}: {message}; start vLLM with --enable-auto-tool-choice --tool-call-parser=<parser> "
                "(mistral for Mistral models)" + (", or probe with tool_choice: required" if older else ""),
                **details,
            )
        if status == 500 and message == "(empty body)" and not self.target.service:
            # vLLM answers every request a bare 500 once its engine died (0.9.0 entrypoints/launcher.py handlers).
            return ProbeError(
                "engine_dead",
                f"{where} with an empty body: vLLM's answer once its engine died; the pod's log says why "
                "(kubectl logs, --previous after a restart)",
                **details,
            )
        if status in _LOADING_STATUS:
            return ProbeError("not_ready", f"{where}: {message} (the server is up but not serving yet)", **details)
        return ProbeError("http_error", f"{where}: {message}", **details)

    def names_missing_model(self, status: int, doc: dict[str, t.Any], message: str) -> bool:
        """Whether an error answer says the requested model is not served: vLLM's 404 NotFoundError (flat before
        0.10.1, nested under "error" after), or another server's 400/404/422 that names the model."""
        error = doc.get("error") if isinstance(doc.get("error"), dict) else doc
        if status == 404 and (error.get("type") == "NotFoundError" or "does not exist" in message):
            return True
        if status in (400, 404, 422) and self.model and str(self.model) in message:
            # transformers serve 5.17: 400 "Server is pinned to 'X'; requested 'Y'." (seen by tests/device/run.sh).
            found = r"not (found|served|available|supported|loaded)|does not exist|unknown|pinned to"
            return bool(re.search(found, message, re.I))
        return False

    def service_exists(self) -> bool:
        """Whether the API server has the target's Service object (False when it cannot tell)."""
        if not self.target.service_url:
            return False
        try:
            return self.client.call("GET", self.target.service_url, None, self.settings.timeout).status == 200
        except ProbeError:
            return False

    # ------------------------------------------------------------------------------------------ checks

    def check_health(self) -> dict[str, t.Any]:
        """Poll /health until 200, through refusals, 502/503/504 and silent ports, for up to wait_timeout."""
        settings = self.settings
        start = time.monotonic()
        deadline = start + max(settings.wait_timeout, 0.0)
        attempts = 0
        answered = False  # something spoke HTTP, or accepted the connection and stayed silent
        while True:
            attempts += 1
            tried_at = time.monotonic()
            timeout = min(settings.timeout, max(deadline - tried_at, 1.0)) if settings.wait_timeout else None
            try:
                answer = self.get("/health", timeout)
                if answer.status == 200:
                    self.waited_ms = _ms(tried_at - start)
                    return {
                        "status": 200,
                        "latency_ms": answer.elapsed_ms,
                        "waited_ms": self.waited_ms,
                        "attempts": attempts,
                    }
                err = self.status_error(answer)
                if answer.status == 500 and not self.target.service:
                    # vLLM 0.10 maps EngineDeadError to a bare 500, /health included (entrypoints/launcher.py).
                    err = ProbeError(
                        "engine_dead",
                        "500 Internal Server Error on GET /health: the vLLM engine died; the pod's log says why "
                        "(kubectl logs, --previous after a restart)",
                        status=500,
                    )
                if answer.status == 404 and err.reason == "http_error":
                    err = ProbeError(
                        "http_error",
                        "404 Not Found on GET /health: url must be the server root (vLLM serves /health and /v1/...)",
                        status=404,
                    )
            except ProbeError as exc:
                err = exc
            transient = err.reason in ("connection_refused", "timeout", "connection_error", "not_ready")
            answered = answered or err.reason in ("timeout", "not_ready")
            self.waited_ms = _ms(time.monotonic() - start)
            if not transient:
                raise ProbeError(err.reason, err.message, attempts=attempts, waited_ms=self.waited_ms, **err.details)
            if time.monotonic() >= deadline:
                if not settings.wait_timeout:
                    raise ProbeError(err.reason, err.message, attempts=attempts, waited_ms=0.0, **err.details)
                reason = "not_ready" if answered else err.reason
                hint = ""
                if err.details.get("status") == 503 and err.details.get("error") == "(empty body)":
                    # vLLM 0.11+ answers /health 503 with no body once EngineDeadError is raised, while a loading
                    # vLLM refuses connections (serve/instrumentator/health.py); a gateway may send the same.
                    hint = " (an empty 503 from vLLM itself means its engine died: see the pod's log)"
                if err.reason == "connection_refused":
                    err = ProbeError(
                        err.reason,
                        f"connection refused by {_host_port(self.target.base_url)} on every attempt: vLLM refuses "
                        "connections until its model is loaded (raise wait_timeout for a large model), or nothing "
                        "runs there (check the pod and the port)",
                        **err.details,
                    )
                raise ProbeError(
                    reason,
                    f"not ready after {settings.wait_timeout:g} s (wait_timeout, {attempts} attempts); last seen: "
                    + err.message
                    + hint,
                    attempts=attempts,
                    waited_ms=self.waited_ms,
                    last_seen=err.reason,
                    **err.details,
                )
            time.sleep(max(0.0, min(settings.poll_interval, deadline - time.monotonic())))

    def check_models(self) -> dict[str, t.Any]:
        answer = self.get("/v1/models")
        if answer.status != 200:
            raise self.status_error(answer)
        doc = _json_body(answer)
        data = doc.get("data") if isinstance(doc, dict) else None
        if not isinstance(data, list) or not all(isinstance(m, dict) and isinstance(m.get("id"), str) for m in data):
            raise ProbeError(
                "malformed_response",
                f'malformed response to GET /v1/models: expected {{"object": "list", "data": [{{"id": ...}}]}}'
                f", got {_snippet(answer.body)!r}",
                status=answer.status,
            )
        self.models = [m["id"] for m in data]
        listed = ", ".join(self.models)
        if self.settings.model is not None:
            if self.settings.model not in self.models:
                raise ProbeError(
                    "model_not_found",
                    f"model {self.settings.model!r} is not served; the server lists: {listed or 'nothing'}",
                    status=answer.status,
                    models=self.models,
                )
        else:
            # LoRA adapters are listed with their base model as parent; the default is the only base model.
            bases = [m["id"] for m in data if not m.get("parent")]
            if len(bases) == 1:
                self.model = bases[0]
            elif not self.models:
                raise ProbeError("model_not_found", "the server lists no models (GET /v1/models)", status=200)
            else:
                raise ProbeError(
                    "model_ambiguous",
                    f"the server lists several models ({listed}): set model to the one to probe",
                    status=answer.status,
                    models=self.models,
                )
        card = next(m for m in data if m["id"] == self.model)
        return {
            "status": answer.status,
            "latency_ms": answer.elapsed_ms,
            "models": self.models,
            "max_model_len": card.get("max_model_len"),
        }

    def check_version(self) -> dict[str, t.Any]:
        answer = self.get("/version")
        if answer.status == 404:
            return {"status": 404, "latency_ms": answer.elapsed_ms, "present": False}
        if answer.status != 200:
            raise self.status_error(answer)
        doc = _json_body(answer)
        version = doc.get("version") if isinstance(doc, dict) else None
        if not isinstance(version, str) or not version:
            raise ProbeError(
                "malformed_response",
                f'malformed response to GET /version: expected {{"version": "..."}}, got {_snippet(answer.body)!r}',
                status=answer.status,
            )
        self.version = version
        return {"status": 200, "latency_ms": answer.elapsed_ms, "present": True, "version": version}

    def chat_payload(self, max_tokens: int, **extra: t.Any) -> dict[str, t.Any]:
        payload = {
            "model": self.model,
            "messages": [{"role": "user", "content": self.settings.prompt}],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        payload.update(extra)
        return payload

    def completion(self, answer: _Answer) -> tuple[dict[str, t.Any], dict[str, t.Any], dict[str, t.Any]]:
        """The document, choices[0] and its message of a non-streamed chat completion."""
        if answer.status != 200:
            raise self.status_error(answer)
        doc = _json_body(answer)
        choices = doc.get("choices") if isinstance(doc, dict) else None
        choice = choices[0] if isinstance(choices, list) and choices else None
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise ProbeError(
                "malformed_response",
                f"malformed response to {answer.what}: no choices[0].message in {_snippet(answer.body)!r}",
                status=answer.status,
            )
        return doc, choice, message

    def check_chat(self) -> dict[str, t.Any]:
        answer = self.post("/v1/chat/completions", self.chat_payload(self.settings.max_tokens))
        doc, choice, message = self.completion(answer)
        content = message.get("content")
        finish = choice.get("finish_reason")
        if not isinstance(content, str) or not content.strip():
            raise ProbeError(
                "malformed_response",
                f"malformed response to {answer.what}: choices[0].message.content is empty ({content!r}, "
                f"finish_reason {finish!r})",
                status=answer.status,
            )
        if not finish:
            raise ProbeError(
                "malformed_response",
                f"malformed response to {answer.what}: choices[0].finish_reason is missing",
                status=answer.status,
            )
        usage = doc.get("usage")
        keys = ("prompt_tokens", "completion_tokens", "total_tokens")
        if not isinstance(usage, dict) or not all(isinstance(usage.get(k), int) for k in keys):
            raise ProbeError(
                "malformed_response",
                f"malformed response to {answer.what}: usage lacks {', '.join(keys)} ({usage!r})",
                status=answer.status,
            )
        seconds = answer.elapsed_ms / 1000.0
        return {
            "status": answer.status,
            "latency_ms": answer.elapsed_ms,
            "content": _snippet(content, 200),
            "finish_reason": finish,
            "usage": {k: usage[k] for k in keys},
            "output_tokens_per_s": round(usage["completion_tokens"] / seconds, 1) if seconds > 0 else None,
        }

    def check_tool_call(self) -> dict[str, t.Any]:
        name = TOOL["function"]["name"]
        choice_value: t.Any = self.settings.tool_choice
        if choice_value == "named":
            choice_value = {"type": "function", "function": {"name": name}}
        payload = self.chat_payload(max(self.settings.max_tokens, TOOL_MIN_TOKENS), tools=[TOOL])
        payload["messages"] = [{"role": "user", "content": TOOL_PROMPT}]
        payload["tool_choice"] = choice_value
        answer = self.post("/v1/chat/completions", payload)
        _doc, choice, message = self.completion(answer)
        finish = choice.get("finish_reason")
        calls = message.get("tool_calls")

        def malformed(what: str) -> ProbeError:
            return ProbeError(
                "malformed_response", f"malformed tool call from {answer.what}: {what}", status=answer.status
            )

        if not isinstance(calls, list) or not calls:
            raise self.no_tool_call(answer, finish, message.get("content"))
        call = calls[0]
        if not isinstance(call, dict) or call.get("type") != "function":
            raise malformed(
                f"tool_calls[0].type is {call.get('type') if isinstance(call, dict) else call!r}, not 'function'"
            )
        function = call.get("function")
        if not isinstance(function, dict) or function.get("name") != name:
            called = function.get("name") if isinstance(function, dict) else function
            raise malformed(f"tool_calls[0].function.name is {called!r}, not the requested tool {name!r}")
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            raise malformed(f"tool_calls[0].function.arguments is {type(arguments).__name__}, not a JSON string")
        try:
            parsed = json.loads(arguments)
        except ValueError as exc:
            raise malformed(f"tool_calls[0].function.arguments is not valid JSON ({exc}): {arguments!r}") from exc
        if not isinstance(parsed, dict):
            raise malformed(f"tool_calls[0].function.arguments is not a JSON object: {arguments!r}")
        return {
            "status": answer.status,
            "latency_ms": answer.elapsed_ms,
            "tool_choice": self.settings.tool_choice,
            "finish_reason": finish,
            "tool_calls": len(calls),
            "id": call.get("id"),
            "name": name,
            "arguments": parsed,
        }

    def no_tool_call(self, answer: _Answer, finish: t.Any, content: t.Any) -> ProbeError:
        """A well-formed answer that calls no tool, with the advice that fits the tool choice and the release."""
        said = f"finish_reason {finish!r}, content {_snippet(content or '', 80)!r}"
        if self.settings.tool_choice == "auto":
            advice = (
                "with tool_choice auto the model may answer in text, or the server's --tool-call-parser does not "
                "match the model's format (mistral for Mistral models); probe with tool_choice: named to force a call"
            )
        else:
            # Before 0.33 vLLM forces required/named calls with guided decoding (no parser involved).
            advice = (
                f"tool_choice {self.settings.tool_choice} should force a call; vLLM forces it with guided decoding "
                "before 0.33 and through --tool-call-parser from 0.33, so check the structured-output backend or "
                "the parser"
            )
        return ProbeError(
            "no_tool_call", f"{answer.what} answered without a tool call ({said}): {advice}", status=answer.status
        )

    def stream_chat(self, max_tokens: int) -> dict[str, t.Any]:
        """One streamed chat completion, timed: time to first token, time per output token after it."""
        path = "/v1/chat/completions"
        payload = self.chat_payload(max_tokens, stream=True, stream_options={"include_usage": True})
        timeout = self.settings.timeout
        start = time.perf_counter()
        response = self.client.open("POST", path, payload, timeout)
        status = getattr(response, "status", None) or response.code
        what = f"POST {path} (stream)"

        def malformed(text: str) -> ProbeError:
            return ProbeError("malformed_response", f"malformed stream from {what}: {text}", status=status)

        arrivals: list[float] = []
        parts: list[str] = []
        chunks = 0
        done = False
        usage = None
        finish = None
        try:
            with response:
                if status != 200:
                    body = b"".join(_chunks(response, start, timeout, what))
                    raise self.status_error(_Answer("POST", path, status, response.headers, body, 0.0))
                content_type = response.headers.get("Content-Type", "")
                if "text/event-stream" not in content_type:
                    raise malformed(f"Content-Type is {content_type!r}, not text/event-stream")
                for raw in _lines(_chunks(response, start, timeout, what)):
                    now = time.perf_counter()
                    line = raw.decode("utf-8", "replace").strip()
                    if not line.startswith("data:"):
                        continue  # blank separators, comments, event/id fields
                    data = line[len("data:") :].strip()
                    if data == "[DONE]":
                        done = True
                        break
                    try:
                        chunk = json.loads(data)
                    except ValueError:
                        raise malformed(f"event {chunks + 1} is not JSON: {_snippet(data)!r}") from None
                    chunks += 1
                    if isinstance(chunk, dict) and chunk.get("error"):
                        message = _error_body(data.encode())[0]
                        raise ProbeError("http_error", f"{what} carried an error: {message}", status=status)
                    choices = chunk.get("choices") if isinstance(chunk, dict) else None
                    if not isinstance(choices, list) or chunk.get("object") != "chat.completion.chunk":
                        raise malformed(f"event {chunks} is not a chat.completion.chunk: {_snippet(data)!r}")
                    if isinstance(chunk.get("usage"), dict):
                        usage = chunk["usage"]
                    for choice in choices[:1]:
                        delta = choice.get("delta") if isinstance(choice, dict) else None
                        text = delta.get("content") if isinstance(delta, dict) else None
                        if text:
                            arrivals.append(now)
                            parts.append(text)
                        if isinstance(choice, dict) and choice.get("finish_reason"):
                            finish = choice["finish_reason"]
        except (OSError, http.client.HTTPException) as exc:
            raise self.client.transport_error(exc, "POST", path, timeout) from exc
        end = time.perf_counter()
        # Complete with 'data: [DONE]' (vLLM), or when the last choice carried a finish_reason (transformers serve
        # and several gateways send no [DONE]; the openai client ends such a stream normally too).
        if not done and finish is None:
            raise malformed(f"the stream ended after {chunks} events without 'data: [DONE]' or a finish_reason")
        if not arrivals:
            raise malformed(f"no content in {chunks} events (every delta.content empty)")
        tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
        if not isinstance(tokens, int) or tokens < 1:
            tokens = len(arrivals)
        return {
            "status": status,
            "latency_ms": _ms(end - start),
            "ttft_ms": _ms(arrivals[0] - start),
            # Time per output token after the first (usage counts tokens; one event may carry several).
            "inter_token_ms": _ms((arrivals[-1] - arrivals[0]) / (tokens - 1)) if tokens > 1 else None,
            "events": chunks,
            "completion_tokens": tokens,
            "finish_reason": finish,
            "done_marker": done,
            "content": _snippet("".join(parts), 200),
        }

    def check_stream(self) -> dict[str, t.Any]:
        measured = self.stream_chat(self.settings.max_tokens)
        self.ttft_ms = measured["ttft_ms"]
        self.inter_token_ms = measured["inter_token_ms"]
        return measured

    def check_metrics(self) -> dict[str, t.Any]:
        answer = self.get("/metrics")
        if answer.status == 404:
            raise ProbeError(
                "no_metrics_endpoint",
                "GET /metrics is 404: this server exposes no Prometheus metrics (vLLM serves them at /metrics; is it "
                "another server, or a gateway that does not route /metrics?)",
                status=404,
            )
        if answer.status != 200:
            raise self.status_error(answer)
        names: set[str] = set()
        values: dict[str, float] = {}
        for line in answer.body.decode("utf-8", "replace").splitlines():
            match = _METRIC_NAME.match(line)
            if not match:
                continue
            name = match.group(1)
            names.add(name)
            if name in _REPORTED_METRICS:
                try:
                    values[name] = values.get(name, 0.0) + float(match.group(3))
                except ValueError:
                    pass
        vllm_names = sorted(n for n in names if n.startswith("vllm:"))
        if not vllm_names:
            raise ProbeError(
                "malformed_response",
                f"GET /metrics has no vllm: series ({len(names)} other series): is this a vLLM server?",
                status=answer.status,
            )
        return {
            "status": 200,
            "latency_ms": answer.elapsed_ms,
            "series": len(vllm_names),
            "values": {name.split(":", 1)[1]: value for name, value in values.items()},
        }

    def check_load(self) -> dict[str, t.Any]:
        load = self.settings.load or LoadSettings()
        requests = max(load.requests, 1)
        measured: list[dict[str, t.Any]] = []
        errors: list[ProbeError] = []
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=max(1, min(load.concurrency, requests))) as pool:
            futures = [pool.submit(self.stream_chat, load.max_tokens) for _index in range(requests)]
            for future in as_completed(futures):
                try:
                    measured.append(future.result())
                except ProbeError as err:
                    errors.append(err)
        seconds = time.perf_counter() - start
        tokens = sum(m["completion_tokens"] for m in measured)
        by_reason: dict[str, int] = {}
        for err in errors:
            by_reason[err.reason] = by_reason.get(err.reason, 0) + 1
        self.load = {
            "requests": requests,
            "concurrency": load.concurrency,
            "max_tokens": load.max_tokens,
            "succeeded": len(measured),
            "errors": len(errors),
            "errors_by_reason": by_reason,
            "first_error": errors[0].message if errors else None,
            "duration_ms": _ms(seconds),
            "latency_ms": _summary([m["latency_ms"] for m in measured]),
            "ttft_ms": _summary([m["ttft_ms"] for m in measured]),
            "inter_token_ms": _summary([m["inter_token_ms"] for m in measured if m["inter_token_ms"] is not None]),
            "output_tokens": tokens,
            "output_tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else None,
            "requests_per_s": round(len(measured) / seconds, 2) if seconds > 0 else None,
        }
        summary = {
            "latency_ms": self.load["latency_ms"]["p50"],
            "succeeded": len(measured),
            "errors": len(errors),
            "output_tokens_per_s": self.load["output_tokens_per_s"],
        }
        if len(errors) > load.max_errors or not measured:
            raise ProbeError(
                errors[0].reason if errors else "http_error",
                f"{len(errors)} of {requests} requests failed (max_errors {load.max_errors}); first: "
                + (errors[0].message if errors else "none"),
                **summary,
            )
        return summary


def probe(target: Target, settings: ProbeSettings | None = None) -> dict[str, t.Any]:
    """Wait for ``target`` to serve, run the checks of ``settings`` and return the results as plain data.

    Keys: ``url``, ``service``, ``model`` (the id probed), ``models`` (ids served), ``version``, ``waited_ms``,
    ``ttft_ms``, ``inter_token_ms``, ``load`` (statistics, or None), ``checks`` (per check: ``passed``,
    ``reason``, ``msg`` when failed, ``latency_ms`` and what it measured), ``elapsed_ms`` and ``failed``; when
    failed also ``failed_check``, ``reason`` and ``msg`` (``"<check>: <what to do>"``).
    """
    settings = settings or ProbeSettings()
    unknown = set(settings.checks) - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown checks: {', '.join(sorted(unknown))}")
    if settings.tool_choice not in TOOL_CHOICES:
        raise ValueError(f"tool_choice must be one of {', '.join(TOOL_CHOICES)}")
    return _Probe(target, settings).run()
