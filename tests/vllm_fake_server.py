"""A fake vLLM server for tests: vLLM's OpenAI-compatible HTTP API over real HTTP, on pytest-httpserver.

It answers like ``vllm serve /ram-models/mistral-7b-v0-3 --enable-auto-tool-choice --tool-call-parser=mistral``
(the reference deployment) does, release by release (``FakeVLLMConfig.release``; the behaviours that differ were
read from vLLM 0.9.0, 0.10.2, 0.11.2 and 0.33.0 and cite the file they copy):

- while loading, **connections are refused**: vLLM binds its port, builds the engine, and only then listens
  (0.9.0 ``entrypoints/openai/api_server.py`` run_server: ``create_server_socket`` binds, ``serve_http`` listens
  after ``build_async_engine_client``; 0.33.0 ``entrypoints/launchers``). ``loading="status"`` answers 503 instead,
  as a proxy or gateway in front of a loading server does; ``loading="silent"`` accepts and says nothing;
- ``GET /health``: 200 with an empty body; with ``engine_dead``: 200 on 0.9.0 (V1 ``AsyncLLM.check_health`` only
  logs), a bare 500 on 0.10 (``EngineDeadError`` through ``entrypoints/launcher.py``'s handler), 503 from 0.11
  (``api_server.py`` health: ``except EngineDeadError: return Response(status_code=503)``);
- ``GET /v1/models``: ``{"object": "list", "data": [{"id", "object": "model", "owned_by": "vllm", "root",
  "parent", "max_model_len", ...}]}``;
- ``GET /version``: ``{"version": "0.9.0"}``;
- ``POST /v1/chat/completions``: a chat completion with ``usage``; with tools, a tool call in the Mistral
  parser's shape (an id of 9 letters and digits, ``type: function``, ``arguments`` as a JSON string,
  ``content: null``, ``finish_reason: tool_calls``); with ``stream: true``, server-sent events
  (``data: {chat.completion.chunk}``), a usage event when ``stream_options.include_usage`` is set, then
  ``data: [DONE]``;
- ``GET /metrics``: Prometheus text with ``vllm:num_requests_running``, ``vllm:num_requests_waiting``, ...;
- 401 ``{"error": "Unauthorized"}`` on ``/v1/*`` when an API key is configured and the bearer token is
  missing or wrong; 404 ``NotFoundError`` for an unknown model id; 400 for ``tool_choice: auto`` when auto tool
  choice is off. Error bodies are flat (``{"object": "error", "message", ...}``) before 0.10.1 and nested
  (``{"error": {"message", "type", "param", "code"}}``) from 0.10.1 (0.33.0 ``serve/engine/protocol.py``);
- tool calls: ``auto`` goes through the tool parser (Mistral: 9-character ids, ``finish_reason: tool_calls``);
  ``required`` and named choice use guided decoding before 0.33 (0.9.0 ``serving_chat.py``: ids
  ``chatcmpl-tool-<32 hex>``, ``content: ""``, the engine's ``finish_reason``, ``stop``) and the parser from 0.33
  (``renderers/online_renderer.py``: without ``--tool-call-parser`` a 400 ``tool_choice="required" requires
  --tool-call-parser to be set``; ``serve/utils/tool_calls_utils.py``: required gives ``tool_calls``, named ``stop``).

Every answer is computed from :class:`FakeVLLMConfig` when the request arrives, so a test can change the
config of a running server to make it misbehave (malformed JSON, no tool call, bad tool arguments, empty
content, slow streaming, never ready, ready after N seconds, ...).

Use it as a context manager or through the ``fake_vllm`` fixture::

    from ansible_collections.llmops.vllm.tests.vllm_fake_server import FakeVLLM, FakeVLLMConfig, fake_vllm

    def test_something(fake_vllm):            # a started server with the default config
        fake_vllm.config.tool_calls = False    # from now on the model answers tool requests in text
        probe(url_target(fake_vllm.url), ...)

    with FakeVLLM(FakeVLLMConfig(api_key="s3cret", ready_after=2)) as server:
        ...                                    # server.url, server.requests, server.load_for(5)

Or as a process started the way vLLM is, from the real node's images (``tests/fake_vllm_cli.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import ipaddress
import json
import math
import random
import re
import socket
import ssl
import string
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

DEFAULT_MODEL = "/ram-models/mistral-7b-v0-3"
VLLM_VERSION = "0.9.0"
LOADING_MODES = ("refuse", "status", "silent")


def release_key(version: str) -> tuple[int, ...]:
    """``0.10.1`` as ``(0, 10, 1)``, for comparing releases."""
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


CHAT_PATH = "/v1/chat/completions"


@dataclasses.dataclass
class FakeVLLMConfig:
    """What the server serves and how it misbehaves. Read at every request: change it while the server runs."""

    #: Served model ids (``--model`` / ``--served-model-name``); the reference serves its RAM path.
    models: list[str] = dataclasses.field(default_factory=lambda: [DEFAULT_MODEL])
    max_model_len: int = 2048
    #: The vLLM release whose behaviour the server copies (see the module docstring).
    release: str = VLLM_VERSION
    #: What ``/version`` says: ``""`` the release, ``None`` a 404.
    version: str | None = ""
    #: Set: ``/v1/*`` wants ``Authorization: Bearer <api_key>`` (vLLM ``--api-key``).
    api_key: str | None = None
    #: What the model says; split into tokens at word boundaries.
    reply: str = "The capital of France is Paris."
    #: Seconds after start during which the server loads (see also ``load_for``).
    ready_after: float = 0.0
    #: While loading: ``refuse`` connections (vLLM itself), answer ``loading_status`` (a gateway or the API
    #: server's service proxy in front), or accept and stay ``silent``.
    loading: str = "refuse"
    loading_status: int = 503
    #: Paths whose JSON (including stream events, for the chat path) is cut in half.
    malformed_json: set[str] = dataclasses.field(default_factory=set)
    #: ``False``: tool requests get a text answer and no ``tool_calls`` (a missing or wrong tool parser).
    tool_calls: bool = True
    #: Set: the raw ``arguments`` string of every tool call (for example broken JSON).
    tool_arguments: str | None = None
    #: ``False``: ``tool_choice: auto`` gets vLLM's 400 (server started without ``--enable-auto-tool-choice``).
    auto_tool_choice: bool = True
    #: ``--tool-call-parser``; ``None``: none (0.33 then refuses required and named tool choice too).
    tool_parser: str | None = "mistral"
    #: ``True``: the engine died (see the module docstring for what each release answers).
    engine_dead: bool = False
    #: ``True``: chat answers carry empty content (and a stream carries no content).
    empty_content: bool = False
    #: Seconds before each streamed token (slow streaming).
    token_delay: float = 0.0
    #: Seconds before a chat completion is answered (a slow or stuck engine).
    response_delay: float = 0.0
    #: ``False``: the stream ends without ``data: [DONE]`` (transformers serve and several gateways).
    stream_done: bool = True
    #: ``False``: the stream stops after the content, without the event carrying ``finish_reason`` (cut off).
    stream_finish: bool = True
    #: ``False``: ``/metrics`` carries only process series, no ``vllm:`` ones.
    metrics: bool = True
    #: ``False``: no ``/metrics`` route at all (404), as on servers that are not vLLM.
    metrics_endpoint: bool = True


@dataclasses.dataclass(frozen=True)
class SeenRequest:
    """A request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any


