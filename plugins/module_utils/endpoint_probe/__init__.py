# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
#
# Standard library only, no ansible imports: the engine is an HTTP client and is tested on its own against a
# fake vLLM server. Keep it importable on Python 3.8+ (the oldest Python ansible-core 2.19 runs modules with).
# Import from this package, not from its modules: this is its one import surface.

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

The modules, by concern: ``errors`` (reasons, :class:`ProbeError`), ``settings``, ``target``, ``transport``
(HTTP and answer bodies), ``session`` (one run's requests and findings), ``checks`` (the registry and one
function per check), ``result`` and ``runner`` (:func:`probe`).
"""

from __future__ import annotations

from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.checks.chat import (
    TOOL,
    TOOL_MIN_TOKENS,
    TOOL_PROMPT,
)
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.checks.load import percentile
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.errors import REASONS, ProbeError
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.runner import probe
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.settings import (
    CHECKS,
    DEFAULT_CHECKS,
    DEFAULT_PROMPT,
    TOOL_CHOICES,
    LoadSettings,
    ProbeSettings,
)
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.target import (
    Target,
    service_target,
    target_from_kubernetes,
    tls_context,
    url_target,
)
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.transport import (
    CHUNK_BYTES,
    MAX_BODY_BYTES,
    USER_AGENT,
)

__all__ = [
    "CHECKS",
    "CHUNK_BYTES",
    "DEFAULT_CHECKS",
    "DEFAULT_PROMPT",
    "MAX_BODY_BYTES",
    "REASONS",
    "TOOL",
    "TOOL_CHOICES",
    "TOOL_MIN_TOKENS",
    "TOOL_PROMPT",
    "USER_AGENT",
    "LoadSettings",
    "ProbeError",
    "ProbeSettings",
    "Target",
    "percentile",
    "probe",
    "service_target",
    "target_from_kubernetes",
    "tls_context",
    "url_target",
]
