# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Why one pod fails: unschedulable (see ``scheduling``), a container that cannot pull its image or start, an
init container that failed, a crash loop (with vLLM's own log lines and the fix), OOMKilled (see ``memory``),
or a server that runs past its startup budget without becoming Ready."""

from __future__ import annotations

import re
import typing as t

from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.findings import Finding
from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.memory import _oom_finding
from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.scheduling import _diagnose_unschedulable
from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.snapshot import (
    _event_evidence,
    _get,
    _Index,
    _is_true,
    _last_warning,
    _name,
    _one_line,
    _ts,
    condition,
)

_IMAGE_PULL_WAITING = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
_CONFIG_WAITING = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")
# ErrImagePull is final (no back-off needed to be sure) when the registry said one of these.
_PULL_FINAL = re.compile(
    r"not found|manifest unknown|does not exist|unauthorized|denied|forbidden|no basic auth|\b40[13]\b"
    r"|invalid reference",
    re.IGNORECASE,
)
_PULL_AUTH = re.compile(r"unauthorized|denied|forbidden|no basic auth|authoriz|\b40[13]\b", re.IGNORECASE)


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


def _diagnose_pod(idx: _Index, pod: dict, restarts_matter: bool) -> Finding | None:
    """One pod's certain failure. ``restarts_matter`` is False for Job pods, whose exits the Job judges."""
    scheduled = condition(pod, "PodScheduled")
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
