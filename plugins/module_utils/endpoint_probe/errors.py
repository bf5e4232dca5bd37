# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""How a check fails: the machine-readable reasons (:data:`REASONS`) and :class:`ProbeError`, which carries one."""

from __future__ import annotations

import typing as t

from ansible_collections.llmops.vllm.plugins.module_utils.reasons import produced_by

# The reasons a failed check carries (the shared table in reasons.py owns their meaning and what to do).
REASONS = produced_by("endpoint_probe")


class ProbeError(Exception):
    """A check failed: ``reason`` (one of :data:`REASONS`), one actionable line, and structured details."""

    def __init__(self, reason: str, message: str, **details: t.Any) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.details = details
