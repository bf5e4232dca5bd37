# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

""":func:`diagnose`: the certain failure among the watched objects, in cause-and-effect order (claims, download
Jobs, server Deployments, LeaderWorkerSets, then objects that never appeared), and what PVCs, Jobs and
Deployments say about themselves. Their pods are judged in ``pods``."""

from __future__ import annotations

import re
import typing as t

from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.findings import Finding
from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.pods import (
    _container_evidence,
    _diagnose_pod,
    _log_clause,
)
from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.progress import (
    _current_pods,
    _group_pods,
    _job_pods,
    _watched_pods,
    deployment_done,
    group_done,
)
from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.snapshot import (
    _event_evidence,
    _get,
    _Index,
    _is_true,
    _last_warning,
    _name,
    _one_line,
    condition,
)

# A download refused by Hugging Face, in its client's words (or the Job's termination message).
_HF_HOST = re.compile(r"huggingface|hf_hub|hf\.co\b|HF_TOKEN", re.IGNORECASE)
_HF_401 = re.compile(r"\b401\b|Unauthorized|Invalid (user )?token|Invalid credentials|Please log in", re.IGNORECASE)
_HF_403 = re.compile(r"\b403\b|Forbidden|awaiting a review|not in the authorized list", re.IGNORECASE)


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
        if name in groups and not group_done(groups[name], _group_pods(idx, name)):
            for pod in _group_pods(idx, name):
                finding = _diagnose_pod(idx, pod, restarts_matter=True)
                if finding:
                    return finding
    present = {"Deployment": deployments, "Job": jobs, "PersistentVolumeClaim": idx.pvcs, "LeaderWorkerSet": groups}
    return _diagnose_missing(idx, targets, present)


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
        cond = condition(job, "Failed") or {}
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
    if deployment_done(dep):
        return None
    failure = condition(dep, "ReplicaFailure")
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
    progressing = condition(dep, "Progressing")
    if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
        return Finding(
            "not_ready",
            f"Deployment {name} exceeded its progress deadline ({_get(dep, 'spec', 'progressDeadlineSeconds')}s) "
            f"without becoming Available; check its pods' events and logs",
            f"Deployment/{name}",
            {"condition": {k: progressing.get(k) for k in ("reason", "message")}},
        )
    return None
