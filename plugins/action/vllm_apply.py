# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""llmops.vllm.vllm_apply: the steps of a deploy or a teardown, in the controller, through the one apply engine.

Runs in the controller process (no module start-up per step, one kubernetes client for every step and wait).
The documentation is in plugins/modules/vllm_apply.py.
"""

from __future__ import annotations

import time
import typing as t

import yaml
from ansible.plugins.action import ActionBase
from ansible_collections.llmops.vllm.plugins.module_utils import blue_green
from ansible_collections.llmops.vllm.plugins.module_utils._apply_spec import ARGUMENT_SPEC, AUTH_ARG_SPEC
from ansible_collections.llmops.vllm.plugins.module_utils.kube_apply import Refused, Step, unavailable
from ansible_collections.llmops.vllm.plugins.module_utils.kube_client import ApiError, ApiUnavailable, Kube, connect
from ansible_collections.llmops.vllm.plugins.module_utils.rollout import fits, node_gpus, recreate_warning


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _validation, params = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        check = bool(self._task.check_mode)
        result.update(changed=False, steps=[])
        # Suboption defaults make an empty dict non-empty: a check is asked for when one of them has a value.
        checks = {k: v for k, v in (params["cluster_checks"] or {}).items() if v}
        what = "checking the cluster" if checks or not params["steps"] else _doing(params, params["steps"][0])
        try:
            kube = connect({name: params.get(name) for name in AUTH_ARG_SPEC}, params["api_timeout"])
        except ApiUnavailable as exc:
            return dict(result, failed=True, reason=_reason(exc), cause=str(exc), msg=unavailable(exc, what))
        except Exception as exc:  # noqa: BLE001 - a kubeconfig that cannot be read, a missing library: one line
            msg = f"{what}: cannot set up the Kubernetes client: {exc}"
            return dict(result, failed=True, reason="api_config", msg=msg)
        try:
            if checks:
                result["cluster"] = _cluster_checks(kube, checks, _pod_specs(params["steps"]))
            for spec in params["steps"]:
                what = _doing(params, spec)
                kube.restart_deadline()
                if params["state"] == "absent":
                    step = Step(kube, spec["what"], blue_green.absent(spec["objects"]))
                    done = step.delete(check=check, wait=spec["delete_wait"])
                else:
                    done = _apply(kube, spec, params, check)
                result["steps"].append(done)
                result["changed"] = result["changed"] or done["changed"]
                if done.get("message"):
                    # The replace path deletes and creates again: said on every run that takes it.
                    result.setdefault("warnings", []).append(f"{what}: {done['message']}")
                for deployment in done.pop("recreates", []):
                    result.setdefault("warnings", []).append(f"{what}: {recreate_warning(kube, deployment)}")
                if spec["wait"] and done["unsettled"] and not check:
                    what = f"waiting for {spec['what']}"
                    failed = _wait(kube, spec["wait"], done)
                    if failed:
                        return dict(result, failed=True, **failed)
                if spec["wait"] and spec["wait"]["report"] and not check:
                    done["startup"] = _startup(kube, spec["wait"], result)
        except Refused as exc:
            return dict(result, failed=True, reason=exc.reason, msg=f"{what}: {exc}")
        except ApiUnavailable as exc:
            return dict(result, failed=True, reason=_reason(exc), cause=str(exc), msg=unavailable(exc, what))
        except ApiError as exc:
            return dict(result, failed=True, reason="api_error", msg=f"{what}: {exc.message}")
        if self._task.diff:
            result["diff"] = [_diff(entry) for step in result["steps"] for entry in step["diff"]]
        return result


def _apply(kube: Kube, spec: dict[str, t.Any], params: t.Mapping[str, t.Any], check: bool) -> dict[str, t.Any]:
    """One step's apply: its objects through the engine, then each blue/green model's upgrade (which waits for and
    probes a new copy itself); the step's wait then looks at the slots that serve."""
    objects, pairs = blue_green.split(spec["objects"])
    args = {"force": params["force_conflicts"], "replace_immutable": params["replace_immutable"]}
    done = Step(kube, spec["what"], objects).apply(check=check, **args)
    serving = {}
    for pair in pairs:
        one = blue_green.upgrade(kube, spec["what"], pair, spec["wait"], _wait, _probe, check, **args)
        serving[pair[0]["metadata"]["name"]] = one["serving"]
        for key in ("objects", "diff", "unsettled"):
            done[key] += one[key]
        done["changed"] = done["changed"] or one["changed"]
        if one.get("message"):
            done["message"] = "; ".join(filter(None, [done.get("message"), one["message"]]))
        if one.get("switched"):
            done.setdefault("switched", []).append(one["switched"])
    if spec["wait"] and serving:
        spec["wait"] = dict(spec["wait"], deployments=[serving.get(d, d) for d in spec["wait"]["deployments"]])
    return done


