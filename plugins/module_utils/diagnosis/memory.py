# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""OOMKilled explained with the tmpfs arithmetic: Memory emptyDir volumes, the containers' memory limits and
vLLM's --swap-space, all charged to one pod cgroup."""

from __future__ import annotations

import typing as t

from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.findings import Finding
from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.snapshot import _get, _Index, _name, _quantity
from ansible_collections.llmops.vllm.plugins.module_utils.quantity import format_bytes

_GI = 1024**3


def _oom_finding(idx: _Index, pod: dict, kind: str, status: dict, term: dict) -> Finding:
    """OOMKilled, with the tmpfs arithmetic: Memory emptyDir pages are charged to the pod's memory cgroup."""
    pod_name, container = _name(pod), status.get("name", "")
    spec = _container_spec(pod, container)
    limit = _quantity(_get(spec, "resources", "limits", "memory")) or None
    pod_limit = _pod_memory_limit(pod)
    ram_volumes = []
    for vol in _get(pod, "spec", "volumes", default=[]):
        if _get(vol, "emptyDir", "medium") == "Memory":
            size = _get(vol, "emptyDir", "sizeLimit")
            ram_volumes.append({"name": vol.get("name"), "sizeLimit": size, "bytes": _quantity(size) or None})
    tmpfs = sum(v["bytes"] or 0 for v in ram_volumes)
    unbounded = [v["name"] for v in ram_volumes if not v["bytes"]]
    swap = _swap_space_bytes(spec)
    evidence: dict[str, t.Any] = {
        "container": container,
        "terminated": {k: term.get(k) for k in ("exitCode", "reason", "finishedAt") if term.get(k) is not None},
        "restartCount": status.get("restartCount", 0),
        "memory_limit": format_bytes(limit) if limit else None,
        "pod_memory_limit": format_bytes(pod_limit) if pod_limit else None,
        "memory_volumes": [{"name": v["name"], "sizeLimit": v["sizeLimit"]} for v in ram_volumes],
        "swap_space": format_bytes(swap) if swap else None,
    }
    where = f"Pod {pod_name} {kind} {container} was OOMKilled (exit {term.get('exitCode', 137)})"
    if not ram_volumes:
        return Finding(
            "oom_killed",
            f"{where}: it needs more than its memory limit {format_bytes(limit) if limit else '(none set)'}; raise "
            f"resources.limits.memory{' or lower --swap-space' if swap else ''}",
            f"Pod/{pod_name}",
            evidence,
        )
    names = ", ".join(f"{v['name']} ({v['sizeLimit'] or 'no sizeLimit'})" for v in ram_volumes)
    many = len(ram_volumes) > 1
    cap = pod_limit or limit
    parts = [
        f"{where}: the Memory emptyDir{'s' if many else ''} {names} {'are' if many else 'is'} tmpfs, charged to "
        f"the pod's memory cgroup"
    ]
    if cap:
        parts.append(f" (limit {format_bytes(cap)})")
    need = None
    if unbounded:
        parts.append(", and without a sizeLimit tmpfs grows to whatever is copied into it")
    elif cap:
        left = cap - tmpfs
        full = "full RAM volumes leave" if many else "a full RAM volume leaves"
        parts.append(f", so {full} {format_bytes(max(left, 0))} for the processes")
        if swap:
            need = tmpfs + swap
            parts.append(
                f" while --swap-space reserves {format_bytes(swap)} (RAM volume{'s' if many else ''} + swap = "
                f"{format_bytes(need)})"
            )
            evidence["needs_at_least"] = format_bytes(need)
    if kind == "init container":
        fix = "raise the init container's memory limit above the model size, or use load strategy direct"
    else:
        floor = f"above {format_bytes(need)} plus the server's working memory" if need else "by the RAM volume's size"
        fix = (
            f"raise resources.limits.memory {floor}"
            + (", lower --swap-space" if swap else "")
            + ", or use load strategy direct (no RAM volume)"
        )
    evidence["tmpfs_bytes"] = int(tmpfs) or None
    return Finding("oom_killed", "".join(parts) + f"; {fix}", f"Pod/{pod_name}", evidence)


def _pod_memory_limit(pod: dict) -> float | None:
    """The pod cgroup's memory limit: the sum of its containers' limits (None if one is unlimited)."""
    total = 0.0
    for spec in _get(pod, "spec", "containers", default=[]):
        limit = _get(spec, "resources", "limits", "memory")
        if not limit:
            return None
        total += _quantity(limit)
    return total or None


def _swap_space_bytes(spec: dict) -> float:
    """vLLM's --swap-space (GiB of host memory per GPU; default 4) from the container's arguments."""
    args = [str(a) for a in (spec.get("command") or []) + (spec.get("args") or [])]
    for i, arg in enumerate(args):
        for flag in ("--swap-space", "--swap_space"):
            if arg.startswith(flag + "="):
                return _gib(arg.split("=", 1)[1])
            if arg == flag and i + 1 < len(args):
                return _gib(args[i + 1])
    return 0.0


def _gib(text: str) -> float:
    try:
        return float(text) * _GI
    except ValueError:
        return 0.0


def _container_spec(pod: dict, container: str) -> dict:
    for spec in _get(pod, "spec", "containers", default=[]) + _get(pod, "spec", "initContainers", default=[]):
        if spec.get("name") == container:
            return spec
    return {}
