# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Where a server pod can land and what a change to a serving Deployment costs: the scheduler's node filters the
cluster checks use, and the warning for a ``Recreate`` that takes a serving endpoint down (how long, from the last
start of its pods; whether the GPU nodes have room for the way without a gap, ``RollingUpdate``)."""

from __future__ import annotations

import typing as t

from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.snapshot import parse_time
from ansible_collections.llmops.vllm.plugins.module_utils.kube_client import Kube
from ansible_collections.llmops.vllm.plugins.module_utils.quantity import parse_quantity
from ansible_collections.llmops.vllm.plugins.module_utils.startup_timeline import format_seconds

GPU = "nvidia.com/gpu"


def fits(node: t.Mapping[str, t.Any], pod: t.Mapping[str, t.Any]) -> bool:
    """Whether the scheduler may put ``pod`` on ``node`` by its node selector and the node's NoSchedule and
    NoExecute taints (the scheduler's NodeAffinity and TaintToleration filters, without affinity terms)."""
    labels = node["metadata"].get("labels") or {}
    if any(labels.get(k) != v for k, v in (pod.get("nodeSelector") or {}).items()):
        return False
    tolerations = pod.get("tolerations") or []

    def tolerated(taint: t.Mapping[str, t.Any]) -> bool:
        for tol in tolerations:
            if tol.get("effect") and tol["effect"] != taint.get("effect"):
                continue
            if tol.get("operator") == "Exists" and (not tol.get("key") or tol["key"] == taint.get("key")):
                return True
            if tol.get("key") == taint.get("key") and tol.get("value", "") == taint.get("value", ""):
                return True
        return False

    taints = (node.get("spec") or {}).get("taints") or []
    return all(tolerated(x) for x in taints if x.get("effect") in ("NoSchedule", "NoExecute"))


def node_gpus(node: t.Mapping[str, t.Any]) -> int:
    """The node's allocatable nvidia.com/gpu."""
    value = str(((node.get("status") or {}).get("allocatable") or {}).get(GPU, "0"))
    return int(value) if value.isdigit() else 0


def pod_gpus(pod_spec: t.Mapping[str, t.Any]) -> int:
    """GPUs a pod spec asks for (its containers' limits, else requests)."""
    total = 0
    for container in pod_spec.get("containers") or []:
        resources = container.get("resources") or {}
        value = (resources.get("limits") or {}).get(GPU, (resources.get("requests") or {}).get(GPU, 0))
        total += int(parse_quantity(value) or 0)
    return total


def free_gpus(kube: Kube, pod_spec: t.Mapping[str, t.Any]) -> int:
    """GPUs free on the nodes ``pod_spec`` can land on: allocatable less what the pods there (not finished) ask."""
    nodes = [n for n in kube.list("v1", "Node") if fits(n, pod_spec) and node_gpus(n)]
    if not nodes:
        return 0
    used: dict[str, int] = {}
    for pod in kube.list("v1", "Pod", field_selector="status.phase!=Succeeded,status.phase!=Failed"):
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            used[node] = used.get(node, 0) + pod_gpus(pod.get("spec") or {})
    return sum(max(node_gpus(n) - used.get(n["metadata"]["name"], 0), 0) for n in nodes)


def last_start_seconds(pods: t.Sequence[t.Mapping[str, t.Any]]) -> float | None:
    """How long the slowest of ``pods`` took from creation to Ready, the last time they started."""
    spans = []
    for pod in pods:
        created = parse_time((pod.get("metadata") or {}).get("creationTimestamp"))
        ready = next(
            (
                parse_time(c.get("lastTransitionTime"))
                for c in (pod.get("status") or {}).get("conditions") or []
                if c.get("type") == "Ready" and c.get("status") == "True"
            ),
            None,
        )
        if created and ready:
            spans.append((ready - created).total_seconds())
    return max(spans) if spans else None


def serving_recreate(want: t.Mapping[str, t.Any], before: t.Any, after: t.Any) -> bool:
    """Whether applying ``want`` over the live ``before`` (``after``: what the API server made of it) restarts the
    pods of a Deployment that serves, all at once (strategy Recreate, a new pod template)."""
    if want.get("kind") != "Deployment" or not before or not after:
        return False
    strategy = ((want.get("spec") or {}).get("strategy") or {}).get("type", "RollingUpdate")
    serving = ((before.get("status") or {}).get("availableReplicas") or 0) > 0
    template = (before.get("spec") or {}).get("template") != (after.get("spec") or {}).get("template")
    return strategy == "Recreate" and serving and template


def recreate_warning(kube: Kube, deployment: t.Mapping[str, t.Any]) -> str:
    """One line: the endpoint goes down, about how long, and whether the way without a gap has room."""
    meta, spec = deployment["metadata"], deployment.get("spec") or {}
    labels = ",".join(f"{k}={v}" for k, v in ((spec.get("selector") or {}).get("matchLabels") or {}).items())
    pods = kube.list("v1", "Pod", namespace=meta.get("namespace"), label_selector=labels) if labels else []
    seconds = last_start_seconds(pods)
    how_long = (
        f"for about {format_seconds(seconds)} (its pods' last start)"
        if seconds is not None
        else "until its new pods are Ready"
    )
    pod_spec = (spec.get("template") or {}).get("spec") or {}
    wanted = pod_gpus(pod_spec)
    free = free_gpus(kube, pod_spec) if wanted else 0
    if wanted and free >= wanted:
        way = (
            f"{free} GPU(s) are free where it can run, room for a second copy: strategy RollingUpdate "
            "(vllm_server_strategy) makes this change without a gap"
        )
    else:
        way = (
            "no GPU node it can run on has room for a second copy, which strategy RollingUpdate needs: add a GPU node "
            "or a node pool (gpu_nodepool_enabled=true) for a change without a gap"
        )
    return (
        f"Deployment {meta.get('name')} (strategy Recreate) serves and this change replaces its pods all at once: "
        f"the endpoint is down {how_long}; {way}"
    )
