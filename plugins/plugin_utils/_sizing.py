# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this plugin util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Memory sizing of a vLLM server pod: Kubernetes quantities and the budget the preflight enforces.

The one place this arithmetic lives. Two rules, both checked before anything is applied:

1. **The RAM volume must hold the model.** The ``ram_copy`` load strategy stages the weights into an
   ``emptyDir`` with ``medium: Memory``; its ``sizeLimit`` must be at least the model's size, or the copy
   fails (ENOSPC) or the kubelet evicts the pod.
2. **The pod's memory limit must cover every Memory volume plus the server's working memory.** Pages of a
   ``medium: Memory`` emptyDir (tmpfs) are charged to the pod's memory cgroup; the staged copy written by the
   init container stays charged after that container exits. So the vLLM container's memory limit (the pod
   limit, as the init container's limit is not added) must hold the RAM volume (counted at its ``sizeLimit``,
   the most it may grow to), ``/dev/shm`` (also a Memory volume) and what the server process itself needs
   (Python, CUDA context, tokenizer, pinned buffers: the *working memory*). Otherwise the pod is OOMKilled
   right after the model loads.

    limit >= ram_volume.sizeLimit + shm.sizeLimit + working_memory

With the reference deployment: 32Gi >= 20Gi + 2Gi + 8Gi (30Gi), 2Gi to spare.

vLLM's ``--swap-space`` (CPU memory for swapped KV blocks) is not counted: the V1 engine, the default since
vLLM 0.8, does not allocate it. Count it in ``working_memory`` when running the V0 engine.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ansible_collections.llmops.vllm.plugins.module_utils.quantity import format_bytes, parse_quantity


def ram_volume_shortfall(model_bytes: float, size_limit_bytes: float) -> float:
    """Bytes the RAM volume lacks to hold the model (0 when it fits)."""
    return max(0.0, model_bytes - size_limit_bytes)


@dataclasses.dataclass(frozen=True)
class MemoryBudget:
    """The memory a vLLM server pod needs against the limit it gets, in bytes."""

    limit: float
    ram_volume: float
    shm: float
    working: float

    @property
    def required(self) -> float:
        """Memory volumes plus working memory: what the limit must at least be."""
        return self.ram_volume + self.shm + self.working

    @property
    def headroom(self) -> float:
        """Limit minus required; negative when the pod would be OOMKilled."""
        return self.limit - self.required

    @property
    def fits(self) -> bool:
        return self.headroom >= 0

    def explain(self) -> str:
        """One line with the arithmetic, for messages and docs."""
        parts = [f"RAM volume {format_bytes(self.ram_volume)}"] if self.ram_volume else []
        if self.shm:
            parts.append(f"/dev/shm {format_bytes(self.shm)}")
        parts.append(f"working memory {format_bytes(self.working)}")
        return f"limit {format_bytes(self.limit)} vs " + " + ".join(parts) + f" = {format_bytes(self.required)}"


def memory_budget(limit: Any, ram_volume: Any = 0, shm: Any = 0, working: Any = 0) -> MemoryBudget:
    """The budget of one server pod from quantities (``32Gi``) or byte counts; see the module docstring."""
    return MemoryBudget(
        limit=parse_quantity(limit),
        ram_volume=parse_quantity(ram_volume or 0),
        shm=parse_quantity(shm or 0),
        working=parse_quantity(working or 0),
    )
