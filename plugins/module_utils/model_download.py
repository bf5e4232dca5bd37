# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The model download on the cluster: its objects, and making sure a model is complete on a volume.

- :func:`download_job` and :func:`stage_engine.stage_configmap` build the objects of the download step exactly as the
  ``model_download`` role builds them (its ``prepare.yml`` calls the ``vllm_download_objects`` filter, which
  calls these): the staging engine as a ConfigMap, and a Job running
  the engine's ``download`` onto the claim, which prints the manifest as its last log line.
- :func:`ensure_model` is ``vllm_model_stage``'s cluster-side mode: reuse the Job of that name or create it
  (through the collection's one apply path, ``kube_apply``), wait with :class:`diagnosis.DeploymentWatch` (which
  names the cause of a failure in one line), and read the manifest back from the Job's log.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import typing as t

from ansible_collections.llmops.vllm.plugins.module_utils import names
from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis import (
    DeploymentWatch,
    Finding,
    PollTiming,
    Settings,
    WatchScope,
)
from ansible_collections.llmops.vllm.plugins.module_utils.kube_apply import Refused, Step, unavailable
from ansible_collections.llmops.vllm.plugins.module_utils.kube_client import ApiError, ApiUnavailable, Kube
from ansible_collections.llmops.vllm.plugins.module_utils.names import MODELS_MOUNT
from ansible_collections.llmops.vllm.plugins.module_utils.stage_engine import (
    engine_command,
    engine_files,
    stage_configmap,
)

# Seconds the cluster-side mode gives the API for its reads and its apply (the wait has its own timeout).
API_TIMEOUT = 60
CONTAINER = "model-download"
# The model_download role's defaults, so that a Job made here is the Job deploy makes for the same model.
DEFAULTS: dict[str, t.Any] = {
    "job_name": "model-download",
    "image": "python:3.11-slim",
    "image_pull_policy": "IfNotPresent",
    "hf_endpoint": "",
    "hf_token_secret": "hf-token",
    "hf_token_key": "token",
    "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "4Gi"}},
    "tolerations": [],
    "node_selector": {},
    "backoff_limit": 3,
    "active_deadline": 14400,
    "stage_configmap": "llmops-model-stage",
}
# Seconds to wait for the Job, as the role's model_download_wait_timeout.
DEFAULT_TIMEOUT = 7200
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class DownloadInputError(ValueError):
    """An option the cluster-side mode cannot use; ``str()`` is one line naming the option."""


def is_hf_repo_id(repo: object) -> bool:
    """An owner/name Hugging Face repo id, as huggingface_hub's validate_repo_id takes it (ASCII letters, digits,
    '-', '_', '.'; no '..' or '--': utils/_validators.py), so that it cannot climb to another Hub path."""
    text = str(repo or "")
    return bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}", text)) and not (
        ".." in text or "--" in text
    )


def is_repo_file(name: object) -> bool:
    """A file name or pattern inside the repository: relative, no '..', no ',' (the Job's --files separator)."""
    text = str(name or "")
    return bool(text) and "," not in text and not text.startswith("/") and ".." not in text.split("/")


def download_command(hf_repo: str, hf_revision: str, model_dir: str, files: t.Sequence[str] | None) -> list[str]:
    """The download container's command: the staging engine's ``download`` into /models/<model_dir>."""
    command = engine_command(
        "download", "--repo", hf_repo, "--revision", hf_revision, "--dest", f"{MODELS_MOUNT}/{model_dir}"
    )
    if files:
        command += ["--files", ",".join(files)]
    return command + ["--token-env", "HF_TOKEN"]


def download_job(job: t.Mapping[str, t.Any], namespace: str, pvc: str, **settings: t.Any) -> dict[str, t.Any]:
    """One download Job, as the model_download role renders it.

    ``job`` is one entry of ``llmops.vllm.vllm_download_jobs`` (``name``, ``model_dir``, ``hf_repo``,
    ``hf_revision``, ``files``, ``models``); ``settings`` override :data:`DEFAULTS` (role variables without
    their ``model_download_`` prefix).
    """
    s = {**DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    labels = names.labels("model-download", job["name"])
    metadata: dict[str, t.Any] = {"name": job["name"], "namespace": namespace, "labels": labels}
    if job.get("models"):
        metadata["annotations"] = {names.MODELS_ANNOTATION: ",".join(job["models"])}
    env: list[dict[str, t.Any]] = [
        {
            "name": "HF_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": s["hf_token_secret"], "key": s["hf_token_key"], "optional": True}},
        }
    ]
    if s["hf_endpoint"]:
        env.append({"name": "HF_ENDPOINT", "value": s["hf_endpoint"]})
    pod_spec: dict[str, t.Any] = {"restartPolicy": "Never"}
    if s["tolerations"]:
        pod_spec["tolerations"] = s["tolerations"]
    if s["node_selector"]:
        pod_spec["nodeSelector"] = s["node_selector"]
    pod_spec["securityContext"] = {"seccompProfile": {"type": "RuntimeDefault"}}
    pod_spec["containers"] = [
        {
            "name": CONTAINER,
            "image": s["image"],
            "imagePullPolicy": s["image_pull_policy"],
            "command": download_command(
                job["hf_repo"], job.get("hf_revision") or "main", job["model_dir"], job.get("files")
            ),
            "env": env,
            "resources": s["resources"],
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [
                {"name": names.MODELS_VOLUME, "mountPath": MODELS_MOUNT},
                {"name": names.ENGINE_VOLUME, "mountPath": names.ENGINE_MOUNT, "readOnly": True},
            ],
        }
    ]
    pod_spec["volumes"] = [
        {"name": names.MODELS_VOLUME, "persistentVolumeClaim": {"claimName": pvc}},
        {"name": names.ENGINE_VOLUME, "configMap": {"name": s["stage_configmap"]}},
    ]
    template = {"metadata": {"labels": labels}, "spec": pod_spec}
    # A Job's pod template cannot change: its hash tells the apply engine (kube_apply) exactly which Jobs to replace.
    digest = hashlib.sha256(json.dumps(template, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    metadata.setdefault("annotations", {})[names.TEMPLATE_HASH] = digest[:16]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": int(s["backoff_limit"]),
            "activeDeadlineSeconds": int(s["active_deadline"]),
            "podFailurePolicy": {
                "rules": [
                    # Exit 2: the repository or the files are not a valid model; retrying cannot help.
                    {
                        "action": "FailJob",
                        "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [2]},
                    }
                ]
            },
            "template": template,
        },
    }


