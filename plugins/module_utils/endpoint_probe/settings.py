# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""What a probe is asked to do: the checks that can be selected, the tool choices, and the settings dataclasses."""

from __future__ import annotations

import dataclasses

CHECKS = ("health", "models", "version", "chat", "tool_call", "stream", "metrics")
DEFAULT_CHECKS = ("health", "models", "version", "chat", "tool_call", "stream")
TOOL_CHOICES = ("auto", "required", "named")
DEFAULT_PROMPT = "In one short sentence: what is the capital of France?"


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