@dataclasses.dataclass(frozen=True)
class TLSFiles:
    """PEM files for TLS tests: a CA, a server certificate it signed (for localhost and 127.0.0.1), a client
    certificate it signed, and a self-signed server certificate no CA vouches for."""

    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path
    self_signed_cert: Path
    self_signed_key: Path

    def server_context(self, self_signed: bool = False, require_client_cert: bool = False) -> ssl.SSLContext:
        """A server-side SSL context for ``FakeVLLM(ssl_context=...)``."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if self_signed:
            context.load_cert_chain(self.self_signed_cert, self.self_signed_key)
        else:
            context.load_cert_chain(self.cert, self.key)
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.ca)
        return context


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class FakeVLLM:
    """A fake vLLM server in a thread. ``url`` is known before ``start()``, so a test can start it late."""

    def __init__(
        self,
        config: FakeVLLMConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config or FakeVLLMConfig()
        self.host = host
        self.port = port or free_port(host)
        self.ssl_context = ssl_context
        self._server = HTTPServer(host=host, port=self.port, ssl_context=ssl_context, threaded=True)
        self._ready_at = 0.0
        self._stopped = threading.Event()
        self._aborting = threading.Event()
        self._stranded = threading.Event()
        self._lock = threading.Lock()
        self._running = 0
        self._prompt_tokens = 0
        self._generation_tokens = 0
        self._finished: dict[str, int] = {}
        self._routes()

    # ------------------------------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """Base URL, for example ``http://127.0.0.1:41234`` (no trailing slash, no ``/v1``)."""
        scheme = "https" if self.ssl_context else "http"
        host = "localhost" if self.ssl_context and self.host == "127.0.0.1" else self.host
        return f"{scheme}://{host}:{self.port}"

    def start(self) -> FakeVLLM:
        self._stopped.clear()
        self._ready_at = time.monotonic() + self.config.ready_after
        if self.config.loading == "refuse" and self.config.ready_after > 0:
            self.start_later(self.config.ready_after)  # the port is bound but not listening: refused
        elif not self._server.is_running():
            self._server.start()
        return self

    def start_later(self, seconds: float) -> threading.Timer:
        """Start listening after ``seconds``: until then connections are refused."""

        def listen() -> None:
            if not self._stopped.is_set() and not self._server.is_running():
                self._server.start()

        timer = threading.Timer(seconds, listen)
        timer.daemon = True
        timer.start()
        return timer

    def stop(self) -> None:
        self._stopped.set()
        if self._server.is_running():
            self._server.stop()

    def strand(self) -> None:
        """What vLLM before 0.18 does on SIGTERM to requests in flight (tests/fake_vllm_cli.py): their streams get
        nothing more, and no error either."""
        self._stranded.set()

    @property
    def in_flight(self) -> int:
        """Requests still generating (streams, and answers that take ``token_delay`` per token)."""
        return self._running

    def shutdown(self, drain_seconds: float = 0.0) -> None:
        """What vLLM does on SIGTERM (tests/fake_vllm_cli.py): the listener closes at once, so new connections are
        refused; requests in flight finish within ``drain_seconds``, and streams still running then end with
        ``finish_reason: "abort"``."""
        if self._server.is_running():
            # The listening socket refuses new connections now, not at the serving loop's next poll (0.5 s).
            with contextlib.suppress(OSError):
                self._server.server.socket.shutdown(socket.SHUT_RDWR)
        self.stop()
        deadline = time.monotonic() + drain_seconds
        while self._running and time.monotonic() < deadline:
            time.sleep(0.05)
        self._aborting.set()
        deadline = time.monotonic() + 1.0  # the aborted streams write their last events
        while self._running and time.monotonic() < deadline:
            time.sleep(0.02)

    def __enter__(self) -> FakeVLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def load_for(self, seconds: float = math.inf) -> None:
        """Load (again) for ``seconds`` from now, ``inf``: forever; how it looks depends on ``config.loading``."""
        self._ready_at = time.monotonic() + seconds
        if self.config.loading == "refuse":
            if self._server.is_running():
                self._server.stop()
            if seconds != math.inf:
                self.start_later(seconds)

    @property
    def loading(self) -> bool:
        return time.monotonic() < self._ready_at

    @property
    def requests(self) -> list[SeenRequest]:
        """Every request received so far, in order."""
        seen = []
        for request, _response in list(self._server.log):
            seen.append(
                SeenRequest(
                    request.method, request.path, dict(request.headers), request.get_json(silent=True, force=True)
                )
            )
        return seen

    def requests_to(self, path: str, method: str | None = None) -> list[SeenRequest]:
        return [r for r in self.requests if r.path == path and (method is None or r.method == method)]

    # ------------------------------------------------------------------------------------------ routing

    def _routes(self) -> None:
        routes = (
            ("/health", "GET", self._health),
            ("/version", "GET", self._version),
            ("/v1/models", "GET", self._models),
            (CHAT_PATH, "POST", self._chat),
            ("/metrics", "GET", self._metrics),
        )
        for path, method, handler in routes:
            self._server.expect_request(path, method=method).respond_with_handler(self._guard(path, handler))
        # Anything else: FastAPI's 404.
        self._server.expect_request(re.compile(".*")).respond_with_handler(
            self._guard(None, lambda request: _json_response({"detail": "Not Found"}, 404))
        )

    def _guard(self, path: str | None, handler: Any) -> Any:
        def respond(request: Request) -> Response:
            if self.loading:
                if self.config.loading == "status":
                    return Response(b"", status=self.config.loading_status)
                while self.loading and not self._stopped.is_set():
                    time.sleep(0.05)
            # vLLM's AuthenticationMiddleware guards /v1 only; /health, /version and /metrics stay open.
            if self.config.api_key and request.path.startswith("/v1"):
                if request.headers.get("Authorization") != f"Bearer {self.config.api_key}":
                    return _json_response({"error": "Unauthorized"}, 401)
            return handler(request)

        return respond

    def _json(self, path: str, doc: Any, status: int = 200) -> Response:
        text = json.dumps(doc)
        if path in self.config.malformed_json:
            text = text[: len(text) // 2]
        return Response(text, status=status, content_type="application/json")

    # ------------------------------------------------------------------------------------------ endpoints

    def _health(self, request: Request) -> Response:
        if self.config.engine_dead and self._at_least("0.11"):
            return Response(b"", status=503)
        if self.config.engine_dead and self._at_least("0.10"):
            return Response(b"", status=500)
        return Response(b"", status=200)

    def _at_least(self, release: str) -> bool:
        return release_key(self.config.release) >= release_key(release)

    def _error(self, status: int, kind: str, message: str, param: str | None = None) -> Response:
        """vLLM's ErrorResponse: flat before 0.10.1, nested under "error" from 0.10.1."""
        if self._at_least("0.10.1"):
            return _json_response({"error": {"message": message, "type": kind, "param": param, "code": status}}, status)
        return _json_response(
            {"object": "error", "message": message, "type": kind, "param": None, "code": status}, status
        )

    def _version(self, request: Request) -> Response:
        if self.config.version is None:
            return _json_response({"detail": "Not Found"}, 404)
        return self._json("/version", {"version": self.config.version or self.config.release})

    def _models(self, request: Request) -> Response:
        created = int(time.time())
        data = [
            {
                "id": model,
                "object": "model",
                "created": created,
                "owned_by": "vllm",
                "root": model,
                "parent": None,
                "max_model_len": self.config.max_model_len,
                "permission": [
                    {
                        "id": f"modelperm-{uuid.uuid4().hex}",
                        "object": "model_permission",
                        "created": created,
                        "allow_create_engine": False,
                        "allow_sampling": True,
                        "allow_logprobs": True,
                        "allow_search_indices": False,
                        "allow_view": True,
                        "allow_fine_tuning": False,
                        "organization": "*",
                        "group": None,
                        "is_blocking": False,
                    }
                ],
            }
            for model in self.config.models
        ]
        return self._json("/v1/models", {"object": "list", "data": data})

    def _chat(self, request: Request) -> Response:
        config = self.config
        body = request.get_json(silent=True, force=True)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return self._error(400, "BadRequestError", "the request body must be a JSON object with messages")
        if config.engine_dead:
            if self._at_least("0.33"):  # serve/exception_handling/error_response.py
                return self._error(500, "InternalServerError", "The server had an error while processing your request.")
            return Response(b"", status=500)  # entrypoints/launcher.py: Response(status_code=500)
        model = body.get("model")
        if model not in config.models:
            suffix = f" Valid aliases: {', '.join(config.models)}." if self._at_least("0.33") else ""
            return self._error(404, "NotFoundError", f"The model `{model}` does not exist.{suffix}", "model")
        tools = body.get("tools") or []
        tool_choice = body.get("tool_choice", "auto" if tools else "none")
        parsing = config.auto_tool_choice and config.tool_parser is not None
        if tools and tool_choice == "auto" and not parsing:
            return self._error(
                400,
                "BadRequestError",
                '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set',
            )
        if tools and tool_choice not in ("auto", "none") and not parsing and self._at_least("0.33"):
            named = isinstance(tool_choice, dict)
            desc = f'function "{tool_choice.get("function", {}).get("name")}"' if named else f'"{tool_choice}"'
            return self._error(400, "BadRequestError", f"tool_choice={desc} requires --tool-call-parser to be set")
        if config.response_delay:
            time.sleep(config.response_delay)
        max_tokens = body.get("max_tokens") or config.max_model_len
        prompt_tokens = 5 + sum(len(str(m.get("content", "")).split()) for m in body["messages"] if isinstance(m, dict))
        call = None
        # Before 0.33 required and named tool choice use guided decoding: a call whatever the parser does.
        guided = tools and tool_choice not in ("auto", "none") and not self._at_least("0.33")
        if tools and tool_choice != "none" and (config.tool_calls or guided):
            call = self._tool_call(tools, tool_choice, guided)
            reply = ""
        elif tools and tool_choice != "none":
            reply = "I cannot look up the weather, but Paris is usually mild."
        else:
            reply = "" if config.empty_content else config.reply
        tokens = re.findall(r"\s*\S+", reply)[:max_tokens]
        finish = "length" if len(re.findall(r"\S+", reply)) > max_tokens else "stop"
        if call and (tool_choice == "auto" or (tool_choice == "required" and not guided)):
            finish = "tool_calls"  # named choice and guided decoding keep the engine's reason
        completion_tokens = 24 if call else len(tokens)
        self._account(prompt_tokens, completion_tokens, finish)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return self._stream(model, tokens, call, finish, prompt_tokens, completion_tokens, include_usage)
        made = self._generate(len(tokens))
        if made < len(tokens):  # aborted on SIGTERM: what was made, with the engine's reason
            tokens, finish = tokens[:made], "abort"
        message: dict[str, Any] = {"role": "assistant", "reasoning_content": None}
        if call:
            message.update(content=None if tool_choice == "auto" else "", tool_calls=[call])
        else:
            message.update(content="".join(tokens), tool_calls=[])
        doc = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish, "stop_reason": None}
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "completion_tokens": completion_tokens,
                "prompt_tokens_details": None,
            },
            "prompt_logprobs": None,
        }
        return self._json(CHAT_PATH, doc)

    def _generate(self, count: int) -> int:
        """A non-streamed answer's generation: ``token_delay`` per token, under the same SIGTERM rules as a stream
        (stranded: nothing more; aborted: it ends). How many tokens were made."""
        if not self.config.token_delay:
            return count
        with self._lock:
            self._running += 1
        try:
            for made in range(count):
                time.sleep(self.config.token_delay)
                while self._stranded.is_set() and not self._aborting.is_set():
                    time.sleep(0.1)
                if self._aborting.is_set():
                    return made
            return count
        finally:
            with self._lock:
                self._running -= 1

    def _tool_call(self, tools: list[dict[str, Any]], tool_choice: Any, guided: bool = False) -> dict[str, Any]:
        function = tools[0].get("function", {})
        if isinstance(tool_choice, dict):
            wanted = tool_choice.get("function", {}).get("name")
            function = next((t["function"] for t in tools if t.get("function", {}).get("name") == wanted), function)
        schema = function.get("parameters") or {}
        arguments = {}
        for name in schema.get("required", []):
            kind = schema.get("properties", {}).get(name, {}).get("type", "string")
            arguments[name] = {"integer": 1, "number": 1.5, "boolean": True}.get(kind, "Paris")
        raw = self.config.tool_arguments if self.config.tool_arguments is not None else json.dumps(arguments)
        if guided:  # 0.9.0 entrypoints/chat_utils.py random_tool_call_id: chatcmpl-tool-<uuid4 hex>
            call_id = f"chatcmpl-tool-{uuid.uuid4().hex}"
        else:  # MistralToolCall ids: 9 characters from letters and digits.
            call_id = "".join(random.choices(string.ascii_letters + string.digits, k=9))
        return {"id": call_id, "type": "function", "function": {"name": function.get("name"), "arguments": raw}}

    def _stream(
        self,
        model: str,
        tokens: list[str],
        call: dict[str, Any] | None,
        finish: str,
        prompt_tokens: int,
        completion_tokens: int,
        include_usage: bool,
    ) -> Response:
        config = self.config
        chunk_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())

        def event(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> str:
            doc: dict[str, Any] = {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": choices,
            }
            if usage is not None:
                doc["usage"] = usage
            text = json.dumps(doc)
            if CHAT_PATH in config.malformed_json:
                text = text[: len(text) // 2]
            return f"data: {text}\n\n"

        def delta(content: dict[str, Any], finish_reason: str | None = None) -> list[dict[str, Any]]:
            return [{"index": 0, "delta": content, "logprobs": None, "finish_reason": finish_reason}]

        def events() -> Iterator[str]:
            with self._lock:
                self._running += 1
            try:
                yield event(delta({"role": "assistant", "content": ""}))
                if call:
                    yield event(delta({"tool_calls": [dict(call, index=0)]}))
                for token in tokens:
                    if config.token_delay:
                        time.sleep(config.token_delay)
                    while self._stranded.is_set() and not self._aborting.is_set():
                        time.sleep(0.1)
                    if self._aborting.is_set():
                        yield event(delta({"content": ""}, "abort"))
                        yield "data: [DONE]\n\n"
                        return
                    yield event(delta({"content": token}))
                if not config.stream_finish:
                    return
                yield event(delta({"content": ""}, finish))
                if include_usage:
                    usage = {
                        "prompt_tokens": prompt_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                        "completion_tokens": completion_tokens,
                    }
                    yield event([], usage)
                if config.stream_done:
                    yield "data: [DONE]\n\n"
            finally:
                with self._lock:
                    self._running -= 1

        return Response(events(), status=200, content_type="text/event-stream; charset=utf-8")

    def _account(self, prompt_tokens: int, completion_tokens: int, finish: str) -> None:
        with self._lock:
            self._prompt_tokens += prompt_tokens
            self._generation_tokens += completion_tokens
            self._finished[finish] = self._finished.get(finish, 0) + 1

    def _metrics(self, request: Request) -> Response:
        if not self.config.metrics_endpoint:
            return _json_response({"detail": "Not Found"}, 404)
        lines = [
            "# HELP python_info Python platform information",
            "# TYPE python_info gauge",
            'python_info{implementation="CPython",major="3",minor="12",patchlevel="3",version="3.12.3"} 1.0',
            "# HELP process_resident_memory_bytes Resident memory size in bytes.",
            "# TYPE process_resident_memory_bytes gauge",
            "process_resident_memory_bytes 1.2345e+09",
        ]
        if self.config.metrics:
            model = self.config.models[0] if self.config.models else ""
            labels = f'engine="0",model_name="{model}"'
            with self._lock:
                series = (
                    ("num_requests_running", "gauge", "Number of requests in model execution batches.", self._running),
                    ("num_requests_waiting", "gauge", "Number of requests waiting to be processed.", 0),
                    *self._cache_usage_series(),
                    ("prompt_tokens_total", "counter", "Number of prefill tokens processed.", self._prompt_tokens),
                    ("generation_tokens_total", "counter", "Number of generation tokens.", self._generation_tokens),
                )
                finished = dict(self._finished)
            for name, kind, text, value in series:
                lines += [f"# HELP vllm:{name} {text}", f"# TYPE vllm:{name} {kind}"]
                lines.append(f"vllm:{name}{{{labels}}} {float(value)}")
            lines += [
                "# HELP vllm:request_success_total Count of successfully processed requests.",
                "# TYPE vllm:request_success_total counter",
            ]
            for reason, count in sorted(finished.items()):
                lines.append(f'vllm:request_success_total{{{labels},finished_reason="{reason}"}} {float(count)}')
        return Response("\n".join(lines) + "\n", status=200, content_type="text/plain; version=0.0.4; charset=utf-8")

    def _cache_usage_series(self) -> tuple[tuple[str, str, str, float], ...]:
        """The KV-cache gauge under the release's names (``v1/metrics/loggers.py``): ``gpu_cache_usage_perc`` only
        in 0.9.0-0.9.1; both from 0.9.2 (``kv_cache_usage_perc`` added); 0.11 hides the old one (shown only with
        ``--show-hidden-metrics-for-version=0.10``) and 0.12.0 removes it."""
        out = []
        if not self._at_least("0.11.0"):
            out.append(("gpu_cache_usage_perc", "gauge", "GPU KV-cache usage. 1 means 100 percent usage.", 0.0))
        if self._at_least("0.9.2"):
            out.append(("kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.", 0.0))
        return tuple(out)


def _json_response(doc: Any, status: int) -> Response:
    return Response(json.dumps(doc), status=status, content_type="application/json")


def make_tls_files(directory: Path) -> TLSFiles:
    """Write a CA, a server and a client certificate signed by it, and a self-signed server certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def write(stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
        cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return cert_path, key_path

    def issue(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: str,
        issuer_key: ec.EllipticCurvePrivateKey,
        ca: bool = False,
        usage: Any = None,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
        else:
            sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = issue("llmops test CA", ca_key, "llmops test CA", ca_key, ca=True)
    ca_path = write("ca", ca_cert, ca_key)[0]
    server_key = ec.generate_private_key(ec.SECP256R1())
    cert, key = write(
        "server",
        issue("localhost", server_key, "llmops test CA", ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH),
        server_key,
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert, client_key_path = write(
        "client",
        issue("probe", client_key, "llmops test CA", ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH),
        client_key,
    )
    lone_key = ec.generate_private_key(ec.SECP256R1())
    lone_cert, lone_key_path = write(
        "self-signed",
        issue("localhost", lone_key, "localhost", lone_key, usage=ExtendedKeyUsageOID.SERVER_AUTH),
        lone_key,
    )
    return TLSFiles(ca_path, cert, key, client_cert, client_key_path, lone_cert, lone_key_path)


def fake_vllm() -> Iterator[FakeVLLM]:
    """A started fake vLLM server with the default config; change ``fake_vllm.config`` to make it misbehave."""
    with FakeVLLM() as server:
        yield server


try:  # a fixture for the tests; the real node's images run the server without pytest (tests/fake_vllm_cli.py)
    import pytest
except ImportError:  # pragma: no cover - in the images
    pass
else:
    fake_vllm = pytest.fixture()(fake_vllm)
