# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""What a diagnosis says: the reasons a finding can carry, the finding itself, the log tails its evidence wants
and the time budgets that turn "still waiting" into a finding."""

from __future__ import annotations

import dataclasses
import typing as t

from ansible_collections.llmops.vllm.plugins.module_utils.reasons import produced_by

# The reasons a Finding can carry (the shared table in reasons.py owns their meaning and what to do).
REASONS = produced_by("diagnosis")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Time budgets, in seconds, that turn "still waiting" into a finding."""

    #: How long a server container may run without becoming Ready (cold model load included).
    startup_budget: float = 900
    #: How long a pod may stay unschedulable while a node pool may still provision, or nodes are full.
    provision_grace: float = 600
    #: How long a dynamic PVC may wait before an absent provisioner (no event from it) is a finding.
    provisioner_grace: float = 120
    #: How long a watched object may be absent before that is a finding.
    missing_grace: float = 60
    #: Log lines kept as evidence.
    log_lines: int = 20

    @classmethod
    def from_dict(cls, data: dict[str, t.Any] | None) -> Settings:
        """Settings from a dict, ignoring unknown keys and ``None`` values."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known and v is not None})


@dataclasses.dataclass(frozen=True)
class LogRef:
    """One container's log tail that evidence wants; ``previous`` means the last terminated instance."""

    pod: str
    container: str
    previous: bool = False

    @property
    def key(self) -> str:
        return f"{self.pod}/{self.container}"


@dataclasses.dataclass(frozen=True)
class Finding:
    """A certain failure: machine reason, one line with cause and fix, and the evidence behind it."""

    reason: str
    message: str
    object: str
    evidence: dict[str, t.Any] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, t.Any]:
        return dataclasses.asdict(self)
