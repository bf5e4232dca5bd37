# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Why a vLLM deployment is not coming up, named as soon as it is certain.

Two layers:

- :func:`diagnose` is pure: it takes a *snapshot* (plain dicts, shaped exactly like the API's JSON) of the
  objects deploy created and what surrounds them (pods, events, nodes, PVs, StorageClasses, CSIDrivers,
  Karpenter NodePools, container log tails) and returns a :class:`Finding` when a known failure is certain,
  else ``None``. :func:`progress` says what is done, :func:`logs_wanted` which log tails would help.
- :class:`DeploymentWatch` polls the API (one ``kubernetes`` client, reused; about one poll a second, fetching
  nodes, storage objects and logs only when a finding needs them) until everything succeeded (Job Complete,
  Deployment rolled out and Available, PVC Bound), a finding is certain, or the timeout passes.

Snapshot keys: ``now`` and ``started`` (epoch seconds), ``namespace``, ``targets`` (``{"deployments": [...],
"jobs": [...], "pvcs": [...]}``, names), ``deployments``, ``replicasets``, ``jobs``, ``pvcs``, ``pods``,
``events``, ``nodes``, ``node_pools``, ``pvs``, ``storage_classes``, ``csi_drivers`` (lists of objects; ``None``
for a list that could not be read), ``logs`` (``{"<pod>/<container>": {"lines": [...], "error": str|None}}``)
and ``settings`` (see :class:`Settings`).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import typing as t
from datetime import datetime

from ansible_collections.llmops.vllm.plugins.module_utils.model_stage import manifest_from_log
from ansible_collections.llmops.vllm.plugins.module_utils.sizing import format_bytes, parse_quantity

# Machine-readable reasons a Finding can carry.
REASONS = (
    "unschedulable_no_capacity",
    "unschedulable_untolerated_taint",
    "unschedulable_node_selector",
    "unschedulable_provisioning_timeout",
    "unschedulable_timeout",
    "image_pull",
    "config_error",
    "init_failed",
    "oom_killed",
    "crash_loop",
    "job_failed",
    "job_auth",
    "pvc_pending",
    "not_ready",
    "replica_failure",
    "not_found",
    "api_unreachable",
    "timeout",
)

_GI = 1024**3
# The staging engine prints its manifest last on stdout; stderr may interleave a progress line or two after it.
MANIFEST_TAIL_LINES = 20
_IMAGE_PULL_WAITING = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
_CONFIG_WAITING = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")
# ErrImagePull is final (no back-off needed to be sure) when the registry said one of these.
_PULL_FINAL = re.compile(
    r"not found|manifest unknown|does not exist|unauthorized|denied|forbidden|no basic auth|\b40[13]\b"
    r"|invalid reference",
    re.IGNORECASE,
)
_PULL_AUTH = re.compile(r"unauthorized|denied|forbidden|no basic auth|authoriz|\b40[13]\b", re.IGNORECASE)
_HF_HOST = re.compile(r"huggingface|hf_hub|hf\.co\b|HF_TOKEN", re.IGNORECASE)
_HF_401 = re.compile(r"\b401\b|Unauthorized|Invalid (user )?token|Invalid credentials|Please log in", re.IGNORECASE)
_HF_403 = re.compile(r"\b403\b|Forbidden|awaiting a review|not in the authorized list", re.IGNORECASE)
# A token that slipped into a log line never reaches the playbook output.
_SECRET_LIKE = re.compile(r"\b(hf_[A-Za-z0-9]{16,}|Bearer\s+[A-Za-z0-9._\-]{16,})")
# Known vLLM start-up failures, with the fix in a few words.
_CRASH_HINTS = (
    # A group across nodes (LeaderWorkerSet), in vLLM's words: the Ray backend's placement group wait and its end
    # (vllm 0.9.0 executor/ray_utils.py:231-246, 0.33.0 v1/executor/ray_utils.py:223-262), a worker lost
    # (0.33.0 v1/executor/multiproc_executor.py:380-385, ray_executor_v2.py:466-525), an image without Ray
    # (0.33.0 ray_utils.py:49-51, 0.9.0 config.py:1859-1862), one IP for two nodes (0.9.0
    # executor/ray_distributed_executor.py:322-328), a group vLLM does not see as one (0.33.0 config/parallel.py,
    # 0.11.2 config/parallel.py:566-570).
    (
        re.compile(r"Cannot provide a placement group|Waiting for creating a placement group"),
        "the group's Ray cluster lacks GPUs: a worker pod did not join the leader (see its log; it must reach "
        "$LWS_LEADER_ADDRESS:6379) or tensor x pipeline parallel exceeds gpus x nodes",
    ),
    (
        re.compile(r"Worker proc \S+ died unexpectedly|RayWorkerProc rank=\S+ died|Ray workers have not started"),
        "a worker of the group died: LeaderWorkerSet recreates the group; the worker pod's log says why",
    ),
    (
        re.compile(r"Failed to import Ray|Unable to load Ray|ray: not found"),
        "the image has no Ray (vLLM images from 0.18 lack it): use a vLLM release with --nnodes, where the "
        "collection runs the group without Ray, or an image with ray installed",
    ),
    (
        re.compile(r"Every node should have a unique IP address"),
        "Ray saw two nodes with one IP address: leave VLLM_HOST_IP unset (or unique per pod)",
    ),
    (
        re.compile(
            r"World size \(\d+\) is larger than the number of available GPUs"
            r"|Tensor parallel size \(\d+\) cannot be larger than the number of available GPUs"
        ),
        "vLLM sees more parallelism than this node's GPUs and no group: give the model nodes (a LeaderWorkerSet) "
        "or lower tensor/pipeline parallel to the node's GPUs",
    ),
    (
        re.compile(r"CUDA out of memory|OutOfMemoryError", re.IGNORECASE),
        "GPU memory is exhausted: lower --max-model-len or --max-num-seqs, or spread the model over more GPUs "
        "(--tensor-parallel-size)",
    ),
    (
        re.compile(r"KV cache", re.IGNORECASE),
        "the KV cache cannot hold --max-model-len: lower --max-model-len or raise --gpu-memory-utilization",
    ),
    (
        re.compile(r"unrecognized arguments|error: argument|invalid choice", re.IGNORECASE),
        "vLLM rejected its arguments: fix engine_args",
    ),
    (
        re.compile(r"No such file or directory|does not appear to have a file|is not a valid model", re.IGNORECASE),
        "the model files are missing at --model: check the model path and the staging step",
    ),
    (
        re.compile(r"no CUDA-capable device|NVIDIA driver|cuda.*not available", re.IGNORECASE),
        "no usable GPU in the container: request nvidia.com/gpu and check the NVIDIA device plugin/driver",
    ),
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


# ---------------------------------------------------------------------------------------------- helpers


def _quantity(value: t.Any) -> float:
    """A quantity from the API in base units; an absent one (None) is 0."""
    return 0.0 if value is None else parse_quantity(value)


def _format_amount(resource: str, value: float) -> str:
    if resource in ("memory", "ephemeral-storage"):
        return format_bytes(value)
    if resource == "cpu" and value != int(value):
        return f"{value * 1000:.0f}m"
    return f"{value:g}"


def _ts(value: str | None) -> float | None:
    """RFC 3339 time from the API as epoch seconds."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _one_line(text: str, limit: int = 240) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def redact(text: str) -> str:
    """Mask what looks like a Hugging Face token or bearer token."""
    return _SECRET_LIKE.sub("<redacted>", text)


def _get(obj: dict | None, *path: str, default: t.Any = None) -> t.Any:
    for key in path:
        if not isinstance(obj, dict):
            return default
        obj = obj.get(key)
    return default if obj is None else obj


def _name(obj: dict) -> str:
    return _get(obj, "metadata", "name", default="")


def _condition(obj: dict, kind: str) -> dict | None:
    for cond in _get(obj, "status", "conditions", default=[]):
        if cond.get("type") == kind:
            return cond
    return None


def _is_true(obj: dict, kind: str) -> bool:
    cond = _condition(obj, kind)
    return bool(cond and cond.get("status") == "True")


def _owned_by(obj: dict, uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in _get(obj, "metadata", "ownerReferences", default=[]))


def _matches_selector(labels: dict[str, str], selector: dict | None) -> bool:
    """Whether labels satisfy a LabelSelector (matchLabels and matchExpressions)."""
    if not selector:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        if not _expression_holds(labels, expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []):
            return False
    return True


def _expression_holds(labels: dict[str, str], key: str, operator: str, values: list[str]) -> bool:
    present = key in labels
    value = labels.get(key)
    if operator == "In":
        return present and value in values
    if operator == "NotIn":
        return not present or value not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt") and present and values:
        try:
            left, right = int(value), int(values[0])
        except (TypeError, ValueError):
            return False
        return left > right if operator == "Gt" else left < right
    return False


class _Index:
    """Lookups over one snapshot."""

    def __init__(self, snap: dict[str, t.Any]):
        self.snap = snap
        self.now = float(snap.get("now") or time.time())
        self.started = float(snap.get("started") or self.now)
        self.namespace = snap.get("namespace", "")
        self.settings = Settings.from_dict(snap.get("settings"))
        self.pods = [p for p in snap.get("pods") or [] if not _get(p, "metadata", "deletionTimestamp")]
        self.events = snap.get("events") or []
        self.logs = snap.get("logs") or {}
        self.nodes = snap.get("nodes")
        self.node_pools = snap.get("node_pools")
        self.pvs = {_name(pv): pv for pv in snap.get("pvs") or []} if snap.get("pvs") is not None else None
        self.storage_classes = (
            {_name(sc): sc for sc in snap.get("storage_classes") or []}
            if snap.get("storage_classes") is not None
            else None
        )
        self.csi_drivers = (
            {_name(d) for d in snap.get("csi_drivers") or []} if snap.get("csi_drivers") is not None else None
        )
        self.pvcs = {_name(p): p for p in snap.get("pvcs") or []}

    def events_for(self, kind: str, name: str) -> list[dict]:
        """Events about one object, newest last."""
        found = [
            e
            for e in self.events
            if _get(e, "involvedObject", "kind") == kind and _get(e, "involvedObject", "name") == name
        ]
        return sorted(found, key=_event_time)

    def age(self, obj: dict) -> float:
        created = _ts(_get(obj, "metadata", "creationTimestamp"))
        return self.now - created if created else 0.0

    def log_text(self, pod: str, container: str) -> tuple[list[str], str | None]:
        entry = self.logs.get(f"{pod}/{container}")
        if not entry:
            return [], None
        return [redact(line) for line in entry.get("lines") or []], entry.get("error")


def _event_time(event: dict) -> float:
    for key in ("lastTimestamp", "eventTime", "firstTimestamp"):
        value = _ts(event.get(key)) if event.get(key) else None
        if value:
            return value
    return _ts(_get(event, "metadata", "creationTimestamp")) or 0.0


def _event_evidence(event: dict | None) -> dict | None:
    if not event:
        return None
    return {
        "type": event.get("type"),
        "reason": event.get("reason"),
        "message": _one_line(event.get("message", ""), 500),
        "count": event.get("count"),
        "source": _get(event, "source", "component") or event.get("reportingComponent"),
    }


def _last_warning(events: list[dict], *reasons: str) -> dict | None:
    for event in reversed(events):
        if event.get("type") == "Warning" and (not reasons or event.get("reason") in reasons):
            return event
    return None


# ------------------------------------------------------------------------------------------ the pure API


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
    done = True
    for name in targets.get("deployments") or []:
        dep = by_kind["deployments"].get(name)
        state = _deployment_state(idx, dep) if dep else {"status": "Absent", "done": False}
        states["deployments"][name] = state
        done = done and state["done"]
    for name in targets.get("jobs") or []:
        job = by_kind["jobs"].get(name)
        state = _job_state(job) if job else {"status": "Absent", "done": False}
        states["jobs"][name] = state
        done = done and state["done"]
    for name in targets.get("pvcs") or []:
        pvc = by_kind["pvcs"].get(name)
        state = _pvc_state(idx, pvc) if pvc else {"status": "Absent", "done": False}
        states["pvcs"][name] = state
        done = done and state["done"]
    for name in targets.get("leaderworkersets") or []:
        group = by_kind["leaderworkersets"].get(name)
        state = _group_state(group) if group else {"status": "Absent", "done": False}
        states["leaderworkersets"][name] = state
        done = done and state["done"]
    states["done"] = done
    return states


def diagnose(snap: dict[str, t.Any]) -> Finding | None:
    """The certain failure in a snapshot, or ``None`` while everything may still succeed.

    Order follows cause and effect: an unbound claim keeps pods Pending, so PVCs come first, then the
    download Jobs, then the server Deployments; within a pod, init containers before the server.
    """
    idx = _Index(snap)
    targets = snap.get("targets") or {}
    deployments = {_name(d): d for d in snap.get("deployments") or []}
    jobs = {_name(j): j for j in snap.get("jobs") or []}

    watched_pvcs = list(targets.get("pvcs") or [])
    for pod in _watched_pods(idx, snap):
        for vol in _get(pod, "spec", "volumes", default=[]):
            claim = _get(vol, "persistentVolumeClaim", "claimName")
            if claim and claim not in watched_pvcs and claim in idx.pvcs:
                watched_pvcs.append(claim)
    for name in watched_pvcs:
        pvc = idx.pvcs.get(name)
        if pvc:
            finding = _diagnose_pvc(idx, pvc)
            if finding:
                return finding
    for name in targets.get("jobs") or []:
        if name in jobs:
            finding = _diagnose_job(idx, jobs[name])
            if finding:
                return finding
    for name in targets.get("deployments") or []:
        if name in deployments:
            finding = _diagnose_deployment(idx, deployments[name], snap.get("replicasets") or [])
            if finding:
                return finding
    groups = {_name(g): g for g in snap.get("leaderworkersets") or []}
    for name in targets.get("leaderworkersets") or []:
        if name in groups and not group_done(groups[name]):
            for pod in _group_pods(idx, name):
                finding = _diagnose_pod(idx, pod, restarts_matter=True)
                if finding:
                    return finding
    present = {"Deployment": deployments, "Job": jobs, "PersistentVolumeClaim": idx.pvcs, "LeaderWorkerSet": groups}
    return _diagnose_missing(idx, targets, present)


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


# --------------------------------------------------------------------------------------------- objects


def _deployment_done(dep: dict) -> bool:
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
    done = _deployment_done(dep)
    return {
        "status": "Available" if done else "Progressing",
        "done": done,
        "ready": f"{status.get('readyReplicas', 0)}/{replicas}",
        "updated": status.get("updatedReplicas", 0),
        "available": status.get("availableReplicas", 0),
    }


def _job_state(job: dict) -> dict[str, t.Any]:
    status = job.get("status") or {}
    if _is_true(job, "Complete"):
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
        if _name(dep) in (targets.get("deployments") or []) and not _deployment_done(dep):
            pods.extend(_current_pods(idx, dep, snap.get("replicasets") or []))
    for job in snap.get("jobs") or []:
        if _name(job) in (targets.get("jobs") or []) and not _is_true(job, "Complete"):
            pods.extend(_job_pods(idx, job))
    for group in snap.get("leaderworkersets") or []:
        if _name(group) in (targets.get("leaderworkersets") or []) and not group_done(group):
            pods.extend(_group_pods(idx, _name(group)))
    return pods


# LeaderWorkerSet's label naming a pod's set (sigs.k8s.io/lws v0.8.0 api/leaderworkerset/v1/leaderworkerset_types.go).
LWS_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"


def group_done(group: dict) -> bool:
    """A LeaderWorkerSet with every group updated and ready, and its Available condition (sigs.k8s.io/lws v0.8.0
    status: readyReplicas, updatedReplicas, conditions Available/Progressing/UpdateInProgress)."""
    wanted = _get(group, "spec", "replicas", default=1)
    status = group.get("status") or {}
    return (
        _is_true(group, "Available")
        and status.get("readyReplicas", 0) >= wanted
        and status.get("updatedReplicas", 0) >= wanted
    )


def _group_state(group: dict) -> dict[str, t.Any]:
    done = group_done(group)
    ready = (group.get("status") or {}).get("readyReplicas", 0)
    return {
        "status": "Available" if done else "Progressing",
        "done": done,
        "ready": f"{ready}/{_get(group, 'spec', 'replicas', default=1)}",
    }


def _group_pods(idx: _Index, name: str) -> list[dict]:
    """The pods of a LeaderWorkerSet's groups, leaders first (worker index 0)."""
    pods = [p for p in idx.pods if _get(p, "metadata", "labels", LWS_NAME_LABEL) == name]
    return sorted(
        pods, key=lambda p: (_get(p, "metadata", "labels", "leaderworkerset.sigs.k8s.io/worker-index") != "0", _name(p))
    )


def _diagnose_missing(idx: _Index, targets: dict, present: dict[str, dict]) -> Finding | None:
    waited = idx.now - idx.started
    if waited < idx.settings.missing_grace:
        return None
    kinds = (("PersistentVolumeClaim", "pvcs"), ("Job", "jobs"), ("Deployment", "deployments"))
    for kind, key in (*kinds, ("LeaderWorkerSet", "leaderworkersets")):
        for name in targets.get(key) or []:
            if name not in present[kind]:
                return Finding(
                    "not_found",
                    f"{kind} {name} does not exist in namespace {idx.namespace} after {waited:.0f}s: apply it "
                    f"first (run deploy) or fix the name",
                    f"{kind}/{name}",
                    {"namespace": idx.namespace},
                )
    return None


# ------------------------------------------------------------------------------------------------- PVCs


def _diagnose_pvc(idx: _Index, pvc: dict) -> Finding | None:
    name = _name(pvc)
    obj = f"PersistentVolumeClaim/{name}"
    if _get(pvc, "status", "phase", default="Pending") != "Pending" or _get(pvc, "metadata", "deletionTimestamp"):
        return None
    events = idx.events_for("PersistentVolumeClaim", name)
    volume = _get(pvc, "spec", "volumeName")
    sc_name = _get(pvc, "spec", "storageClassName")
    evidence: dict[str, t.Any] = {"volumeName": volume, "storageClassName": sc_name}

    if volume:
        if idx.pvs is not None and volume not in idx.pvs:
            return Finding(
                "pvc_pending",
                f"PVC {name} is Pending: it names PersistentVolume {volume}, which does not exist; create the "
                f"static PV (storage role, FSx file system id) or drop spec.volumeName",
                obj,
                evidence,
            )
        pv = (idx.pvs or {}).get(volume)
        claim_ref = _get(pv, "spec", "claimRef") if pv else None
        if pv and claim_ref and (claim_ref.get("name"), claim_ref.get("namespace")) != (name, idx.namespace):
            return Finding(
                "pvc_pending",
                f"PVC {name} is Pending: PersistentVolume {volume} is already claimed by "
                f"{claim_ref.get('namespace')}/{claim_ref.get('name')}; use another PV or free that one",
                obj,
                {**evidence, "pv_phase": _get(pv, "status", "phase"), "claimRef": claim_ref},
            )
        if pv and _get(pv, "status", "phase") == "Released":
            return Finding(
                "pvc_pending",
                f"PVC {name} is Pending: PersistentVolume {volume} is Released (it still remembers a deleted claim); "
                f"clear its spec.claimRef to bind it again (reclaim policy Retain kept the data)",
                obj,
                {**evidence, "pv_phase": "Released", "claimRef": claim_ref},
            )

    warning = _last_warning(events, "ProvisioningFailed", "FailedBinding", "VolumeMismatch", "ClaimLost")
    if warning:
        text = warning.get("message", "")
        hint = "fix the StorageClass/PV it names"
        if "not found" in text and "storageclass" in text.lower():
            hint = "create the StorageClass or fix storageClassName"
        elif "no persistent volumes available" in text:
            hint = "create a matching PersistentVolume (static) or set a storageClassName (dynamic)"
        return Finding(
            "pvc_pending",
            f"PVC {name} is Pending: {_one_line(text, 200)}; {hint}",
            obj,
            {**evidence, "event": _event_evidence(warning)},
        )

    if volume or sc_name == "":
        return None  # static binding in progress, nothing known to be wrong (yet)
    if idx.storage_classes is None:
        return None
    sc = idx.storage_classes.get(sc_name or "") if sc_name else _default_storage_class(idx)
    if sc_name and sc is None:
        return Finding(
            "pvc_pending",
            f"PVC {name} is Pending: StorageClass {sc_name} does not exist; create it or fix storageClassName",
            obj,
            evidence,
        )
    if sc is None:
        return None
    if sc.get("volumeBindingMode") == "WaitForFirstConsumer":
        return None
    provisioner = sc.get("provisioner", "")
    evidence["provisioner"] = provisioner
    in_tree = provisioner.startswith("kubernetes.io/")
    if not in_tree and idx.csi_drivers is not None and provisioner not in idx.csi_drivers:
        return Finding(
            "pvc_pending",
            f"PVC {name} is Pending: StorageClass {_name(sc)} uses provisioner {provisioner}, but no CSI driver of "
            f"that name is registered (no CSIDriver object); install the driver (for FSx: aws-fsx-csi-driver) "
            f"or fix the StorageClass",
            obj,
            {**evidence, "csi_drivers": sorted(idx.csi_drivers)},
        )
    waited = idx.age(pvc)
    from_provisioner = [e for e in events if e.get("reason") in ("Provisioning", "ProvisioningSucceeded")]
    if not in_tree and not from_provisioner and waited >= idx.settings.provisioner_grace:
        waiting = _last_event(events, "ExternalProvisioning")
        return Finding(
            "pvc_pending",
            f"PVC {name} is Pending after {waited:.0f}s and provisioner {provisioner} has not picked it up; its "
            f"controller is not running or cannot reach the API (check the CSI controller pods)",
            obj,
            {**evidence, "event": _event_evidence(waiting)},
        )
    return None


def _last_event(events: list[dict], reason: str) -> dict | None:
    for event in reversed(events):
        if event.get("reason") == reason:
            return event
    return None


def _default_storage_class(idx: _Index) -> dict | None:
    for sc in (idx.storage_classes or {}).values():
        if _get(sc, "metadata", "annotations", "storageclass.kubernetes.io/is-default-class") == "true":
            return sc
    return None


# ------------------------------------------------------------------------------------------------- Jobs


def _diagnose_job(idx: _Index, job: dict) -> Finding | None:
    name = _name(job)
    if _is_true(job, "Complete"):
        return None
    pods = sorted(_job_pods(idx, job), key=lambda p: _get(p, "metadata", "creationTimestamp", default=""))
    failed_pods = [p for p in pods if _get(p, "status", "phase") == "Failed"]
    # A refused Hugging Face download does not fix itself: say so on the first failed attempt.
    for pod in reversed(pods):
        finding = _job_auth_finding(idx, job, pod)
        if finding:
            return finding
    if _is_true(job, "Failed"):
        cond = _condition(job, "Failed") or {}
        pod = failed_pods[-1] if failed_pods else None
        evidence: dict[str, t.Any] = {"condition": {k: cond.get(k) for k in ("reason", "message")}}
        detail = ""
        if pod:
            container, term = _failed_container(pod)
            lines, error = idx.log_text(_name(pod), container) if container else ([], None)
            evidence.update(_container_evidence(pod, container, term, lines, error))
            detail = (
                f"; pod {_name(pod)} container {container} exited {term.get('exitCode')}"
                f"{_log_clause(lines, error, term)}"
                if container
                else ""
            )
        return Finding(
            "job_failed",
            f"Job {name} failed ({cond.get('reason', 'Failed')}: {_one_line(cond.get('message', ''), 120)}){detail}; "
            f"fix what the log reports, then re-run deploy",
            f"Job/{name}",
            evidence,
        )
    for pod in pods:
        if _get(pod, "status", "phase") in ("Failed", "Succeeded"):
            continue
        finding = _diagnose_pod(idx, pod, restarts_matter=False)
        if finding:
            return finding
    return None


def _failed_container(pod: dict) -> tuple[str | None, dict]:
    for status in _get(pod, "status", "initContainerStatuses", default=[]) + _get(
        pod, "status", "containerStatuses", default=[]
    ):
        for term in (_get(status, "state", "terminated"), _get(status, "lastState", "terminated")):
            if term and term.get("exitCode", 0) != 0:
                return status["name"], term
    return None, {}


def _job_auth_finding(idx: _Index, job: dict, pod: dict) -> Finding | None:
    """A Hugging Face 401/403 in a failed download container's log: the token, not the Job, needs fixing."""
    container, term = _failed_container(pod)
    if not container:
        return None
    lines, error = idx.log_text(_name(pod), container)
    text = "\n".join(lines) + "\n" + (term.get("message") or "")
    if not _HF_HOST.search(text):
        return None
    if _HF_403.search(text):
        status = "403 Forbidden"
    elif _HF_401.search(text):
        status = "401 Unauthorized"
    else:
        return None
    secret = _token_secret(pod, container)
    where = f"Secret {secret[0]} key {secret[1]}" if secret else "the token Secret the Job references"
    if status.startswith("401"):
        fix = f"put a valid Hugging Face token in {where} and accept the model's license on huggingface.co"
    else:
        fix = (
            f"the token in {where} lacks access: accept the gated model's license with that account "
            f"or use a token with read access"
        )
    return Finding(
        "job_auth",
        f"Job {_name(job)}: Hugging Face refused the download ({status}){_log_clause(lines, error, term)}; {fix}, "
        f"then re-run deploy",
        f"Job/{_name(job)}",
        {**_container_evidence(pod, container, term, lines, error), "http_status": status, "token_secret": secret},
    )


def _token_secret(pod: dict, container: str) -> tuple[str, str] | None:
    for spec in _get(pod, "spec", "containers", default=[]) + _get(pod, "spec", "initContainers", default=[]):
        if spec.get("name") != container:
            continue
        for env in spec.get("env") or []:
            ref = _get(env, "valueFrom", "secretKeyRef")
            if ref and re.search(r"TOKEN|HF_", env.get("name", ""), re.IGNORECASE):
                return ref.get("name"), ref.get("key")
        for source in spec.get("envFrom") or []:
            if _get(source, "secretRef", "name"):
                return source["secretRef"]["name"], "HF_TOKEN"
    return None


# ------------------------------------------------------------------------------------------ Deployments


def _diagnose_deployment(idx: _Index, dep: dict, replicasets: list[dict]) -> Finding | None:
    name = _name(dep)
    if _deployment_done(dep):
        return None
    failure = _condition(dep, "ReplicaFailure")
    if failure and failure.get("status") == "True":
        return Finding(
            "replica_failure",
            f"Deployment {name} cannot create pods: {_one_line(failure.get('message', ''), 200)}; fix the quota, "
            f"LimitRange or admission policy that rejects them",
            f"Deployment/{name}",
            {"condition": {k: failure.get(k) for k in ("reason", "message")}},
        )
    for pod in _current_pods(idx, dep, replicasets):
        finding = _diagnose_pod(idx, pod, restarts_matter=True)
        if finding:
            return finding
    progressing = _condition(dep, "Progressing")
    if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
        return Finding(
            "not_ready",
            f"Deployment {name} exceeded its progress deadline ({_get(dep, 'spec', 'progressDeadlineSeconds')}s) "
            f"without becoming Available; check its pods' events and logs",
            f"Deployment/{name}",
            {"condition": {k: progressing.get(k) for k in ("reason", "message")}},
        )
    return None


# ------------------------------------------------------------------------------------------------- Pods


def _diagnose_pod(idx: _Index, pod: dict, restarts_matter: bool) -> Finding | None:
    """One pod's certain failure. ``restarts_matter`` is False for Job pods, whose exits the Job judges."""
    scheduled = _condition(pod, "PodScheduled")
    if scheduled and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return _diagnose_unschedulable(idx, pod, scheduled)

    for kind, statuses in (
        ("init container", _get(pod, "status", "initContainerStatuses", default=[])),
        ("container", _get(pod, "status", "containerStatuses", default=[])),
    ):
        for status in statuses:
            finding = _diagnose_container(idx, pod, kind, status, restarts_matter)
            if finding:
                return finding

    return _diagnose_readiness(idx, pod) if restarts_matter else None


def _diagnose_container(idx: _Index, pod: dict, kind: str, status: dict, restarts_matter: bool) -> Finding | None:
    pod_name, container = _name(pod), status.get("name", "")
    obj = f"Pod/{pod_name}"
    waiting = _get(status, "state", "waiting", default={})
    term = _get(status, "state", "terminated") or _get(status, "lastState", "terminated") or {}
    reason = waiting.get("reason", "")

    if term.get("reason") == "OOMKilled":
        return _oom_finding(idx, pod, kind, status, term)

    if reason in _IMAGE_PULL_WAITING:
        message = waiting.get("message", "")
        event = _last_warning(idx.events_for("Pod", pod_name), "Failed")
        detail = (event or {}).get("message", "") if event and "image" in event.get("message", "").lower() else ""
        if reason == "ErrImagePull" and not _PULL_FINAL.search(message + " " + detail):
            return None  # may be transient; the back-off that follows is certain
        image = _container_image(pod, container)
        said = message + " " + detail
        cause = "the registry refused access" if _PULL_AUTH.search(said) else "the pull failed"
        if re.search(r"not found|manifest unknown", said, re.IGNORECASE):
            cause = "the image or tag does not exist"
        if re.search(r"does not exist or may require authorization", said, re.IGNORECASE):
            cause = "the repository does not exist or needs credentials"
        if reason == "InvalidImageName":
            cause = "the image name is invalid"
        return Finding(
            "image_pull",
            f"Pod {pod_name} {kind} {container} cannot pull image {image} ({reason}: {cause}); fix the image "
            f"reference, or grant pull access (imagePullSecrets; for ECR, the node role's ecr:BatchGetImage)",
            obj,
            {
                "container": container,
                "image": image,
                "waiting": {"reason": reason, "message": _one_line(message, 500)},
                "event": _event_evidence(event),
            },
        )

    if reason in _CONFIG_WAITING:
        return Finding(
            "config_error",
            f"Pod {pod_name} {kind} {container} cannot start ({reason}: {_one_line(waiting.get('message', ''), 160)}); "
            f"create the Secret/ConfigMap it references or fix the reference",
            obj,
            {"container": container, "waiting": {"reason": reason, "message": waiting.get("message")}},
        )

    if kind == "init container" and term and term.get("exitCode", 0) != 0:
        if not restarts_matter and reason != "CrashLoopBackOff":
            return None  # a Job pod's failed attempt: the Job's backoffLimit decides
        lines, error = idx.log_text(pod_name, container)
        return Finding(
            "init_failed",
            f"Pod {pod_name} init container {container} failed (exit {term.get('exitCode')}, "
            f"{status.get('restartCount', 0)} restarts){_log_clause(lines, error, term)}; fix what it reports "
            f"(a missing or corrupt model on the volume: re-run the download Job) and the pod retries by itself",
            obj,
            _container_evidence(pod, container, term, lines, error, status),
        )

    if (
        kind == "container"
        and restarts_matter
        and (reason == "CrashLoopBackOff" or (term.get("exitCode", 0) != 0 and status.get("restartCount", 0) >= 2))
    ):
        lines, error = idx.log_text(pod_name, container)
        hint = _crash_hint(lines, term)
        killed = _probe_kill(idx, pod_name, container)
        if killed:
            # The kubelet, not vLLM, ended it: the probe gives up before the model has loaded.
            hint = (
                f"the kubelet killed it after a failed {killed} probe: give the model load more time "
                f"(startupProbe failureThreshold x periodSeconds) or fix the probe"
            )
        return Finding(
            "crash_loop",
            f"Pod {pod_name} container {container} is crash-looping (exit {term.get('exitCode', '?')}, "
            f"{status.get('restartCount', 0)} restarts){_log_clause(lines, error, term)}; "
            f"{hint or 'fix the error its log reports (server arguments, model, GPU)'}",
            obj,
            _container_evidence(pod, container, term, lines, error, status),
        )
    return None


def _diagnose_readiness(idx: _Index, pod: dict) -> Finding | None:
    if _get(pod, "status", "phase") != "Running" or _is_true(pod, "Ready"):
        return None
    starts = []
    for status in _get(pod, "status", "containerStatuses", default=[]):
        running = _get(status, "state", "running")
        if not running:
            return None  # still starting or restarting: other checks decide
        if not status.get("ready"):
            starts.append((_ts(running.get("startedAt")) or idx.now, status))
    if not starts:
        return None
    started, status = max(starts, key=lambda item: item[0])
    ran = idx.now - started
    budget = idx.settings.startup_budget
    if ran < budget:
        return None
    pod_name = _name(pod)
    probe = _last_warning(idx.events_for("Pod", pod_name), "Unhealthy")
    probe_text = f"; last probe: {_one_line(probe.get('message', ''), 160)}" if probe else ""
    lines, error = idx.log_text(pod_name, status.get("name", ""))
    return Finding(
        "not_ready",
        f"Pod {pod_name} container {status.get('name')} has run {ran:.0f}s without becoming Ready (startup budget "
        f"{budget:.0f}s){probe_text}; check the server log, raise the startup budget if the model loads slower, "
        f"or fix the readiness probe",
        f"Pod/{pod_name}",
        {
            "container": status.get("name"),
            "running_s": round(ran, 1),
            "startup_budget_s": budget,
            "event": _event_evidence(probe),
            "log_tail": lines[-idx.settings.log_lines :] if lines else None,
            "log_error": error,
        },
    )


def _container_image(pod: dict, container: str) -> str:
    for spec in _get(pod, "spec", "containers", default=[]) + _get(pod, "spec", "initContainers", default=[]):
        if spec.get("name") == container:
            return spec.get("image", "")
    return ""


def _container_spec(pod: dict, container: str) -> dict:
    for spec in _get(pod, "spec", "containers", default=[]) + _get(pod, "spec", "initContainers", default=[]):
        if spec.get("name") == container:
            return spec
    return {}


def _log_clause(lines: list[str], error: str | None, term: dict) -> str:
    """``; last log line: "..."`` or why there is none."""
    for line in reversed(lines):
        if line.strip():
            return f'; last log line: "{_one_line(line, 200)}"'
    if term.get("message"):
        return f'; termination message: "{_one_line(term["message"], 200)}"'
    if error:
        return f" (container logs unavailable: {_one_line(error, 100)})"
    return " (no log lines)"


def _container_evidence(
    pod: dict, container: str | None, term: dict, lines: list[str], error: str | None, status: dict | None = None
) -> dict[str, t.Any]:
    evidence: dict[str, t.Any] = {
        "pod": _name(pod),
        "container": container,
        "terminated": {k: term.get(k) for k in ("exitCode", "reason", "message", "finishedAt") if term.get(k)},
        "log_tail": lines[-20:] if lines else None,
        "log_error": error,
    }
    if status is not None:
        evidence["restartCount"] = status.get("restartCount", 0)
        evidence["waiting"] = _get(status, "state", "waiting")
    return evidence


def _probe_kill(idx: _Index, pod_name: str, container: str) -> str | None:
    """``startup`` or ``liveness`` when the kubelet's last Killing event says a probe failed."""
    for event in reversed(idx.events_for("Pod", pod_name)):
        message = event.get("message", "")
        if event.get("reason") == "Killing" and container in message:
            found = re.search(r"failed (startup|liveness) probe", message)
            return found.group(1) if found else None
    return None


def _crash_hint(lines: list[str], term: dict) -> str | None:
    text = "\n".join(lines) + "\n" + (term.get("message") or "")
    for pattern, hint in _CRASH_HINTS:
        if pattern.search(text):
            return hint
    return None


# -------------------------------------------------------------------------------------------------- OOM


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


# ---------------------------------------------------------------------------------------- Unschedulable


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


# -------------------------------------------------------------------------------------------- the loop


@dataclasses.dataclass
class WaitResult:
    """What a wait ended with."""

    ok: bool
    states: dict[str, t.Any]
    elapsed_ms: int
    polls: int
    finding: Finding | None = None


class DeploymentWatch:
    """Polls the objects deploy created until they succeed or a finding is certain.

    ``api_client`` is a ``kubernetes.client.ApiClient`` (one, reused for every call).
    """

    def __init__(
        self,
        api_client: t.Any,
        namespace: str,
        deployments: t.Sequence[str] = (),
        jobs: t.Sequence[str] = (),
        pvcs: t.Sequence[str] = (),
        label_selector: str | None = None,
        settings: Settings | None = None,
        leaderworkersets: t.Sequence[str] = (),
        poll_interval: float = 1.0,
        request_timeout: float = 10.0,
        api_grace: float = 60.0,
        clock: t.Callable[[], float] = time.time,
        sleep: t.Callable[[float], None] = time.sleep,
    ):
        from kubernetes import client  # imported here so diagnose() needs no kubernetes package

        self.namespace = namespace
        self.names = {
            "deployments": list(deployments),
            "jobs": list(jobs),
            "pvcs": list(pvcs),
            "leaderworkersets": list(leaderworkersets),
        }
        self.label_selector = label_selector
        self.settings = settings or Settings()
        self.poll_interval = max(poll_interval, 0.5)
        self.request_timeout = request_timeout
        self.api_grace = api_grace
        self.clock, self.sleep = clock, sleep
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.storage = client.StorageV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self._logs: dict[tuple, dict[str, t.Any]] = {}
        self._node_pools_missing = False
        self.api_errors: list[str] = []

    # -- reading the API
    def _items(self, call: t.Callable, *args: t.Any, **kwargs: t.Any) -> list[dict]:
        resp = call(*args, _preload_content=False, _request_timeout=self.request_timeout, **kwargs)
        return json.loads(resp.data).get("items") or []

    def _optional(self, call: t.Callable, *args: t.Any, **kwargs: t.Any) -> list[dict] | None:
        """A list the user may not be allowed to read (nodes, PVs...): ``None`` when forbidden or absent."""
        from kubernetes.client.exceptions import ApiException

        try:
            return self._items(call, *args, **kwargs)
        except ApiException as exc:
            if exc.status in (401, 403, 404):
                return None
            raise

    def _targets(self, objects: dict[str, list[dict]]) -> dict[str, list[str]]:
        targets = {k: list(v) for k, v in self.names.items()}
        if self.label_selector:
            for key, items in objects.items():
                for obj in items:
                    labels = _get(obj, "metadata", "labels", default={})
                    if _labels_match_string(labels, self.label_selector) and _name(obj) not in targets[key]:
                        targets[key].append(_name(obj))
        return targets

    def snapshot(self, started: float) -> dict[str, t.Any]:
        """Read what :func:`diagnose` needs, fetching cluster-wide objects only when a finding may need them."""
        ns = self.namespace
        want_any = self.label_selector is not None
        snap: dict[str, t.Any] = {
            "now": self.clock(),
            "started": started,
            "namespace": ns,
            "settings": dataclasses.asdict(self.settings),
        }
        snap["deployments"] = (
            self._items(self.apps.list_namespaced_deployment, ns) if self.names["deployments"] or want_any else []
        )
        snap["jobs"] = self._items(self.batch.list_namespaced_job, ns) if self.names["jobs"] or want_any else []
        snap["pvcs"] = self._items(self.core.list_namespaced_persistent_volume_claim, ns)
        snap["leaderworkersets"] = (
            self._items(
                self.custom.list_namespaced_custom_object, "leaderworkerset.x-k8s.io", "v1", ns, "leaderworkersets"
            )
            if self.names["leaderworkersets"]
            else []
        )
        snap["targets"] = self._targets({k: snap[k] for k in ("deployments", "jobs", "pvcs")})
        snap["targets"]["leaderworkersets"] = list(self.names["leaderworkersets"])
        if progress(snap)["done"]:
            return snap
        snap["replicasets"] = self._items(self.apps.list_namespaced_replica_set, ns) if snap["deployments"] else []
        snap["pods"] = self._items(self.core.list_namespaced_pod, ns)
        snap["events"] = self._items(self.core.list_namespaced_event, ns)
        if any(_is_unschedulable(p) for p in snap["pods"]):
            snap["nodes"] = self._optional(self.core.list_node)
            snap["node_pools"] = self._node_pools()
        if any(_get(p, "status", "phase", default="Pending") == "Pending" for p in snap["pvcs"]):
            snap["pvs"] = self._optional(self.core.list_persistent_volume)
            snap["storage_classes"] = self._optional(self.storage.list_storage_class)
            snap["csi_drivers"] = self._optional(self.storage.list_csi_driver)
        snap["logs"] = self._fetch_logs(snap)
        return snap

    def _node_pools(self) -> list[dict] | None:
        if self._node_pools_missing:
            return []
        pools = self._optional(self.custom.list_cluster_custom_object, "karpenter.sh", "v1", "nodepools")
        if pools is None:
            self._node_pools_missing = True  # no Karpenter (or not allowed to see it): stop asking
            return []
        return pools

    def _fetch_logs(self, snap: dict[str, t.Any]) -> dict[str, dict[str, t.Any]]:
        """Tails of failed containers, each container instance fetched once."""
        from kubernetes.client.exceptions import ApiException

        pods = {_name(p): p for p in snap.get("pods") or []}
        out: dict[str, dict[str, t.Any]] = {}
        for ref in logs_wanted(snap):
            pod = pods.get(ref.pod) or {}
            restarts = _restart_count(pod, ref.container)
            cache_key = (_get(pod, "metadata", "uid"), ref.container, restarts, ref.previous)
            if cache_key not in self._logs:
                entry: dict[str, t.Any] = {"lines": [], "error": None}
                for previous in (ref.previous, not ref.previous) if ref.previous else (False,):
                    try:
                        text = self.core.read_namespaced_pod_log(
                            ref.pod,
                            self.namespace,
                            container=ref.container,
                            previous=previous,
                            tail_lines=self.settings.log_lines,
                            _request_timeout=self.request_timeout,
                        )
                        entry = {"lines": str(text or "").splitlines(), "error": None}
                        break
                    except ApiException as exc:
                        entry["error"] = entry["error"] or _api_error_text(exc)
                    except Exception as exc:  # noqa: BLE001 - a log we cannot read is evidence, not a failure
                        entry["error"] = entry["error"] or _one_line(str(exc), 160)
                self._logs[cache_key] = entry
            out[ref.key] = self._logs[cache_key]
        return out

    def job_manifest(self, job: str, container: str = "model-download") -> dict[str, t.Any]:
        """The staging engine's manifest from the log of ``job``'s succeeded pod (its last ``MANIFEST`` line).

        Returns ``{"manifest": dict | None, "pod": str | None, "error": str | None}``; a log that cannot be
        read, or holds no manifest line, gives ``manifest: None`` and says why in ``error``.
        """
        from kubernetes.client.exceptions import ApiException

        try:
            pods = self._items(
                self.core.list_namespaced_pod, self.namespace, label_selector=f"batch.kubernetes.io/job-name={job}"
            )
        except ApiException as exc:
            return {"manifest": None, "pod": None, "error": _api_error_text(exc)}
        succeeded = [p for p in pods if _get(p, "status", "phase") == "Succeeded"]
        if not succeeded:
            return {"manifest": None, "pod": None, "error": f"Job {job} has no succeeded pod left to read"}
        pod = _name(max(succeeded, key=lambda p: _get(p, "metadata", "creationTimestamp", default="")))
        try:
            text = self.core.read_namespaced_pod_log(
                pod,
                self.namespace,
                container=container,
                tail_lines=MANIFEST_TAIL_LINES,
                _request_timeout=self.request_timeout,
            )
        except ApiException as exc:
            return {"manifest": None, "pod": pod, "error": _api_error_text(exc)}
        except Exception as exc:  # noqa: BLE001 - an unreadable log is reported, not raised
            return {"manifest": None, "pod": pod, "error": _one_line(str(exc), 160)}
        manifest = manifest_from_log(str(text or "").splitlines())
        error = None if manifest else f"the log of pod {pod} container {container} holds no manifest line"
        return {"manifest": manifest, "pod": pod, "error": error}

    # -- the loop
    def run(self, timeout: float, once: bool = False) -> WaitResult:
        """Poll until done, a finding, or ``timeout`` seconds; ``once`` takes a single look (check mode)."""
        started = self.clock()
        deadline = started + timeout
        polls = 0
        last_ok = started
        snap: dict[str, t.Any] = {"targets": self.names}
        while True:
            polls += 1
            try:
                snap = self.snapshot(started)
                last_ok = self.clock()
            except Exception as exc:  # noqa: BLE001 - the API may be restarting; judged by api_grace below
                self.api_errors.append(_one_line(str(exc), 200))
                if self.clock() - last_ok >= self.api_grace or once:
                    return self._result(
                        started,
                        polls,
                        snap,
                        Finding(
                            "api_unreachable",
                            f"The Kubernetes API did not answer for {self.clock() - last_ok:.0f}s: "
                            f"{self.api_errors[-1]}; check the kubeconfig and that the control plane is up",
                            f"Namespace/{self.namespace}",
                            {"errors": self.api_errors[-5:]},
                        ),
                    )
                self.sleep(self.poll_interval)
                continue
            states = progress(snap)
            if states["done"]:
                return self._result(started, polls, snap, None)
            finding = diagnose(snap)
            if finding:
                return self._result(started, polls, snap, finding)
            if once:
                return self._result(started, polls, snap, None, ok=True)
            now = self.clock()
            if now >= deadline:
                return self._result(started, polls, snap, self._timeout_finding(snap, timeout))
            self.sleep(min(self.poll_interval, max(deadline - now, 0)))

    def _result(
        self, started: float, polls: int, snap: dict, finding: Finding | None, ok: bool | None = None
    ) -> WaitResult:
        states = progress(snap) if snap.get("now") else {"done": False}
        return WaitResult(
            ok=(finding is None) if ok is None else ok,
            states=states,
            elapsed_ms=int((self.clock() - started) * 1000),
            polls=polls,
            finding=finding,
        )

    def _timeout_finding(self, snap: dict[str, t.Any], timeout: float) -> Finding:
        states = progress(snap)
        pending = [
            f"{kind[:-1]} {name} ({state['status']})"
            for kind in ("pvcs", "jobs", "deployments", "leaderworkersets")
            for name, state in states[kind].items()
            if not state["done"]
        ]
        return Finding(
            "timeout",
            f"Timed out after {timeout:.0f}s with no known failure; still waiting for {', '.join(pending)}; "
            f"look at their events (kubectl describe) or raise the timeout",
            f"Namespace/{self.namespace}",
            {"pending": pending},
        )


def _labels_match_string(labels: dict[str, str], selector: str) -> bool:
    """Equality-based label selector strings (``a=b,c!=d,e``), as deploy's roles use them."""
    for part in filter(None, (p.strip() for p in selector.split(","))):
        if "!=" in part:
            key, value = part.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in part:
            key, value = part.split("==", 1) if "==" in part else part.split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif part.startswith("!"):
            if part[1:] in labels:
                return False
        elif part not in labels:
            return False
    return True


def _is_unschedulable(pod: dict) -> bool:
    cond = _condition(pod, "PodScheduled")
    return bool(cond and cond.get("status") == "False" and cond.get("reason") == "Unschedulable")


def _restart_count(pod: dict, container: str) -> int:
    for status in _get(pod, "status", "initContainerStatuses", default=[]) + _get(
        pod, "status", "containerStatuses", default=[]
    ):
        if status.get("name") == container:
            return status.get("restartCount", 0)
    return 0


def _api_error_text(exc: t.Any) -> str:
    try:
        body = json.loads(exc.body or "{}")
        return _one_line(body.get("message") or exc.reason or str(exc), 160)
    except (TypeError, ValueError):
        return _one_line(str(exc.reason or exc), 160)