def _probe(kube: Kube, namespace: str, name: str, port: int) -> dict[str, t.Any]:
    """vllm_endpoint_probe's checks through the API server's proxy to a Service, from the controller."""
    from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.runner import probe
    from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.settings import ProbeSettings
    from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.target import target_from_kubernetes

    target = target_from_kubernetes(kube.api_client.configuration, namespace, name, port)
    return probe(target, ProbeSettings(wait_timeout=blue_green.PROBE_WAIT_S))


def _reason(exc: ApiUnavailable) -> str:
    return "api_timeout" if exc.timed_out else "api_unreachable"


def _doing(params: t.Mapping[str, t.Any], step: t.Mapping[str, t.Any]) -> str:
    """What a step does, for messages: ``applying the model volume``."""
    return ("removing " if params["state"] == "absent" else "applying ") + step["what"]


def _pod_specs(steps: t.Sequence[t.Mapping[str, t.Any]]) -> list[t.Mapping[str, t.Any]]:
    """The pod specs of the servers the steps apply (Deployments, LeaderWorkerSet leaders and workers)."""
    specs = []
    for step in steps:
        for obj in step.get("objects") or []:
            spec = obj.get("spec") or {}
            if obj.get("kind") == "Deployment":
                specs.append((spec.get("template") or {}).get("spec") or {})
            elif obj.get("kind") == "LeaderWorkerSet":
                lwt = spec.get("leaderWorkerTemplate") or {}
                roles = ("leaderTemplate", "workerTemplate")
                specs += [(lwt.get(k) or {}).get("spec") or {} for k in roles if lwt.get(k)]
    return specs


def _cluster_checks(
    kube: Kube, checks: t.Mapping[str, t.Any], pods: t.Sequence[t.Mapping[str, t.Any]] = ()
) -> dict[str, t.Any]:
    """The preflight that needs the cluster, before anything is applied: GPU nodes (enough of them for each group
    across nodes), the CSI driver, and every kind the objects need being served. ``simulated``: the servers (``pods``,
    or any pod when there are none) can land only on kwok's nodes, where no container answers."""
    found: dict[str, t.Any] = {}
    label = checks.get("gpu_node_label")
    if label:
        nodes = kube.list("v1", "Node", label_selector=label)
        if not nodes:
            raise Refused(
                f"no node has the label {label} and no node pool is requested: add GPU nodes (with the NVIDIA "
                "device plugin) or set gpu_nodepool_enabled=true",
                "no_gpu_nodes",
            )
        gpus = {n["metadata"]["name"]: node_gpus(n) for n in nodes}
        found["gpu_nodes"] = sorted(gpus)
        # kwok's nodes carry this annotation: no kubelet, no container answers there.
        landing = [n for n in nodes if not pods or any(fits(n, p) for p in pods)]
        found["simulated"] = all("kwok.x-k8s.io/node" in (n["metadata"].get("annotations") or {}) for n in landing)
        wanted = checks.get("gpus_per_pod") or 0
        if wanted > max(gpus.values()):
            raise Refused(
                f"a server needs {wanted} GPUs in one pod but the largest GPU node ({max(gpus, key=gpus.get)}) has "
                f"{max(gpus.values())} allocatable nvidia.com/gpu: lower tensor-parallel-size/gpus, add a larger "
                "node, or request a node pool (gpu_nodepool_enabled=true)",
                "gpus_exceed_nodes",
            )
        for group in checks.get("groups") or []:
            fit = sorted(n for n, count in gpus.items() if count >= int(group["gpus"]))
            if len(fit) < int(group["nodes"]):
                raise Refused(
                    f"model {group['model']} spans {group['nodes']} nodes with {group['gpus']} GPUs each (one pod of "
                    f"its LeaderWorkerSet group per node) but {len(fit)} GPU node(s) have that many allocatable "
                    f"nvidia.com/gpu{' (' + ', '.join(fit) + ')' if fit else ''}: add GPU nodes, lower nodes, or "
                    "request a node pool (gpu_nodepool_enabled=true)",
                    "nodes_short",
                )
    for entry in checks.get("kinds") or []:
        api_version, kind = entry.split(" ", 1)
        if kind not in (kube.resources(api_version) or {}):
            hint = INSTALL.get(kind, "install the add-on that defines it (its CustomResourceDefinition)")
            raise Refused(
                f"the cluster does not serve {kind} ({api_version}), which the objects to apply include: {hint}, or "
                "turn off the option that renders it",
                "kind_not_served",
            )
    driver = checks.get("csi_driver")
    if driver:
        if kube.request("GET", f"/apis/storage.k8s.io/v1/csidrivers/{driver}", missing_ok=True) is None:
            raise Refused(
                f"CSIDriver {driver} is not installed, so the model volume cannot be mounted: install the FSx for "
                "Lustre CSI driver (EKS add-on aws-fsx-csi-driver)",
                "no_csi_driver",
            )
        found["csi_driver"] = driver
    return found


