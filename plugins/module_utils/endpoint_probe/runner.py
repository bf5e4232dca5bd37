# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Running a probe: :func:`probe` checks the settings, plans the checks (health always first, models when a check
needs a model and none is named), runs them in registry order and marks the ones an earlier failure makes
impossible as not run."""

from __future__ import annotations

import time
import typing as t

from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.checks import REGISTRY
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.errors import ProbeError
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.result import (
    _failed,
    _not_run,
    _passed,
    _result,
)
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.session import _Session
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.settings import (
    CHECKS,
    TOOL_CHOICES,
    ProbeSettings,
)
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.target import Target
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.transport import _ms

# Transport failures after which no later request can succeed either.
_BLOCKING = frozenset(("connection_refused", "dns_failure", "tls_error", "connection_error", "not_ready"))
_NEEDS_MODEL = frozenset(("chat", "tool_call", "stream", "load"))


def _plan(settings: ProbeSettings) -> list[str]:
    """The checks to run, in registry order."""
    wanted = set(settings.checks)
    # /health is the readiness signal: it always runs first.
    wanted.add("health")
    if settings.load is not None:
        wanted.add("load")
    if settings.model is None and wanted & _NEEDS_MODEL:
        wanted.add("models")
    return [name for name in REGISTRY if name in wanted]


def _run(session: _Session) -> dict[str, t.Any]:
    start = time.perf_counter()
    found = session.found
    blocked: tuple[str, str] | None = None  # (check, reason) of a transport failure that stops the rest
    for name in _plan(session.settings):
        # A model the server does not serve (or none chosen): skip. A /v1/models that failed otherwise
        # (transformers serve answers 500 when its hub cache is missing) leaves a named model worth trying.
        missing = found.checks.get("models", {}).get("reason") in ("model_not_found", "model_ambiguous")
        if blocked is None and name in _NEEDS_MODEL and (found.model is None or missing):
            # No request for a model the server does not serve: it could only fail the same way again.
            found.checks[name] = _not_run("models", found.checks.get("models", {}).get("reason"))
            continue
        if blocked is not None:
            found.checks[name] = _not_run(*blocked)
            continue
        try:
            entry = _passed(REGISTRY[name](session))
        except ProbeError as err:
            entry = _failed(err)
            # Nothing can pass once the server is out of reach, or not ready (health is the readiness wait).
            if err.reason in _BLOCKING or name == "health":
                blocked = (name, err.reason)
        found.checks[name] = entry
    return _result(session.target, found, _ms(time.perf_counter() - start))


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
    return _run(_Session(target, settings))
