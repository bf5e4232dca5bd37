# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the start-up timeline reads from the cluster, in a handful of requests: the server Deployments and their
pods, the namespace's pod events (one list), the nodes the pods run on, Karpenter's NodeClaims when a node is
Karpenter's, the tail of each staging and download log, the head of each vLLM server's log (its start-up, with the
kubelet's timestamps). The rows themselves come from startup_timeline.py."""

from __future__ import annotations

import typing as t

from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis import LWS_NAME_LABEL
from ansible_collections.llmops.vllm.plugins.module_utils.kube_client import ApiError, Kube
from ansible_collections.llmops.vllm.plugins.module_utils.startup_timeline import job_timeline, pod_timeline, summary
from ansible_collections.llmops.vllm.plugins.module_utils.vllm_log import HEAD_BYTES

MANAGED = "app.kubernetes.io/managed-by=llmops.vllm"
SERVERS = "app.kubernetes.io/name=vllm," + MANAGED
# Karpenter labels the nodes it makes with their NodePool (karpenter v1.8.0 pkg/apis/v1/labels.go NodePoolLabelKey).
KARPENTER_NODEPOOL = "karpenter.sh/nodepool"
JOB_CONTAINER = "model-download"


def _name(obj: t.Mapping[str, t.Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _selector(deployment: t.Mapping[str, t.Any]) -> str:
    labels = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _log(kube: Kube, namespace: str, pod: str, container: str, lines: int) -> list[str] | str:
    """The last ``lines`` of a container's log, or why it cannot be read (a str: the pod or its log is gone)."""
    try:
        return kube.pod_log(namespace, pod, container, lines)
    except ApiError as exc:
        return exc.message


def _head(kube: Kube, namespace: str, pod: str, container: str) -> list[str] | str:
    """The start of a container's log with the kubelet's timestamps, or why it cannot be read (a str)."""
    try:
        lines = kube.pod_log(namespace, pod, container, None, timestamps=True, limit_bytes=HEAD_BYTES)
    except ApiError as exc:
        return exc.message
    return lines[:-1] if sum(len(line) + 1 for line in lines) >= HEAD_BYTES else lines  # the last line is cut


def _load_strategy(pod: t.Mapping[str, t.Any], stage: str, server: str) -> str:
    spec = pod.get("spec") or {}
    if any(c.get("name") == stage for c in spec.get("initContainers") or []):
        return "ram_copy"
    args = next((c.get("args") or [] for c in spec.get("containers") or [] if c.get("name") == server), [])
    return "runai_streamer" if any("runai_streamer" in str(a) for a in args) else "direct"


def _nodeclaims(kube: Kube, nodes: dict[str, dict | None]) -> dict[str, dict]:
    """NodeClaims by node name, asked only when a node is Karpenter's and the cluster serves NodeClaims."""
    karpenter = [
        n for n in nodes.values() if n and KARPENTER_NODEPOOL in ((n.get("metadata") or {}).get("labels") or {})
    ]
    if not karpenter or "NodeClaim" not in (kube.resources("karpenter.sh/v1") or {}):
        return {}
    claims = kube.list("karpenter.sh/v1", "NodeClaim")
    return {(c.get("status") or {}).get("nodeName"): c for c in claims if (c.get("status") or {}).get("nodeName")}


def _servers(kube: Kube, namespace: str, names: t.Sequence[str] | None) -> list[dict]:
    if names is None:
        return sorted(kube.list("apps/v1", "Deployment", namespace, label_selector=SERVERS), key=_name)
    return [kube.request("GET", kube.path("apps/v1", "Deployment", name, namespace)) for name in names]


def _jobs(kube: Kube, namespace: str, names: t.Sequence[str] | None, lines: int) -> list[dict]:
    if names is None:
        found = sorted(kube.list("batch/v1", "Job", namespace, label_selector=MANAGED), key=_name)
    else:
        found = [kube.request("GET", kube.path("batch/v1", "Job", name, namespace)) for name in names]
    reports = []
    for job in found:
        pods = kube.list("v1", "Pod", namespace, label_selector=f"batch.kubernetes.io/job-name={_name(job)}")
        done = [p for p in pods if (p.get("status") or {}).get("phase") == "Succeeded"]
        newest = max(done, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "", default=None)
        log = _log(kube, namespace, _name(newest), JOB_CONTAINER, lines) if newest else "no succeeded pod left"
        reports.append(job_timeline(job, log))
    return reports


def gather(
    kube: Kube,
    namespace: str,
    deployments: t.Sequence[str] | None = None,
    jobs: t.Sequence[str] | None = None,
    first_token_ms: t.Mapping[str, t.Any] | None = None,
    containers: tuple[str, str] = ("model-loader", "vllm"),
    log_lines: int = 50,
    leaderworkersets: t.Sequence[str] = (),
) -> dict[str, t.Any]:
    """Pods, jobs, table and slowest phase of ``deployments`` and ``jobs`` in ``namespace`` (None: every one of
    the collection's there; empty: none). ``first_token_ms`` maps a Deployment to its probe's time to first token."""
    stage, server = containers
    ttft = {str(k): float(v) for k, v in (first_token_ms or {}).items() if v is not None}
    lines = int(log_lines)
    job_reports = _jobs(kube, namespace, jobs, lines)
    pods_of: list[tuple[str, dict]] = []
    for deployment in _servers(kube, namespace, deployments):
        pods = kube.list("v1", "Pod", namespace, label_selector=_selector(deployment))
        live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
        pods_of += [(_name(deployment), p) for p in sorted(live, key=_name)]
    for group in leaderworkersets:  # every pod of a group stages and loads its own copy
        pods = kube.list("v1", "Pod", namespace, label_selector=f"{LWS_NAME_LABEL}={group}")
        pods_of += [
            (group, p) for p in sorted(pods, key=_name) if not (p.get("metadata") or {}).get("deletionTimestamp")
        ]
    events = kube.list("v1", "Event", namespace, field_selector="involvedObject.kind=Pod") if pods_of else []
    nodes: dict[str, dict | None] = {}
    for _deployment, pod in pods_of:
        node = (pod.get("spec") or {}).get("nodeName")
        if node and node not in nodes:
            nodes[node] = kube.request("GET", kube.path("v1", "Node", node), missing_ok=True)
    try:
        claims = _nodeclaims(kube, nodes)
    except ApiError:  # e.g. no right to list NodeClaims: the node row says less
        claims = {}
    reports = []
    for deployment, pod in pods_of:
        node = (pod.get("spec") or {}).get("nodeName")
        has_stage = any(c.get("name") == stage for c in (pod.get("spec") or {}).get("initContainers") or [])
        running = any(
            s.get("name") == server and "running" in (s.get("state") or {})
            for s in (pod.get("status") or {}).get("containerStatuses") or []
        )
        report = pod_timeline(
            pod,
            events,
            stage_log=_log(kube, namespace, _name(pod), stage, lines) if has_stage else None,
            server_log=_head(kube, namespace, _name(pod), server) if running else None,
            node=nodes.get(node) if node else None,
            nodeclaim=claims.get(node),
            ttft_ms=ttft.get(deployment),
            containers=(stage, server),
            load_strategy=_load_strategy(pod, stage, server),
        )
        reports.append({"deployment": deployment, **report})
    return summary(reports, job_reports)
