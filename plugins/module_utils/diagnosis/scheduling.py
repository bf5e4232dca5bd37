# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Why a pod is not scheduled and whether it ever can be: its requests against the nodes' allocatable, node
selectors and affinity, taints, and Karpenter NodePools that may still provision a node."""

from __future__ import annotations

import typing as t

from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.findings import Finding
from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.snapshot import (
    _event_evidence,
    _expression_holds,
    _format_amount,
    _get,
    _Index,
    _last_warning,
    _name,
    _one_line,
    _quantity,
)

# Node labels Karpenter can put on a node without the NodePool naming them.
_KARPENTER_WELL_KNOWN = (
    "kubernetes.io/arch",
    "kubernetes.io/os",
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "karpenter.sh/capacity-type",
    "karpenter.sh/nodepool",
)
_KARPENTER_PREFIXES = ("karpenter.k8s.aws/", "eks.amazonaws.com/")


def _pod_requests(pod: dict) -> dict[str, float]:
    """Effective scheduling requests: containers summed, init containers as their maximum, plus overhead."""

    def of(spec: dict) -> dict[str, float]:
        res = spec.get("resources") or {}
        merged = dict(res.get("limits") or {})
        merged.update(res.get("requests") or {})
        return {k: _quantity(v) for k, v in merged.items()}

    total: dict[str, float] = {}
    for spec in _get(pod, "spec", "containers", default=[]):
        for key, value in of(spec).items():
            total[key] = total.get(key, 0.0) + value
    sidecars: dict[str, float] = {}
    for spec in _get(pod, "spec", "initContainers", default=[]):
        if spec.get("restartPolicy") == "Always":
            for key, value in of(spec).items():
                sidecars[key] = sidecars.get(key, 0.0) + value
            continue
        for key, value in of(spec).items():
            total[key] = max(total.get(key, 0.0), value + sidecars.get(key, 0.0))
    for key, value in sidecars.items():
        total[key] = total.get(key, 0.0) + value
    for key, value in (_get(pod, "spec", "overhead") or {}).items():
        total[key] = total.get(key, 0.0) + _quantity(value)
    return {k: v for k, v in total.items() if v > 0}


def _tolerates(tolerations: list[dict], taint: dict) -> bool:
    for tol in tolerations:
        if tol.get("effect") and tol.get("effect") != taint.get("effect"):
            continue
        if tol.get("operator", "Equal") == "Exists":
            if not tol.get("key") or tol.get("key") == taint.get("key"):
                return True
        elif tol.get("key") == taint.get("key") and (tol.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _blocking_taints(pod: dict, taints: list[dict]) -> list[dict]:
    tolerations = _get(pod, "spec", "tolerations", default=[])
    return [
        taint
        for taint in taints
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not _tolerates(tolerations, taint)
    ]


def _node_selector_holds(pod: dict, node: dict) -> bool:
    labels = _get(node, "metadata", "labels", default={})
    for key, value in (_get(pod, "spec", "nodeSelector") or {}).items():
        if labels.get(key) != value:
            return False
    terms = _get(
        pod, "spec", "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms"
    )
    if not terms:
        return True
    for term in terms:
        ok = all(
            _expression_holds(labels, e.get("key", ""), e.get("operator", ""), e.get("values") or [])
            for e in term.get("matchExpressions") or []
        ) and all(
            _expression_holds(
                {"metadata.name": _name(node)}, e.get("key", ""), e.get("operator", ""), e.get("values") or []
            )
            for e in term.get("matchFields") or []
        )
        if ok:
            return True
    return False


def _describe_selector(pod: dict) -> str:
    parts = [f"{k}={v}" for k, v in sorted((_get(pod, "spec", "nodeSelector") or {}).items())]
    if _get(pod, "spec", "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution"):
        parts.append("required nodeAffinity")
    return ", ".join(parts) or "(none)"


def _node_taints(node: dict) -> list[dict]:
    taints = list(_get(node, "spec", "taints", default=[]))
    if _get(node, "spec", "unschedulable") and not any(
        x.get("key") == "node.kubernetes.io/unschedulable" for x in taints
    ):
        taints.append({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"})
    return taints


def _nodepool_may_fit(pod: dict, pool: dict, requests: dict[str, float]) -> bool:
    """Whether a Karpenter NodePool could launch a node this pod may use (taints, labels, limits)."""
    template = _get(pool, "spec", "template", default={})
    if _blocking_taints(pod, _get(template, "spec", "taints", default=[])):
        return False
    labels = {**_get(template, "metadata", "labels", default={}), "karpenter.sh/nodepool": _name(pool)}
    requirements = {r.get("key"): r for r in _get(template, "spec", "requirements", default=[])}
    for key, value in (_get(pod, "spec", "nodeSelector") or {}).items():
        if key in labels:
            if labels[key] != value:
                return False
        elif key in requirements:
            req = requirements[key]
            if not _expression_holds({key: value}, key, req.get("operator", ""), req.get("values") or []):
                return False
        elif key not in _KARPENTER_WELL_KNOWN and not key.startswith(_KARPENTER_PREFIXES):
            return False  # Karpenter cannot put an unknown label on a node
    for resource, limit in (_get(pool, "spec", "limits") or {}).items():
        if resource in requests and requests[resource] > _quantity(limit):
            return False
    return True


def _diagnose_unschedulable(idx: _Index, pod: dict, cond: dict) -> Finding | None:
    pod_name = _name(pod)
    obj = f"Pod/{pod_name}"
    scheduler = cond.get("message", "")
    event = _last_warning(idx.events_for("Pod", pod_name), "FailedScheduling")
    evidence: dict[str, t.Any] = {
        "scheduler": _one_line((event or {}).get("message") or scheduler, 500),
        "event": _event_evidence(event),
    }
    if "unbound immediate PersistentVolumeClaims" in scheduler or "persistentvolumeclaim" in scheduler.lower():
        return None  # the claim is the cause; _diagnose_pvc speaks for it once it is certain
    age = idx.age(pod)
    grace = idx.settings.provision_grace
    requests = _pod_requests(pod)
    evidence["requests"] = {k: _format_amount(k, v) for k, v in requests.items()}
    if idx.nodes is None:
        if age < grace:
            return None
        return Finding(
            "unschedulable_timeout",
            f"Pod {pod_name} has been unschedulable for {age:.0f}s: {_one_line(scheduler, 200)}",
            obj,
            evidence,
        )

    # Nodes that could ever hold the pod's requests, by allocatable (not by what is free now).
    fitting = []
    shortfall: dict[str, tuple[float, str]] = {}
    for node in idx.nodes:
        allocatable = {k: _quantity(v) for k, v in (_get(node, "status", "allocatable") or {}).items()}
        short = [r for r, amount in requests.items() if allocatable.get(r, 0.0) < amount]
        if short:
            for r in short:
                best = shortfall.get(r)
                if best is None or allocatable.get(r, 0.0) > best[0]:
                    shortfall[r] = (allocatable.get(r, 0.0), _name(node))
        else:
            fitting.append(node)
    selected = [n for n in fitting if _node_selector_holds(pod, n)]
    usable = [n for n in selected if not _blocking_taints(pod, _node_taints(n))]
    evidence["nodes"] = {
        "total": len(idx.nodes),
        "with_capacity": [_name(n) for n in fitting],
        "matching_selector": [_name(n) for n in selected],
        "usable": [_name(n) for n in usable],
    }

    if usable:
        # Some node could run it, just not now: capacity may free up or be added.
        if age < grace:
            return None
        return Finding(
            "unschedulable_timeout",
            f"Pod {pod_name} has been unschedulable for {age:.0f}s although nodes "
            f"{', '.join(_name(n) for n in usable)} could hold it: they are full ({_one_line(scheduler, 160)}); "
            f"free capacity or add nodes",
            obj,
            evidence,
        )

    pools = [p for p in idx.node_pools or [] if _nodepool_may_fit(pod, p, requests)]
    evidence["node_pools"] = [_name(p) for p in idx.node_pools or []]
    if pools:
        evidence["node_pools_that_may_fit"] = [_name(p) for p in pools]
        if age < grace:
            return None
        return Finding(
            "unschedulable_provisioning_timeout",
            f"Pod {pod_name} has been unschedulable for {age:.0f}s: NodePool {', '.join(_name(p) for p in pools)} may "
            f"provide a node, but none arrived within {grace:.0f}s; check its NodeClaims (kubectl get nodeclaims) "
            f"and instance availability",
            obj,
            evidence,
        )

    no_pool = "and no node pool could add one" if idx.node_pools else "and there is no node pool to add one"
    if not fitting:
        resource = "nvidia.com/gpu" if "nvidia.com/gpu" in shortfall else sorted(shortfall)[0]
        best, node = shortfall[resource]
        want = _format_amount(resource, requests[resource])
        if best <= 0:
            detail = f"no node offers {resource}"
            fix = (
                "add a GPU node pool (gpu_nodepool role) or install the NVIDIA device plugin"
                if resource == "nvidia.com/gpu"
                else f"add nodes with {resource}"
            )
        else:
            detail = f"the largest node has {_format_amount(resource, best)} ({node})"
            fix = (
                "lower the GPUs per replica (tensor-parallel-size) or add a node pool with larger instances"
                if resource == "nvidia.com/gpu"
                else f"lower the {resource} request or add larger nodes"
            )
        evidence["insufficient"] = {
            resource: {"requested": want, "largest_allocatable": _format_amount(resource, best)}
        }
        return Finding(
            "unschedulable_no_capacity",
            f"Pod {pod_name} can never be scheduled: it requests {want} {resource} but {detail}, {no_pool}; {fix}",
            obj,
            evidence,
        )
    if not selected:
        return Finding(
            "unschedulable_node_selector",
            f"Pod {pod_name} can never be scheduled: no node with room for it ({', '.join(_name(n) for n in fitting)}) "
            f"matches its node selector {_describe_selector(pod)}, {no_pool}; fix the nodeSelector/affinity or "
            f"label the GPU nodes",
            obj,
            evidence,
        )
    taints = _blocking_taints(pod, _node_taints(selected[0]))
    taint = taints[0]
    shown = f"{taint.get('key')}{'=' + taint['value'] if taint.get('value') else ''}:{taint.get('effect')}"
    evidence["untolerated_taint"] = taint
    return Finding(
        "unschedulable_untolerated_taint",
        f"Pod {pod_name} can never be scheduled: the nodes that fit it ({', '.join(_name(n) for n in selected)}) "
        f"carry taint {shown}, which it does not tolerate, {no_pool}; add the toleration "
        f"{{key: {taint.get('key')}, operator: Exists, effect: {taint.get('effect')}}}",
        obj,
        evidence,
    )
