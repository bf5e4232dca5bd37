# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The checks that read the server without generating: ``health`` (the readiness wait), ``models``, ``version``
and ``metrics``."""

from __future__ import annotations

import re
import time
import typing as t

from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.errors import ProbeError
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.session import _Session
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.transport import (
    _host_port,
    _json_body,
    _ms,
    _snippet,
)

_METRIC_NAME = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_REPORTED_METRICS = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:gpu_cache_usage_perc",
    "vllm:kv_cache_usage_perc",
)


def check_health(session: _Session) -> dict[str, t.Any]:
    """Poll /health until 200, through refusals, 502/503/504 and silent ports, for up to wait_timeout."""
    settings = session.settings
    found = session.found
    start = time.monotonic()
    deadline = start + max(settings.wait_timeout, 0.0)
    attempts = 0
    answered = False  # something spoke HTTP, or accepted the connection and stayed silent
    while True:
        attempts += 1
        tried_at = time.monotonic()
        timeout = min(settings.timeout, max(deadline - tried_at, 1.0)) if settings.wait_timeout else None
        try:
            answer = session.get("/health", timeout)
            if answer.status == 200:
                found.waited_ms = _ms(tried_at - start)
                return {
                    "status": 200,
                    "latency_ms": answer.elapsed_ms,
                    "waited_ms": found.waited_ms,
                    "attempts": attempts,
                }
            err = session.status_error(answer)
            if answer.status == 500 and not session.target.service:
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
        found.waited_ms = _ms(time.monotonic() - start)
        if not transient:
            raise ProbeError(err.reason, err.message, attempts=attempts, waited_ms=found.waited_ms, **err.details)
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
                    f"connection refused by {_host_port(session.target.base_url)} on every attempt: vLLM refuses "
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
                waited_ms=found.waited_ms,
                last_seen=err.reason,
                **err.details,
            )
        time.sleep(max(0.0, min(settings.poll_interval, deadline - time.monotonic())))


def check_models(session: _Session) -> dict[str, t.Any]:
    """GET /v1/models: the ids served; picks the model to probe when none is named."""
    found = session.found
    answer = session.get("/v1/models")
    if answer.status != 200:
        raise session.status_error(answer)
    doc = _json_body(answer)
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list) or not all(isinstance(m, dict) and isinstance(m.get("id"), str) for m in data):
        raise ProbeError(
            "malformed_response",
            f'malformed response to GET /v1/models: expected {{"object": "list", "data": [{{"id": ...}}]}}'
            f", got {_snippet(answer.body)!r}",
            status=answer.status,
        )
    found.models = [m["id"] for m in data]
    listed = ", ".join(found.models)
    if session.settings.model is not None:
        if session.settings.model not in found.models:
            raise ProbeError(
                "model_not_found",
                f"model {session.settings.model!r} is not served; the server lists: {listed or 'nothing'}",
                status=answer.status,
                models=found.models,
            )
    else:
        # LoRA adapters are listed with their base model as parent; the default is the only base model.
        bases = [m["id"] for m in data if not m.get("parent")]
        if len(bases) == 1:
            found.model = bases[0]
        elif not found.models:
            raise ProbeError("model_not_found", "the server lists no models (GET /v1/models)", status=200)
        else:
            raise ProbeError(
                "model_ambiguous",
                f"the server lists several models ({listed}): set model to the one to probe",
                status=answer.status,
                models=found.models,
            )
    card = next(m for m in data if m["id"] == found.model)
    return {
        "status": answer.status,
        "latency_ms": answer.elapsed_ms,
        "models": found.models,
        "max_model_len": card.get("max_model_len"),
    }


def check_version(session: _Session) -> dict[str, t.Any]:
    """GET /version: the server's release (absent on servers that are not vLLM, which is no failure)."""
    answer = session.get("/version")
    if answer.status == 404:
        return {"status": 404, "latency_ms": answer.elapsed_ms, "present": False}
    if answer.status != 200:
        raise session.status_error(answer)
    doc = _json_body(answer)
    version = doc.get("version") if isinstance(doc, dict) else None
    if not isinstance(version, str) or not version:
        raise ProbeError(
            "malformed_response",
            f'malformed response to GET /version: expected {{"version": "..."}}, got {_snippet(answer.body)!r}',
            status=answer.status,
        )
    session.found.version = version
    return {"status": 200, "latency_ms": answer.elapsed_ms, "present": True, "version": version}


def check_metrics(session: _Session) -> dict[str, t.Any]:
    """GET /metrics: vLLM's Prometheus series are there; the few worth reporting summed over their labels."""
    answer = session.get("/metrics")
    if answer.status == 404:
        raise ProbeError(
            "no_metrics_endpoint",
            "GET /metrics is 404: this server exposes no Prometheus metrics (vLLM serves them at /metrics; is it "
            "another server, or a gateway that does not route /metrics?)",
            status=404,
        )
    if answer.status != 200:
        raise session.status_error(answer)
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
