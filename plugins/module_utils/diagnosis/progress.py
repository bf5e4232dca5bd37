# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Where each watched object stands (:func:`progress`), which pods are its, and which containers' log tails
would help (:func:`logs_wanted`); LeaderWorkerSet's label and readiness (:func:`group_done`)."""

from __future__ import annotations

import typing as t

from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.findings import LogRef
from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.snapshot import (
    _get,
    _Index,
    _is_true,
    _matches_selector,
    _name,
    _owned_by,
    _ts,
    condition,
)


def progress(snap: dict[str, t.Any]) -> dict[str, t.Any]:
    """Per watched object, where it stands; ``done`` is True once every watched object succeeded."""
    idx = _Index(snap)
    targets = snap.get("targets") or {}
    states: dict[str, t.Any] = {"deployments": {}, "jobs": {}, "pvcs": {}, "leaderworkersets": {}}
    by_kind = {
        "deployments": {_name(d): d for d in snap.get("deployments") or []},
        "leaderworkersets": {_name(g): g for g in snap.get("leaderworkersets") or []},
        "jobs": {_name(j): j for j in snap.get("jobs") or []},
        "pvcs": idx.pvcs,
    }
    judge = {
        "deployments": lambda dep: _deployment_state(idx, dep),
        "jobs": _job_state,
        "pvcs": lambda pvc: _pvc_state(idx, pvc),
        "leaderworkersets": lambda group: _group_state(idx, group),
    }
    done = True
    for kind, state_of in judge.items():
        for name in targets.get(kind) or []:
            obj = by_kind[kind].get(name)
            state = state_of(obj) if obj else {"status": "Absent", "done": False}
            states[kind][name] = state
            done = done and state["done"]
    states["done"] = done
    return states


def logs_wanted(snap: dict[str, t.Any]) -> list[LogRef]:
    """Containers of watched pods that failed, whose last log lines belong in the evidence."""
    idx = _Index(snap)
    wanted: list[LogRef] = []
    for pod in _watched_pods(idx, snap):
        for status in _get(pod, "status", "initContainerStatuses", default=[]) + _get(
            pod, "status", "containerStatuses", default=[]
        ):
            term = _get(status, "state", "terminated")
            last = _get(status, "lastState", "terminated")
            if term and term.get("exitCode", 0) != 0:
                wanted.append(LogRef(_name(pod), status["name"], previous=False))
            elif last and last.get("exitCode", 0) != 0:
                wanted.append(LogRef(_name(pod), status["name"], previous=True))
            elif _past_startup_budget(idx, status):
                wanted.append(LogRef(_name(pod), status["name"], previous=False))
    return wanted


def _past_startup_budget(idx: _Index, status: dict) -> bool:
    running = _get(status, "state", "running")
    started = _ts(running.get("startedAt")) if running else None
    return bool(started and not status.get("ready") and idx.now - started >= idx.settings.startup_budget)


def deployment_done(dep: dict) -> bool:
    """Whether a Deployment rolled out: its spec observed, every replica updated and available, Available True."""
    spec_replicas = _get(dep, "spec", "replicas", default=1)
    status = dep.get("status") or {}
    if status.get("observedGeneration", 0) < _get(dep, "metadata", "generation", default=0):
        return False
    if spec_replicas == 0:
        return True
    return (
        status.get("updatedReplicas", 0) == spec_replicas
        and status.get("replicas", 0) == spec_replicas
        and status.get("availableReplicas", 0) >= spec_replicas
        and _is_true(dep, "Available")
    )


def _deployment_state(idx: _Index, dep: dict) -> dict[str, t.Any]:
    status = dep.get("status") or {}
    replicas = _get(dep, "spec", "replicas", default=1)
    done = deployment_done(dep)
    return {
        "status": "Available" if done else "Progressing",
        "done": done,
        "ready": f"{status.get('readyReplicas', 0)}/{replicas}",
        "updated": status.get("updatedReplicas", 0),
        "available": status.get("availableReplicas", 0),
    }


def job_done(job: dict) -> bool:
    """Whether a Job is Complete."""
    return _is_true(job, "Complete")


def _job_state(job: dict) -> dict[str, t.Any]:
    status = job.get("status") or {}
    if job_done(job):
        label = "Complete"
    elif _is_true(job, "Failed"):
        label = "Failed"
    elif _get(job, "spec", "suspend"):
        label = "Suspended"
    else:
        label = "Running"
    return {
        "status": label,
        "done": label == "Complete",
        "active": status.get("active", 0),
        "succeeded": status.get("succeeded", 0),
        "failed": status.get("failed", 0),
    }


def _pvc_state(idx: _Index, pvc: dict) -> dict[str, t.Any]:
    phase = _get(pvc, "status", "phase", default="Pending")
    sc = _get(pvc, "spec", "storageClassName")
    waits_for_consumer = (
        phase == "Pending"
        and idx.storage_classes is not None
        and _get(idx.storage_classes.get(sc or ""), "volumeBindingMode") == "WaitForFirstConsumer"
    )
    return {
        "status": "Pending (WaitForFirstConsumer)" if waits_for_consumer else phase,
        # A claim that binds only once a pod uses it is as far as it can get on its own.
        "done": phase == "Bound" or waits_for_consumer,
        "volume": _get(pvc, "spec", "volumeName"),
    }