# A throttled report (429, as a just-started API server answers for a few seconds) is read again, this many times.
REPORT_ATTEMPTS, REPORT_BACKOFF_S = 3, 2.0
# How to get each optional kind the collection renders, for the refusal when the cluster lacks it.
INSTALL = {
    "LeaderWorkerSet": "install LeaderWorkerSet (kubectl apply --server-side -f "
    "https://github.com/kubernetes-sigs/lws/releases/download/v0.8.0/manifests.yaml), which serves models across nodes",
    "NodePool": "install Karpenter",
    "EC2NodeClass": "install Karpenter's AWS provider",
    "ServiceMonitor": "install the Prometheus Operator",
    "ScaledObject": "install KEDA",
    "Route": "Routes exist on OpenShift only",
}


def _wait(kube: Kube, wait: t.Mapping[str, t.Any], done: dict[str, t.Any]) -> dict[str, t.Any] | None:
    """Wait for what the step left unsettled, with the diagnosis's one-line findings; the failure, or None."""
    from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis import (
        DeploymentWatch,
        PollTiming,
        Settings,
        WatchScope,
    )

    kinds = ("deployments", "jobs", "pvcs", "leaderworkersets")
    scope = WatchScope.of(wait["namespace"], **{kind: wait[kind] for kind in kinds})
    settings = Settings(startup_budget=wait["startup_budget"])
    watch = DeploymentWatch(kube, scope, settings, PollTiming(interval=wait["poll_interval"]))
    waited = watch.run(timeout=wait["timeout"])
    done["waited"] = {"elapsed_ms": waited.elapsed_ms, "polls": waited.polls, "states": waited.states}
    if waited.finding:
        found = waited.finding
        return {"msg": found.message, "reason": found.reason, "object": found.object, "evidence": found.evidence}
    done["manifests"] = {
        name: watch.job_manifest(name)["manifest"]
        for name, state in waited.states.get("jobs", {}).items()
        if state.get("done")
    }
    return None


def _startup(kube: Kube, wait: t.Mapping[str, t.Any], result: dict[str, t.Any]) -> dict[str, t.Any]:
    """Where the start-up time of the waited Deployments and Jobs went. Only a report: a read that fails (an API
    server that just started answers 429 for a few seconds) is a warning, never the step's failure."""
    from ansible_collections.llmops.vllm.plugins.module_utils.startup_report import gather

    for attempt in range(REPORT_ATTEMPTS):
        kube.restart_deadline()
        try:
            return gather(
                kube,
                wait["namespace"],
                deployments=wait["deployments"],
                jobs=wait["jobs"],
                leaderworkersets=wait["leaderworkersets"],
            )
        except (ApiError, ApiUnavailable) as exc:
            throttled = isinstance(exc, ApiError) and exc.status == 429
            if throttled and attempt + 1 < REPORT_ATTEMPTS:
                time.sleep(REPORT_BACKOFF_S)
                continue
            result.setdefault("warnings", []).append(f"start-up report in {wait['namespace']}: not read ({exc})")
    return {"pods": [], "jobs": [], "table": [], "slowest": None}


def _diff(entry: t.Mapping[str, t.Any]) -> dict[str, str]:
    """One object's change as Ansible's --diff output shows it."""
    if entry["action"] != "configured":
        return {"prepared": f"{entry['action']} {entry['object']}\n"}
    before, after = (
        yaml.safe_dump(entry[side], default_flow_style=False, sort_keys=True) for side in ("before", "after")
    )
    return {"before_header": entry["object"], "after_header": entry["object"], "before": before, "after": after}
