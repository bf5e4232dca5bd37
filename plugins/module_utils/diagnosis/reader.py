# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Reading the API for a watch: one snapshot per poll (through the collection's one client, ``kube_client.Kube``),
with pods, events, cluster-wide objects (nodes, NodePools, PVs, StorageClasses, CSIDrivers) and log tails fetched
only when a finding may need them; and the staging engine's manifest read back from a download Job's log."""

from __future__ import annotations

import dataclasses
import typing as t

from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.findings import LogRef, Settings
from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.progress import logs_wanted, progress
from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.snapshot import _get, _name, _one_line, condition
from ansible_collections.llmops.vllm.plugins.module_utils.kube_client import ApiError
from ansible_collections.llmops.vllm.plugins.module_utils.model_stage import manifest_from_log

# The staging engine prints its manifest last on stdout; stderr may interleave a progress line or two after it.
MANIFEST_TAIL_LINES = 20


@dataclasses.dataclass(frozen=True)
class WatchScope:
    """What a watch looks at: objects named per kind in one namespace, plus those a label selector matches."""

    namespace: str
    #: Names per kind: ``deployments``, ``jobs``, ``pvcs`` and ``leaderworkersets``.
    names: dict[str, list[str]]
    label_selector: str | None = None

    @classmethod
    def of(
        cls,
        namespace: str,
        label_selector: str | None = None,
        *,
        deployments: t.Sequence[str] = (),
        jobs: t.Sequence[str] = (),
        pvcs: t.Sequence[str] = (),
        leaderworkersets: t.Sequence[str] = (),
    ) -> WatchScope:
        """The scope from names per kind."""
        names = {"deployments": deployments, "jobs": jobs, "pvcs": pvcs, "leaderworkersets": leaderworkersets}
        return cls(namespace, {kind: list(found) for kind, found in names.items()}, label_selector)

    def targets(self, objects: dict[str, list[dict]]) -> dict[str, list[str]]:
        """The names to watch per kind: those given, then the objects whose labels match the selector."""
        targets = {k: list(v) for k, v in self.names.items()}
        if self.label_selector:
            for key, items in objects.items():
                for obj in items:
                    labels = _get(obj, "metadata", "labels", default={})
                    if _labels_match_string(labels, self.label_selector) and _name(obj) not in targets[key]:
                        targets[key].append(_name(obj))
        return targets


class ClusterReader:
    """The API calls of one watch, and what is worth remembering between its polls: each container instance's log
    tail, and whether Karpenter's NodePools can be read at all.

    ``kube`` is the collection's :class:`kube_client.Kube` (one client, reused for every call); each request here
    gets ``request_timeout`` seconds.
    """

    def __init__(self, kube: t.Any, scope: WatchScope, request_timeout: float):
        self.scope = scope
        self.kube = kube.per_request(request_timeout) if kube is not None else None
        self._logs: dict[tuple, dict[str, t.Any]] = {}
        self._node_pools_missing = False

    def snapshot(self, now: float, started: float, settings: Settings) -> dict[str, t.Any]:
        """Read what :func:`diagnose` needs, fetching cluster-wide objects only when a finding may need them."""
        snap: dict[str, t.Any] = {
            "now": now,
            "started": started,
            "namespace": self.scope.namespace,
            "settings": dataclasses.asdict(settings),
        }
        snap.update(self._read_watched())
        if progress(snap)["done"]:
            return snap
        self._read_surroundings(snap, settings.log_lines)
        return snap

    def _in_namespace(self, base: str, plural: str, **query: str) -> list[dict]:
        return self._items(f"{base}/namespaces/{self.scope.namespace}/{plural}", **query)

    def _read_watched(self) -> dict[str, t.Any]:
        """The watched kinds in the namespace (a kind only when a name or the selector asks for it), and the targets."""
        names = self.scope.names
        want_any = self.scope.label_selector is not None
        found: dict[str, t.Any] = {}
        found["deployments"] = (
            self._in_namespace("/apis/apps/v1", "deployments") if names["deployments"] or want_any else []
        )
        found["jobs"] = self._in_namespace("/apis/batch/v1", "jobs") if names["jobs"] or want_any else []
        found["pvcs"] = self._in_namespace("/api/v1", "persistentvolumeclaims")
        found["leaderworkersets"] = (
            self._in_namespace("/apis/leaderworkerset.x-k8s.io/v1", "leaderworkersets")
            if names["leaderworkersets"]
            else []
        )
        found["targets"] = self.scope.targets({k: found[k] for k in ("deployments", "jobs", "pvcs")})
        found["targets"]["leaderworkersets"] = list(names["leaderworkersets"])
        return found

    def _read_surroundings(self, snap: dict[str, t.Any], log_lines: int) -> None:
        """Add what surrounds unfinished objects to ``snap``: pods, events, and what their failures may need."""
        snap["replicasets"] = self._in_namespace("/apis/apps/v1", "replicasets") if snap["deployments"] else []
        snap["pods"] = self._in_namespace("/api/v1", "pods")
        snap["events"] = self._in_namespace("/api/v1", "events")
        if any(_is_unschedulable(p) for p in snap["pods"]):
            snap["nodes"] = self._optional("/api/v1/nodes")
            snap["node_pools"] = self._node_pools()
        if any(_get(p, "status", "phase", default="Pending") == "Pending" for p in snap["pvcs"]):
            snap["pvs"] = self._optional("/api/v1/persistentvolumes")
            snap["storage_classes"] = self._optional("/apis/storage.k8s.io/v1/storageclasses")
            snap["csi_drivers"] = self._optional("/apis/storage.k8s.io/v1/csidrivers")
        snap["logs"] = self._fetch_logs(snap, log_lines)

    def _items(self, path: str, **query: str) -> list[dict]:
        listing = self.kube.request("GET", path, query=list(query.items())) or {}
        return listing.get("items") or []

    def _optional(self, path: str) -> list[dict] | None:
        """A list the user may not be allowed to read (nodes, PVs...): ``None`` when forbidden or absent."""
        try:
            return self._items(path)
        except ApiError as exc:
            if exc.status in (401, 403, 404):
                return None
            raise

    def _node_pools(self) -> list[dict] | None:
        if self._node_pools_missing:
            return []
        pools = self._optional("/apis/karpenter.sh/v1/nodepools")
        if pools is None:
            self._node_pools_missing = True  # no Karpenter (or not allowed to see it): stop asking
            return []
        return pools

    def _fetch_logs(self, snap: dict[str, t.Any], log_lines: int) -> dict[str, dict[str, t.Any]]:
        """Tails of failed containers, each container instance fetched once."""
        pods = {_name(p): p for p in snap.get("pods") or []}
        out: dict[str, dict[str, t.Any]] = {}
        for ref in logs_wanted(snap):
            pod = pods.get(ref.pod) or {}
            restarts = _restart_count(pod, ref.container)
            cache_key = (_get(pod, "metadata", "uid"), ref.container, restarts, ref.previous)
            if cache_key not in self._logs:
                self._logs[cache_key] = self._log_tail(ref, log_lines)
            out[ref.key] = self._logs[cache_key]
        return out

    def _log_tail(self, ref: LogRef, log_lines: int) -> dict[str, t.Any]:
        """One container's last lines (the previous instance's, else the current one's, when ``ref.previous``)."""
        entry: dict[str, t.Any] = {"lines": [], "error": None}
        for previous in (ref.previous, not ref.previous) if ref.previous else (False,):
            try:
                lines = self.kube.pod_log(self.scope.namespace, ref.pod, ref.container, log_lines, previous)
                return {"lines": lines, "error": None}
            except Exception as exc:  # noqa: BLE001 - a log we cannot read is evidence, not a failure
                entry["error"] = entry["error"] or _one_line(str(exc), 160)
        return entry

    def job_manifest(self, job: str, container: str = "model-download") -> dict[str, t.Any]:
        """The staging engine's manifest from the log of ``job``'s succeeded pod (its last ``MANIFEST`` line).

        Returns ``{"manifest": dict | None, "pod": str | None, "error": str | None}``; a log that cannot be
        read, or holds no manifest line, gives ``manifest: None`` and says why in ``error``.
        """
        try:
            pods = self._in_namespace("/api/v1", "pods", labelSelector=f"batch.kubernetes.io/job-name={job}")
        except ApiError as exc:
            return {"manifest": None, "pod": None, "error": _one_line(exc.message, 160)}
        succeeded = [p for p in pods if _get(p, "status", "phase") == "Succeeded"]
        if not succeeded:
            return {"manifest": None, "pod": None, "error": f"Job {job} has no succeeded pod left to read"}
        pod = _name(max(succeeded, key=lambda p: _get(p, "metadata", "creationTimestamp", default="")))
        try:
            lines = self.kube.pod_log(self.scope.namespace, pod, container, MANIFEST_TAIL_LINES)
        except Exception as exc:  # noqa: BLE001 - an unreadable log is reported, not raised
            return {"manifest": None, "pod": pod, "error": _one_line(str(exc), 160)}
        manifest = manifest_from_log(lines)
        error = None if manifest else f"the log of pod {pod} container {container} holds no manifest line"
        return {"manifest": manifest, "pod": pod, "error": error}


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
    cond = condition(pod, "PodScheduled")
    return bool(cond and cond.get("status") == "False" and cond.get("reason") == "Unschedulable")


def _restart_count(pod: dict, container: str) -> int:
    for status in _get(pod, "status", "initContainerStatuses", default=[]) + _get(
        pod, "status", "containerStatuses", default=[]
    ):
        if status.get("name") == container:
            return status.get("restartCount", 0)
    return 0
