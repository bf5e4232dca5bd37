# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Streamed chat completions: :func:`stream_chat` reads one server-sent event stream and times it (time to first
token, time per output token), and the ``stream`` check reports it; the load test runs many of them."""

from __future__ import annotations

import http.client
import json
import time
import typing as t

from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.checks.chat import chat_payload
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.errors import ProbeError
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.session import _Session
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.transport import (
    _Answer,
    _chunks,
    _error_body,
    _lines,
    _ms,
    _snippet,
)


def stream_chat(session: _Session, max_tokens: int) -> dict[str, t.Any]:
    """One streamed chat completion, timed: time to first token, time per output token after it."""
    path = "/v1/chat/completions"
    payload = chat_payload(session, max_tokens, stream=True, stream_options={"include_usage": True})
    timeout = session.settings.timeout
    start = time.perf_counter()
    response = session.client.open("POST", path, payload, timeout)
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
                raise session.status_error(_Answer("POST", path, status, response.headers, body, 0.0))
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
        raise session.client.transport_error(exc, "POST", path, timeout) from exc
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


def check_stream(session: _Session) -> dict[str, t.Any]:
    """One streamed chat completion; its time to first token and per output token become the result's."""
    measured = stream_chat(session, session.settings.max_tokens)
    session.found.ttft_ms = measured["ttft_ms"]
    session.found.inter_token_ms = measured["inter_token_ms"]
    return measured
