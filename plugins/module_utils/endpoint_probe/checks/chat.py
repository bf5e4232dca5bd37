# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The non-streamed chat completion checks: ``chat`` (an answer of the documented shape, with usage) and
``tool_call`` (a call of the probe's tool, with the advice that fits the tool choice and the vLLM release)."""

from __future__ import annotations

import json
import typing as t

from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.errors import ProbeError
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.session import _Session
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.transport import (
    _Answer,
    _json_body,
    _snippet,
)

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


def chat_payload(session: _Session, max_tokens: int, **extra: t.Any) -> dict[str, t.Any]:
    """A greedy chat request for the probed model with the settings' prompt; ``extra`` adds or replaces keys."""
    payload = {
        "model": session.found.model,
        "messages": [{"role": "user", "content": session.settings.prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    payload.update(extra)
    return payload


def completion(session: _Session, answer: _Answer) -> tuple[dict[str, t.Any], dict[str, t.Any], dict[str, t.Any]]:
    """The document, choices[0] and its message of a non-streamed chat completion."""
    if answer.status != 200:
        raise session.status_error(answer)
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


def check_chat(session: _Session) -> dict[str, t.Any]:
    """One chat completion: non-empty content, a finish_reason and token usage; output tokens per second."""
    answer = session.post("/v1/chat/completions", chat_payload(session, session.settings.max_tokens))
    doc, choice, message = completion(session, answer)
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


def check_tool_call(session: _Session) -> dict[str, t.Any]:
    """A chat completion offered :data:`TOOL` with the settings' tool_choice: one well-formed call of it."""
    settings = session.settings
    name = TOOL["function"]["name"]
    choice_value: t.Any = settings.tool_choice
    if choice_value == "named":
        choice_value = {"type": "function", "function": {"name": name}}
    payload = chat_payload(session, max(settings.max_tokens, TOOL_MIN_TOKENS), tools=[TOOL])
    payload["messages"] = [{"role": "user", "content": TOOL_PROMPT}]
    payload["tool_choice"] = choice_value
    answer = session.post("/v1/chat/completions", payload)
    _doc, choice, message = completion(session, answer)
    finish = choice.get("finish_reason")
    calls = message.get("tool_calls")

    def malformed(what: str) -> ProbeError:
        return ProbeError("malformed_response", f"malformed tool call from {answer.what}: {what}", status=answer.status)

    if not isinstance(calls, list) or not calls:
        raise no_tool_call(settings.tool_choice, answer, finish, message.get("content"))
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
        "tool_choice": settings.tool_choice,
        "finish_reason": finish,
        "tool_calls": len(calls),
        "id": call.get("id"),
        "name": name,
        "arguments": parsed,
    }


def no_tool_call(tool_choice: str, answer: _Answer, finish: t.Any, content: t.Any) -> ProbeError:
    """A well-formed answer that calls no tool, with the advice that fits the tool choice and the release."""
    said = f"finish_reason {finish!r}, content {_snippet(content or '', 80)!r}"
    if tool_choice == "auto":
        advice = (
            "with tool_choice auto the model may answer in text, or the server's --tool-call-parser does not "
            "match the model's format (mistral for Mistral models); probe with tool_choice: named to force a call"
        )
    else:
        # Before 0.33 vLLM forces required/named calls with guided decoding (no parser involved).
        advice = (
            f"tool_choice {tool_choice} should force a call; vLLM forces it with guided decoding "
            "before 0.33 and through --tool-call-parser from 0.33, so check the structured-output backend or "
            "the parser"
        )
    return ProbeError(
        "no_tool_call", f"{answer.what} answered without a tool call ({said}): {advice}", status=answer.status
    )