def _current_pods(idx: _Index, dep: dict, replicasets: list[dict]) -> list[dict]:
    """Pods of the Deployment's newest ReplicaSet (older ones are being replaced, not diagnosed)."""
    uid = _get(dep, "metadata", "uid")
    owned = [rs for rs in replicasets if uid and _owned_by(rs, uid)]
    if owned:
        revision = _get(dep, "metadata", "annotations", "deployment.kubernetes.io/revision")
        current = [
            rs for rs in owned if _get(rs, "metadata", "annotations", "deployment.kubernetes.io/revision") == revision
        ]

        def rev(rs: dict) -> int:
            return int(_get(rs, "metadata", "annotations", "deployment.kubernetes.io/revision", default="0") or 0)

        rs = current[0] if current else max(owned, key=rev)
        rs_uid = _get(rs, "metadata", "uid")
        return [p for p in idx.pods if _owned_by(p, rs_uid)]
    # No ReplicaSets in the snapshot: fall back to the selector.
    selector = _get(dep, "spec", "selector")
    return [p for p in idx.pods if _matches_selector(_get(p, "metadata", "labels", default={}), selector)]


def _job_pods(idx: _Index, job: dict) -> list[dict]:
    uid = _get(job, "metadata", "uid")
    return [p for p in idx.pods if uid and _owned_by(p, uid)] or [
        p
        for p in idx.pods
        if _matches_selector(_get(p, "metadata", "labels", default={}), _get(job, "spec", "selector"))
    ]


def _watched_pods(idx: _Index, snap: dict[str, t.Any]) -> list[dict]:
    targets = snap.get("targets") or {}
    pods: list[dict] = []
    for dep in snap.get("deployments") or []:
        if _name(dep) in (targets.get("deployments") or []) and not deployment_done(dep):
            pods.extend(_current_pods(idx, dep, snap.get("replicasets") or []))
    for job in snap.get("jobs") or []:
        if _name(job) in (targets.get("jobs") or []) and not _is_true(job, "Complete"):
            pods.extend(_job_pods(idx, job))
    for group in snap.get("leaderworkersets") or []:
        if _name(group) in (targets.get("leaderworkersets") or []):
            members = _group_pods(idx, _name(group))
            if not group_done(group, members):
                pods.extend(members)
    return pods


# LeaderWorkerSet's label naming a pod's set (sigs.k8s.io/lws v0.8.0 api/leaderworkerset/v1/leaderworkerset_types.go).
LWS_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"


def group_done(group: dict, pods: t.Sequence[dict] | None = None) -> bool:
    """A LeaderWorkerSet whose every group runs: its status says so for the current spec (sigs.k8s.io/lws v0.8.0:
    readyReplicas, updatedReplicas, the Available condition, observed for this generation) **and** every pod of every
    group (replicas x size, ``pods``: the set's pods) is scheduled, running and Ready.

    The status alone is not enough: the controller counts a group ready when its leader is Ready and the workers'
    StatefulSet has *created* its pods (pkg/controllers/leaderworkerset_controller.go updateConditions:
    ``statefulsetutils.StatefulsetReady(sts) && podutils.PodRunningAndReady(leader)``; pkg/utils/statefulset
    StatefulsetReady compares spec.replicas with status.replicas and the revisions, never readyReplicas), so a worker
    still Pending without a node passes it. Without ``pods`` nothing can be told: False."""
    wanted = _get(group, "spec", "replicas", default=1)
    status = group.get("status") or {}
    available = condition(group, "Available") or {}
    current = available.get("observedGeneration", _get(group, "metadata", "generation")) == _get(
        group, "metadata", "generation"
    )
    if not (
        available.get("status") == "True"
        and current
        and status.get("readyReplicas", 0) >= wanted
        and status.get("updatedReplicas", 0) >= wanted
    ):
        return False
    if pods is None:
        return False
    size = _get(group, "spec", "leaderWorkerTemplate", "size", default=1)
    live = [p for p in pods if not _get(p, "metadata", "deletionTimestamp")]
    return len(live) >= wanted * size and all(_pod_serving(p) for p in live)


def _pod_serving(pod: dict) -> bool:
    return bool(_get(pod, "spec", "nodeName")) and _get(pod, "status", "phase") == "Running" and _is_true(pod, "Ready")


def _group_state(idx: _Index, group: dict) -> dict[str, t.Any]:
    pods = _group_pods(idx, _name(group))
    done = group_done(group, pods)
    ready = (group.get("status") or {}).get("readyReplicas", 0)
    waiting = [_name(p) for p in pods if not _pod_serving(p)]
    return {
        "status": "Available" if done else "Progressing",
        "done": done,
        "ready": f"{ready}/{_get(group, 'spec', 'replicas', default=1)}",
        **({"pods_not_ready": waiting} if waiting else {}),
    }


def _group_pods(idx: _Index, name: str) -> list[dict]:
    """The pods of a LeaderWorkerSet's groups, leaders first (worker index 0)."""
    pods = [p for p in idx.pods if _get(p, "metadata", "labels", LWS_NAME_LABEL) == name]
    return sorted(
        pods, key=lambda p: (_get(p, "metadata", "labels", "leaderworkerset.sigs.k8s.io/worker-index") != "0", _name(p))
    )
