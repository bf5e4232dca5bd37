# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The registry of checks: each name and the function that runs it, in the order checks run and are reported.

A check takes the run's :class:`_Session` and returns what it measured (``latency_ms``, ``status``, ...), or
raises :class:`ProbeError`; it may record what later checks and the result need in ``session.found``.
"""

from __future__ import annotations

import typing as t

from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.checks.chat import check_chat, check_tool_call
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.checks.load import check_load
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.checks.server import (
    check_health,
    check_metrics,
    check_models,
    check_version,
)
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.checks.stream import check_stream
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.session import _Session

# The selectable checks of settings.CHECKS in the same order, then load (selected by load settings).
REGISTRY: dict[str, t.Callable[[_Session], dict[str, t.Any]]] = {
    "health": check_health,
    "models": check_models,
    "version": check_version,
    "chat": check_chat,
    "tool_call": check_tool_call,
    "stream": check_stream,
    "metrics": check_metrics,
    "load": check_load,
}
