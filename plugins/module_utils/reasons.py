# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The one vocabulary of failure reasons: name → what it means → what to do → what produces it.

A failed task of the collection carries ``reason``, one of these names; the modules' RETURN docs list the ones
each can return and docs/reasons.md is generated from this table. tests/unit/plugins/module_utils/test_reasons.py
finds every reason the code can produce and fails on one missing here, on one here that nothing produces, and on a
module whose RETURN does not list exactly its reasons.

Producers: ``diagnosis`` (the waits: vllm_wait, vllm_apply, vllm_model_stage's cluster mode), ``vllm_apply``,
``model_stage`` (the staging engine: vllm_model_stage's local mode, the download Job, the init container),
``vllm_model_stage`` (its cluster mode), ``endpoint_probe`` and ``vllm_endpoint_probe``, ``vllm_startup_report``.
"""

from __future__ import annotations

import typing as t


class Reason(t.NamedTuple):
    meaning: str
    action: str
    by: tuple[str, ...]


_WAIT = ("diagnosis",)
_ENGINE = ("model_stage",)
_PROBE = ("endpoint_probe",)
# The staging engine's download: its error line is in the download Job's log, which the wait reports as job_failed
# or job_auth with that line as evidence; no module returns these itself.
_HUB = ("hub",)

REASONS: dict[str, Reason] = {
    # Waits (the diagnosis of what deploy created).
    "unschedulable_no_capacity": Reason(
        "no node has the CPU, memory or GPUs the pod requests",
        "add GPU nodes (node pool or Karpenter limits) or lower the model's gpus/resources",
        _WAIT,
    ),
    "unschedulable_untolerated_taint": Reason(
        "the nodes that would fit carry a taint the pod does not tolerate",
        "add the toleration (vllm_server_tolerations) or remove the taint",
        _WAIT,
    ),
    "unschedulable_node_selector": Reason(
        "no node matches the pod's node selector or affinity", "fix node_selector or label the GPU nodes", _WAIT
    ),
    "unschedulable_provisioning_timeout": Reason(
        "the autoscaler brought no node within provision_grace",
        "check the NodePool's limits and instance types, and the cloud's GPU capacity",
        _WAIT,
    ),
    "unschedulable_timeout": Reason(
        "the pod stayed Pending past its budget", "read the scheduler's message in the finding", _WAIT
    ),
    "image_pull": Reason(
        "the image cannot be pulled (name, tag, registry credentials)", "fix the image or its pull secret", _WAIT
    ),
    "config_error": Reason(
        "the container cannot be created (a missing Secret or key, a bad command)",
        "create what the finding names",
        _WAIT,
    ),
    "init_failed": Reason(
        "the staging init container failed", "its last log line names the file and the problem", _WAIT
    ),
    "oom_killed": Reason(
        "a container went over its memory limit",
        "raise the memory limit to the RAM volume + /dev/shm + working memory",
        _WAIT,
    ),
    "crash_loop": Reason(
        "the server keeps exiting", "vLLM's own error in its last log lines (quoted in the finding)", _WAIT
    ),
    "job_failed": Reason("the download Job failed", "its log names the file or the HTTP answer", _WAIT),
    "job_auth": Reason(
        "the Hub refused the download's token (401/403, or a gated model)",
        "set the token, or accept the model's terms with its account",
        _WAIT,
    ),
    "pvc_pending": Reason(
        "the model volume's claim is not Bound", "check its PersistentVolume, StorageClass and CSI driver", _WAIT
    ),
    "not_ready": Reason(
        "up but not ready when the time ran out (pods not Ready; a server still loading or behind a 502/503/504)",
        "give it longer (startup budget, wait_timeout) or read the server's log",
        _WAIT + _PROBE,
    ),
    "replica_failure": Reason(
        "the ReplicaSet cannot create pods (quota, admission)", "the Deployment condition's message says which", _WAIT
    ),
    "not_found": Reason(
        "what was asked for does not exist (an object to wait for; a repository, revision or file on the Hub)",
        "check the name; apply first",
        _WAIT + _HUB + ("vllm_model_stage",),
    ),
    "api_unreachable": Reason(
        "the Kubernetes API server does not answer",
        "check the kubeconfig, the context and the network",
        _WAIT + ("vllm_wait", "vllm_apply", "vllm_model_stage", "vllm_startup_report"),
    ),
    "timeout": Reason(
        "time ran out without a certain cause (a wait), or a request got no answer within timeout (the probe)",
        "raise the timeout; the states in the result say where it stood",
        _WAIT + _PROBE,
    ),
    # Applying (vllm_apply) and the cluster checks before it.
    "conflict": Reason(
        "another field manager owns a field this apply sets",
        "set force_conflicts to take the fields over",
        ("vllm_apply",),
    ),
    "immutable": Reason(
        "a field that cannot change would change (a Job's template, a PV's source)",
        "set replace_immutable to delete and recreate the object",
        ("vllm_apply",),
    ),
    "invalid": Reason("the API server refused an object (400/422)", "fix the field it names", ("vllm_apply",)),
    "probe_failed": Reason(
        "blue/green: the new copy of a server failed vllm_endpoint_probe; it was removed and the traffic stayed",
        "the message names the check that failed; fix it and deploy again",
        ("vllm_apply",),
    ),
    "api_error": Reason(
        "the API server answered with an error status",
        "the message has its status and text (often RBAC)",
        ("vllm_apply", "vllm_model_stage", "vllm_startup_report"),
    ),
    "api_timeout": Reason(
        "the API server accepted the connection but did not answer in time", "raise api_timeout", ("vllm_apply",)
    ),
    "api_config": Reason(
        "the Kubernetes client cannot be set up (a kubeconfig that does not load, a missing library)",
        "fix the kubeconfig or install the kubernetes library",
        ("vllm_apply",),
    ),
    "no_gpu_nodes": Reason(
        "no node offers nvidia.com/gpu",
        "add a GPU node pool (gpu_nodepool) or the NVIDIA device plugin",
        ("vllm_apply",),
    ),
    "gpus_exceed_nodes": Reason(
        "a model asks for more GPUs than any node has", "lower gpus or use larger nodes", ("vllm_apply",)
    ),
    "nodes_short": Reason(
        "a model across nodes needs more GPU nodes than the cluster has", "add nodes or lower nodes", ("vllm_apply",)
    ),
    "kind_not_served": Reason(
        "an object's kind is not served (its CRD or add-on is missing)",
        "install the add-on named (LeaderWorkerSet, Karpenter, Prometheus Operator, KEDA)",
        ("vllm_apply",),
    ),
    "no_csi_driver": Reason(
        "the storage's CSI driver is not installed", "install the FSx for Lustre CSI driver", ("vllm_apply",)
    ),
    "replace_stuck": Reason(
        "an object being replaced did not go away in time", "look at its finalizers", ("vllm_apply",)
    ),
    "delete_stuck": Reason(
        "an object being deleted did not go away in time", "look at its finalizers", ("vllm_apply",)
    ),
    # vllm_model_stage's cluster mode.
    "job_mismatch": Reason(
        "a Job of that name downloads something else", "delete it or choose another job_name", ("vllm_model_stage",)
    ),
    "apply_failed": Reason(
        "the download Job or its ConfigMap could not be applied",
        "the message has the API's answer",
        ("vllm_model_stage",),
    ),
    "manifest_unavailable": Reason(
        "the Job is Complete but its log, and so its manifest, is gone",
        "delete the Job and run again",
        ("vllm_model_stage",),
    ),
    # The staging engine (vllm_model_stage, the download Job, the init container).
    "bad_input": Reason(
        "an option or argument is wrong (vllm_model_stage, the staging engine)",
        "the message names it",
        _ENGINE + _HUB + ("vllm_model_stage",),
    ),
    "source_missing": Reason("the model directory does not exist", "check src / the model volume's path", _ENGINE),
    "missing_file": Reason(
        "a file the model needs is not there (or not in the Hub's listing)",
        "download it again, or fix the file names (the message names it)",
        _ENGINE + _HUB,
    ),
    "bad_config": Reason("config.json or params.json is not valid", "download the model again", _ENGINE),
    "unknown_format": Reason(
        "the directory is neither a Hugging Face nor a Mistral layout", "point at the model's own directory", _ENGINE
    ),
    "corrupt": Reason("a safetensors file's header or tensors do not add up", "download the file again", _ENGINE),
    "truncated": Reason("a safetensors file is shorter than its header says", "download the file again", _ENGINE),
    "shard_missing": Reason("the index names a shard that is not there", "download the model again", _ENGINE),
    "tensor_missing": Reason("the index names a tensor that no shard holds", "download the model again", _ENGINE),
    "sha256_mismatch": Reason(
        "a file's sha256 (or git blob id) is not the expected one", "download the file again", _ENGINE + _HUB
    ),
    "foreign_dest": Reason(
        "the destination holds files that this engine did not stage", "remove them, or set force", _ENGINE
    ),
    "no_space": Reason("the destination is too small", "raise ram_size_limit or the volume's size", _ENGINE + _HUB),
    "permission_denied": Reason(
        "a file or directory cannot be read or written", "fix its owner or mode (or the pod's fsGroup)", _ENGINE
    ),
    "io_error": Reason("reading or writing failed", "the message has the system's error", _ENGINE),
    "source_changed": Reason("a source file changed while it was copied", "run again", _ENGINE),
    "http_auth": Reason(
        "the Hub refused the token (401/403), or the model is gated",
        "set the token; accept the model's terms with its account",
        _HUB,
    ),
    "http_error": Reason(
        "an unexpected HTTP answer (the Hub's, or the server's to a probe)",
        "the message has the status and the body's first line",
        _HUB + _PROBE,
    ),
    # The endpoint probe.
    "connection_refused": Reason(
        "nothing listens at the address (a loading vLLM refuses until its model is loaded)",
        "wait longer, or check the Service and port",
        _PROBE,
    ),
    "dns_failure": Reason("the host name does not resolve", "check the URL", _PROBE),
    "tls_error": Reason(
        "certificate verify failed, the handshake failed, or the TLS files do not load",
        "fix ca_cert/validate_certs or the scheme",
        _PROBE,
    ),
    "connection_error": Reason(
        "the connection closed without an HTTP answer (often http against https)", "check the scheme", _PROBE
    ),
    "engine_dead": Reason(
        "vLLM's engine died (/health 500, or a bare 500/503 at the end of the wait)",
        "read the server's log; it restarts the pod",
        _PROBE,
    ),
    "unauthorized": Reason("401: a missing or wrong API key", "set the probe's api_key", _PROBE),
    "forbidden": Reason("403: the Kubernetes user may not use services/proxy", "grant services/proxy", _PROBE),
    "service_not_found": Reason("the Service does not exist", "check its name and namespace", _PROBE),
    "model_not_found": Reason("the expected model is not served", "check model / served_model_name", _PROBE),
    "model_ambiguous": Reason("several models are served and none is named", "name the model", _PROBE),
    "tool_calling_disabled": Reason(
        "the server refuses tool_choice", "add --enable-auto-tool-choice and --tool-call-parser", _PROBE
    ),
    "no_tool_call": Reason("a well-formed answer without a tool call", "check the tool-call parser", _PROBE),
    "no_metrics_endpoint": Reason("GET /metrics is 404", "run a vLLM that exposes metrics", _PROBE),
    "malformed_response": Reason(
        "an answer does not have the documented shape", "the message quotes it; is it vLLM?", _PROBE
    ),
    "redirect": Reason(
        "redirects that loop or lack a Location (a proxy in front of the server)", "probe the server's own URL", _PROBE
    ),
    "not_run": Reason("an earlier failure made this check impossible", "fix the first failure", _PROBE),
    # vllm_endpoint_probe before any request.
    "invalid_option": Reason(
        "an option is wrong (vllm_endpoint_probe's spelling of bad_input)",
        "the message names it",
        ("vllm_endpoint_probe",),
    ),
    "missing_library": Reason(
        "the kubernetes Python library is missing", "install it where the module runs", ("vllm_endpoint_probe",)
    ),
    "kubeconfig_error": Reason(
        "the Kubernetes client configuration cannot be loaded (vllm_endpoint_probe's spelling of api_config)",
        "fix the kubeconfig",
        ("vllm_endpoint_probe",),
    ),
}

# What each module's failures can carry, by producer.
MODULE_PRODUCERS: dict[str, tuple[str, ...]] = {
    "vllm_wait": ("diagnosis", "vllm_wait"),
    "vllm_apply": ("diagnosis", "vllm_apply"),
    "vllm_model_stage": ("diagnosis", "model_stage", "vllm_model_stage"),
    "vllm_endpoint_probe": ("endpoint_probe", "vllm_endpoint_probe"),
    "vllm_startup_report": ("vllm_startup_report",),
}


# Producers whose reasons reach people through a log line, not a module's result.
LOG_ONLY_PRODUCERS = ("hub",)


def produced_by(producer: str) -> tuple[str, ...]:
    """The reasons one producer gives, in the table's order."""
    return tuple(name for name, reason in REASONS.items() if producer in reason.by)


def returned_by(module: str) -> tuple[str, ...]:
    """The reasons a module's failure can carry, in the table's order."""
    producers = set(MODULE_PRODUCERS[module])
    return tuple(name for name, reason in REASONS.items() if producers & set(reason.by))