def check_request(params: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """The cluster-side request from the module's options, checked before anything asks the cluster.

    Raises :class:`DownloadInputError` with one line naming the option and the problem.
    """
    for option in ("namespace", "pvc", "path", "hf_repo"):
        if not params.get(option):
            raise DownloadInputError(f"{option} is required with pvc (the cluster-side mode)")
    if not _DNS_LABEL.match(params["namespace"]) or len(params["namespace"]) > 63:
        raise DownloadInputError(f"namespace: {params['namespace']!r} is not a valid namespace name")
    if not _DNS_SUBDOMAIN.match(params["pvc"]) or len(params["pvc"]) > 253:
        raise DownloadInputError(f"pvc: {params['pvc']!r} is not a valid claim name")
    job_name = params.get("job_name") or DEFAULTS["job_name"]
    if not _DNS_LABEL.match(job_name) or len(job_name) > 63:
        raise DownloadInputError(
            f"job_name: {job_name!r} is not a valid Job name (lower-case letters, digits and '-', at most 63)"
        )
    path = str(params["path"]).strip("/")
    parts = path.split("/")
    if not path or any(part in ("", ".", "..") for part in parts):
        raise DownloadInputError(
            f"path: {params['path']!r} must name a directory inside the volume, relative to its root "
            f"(for example mistral-7b-v0-3), without '.' or '..'"
        )
    if not is_hf_repo_id(params["hf_repo"]):
        raise DownloadInputError(f"hf_repo: {params['hf_repo']!r} is not a Hugging Face repo id (owner/name)")
    files = list(params.get("hf_files") or [])
    bad = [f for f in files if not is_repo_file(f)]
    if bad:
        raise DownloadInputError(f"hf_files: {bad[0]!r} is not a file name or pattern inside the repository")
    timeout = params.get("timeout")
    if timeout is not None and timeout < 0:
        raise DownloadInputError(f"timeout: {timeout} must be 0 (look once) or more seconds")
    return {
        "namespace": params["namespace"],
        "pvc": params["pvc"],
        "job": {
            "name": job_name,
            "model_dir": path,
            "hf_repo": params["hf_repo"],
            "hf_revision": params.get("hf_revision") or "main",
            "files": files,
            "models": [],
        },
        "settings": {
            key: params.get(key)
            for key in (
                "image",
                "hf_endpoint",
                "hf_token_secret",
                "hf_token_key",
                "tolerations",
                "node_selector",
                "stage_configmap",
            )
        },
        "timeout": DEFAULT_TIMEOUT if timeout is None else timeout,
    }


class StageFailure(Exception):
    """The cluster-side mode failed: a :class:`diagnosis.Finding` plus what was known so far."""

    def __init__(self, finding: Finding, result: dict[str, t.Any]):
        super().__init__(finding.message)
        self.finding = finding
        self.result = result


def _what_it_downloads(job: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """What makes two download Jobs the same download: the engine's arguments and the claim it writes to (not where
    the engine is: a Job of an earlier release ran it as /opt/llmops/model_stage.py, and downloads the same)."""
    pod = job.get("spec", {}).get("template", {}).get("spec", {})
    command = next((c.get("command") for c in pod.get("containers") or [] if c.get("name") == CONTAINER), None)
    command = command[2:] if isinstance(command, list) else command
    claims = [
        v["persistentVolumeClaim"].get("claimName") for v in pod.get("volumes") or [] if "persistentVolumeClaim" in v
    ]
    return {"command": command, "claims": claims}


def ensure_model(
    dynamic: t.Any,
    request: t.Mapping[str, t.Any],
    *,
    check_mode: bool = False,
    poll_interval: float = 1.0,
    settings: Settings | None = None,
    source: t.Callable[[], t.Mapping[str, str]] = engine_files,
) -> dict[str, t.Any]:
    """Make sure the model of ``request`` (from :func:`check_request`) is complete on its volume.

    Reuses the Job of that name (Complete: nothing to do; running: wait) or creates it with the staging
    engine's ConfigMap, waits until it is Complete, and returns its manifest as read from its log. In check
    mode nothing is created and a running Job is looked at once. Raises :class:`StageFailure` with the
    diagnosis's one-line cause when the Job fails, the claim is missing or the manifest cannot be read.
    """
    start = time.monotonic()
    namespace, pvc, spec = request["namespace"], request["pvc"], request["job"]
    name = spec["name"]
    settings = settings or Settings(missing_grace=float("inf") if check_mode else 60)
    kube = Kube(dynamic, timeout=API_TIMEOUT)
    scope = WatchScope.of(namespace, jobs=[name], pvcs=[pvc])
    watch = DeploymentWatch(kube, scope, settings, PollTiming(interval=poll_interval))
    job = download_job(spec, namespace, pvc, **request["settings"])
    result: dict[str, t.Any] = {
        "changed": False,
        "namespace": namespace,
        "pvc": pvc,
        "path": spec["model_dir"],
        "job": name,
        "applied": [],
    }

    def fail(reason: str, message: str, obj: str, evidence: dict[str, t.Any] | None = None) -> StageFailure:
        result["elapsed_ms"] = round((time.monotonic() - start) * 1000, 3)
        return StageFailure(Finding(reason, message, obj, evidence or {}), result)

    def read(kind: str, api_version: str, obj_name: str, ns: str = namespace) -> dict[str, t.Any] | None:
        try:
            return kube.get({"apiVersion": api_version, "kind": kind, "metadata": {"name": obj_name, "namespace": ns}})
        except ApiError as exc:
            raise fail(
                "api_error",
                f"cannot read {kind} {obj_name} in namespace {namespace}: {exc.status} {exc.message}",
                f"{kind}/{obj_name}",
            ) from None
        except ApiUnavailable as exc:
            raise fail(
                "api_unreachable", unavailable(exc, f"reading {kind} {obj_name}"), f"Namespace/{namespace}"
            ) from None

    existing = read("Job", "batch/v1", name)
    claim = read("PersistentVolumeClaim", "v1", pvc)
    if existing is not None:
        have, want = _what_it_downloads(existing), _what_it_downloads(job)
        if have != want:
            raise fail(
                "job_mismatch",
                f"Job {name} in namespace {namespace} already exists for another download "
                f"({' '.join(have['command'] or ['no ' + CONTAINER + ' container'])} onto "
                f"{', '.join(have['claims']) or 'no claim'}); delete it (kubectl -n {namespace} delete job {name}) "
                f"or choose another job_name",
                f"Job/{name}",
                {"existing": have, "wanted": want},
            )
    elif claim is None:
        raise fail(
            "not_found",
            f"PersistentVolumeClaim {pvc} not found in namespace {namespace}: create the model volume first "
            f"(the llmops.vllm.storage role) or fix pvc/namespace",
            f"PersistentVolumeClaim/{pvc}",
        )
    else:
        configmap = request["settings"].get("stage_configmap") or DEFAULTS["stage_configmap"]
        objects = [stage_configmap(configmap, namespace, source()), job]
        result["changed"] = True
        result["applied"] = [f"{o['kind']}/{o['metadata']['name']}" for o in objects]
        if check_mode:
            result["manifest"] = None
            result["elapsed_ms"] = round((time.monotonic() - start) * 1000, 3)
            return result
        try:
            kube.restart_deadline()
            Step(kube, "the staging engine and the download Job", objects).apply()
        except Refused as exc:
            raise fail("apply_failed", f"applying in namespace {namespace} failed: {exc}", f"Job/{name}") from None
        except ApiUnavailable as exc:
            raise fail("api_unreachable", unavailable(exc, "applying the download Job"), f"Job/{name}") from None
    waited = watch.run(timeout=request["timeout"], once=check_mode or request["timeout"] == 0)
    result["states"] = waited.states
    if waited.finding:
        raise StageFailure(waited.finding, dict(result, elapsed_ms=round((time.monotonic() - start) * 1000, 3)))
    job_state = waited.states.get("jobs", {}).get(name, {})
    if not job_state.get("done"):
        # Check mode, or timeout 0: the Job is still running and nothing waited for it.
        result["manifest"] = None
        result["elapsed_ms"] = round((time.monotonic() - start) * 1000, 3)
        return result
    read_back = watch.job_manifest(name, CONTAINER)
    result["pod"] = read_back["pod"]
    if read_back["manifest"] is None:
        raise fail(
            "manifest_unavailable",
            f"Job {name} is Complete but its manifest cannot be read: {read_back['error']}; delete the Job "
            f"and run again (the download verifies the volume and exits at once when the model is complete)",
            f"Job/{name}",
            {"pod": read_back["pod"], "error": read_back["error"]},
        )
    result["manifest"] = read_back["manifest"]
    result["elapsed_ms"] = round((time.monotonic() - start) * 1000, 3)
    return result
