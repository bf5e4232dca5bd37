"""diagnose() on object dicts shaped like the API's JSON: each known failure named, nothing named too early."""

from __future__ import annotations

import copy
from datetime import UTC

import pytest
from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis import (
    REASONS,
    LogRef,
    diagnose,
    logs_wanted,
    progress,
)
from ansible_collections.llmops.vllm.plugins.module_utils.quantity import format_bytes, parse_quantity

NOW = 1_800_000_000.0  # fixed clock: 2027-01-15T08:00:00Z
NS = "vllm"


def iso(seconds_ago: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(NOW - seconds_ago, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def gpu_node(name: str, gpus: str = "4", taint: bool = True) -> dict:
    return {
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "nvidia.com/gpu.present": "true",
                "karpenter.sh/nodepool": "gpu",
                "node.kubernetes.io/instance-type": "g5.12xlarge",
            },
        },
        "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}] if taint else []},
        "status": {
            "allocatable": {"cpu": "48", "memory": "192Gi", "pods": "110", "nvidia.com/gpu": gpus},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


CPU_NODE = {
    "metadata": {"name": "cpu-node-0", "labels": {"kubernetes.io/hostname": "cpu-node-0"}},
    "spec": {},
    "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"}},
}
NODES = [gpu_node("gpu-node-0"), gpu_node("gpu-node-1"), CPU_NODE]


def server_pod_spec(gpus: str = "1", toleration: bool = True, selector: dict | None = None) -> dict:
    """The reference server: model-loader init container, vllm container, RAM volume."""
    spec = {
        "initContainers": [
            {
                "name": "model-loader",
                "image": "public.ecr.aws/docker/library/python:3.11-slim",
                "resources": {"limits": {"cpu": "6", "memory": "32Gi"}, "requests": {"cpu": "6", "memory": "32Gi"}},
                "volumeMounts": [
                    {"name": "fsx-models", "mountPath": "/models", "readOnly": True},
                    {"name": "ram-models", "mountPath": "/ram-models"},
                ],
            }
        ],
        "containers": [
            {
                "name": "vllm",
                "image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/vllm:0.9.0-gpu-py312",
                "args": ["--port=8080", "--model=/ram-models/mistral-7b-v0-3", "--swap-space=16"],
                "resources": {
                    "limits": {"cpu": "6", "memory": "32Gi", "nvidia.com/gpu": gpus},
                    "requests": {"cpu": "6", "memory": "32Gi", "nvidia.com/gpu": gpus},
                },
                "volumeMounts": [{"name": "ram-models", "mountPath": "/ram-models"}],
            }
        ],
        "volumes": [
            {"name": "fsx-models", "persistentVolumeClaim": {"claimName": "fsx-models"}},
            {"name": "ram-models", "emptyDir": {"medium": "Memory", "sizeLimit": "20Gi"}},
        ],
        "nodeSelector": selector if selector is not None else {"nvidia.com/gpu.present": "true"},
    }
    if toleration:
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return spec


def deployment(name: str = "mistral", available: bool = False) -> dict:
    return {
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": "dep-uid",
            "generation": 1,
            "annotations": {"deployment.kubernetes.io/revision": "1"},
        },
        "spec": {"replicas": 1, "selector": {"matchLabels": {"model": "mistral7b"}}},
        "status": {
            "observedGeneration": 1,
            "replicas": 1,
            "updatedReplicas": 1,
            "readyReplicas": 1 if available else 0,
            "availableReplicas": 1 if available else 0,
            "conditions": [
                {"type": "Available", "status": "True" if available else "False", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"},
            ],
        },
    }


def replicaset(revision: str = "1", uid: str = "rs-uid") -> dict:
    return {
        "metadata": {
            "name": f"mistral-{uid}",
            "uid": uid,
            "annotations": {"deployment.kubernetes.io/revision": revision},
            "ownerReferences": [{"kind": "Deployment", "name": "mistral", "uid": "dep-uid"}],
        }
    }


def server_pod(status: dict, spec: dict | None = None, name: str = "mistral-6d9f7c5b8-x2x7q", owner: str = "rs-uid"):
    return {
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"{name}-uid",
            "creationTimestamp": iso(30),
            "labels": {"model": "mistral7b"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "mistral-x", "uid": owner}],
        },
        "spec": spec or server_pod_spec(),
        "status": status,
    }


def unschedulable_status(message: str) -> dict:
    return {
        "phase": "Pending",
        "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message},
        ],
    }


def snap(**kw) -> dict:
    base = {
        "now": NOW,
        "started": NOW - 10,
        "namespace": NS,
        "targets": {"deployments": ["mistral"], "jobs": [], "pvcs": []},
        "deployments": [deployment()],
        "replicasets": [replicaset()],
        "jobs": [],
        "pvcs": [],
        "pods": [],
        "events": [],
        "nodes": NODES,
        "node_pools": [],
        "logs": {},
    }
    base.update(kw)
    return base


def event(kind: str, name: str, reason: str, message: str, type_: str = "Warning", ago: float = 5) -> dict:
    return {
        "involvedObject": {"kind": kind, "name": name, "namespace": NS},
        "reason": reason,
        "message": message,
        "type": type_,
        "count": 1,
        "lastTimestamp": iso(ago),
        "source": {"component": "kubelet"},
    }


def running(ready: bool, started_ago: float, restarts: int = 0, name: str = "vllm") -> dict:
    return {
        "name": name,
        "ready": ready,
        "started": True,
        "restartCount": restarts,
        "state": {"running": {"startedAt": iso(started_ago)}},
    }


INIT_DONE = {
    "name": "model-loader",
    "ready": True,
    "restartCount": 0,
    "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
}


# ------------------------------------------------------------------------------------------- progress


def test_everything_done_is_no_finding_and_done():
    s = snap(deployments=[deployment(available=True)])
    s["targets"]["pvcs"] = ["fsx-models"]
    s["pvcs"] = [{"metadata": {"name": "fsx-models"}, "spec": {"volumeName": "pv"}, "status": {"phase": "Bound"}}]
    assert diagnose(s) is None
    states = progress(s)
    assert states["done"] is True
    assert states["deployments"]["mistral"]["ready"] == "1/1"
    assert states["pvcs"]["fsx-models"]["status"] == "Bound"


def test_rollout_of_a_new_generation_is_not_done_while_old_pods_serve():
    dep = deployment(available=True)
    dep["metadata"]["generation"] = 2  # spec changed; controller has not caught up
    assert progress(snap(deployments=[dep]))["done"] is False


# ---------------------------------------------------------------------------------------- unschedulable


def test_more_gpus_than_any_node_has_and_no_node_pool_is_no_capacity_at_once():
    pod = server_pod(
        unschedulable_status(
            "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
            "2 Insufficient nvidia.com/gpu."
        ),
        spec=server_pod_spec(gpus="16"),
    )
    finding = diagnose(snap(pods=[pod]))
    assert finding.reason == "unschedulable_no_capacity"
    assert "16 nvidia.com/gpu" in finding.message
    assert "largest node has 4" in finding.message
    assert "no node pool" in finding.message
    assert finding.evidence["insufficient"]["nvidia.com/gpu"] == {"requested": "16", "largest_allocatable": "4"}


def test_missing_gpu_toleration_names_the_taint_and_the_toleration_to_add():
    pod = server_pod(
        unschedulable_status(
            "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
            "2 node(s) had untolerated taint {nvidia.com/gpu: }."
        ),
        spec=server_pod_spec(toleration=False),
    )
    finding = diagnose(snap(pods=[pod]))
    assert finding.reason == "unschedulable_untolerated_taint"
    assert "nvidia.com/gpu:NoSchedule" in finding.message
    assert "{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}" in finding.message


def test_no_toleration_and_no_selector_still_blames_the_taint_not_the_cpu_node():
    pod = server_pod(
        unschedulable_status("0/3 nodes are available"), spec=server_pod_spec(toleration=False, selector={})
    )
    assert diagnose(snap(pods=[pod])).reason == "unschedulable_untolerated_taint"


def test_node_selector_that_no_gpu_node_matches():
    pod = server_pod(
        unschedulable_status("0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."),
        spec=server_pod_spec(selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}),
    )
    finding = diagnose(snap(pods=[pod]))
    assert finding.reason == "unschedulable_node_selector"
    assert "nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3" in finding.message


def test_cluster_without_any_gpu_node_says_so():
    pod = server_pod(unschedulable_status("0/1 nodes are available: 1 Insufficient nvidia.com/gpu."))
    finding = diagnose(snap(pods=[pod], nodes=[CPU_NODE]))
    assert finding.reason == "unschedulable_no_capacity"
    assert "no node offers nvidia.com/gpu" in finding.message


NODE_POOL = {
    "metadata": {"name": "gpu"},
    "spec": {
        "template": {
            "metadata": {"labels": {"nvidia.com/gpu.present": "true"}},
            "spec": {
                "taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}],
                "requirements": [
                    {
                        "key": "node.kubernetes.io/instance-type",
                        "operator": "In",
                        "values": ["g5.48xlarge", "p4d.24xlarge"],
                    }
                ],
            },
        },
        "limits": {"nvidia.com/gpu": "32"},
    },
}


def test_karpenter_node_pool_that_may_fit_gets_the_grace_period_then_a_timeout():
    pod = server_pod(
        unschedulable_status("0/3 nodes are available: 2 Insufficient nvidia.com/gpu."), spec=server_pod_spec(gpus="8")
    )
    within = snap(pods=[pod], node_pools=[NODE_POOL], settings={"provision_grace": 600})
    assert diagnose(within) is None, "a node pool may still be provisioning"
    late = copy.deepcopy(within)
    late["pods"][0]["metadata"]["creationTimestamp"] = iso(700)
    finding = diagnose(late)
    assert finding.reason == "unschedulable_provisioning_timeout"
    assert "NodePool gpu" in finding.message and "600s" in finding.message


def test_node_pool_whose_limit_is_below_the_request_cannot_help():
    pool = copy.deepcopy(NODE_POOL)
    pool["spec"]["limits"] = {"nvidia.com/gpu": "4"}
    pod = server_pod(unschedulable_status("Insufficient nvidia.com/gpu"), spec=server_pod_spec(gpus="8"))
    finding = diagnose(snap(pods=[pod], node_pools=[pool]))
    assert finding.reason == "unschedulable_no_capacity"
    assert "no node pool could add one" in finding.message


def test_node_pool_that_cannot_set_the_selected_label_cannot_help():
    pool = copy.deepcopy(NODE_POOL)
    pool["spec"]["template"]["metadata"]["labels"] = {}
    pod = server_pod(unschedulable_status("Insufficient nvidia.com/gpu"), spec=server_pod_spec(gpus="8"))
    assert diagnose(snap(pods=[pod], node_pools=[pool])).reason == "unschedulable_no_capacity"


def test_full_nodes_that_could_fit_are_waited_for_then_reported():
    pod = server_pod(
        unschedulable_status("0/3 nodes are available: 2 Insufficient nvidia.com/gpu."), spec=server_pod_spec(gpus="4")
    )
    assert diagnose(snap(pods=[pod])) is None
    pod["metadata"]["creationTimestamp"] = iso(601)
    finding = diagnose(snap(pods=[pod]))
    assert finding.reason == "unschedulable_timeout"
    assert "gpu-node-0, gpu-node-1 could hold it" in finding.message


def test_pod_waiting_for_an_unbound_claim_is_the_claims_finding():
    pod = server_pod(unschedulable_status("0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims."))
    pvc = {
        "metadata": {"name": "fsx-models", "creationTimestamp": iso(30)},
        "spec": {"storageClassName": "", "volumeName": "fsx-pv"},
        "status": {"phase": "Pending"},
    }
    finding = diagnose(snap(pods=[pod], pvcs=[pvc], pvs=[], storage_classes=[], csi_drivers=[]))
    assert finding.reason == "pvc_pending"
    assert "fsx-pv, which does not exist" in finding.message


# ------------------------------------------------------------------------------------------- containers


def test_image_pull_back_off_with_the_registry_event():
    status = {
        "phase": "Pending",
        "initContainerStatuses": [INIT_DONE],
        "containerStatuses": [
            {
                "name": "vllm",
                "ready": False,
                "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "x"'}},
            }
        ],
    }
    ev = event(
        "Pod", "mistral-6d9f7c5b8-x2x7q", "Failed", "Failed to pull image: 401 Unauthorized: no basic auth credentials"
    )
    finding = diagnose(snap(pods=[server_pod(status)], events=[ev]))
    assert finding.reason == "image_pull"
    assert "registry refused access" in finding.message
    assert "imagePullSecrets" in finding.message
    assert finding.evidence["event"]["reason"] == "Failed"


@pytest.mark.parametrize(
    ("message", "certain"),
    [
        ("rpc error: code = NotFound desc = manifest unknown", True),
        ("rpc error: code = Unknown desc = dial tcp 52.1.2.3:443: i/o timeout", False),
    ],
)
def test_err_image_pull_is_final_only_when_the_registry_said_so(message, certain):
    status = {
        "phase": "Pending",
        "containerStatuses": [
            {"name": "vllm", "restartCount": 0, "state": {"waiting": {"reason": "ErrImagePull", "message": message}}}
        ],
    }
    finding = diagnose(snap(pods=[server_pod(status)]))
    assert (finding is not None and finding.reason == "image_pull") is certain


def init_failed_status() -> dict:
    return {
        "phase": "Pending",
        "initContainerStatuses": [
            {
                "name": "model-loader",
                "ready": False,
                "restartCount": 1,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": iso(3)}},
            }
        ],
        "containerStatuses": [{"name": "vllm", "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}],
    }


def test_failed_init_container_shows_its_last_log_line():
    pod = server_pod(init_failed_status())
    s = snap(pods=[pod])
    assert logs_wanted(s) == [LogRef(pod["metadata"]["name"], "model-loader", previous=True)]
    s["logs"] = {
        f"{pod['metadata']['name']}/model-loader": {
            "lines": ["stage: copying", "stage: error: /models/mistral-7b-v0-3/consolidated.safetensors: No such file"],
            "error": None,
        }
    }
    finding = diagnose(s)
    assert finding.reason == "init_failed"
    assert "init container model-loader failed (exit 1, 1 restarts)" in finding.message
    assert (
        'last log line: "stage: error: /models/mistral-7b-v0-3/consolidated.safetensors: No such file"'
        in finding.message
    )
    assert finding.evidence["log_tail"][-1].endswith("No such file")


def test_unreadable_logs_are_said_to_be_unavailable():
    pod = server_pod(init_failed_status())
    s = snap(
        pods=[pod],
        logs={
            f"{pod['metadata']['name']}/model-loader": {
                "lines": [],
                "error": "dial tcp 10.0.0.1:10250: connection refused",
            }
        },
    )
    finding = diagnose(s)
    assert finding.reason == "init_failed"
    assert "container logs unavailable: dial tcp 10.0.0.1:10250" in finding.message


def test_oom_killed_explains_the_tmpfs_accounting_with_numbers():
    status = {
        "phase": "Running",
        "initContainerStatuses": [INIT_DONE],
        "containerStatuses": [
            {
                "name": "vllm",
                "ready": False,
                "restartCount": 1,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
            }
        ],
    }
    finding = diagnose(snap(pods=[server_pod(status)]))
    assert finding.reason == "oom_killed"
    msg = finding.message
    assert "OOMKilled (exit 137)" in msg
    assert "ram-models (20Gi)" in msg and "tmpfs" in msg and "limit 32Gi" in msg
    assert "leaves 12Gi" in msg
    assert "--swap-space reserves 16Gi" in msg and "36Gi" in msg
    assert "load strategy direct" in msg
    assert finding.evidence["memory_volumes"] == [{"name": "ram-models", "sizeLimit": "20Gi"}]


def test_oom_killed_without_a_ram_volume_just_asks_for_more_memory():
    spec = server_pod_spec()
    spec["volumes"] = [v for v in spec["volumes"] if "emptyDir" not in v]
    status = {
        "phase": "Running",
        "containerStatuses": [
            {"name": "vllm", "restartCount": 0, "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
        ],
    }
    finding = diagnose(snap(pods=[server_pod(status, spec=spec)]))
    assert finding.reason == "oom_killed"
    assert "memory limit 32Gi" in finding.message and "tmpfs" not in finding.message


def crash_status(restarts: int = 3) -> dict:
    return {
        "phase": "Running",
        "initContainerStatuses": [INIT_DONE],
        "containerStatuses": [
            {
                "name": "vllm",
                "ready": False,
                "restartCount": restarts,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
            }
        ],
    }


def test_crash_loop_with_a_known_vllm_error_gets_its_fix():
    pod = server_pod(crash_status())
    s = snap(
        pods=[pod],
        logs={
            f"{pod['metadata']['name']}/vllm": {
                "lines": ["torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"],
                "error": None,
            }
        },
    )
    finding = diagnose(s)
    assert finding.reason == "crash_loop"
    assert "crash-looping (exit 1, 3 restarts)" in finding.message
    assert "CUDA out of memory" in finding.message
    assert "--tensor-parallel-size" in finding.message


def test_crash_loop_caused_by_a_probe_kill_asks_for_a_longer_startup_probe():
    pod = server_pod(crash_status())
    killing = event(
        "Pod",
        pod["metadata"]["name"],
        "Killing",
        "Container vllm failed startup probe, will be restarted",
        type_="Normal",
    )
    finding = diagnose(snap(pods=[pod], events=[killing]))
    assert finding.reason == "crash_loop"
    assert "killed it after a failed startup probe" in finding.message
    assert "failureThreshold" in finding.message


def test_pods_of_an_old_replicaset_are_not_diagnosed():
    old = server_pod(crash_status(), name="mistral-old-abcde", owner="old-rs-uid")
    new = server_pod({"phase": "Running", "containerStatuses": [running(False, 5)]})
    s = snap(pods=[old, new], replicasets=[replicaset("1", "old-rs-uid"), replicaset("2", "rs-uid")])
    s["deployments"][0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "2"
    assert diagnose(s) is None


def test_missing_secret_is_a_config_error():
    status = {
        "phase": "Pending",
        "containerStatuses": [
            {
                "name": "vllm",
                "restartCount": 0,
                "state": {
                    "waiting": {"reason": "CreateContainerConfigError", "message": 'secret "vllm-api-key" not found'}
                },
            }
        ],
    }
    finding = diagnose(snap(pods=[server_pod(status)]))
    assert finding.reason == "config_error"
    assert 'secret "vllm-api-key" not found' in finding.message


# ----------------------------------------------------------------------------------------------- ready


def test_never_ready_within_the_startup_budget_cites_the_probe():
    pod = server_pod(
        {"phase": "Running", "initContainerStatuses": [INIT_DONE], "containerStatuses": [running(False, 950)]}
    )
    probe = event(
        "Pod", pod["metadata"]["name"], "Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 503"
    )
    finding = diagnose(snap(pods=[pod], events=[probe], settings={"startup_budget": 900}))
    assert finding.reason == "not_ready"
    assert "950s without becoming Ready (startup budget 900s)" in finding.message
    assert "statuscode: 503" in finding.message


def test_loading_model_within_the_budget_is_not_a_failure():
    pod = server_pod({"phase": "Running", "containerStatuses": [running(False, 300)]})
    assert diagnose(snap(pods=[pod], settings={"startup_budget": 900})) is None


def test_replica_failure_names_the_rejection():
    dep = deployment()
    dep["status"]["conditions"].append(
        {
            "type": "ReplicaFailure",
            "status": "True",
            "reason": "FailedCreate",
            "message": 'pods "mistral-x" is forbidden: exceeded quota: gpu, requested: requests.nvidia.com/gpu=1',
        }
    )
    finding = diagnose(snap(deployments=[dep]))
    assert finding.reason == "replica_failure"
    assert "exceeded quota" in finding.message


# ------------------------------------------------------------------------------------------------ Jobs


def download_job(failed: bool) -> dict:
    conditions = []
    if failed:
        conditions = [
            {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded"},
            {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
            },
        ]
    return {
        "metadata": {"name": "model-download", "uid": "job-uid"},
        "spec": {"backoffLimit": 2, "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "job-uid"}}},
        "status": {"failed": 3 if failed else 1, "conditions": conditions},
    }


def download_pod(name: str = "model-download-abcde") -> dict:
    return {
        "metadata": {
            "name": name,
            "uid": f"{name}-uid",
            "creationTimestamp": iso(20),
            "labels": {"batch.kubernetes.io/controller-uid": "job-uid", "job-name": "model-download"},
            "ownerReferences": [{"kind": "Job", "name": "model-download", "uid": "job-uid"}],
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "model-download",
                    "image": "python:3.11-slim",
                    "env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}}],
                }
            ],
        },
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {
                    "name": "model-download",
                    "restartCount": 0,
                    "state": {"terminated": {"exitCode": 1, "reason": "Error"}},
                }
            ],
        },
    }


def job_snap(failed: bool, lines: list[str]) -> dict:
    pod = download_pod()
    return snap(
        targets={"deployments": [], "jobs": ["model-download"], "pvcs": []},
        deployments=[],
        jobs=[download_job(failed)],
        pods=[pod],
        logs={f"{pod['metadata']['name']}/model-download": {"lines": lines, "error": None}},
    )


HF_401 = [
    "requests.exceptions.HTTPError: 401 Client Error: Unauthorized for url: https://huggingface.co/mistralai/Mistral-7B-Instruct-v0.3/resolve/main/params.json",
    "huggingface_hub.errors.GatedRepoError: 401 Client Error. Cannot access gated repo. Please log in.",
]


def test_hugging_face_401_is_a_token_problem_named_with_its_secret_even_before_retries_run_out():
    finding = diagnose(job_snap(failed=False, lines=HF_401))
    assert finding.reason == "job_auth"
    assert "401 Unauthorized" in finding.message
    assert "Secret hf-token key token" in finding.message
    assert "accept the model's license" in finding.message


def test_hugging_face_403_says_the_token_lacks_access():
    lines = [
        "huggingface_hub.errors.GatedRepoError: 403 Client Error: Forbidden for url: https://huggingface.co/api/models/x"
    ]
    finding = diagnose(job_snap(failed=True, lines=lines))
    assert finding.reason == "job_auth"
    assert "403 Forbidden" in finding.message and "lacks access" in finding.message


def test_other_job_failure_waits_for_the_backoff_limit_then_shows_the_log():
    lines = ["OSError: [Errno 28] No space left on device: '/models/mistral-7b-v0-3/consolidated.safetensors'"]
    assert diagnose(job_snap(failed=False, lines=lines)) is None, "retries remain"
    finding = diagnose(job_snap(failed=True, lines=lines))
    assert finding.reason == "job_failed"
    assert "BackoffLimitExceeded" in finding.message
    assert "No space left on device" in finding.message


def test_a_token_in_a_log_line_is_masked():
    lines = ["using token hf_abcdefghijklmnopqrstuvwxyz0123 for https://huggingface.co: 401 Unauthorized"]
    finding = diagnose(job_snap(failed=True, lines=lines))
    assert "hf_abcdefghijklmnopqrstuvwxyz0123" not in str(finding.as_dict())
    assert "<redacted>" in finding.message


def test_completed_job_is_done_despite_an_earlier_failed_attempt():
    s = job_snap(failed=False, lines=["transient error"])
    s["jobs"][0]["status"]["conditions"] = [{"type": "Complete", "status": "True"}]
    assert diagnose(s) is None
    assert progress(s)["done"] is True


# ------------------------------------------------------------------------------------------------ PVCs


def pvc(spec: dict, age: float = 30) -> dict:
    return {
        "metadata": {"name": "fsx-models", "creationTimestamp": iso(age)},
        "spec": spec,
        "status": {"phase": "Pending"},
    }


def pvc_snap(claim: dict, **kw) -> dict:
    base = dict(
        targets={"deployments": [], "jobs": [], "pvcs": ["fsx-models"]},
        deployments=[],
        pvcs=[claim],
        pvs=[],
        storage_classes=[],
        csi_drivers=[{"metadata": {"name": "fsx.csi.aws.com"}}],
    )
    base.update(kw)
    return snap(**base)


def test_static_claim_naming_a_missing_pv():
    finding = diagnose(pvc_snap(pvc({"storageClassName": "", "volumeName": "fsx-pv"})))
    assert finding.reason == "pvc_pending"
    assert "PersistentVolume fsx-pv, which does not exist" in finding.message


def test_released_pv_needs_its_claim_ref_cleared():
    pv = {
        "metadata": {"name": "fsx-pv"},
        "spec": {"claimRef": {"name": "fsx-models", "namespace": NS, "uid": "old"}},
        "status": {"phase": "Released"},
    }
    finding = diagnose(pvc_snap(pvc({"storageClassName": "", "volumeName": "fsx-pv"}), pvs=[pv]))
    assert finding.reason == "pvc_pending"
    assert "Released" in finding.message and "claimRef" in finding.message


def test_storage_class_whose_csi_driver_is_not_installed():
    sc = {"metadata": {"name": "fsx-sc"}, "provisioner": "efs.csi.aws.com", "volumeBindingMode": "Immediate"}
    finding = diagnose(pvc_snap(pvc({"storageClassName": "fsx-sc"}), storage_classes=[sc]))
    assert finding.reason == "pvc_pending"
    assert "no CSI driver of that name is registered" in finding.message
    assert "efs.csi.aws.com" in finding.message


def test_registered_driver_whose_provisioner_never_answers_is_reported_after_the_grace():
    sc = {"metadata": {"name": "fsx-sc"}, "provisioner": "fsx.csi.aws.com", "volumeBindingMode": "Immediate"}
    waiting = event(
        "PersistentVolumeClaim",
        "fsx-models",
        "ExternalProvisioning",
        "Waiting for a volume to be created either by the external provisioner 'fsx.csi.aws.com'",
        type_="Normal",
    )
    assert (
        diagnose(pvc_snap(pvc({"storageClassName": "fsx-sc"}, age=30), storage_classes=[sc], events=[waiting])) is None
    )
    finding = diagnose(pvc_snap(pvc({"storageClassName": "fsx-sc"}, age=200), storage_classes=[sc], events=[waiting]))
    assert finding.reason == "pvc_pending"
    assert "provisioner fsx.csi.aws.com has not picked it up" in finding.message


def test_no_pv_and_no_storage_class_event():
    ev = event(
        "PersistentVolumeClaim",
        "fsx-models",
        "FailedBinding",
        "no persistent volumes available for this claim and no storage class is set",
    )
    finding = diagnose(pvc_snap(pvc({"storageClassName": ""}), events=[ev]))
    assert finding.reason == "pvc_pending"
    assert "no persistent volumes available" in finding.message


def test_wait_for_first_consumer_claim_is_done_while_pending():
    sc = {"metadata": {"name": "gp3"}, "provisioner": "ebs.csi.aws.com", "volumeBindingMode": "WaitForFirstConsumer"}
    s = pvc_snap(
        pvc({"storageClassName": "gp3"}), storage_classes=[sc], csi_drivers=[{"metadata": {"name": "ebs.csi.aws.com"}}]
    )
    assert diagnose(s) is None
    assert progress(s)["pvcs"]["fsx-models"]["done"] is True


# -------------------------------------------------------------------------------------------- the rest


def test_absent_object_is_reported_after_the_grace():
    s = snap(deployments=[], settings={"missing_grace": 60})
    assert diagnose(s) is None
    s["started"] = NOW - 61
    finding = diagnose(s)
    assert finding.reason == "not_found"
    assert "Deployment mistral does not exist in namespace vllm" in finding.message


def test_every_reason_diagnose_returns_is_documented():
    # The module's RETURN docs list REASONS; a new reason must be added there too.
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[4] / "plugins" / "modules" / "vllm_wait.py").read_text()
    for reason in REASONS:
        assert f"C({reason})" in docs, reason


@pytest.mark.parametrize(
    ("text", "value"),
    [("32Gi", 32 * 1024**3), ("500m", 0.5), ("4", 4.0), ("1.5G", 1.5e9), ("1e3", 1000.0), ("128974848", 128974848.0)],
)
def test_parse_quantity(text, value):
    assert parse_quantity(text) == pytest.approx(value)


def test_format_bytes():
    assert format_bytes(20 * 1024**3) == "20Gi"
    assert format_bytes(1.5 * 1024**3) == "1.5Gi"
    assert format_bytes(512 * 1024**2) == "512Mi"


# ---------------------------------------------------------------------------------------------- the loop


class FakeClock:
    def __init__(self):
        self.now = NOW
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def scripted_watch(snapshots, clock: FakeClock, **kw):
    """A DeploymentWatch whose looks at the cluster are scripted (a snapshot, or an exception to raise)."""
    from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis import DeploymentWatch, PollTiming, WatchScope

    class Scripted(DeploymentWatch):
        def snapshot(self, started):
            item = snapshots.pop(0) if len(snapshots) > 1 else snapshots[0]
            if isinstance(item, Exception):
                raise item
            return {**item, "now": clock.time(), "started": started}

    timing = PollTiming(clock=clock.time, sleep=clock.sleep, **kw)
    return Scripted(None, WatchScope.of(NS, deployments=["mistral"]), timing=timing)


def test_loop_polls_once_a_second_and_stops_at_the_first_finding():
    clock = FakeClock()
    pending = snap(pods=[server_pod({"phase": "Pending"})])
    crashing = snap(pods=[server_pod(crash_status())])
    result = scripted_watch([pending, pending, crashing], clock).run(timeout=600)
    assert result.finding.reason == "crash_loop"
    assert result.polls == 3
    assert clock.sleeps == [1.0, 1.0]
    assert result.ok is False and result.elapsed_ms == 2000


def test_loop_rides_out_an_api_restart_then_gives_up_after_the_grace():
    clock = FakeClock()
    healthy = snap(deployments=[deployment(available=True)])
    outage = [ConnectionRefusedError("connection refused")] * 5
    result = scripted_watch([*outage, healthy], clock).run(timeout=600)
    assert result.ok is True and result.polls == 6 and result.states["done"] is True

    clock = FakeClock()
    result = scripted_watch([ConnectionRefusedError("connection refused")], clock, api_grace=60).run(timeout=600)
    assert result.finding.reason == "api_unreachable"
    assert "did not answer for 60s" in result.finding.message


def test_loop_timeout_names_what_it_still_waited_for():
    clock = FakeClock()
    loading = snap(pods=[server_pod({"phase": "Running", "containerStatuses": [running(False, 5)]})])
    result = scripted_watch([loading], clock).run(timeout=30)
    assert result.finding.reason == "timeout"
    assert "still waiting for deployment mistral (Progressing)" in result.finding.message
    assert result.polls == 31


def group(ready: int = 0, available: bool = False) -> dict:
    """A LeaderWorkerSet as its controller reports it (sigs.k8s.io/lws v0.8.0 status and conditions)."""
    conditions = [{"type": "Available", "status": "True" if available else "False"}]
    return {
        "metadata": {"name": "big-lws", "namespace": NS, "generation": 1},
        "spec": {"replicas": 1, "leaderWorkerTemplate": {"size": 2}},
        "status": {"readyReplicas": ready, "updatedReplicas": 1, "replicas": 1, "conditions": conditions},
    }


def group_pod(index: str, status: dict, gpus: str = "4") -> dict:
    pod = server_pod(status, spec=server_pod_spec(gpus=gpus), name="big-lws-0" + ("" if index == "0" else f"-{index}"))
    pod["metadata"]["labels"] = {"leaderworkerset.sigs.k8s.io/name": "big-lws", WORKER_INDEX: index}
    pod["metadata"]["ownerReferences"] = [{"kind": "StatefulSet", "name": "big-lws", "uid": "sts-uid"}]
    return pod


WORKER_INDEX = "leaderworkerset.sigs.k8s.io/worker-index"
GROUP_TARGETS = {"deployments": [], "jobs": [], "pvcs": [], "leaderworkersets": ["big-lws"]}


def serving_pod(index: str) -> dict:
    pod = group_pod(index, {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})
    pod["spec"]["nodeName"] = f"gpu-{index}"
    return pod


def test_a_group_is_done_when_its_set_is_available_and_every_pod_serves():
    pods = [serving_pod("0"), serving_pod("1")]
    ready = snap(targets=GROUP_TARGETS, deployments=[], leaderworkersets=[group(ready=1, available=True)], pods=pods)
    assert progress(ready)["done"] and progress(ready)["leaderworkersets"]["big-lws"]["ready"] == "1/1"
    # The set says Available while a worker has no node (the controller counts created pods): not done.
    worker = group_pod("1", unschedulable_status("0/3 nodes are available: 3 Insufficient nvidia.com/gpu."))
    stale = snap(
        targets=GROUP_TARGETS, deployments=[], leaderworkersets=[group(ready=1, available=True)], pods=[pods[0], worker]
    )
    assert not progress(stale)["done"]
    assert progress(stale)["leaderworkersets"]["big-lws"]["pods_not_ready"] == ["big-lws-0-1"]
    waiting = snap(targets=GROUP_TARGETS, deployments=[], leaderworkersets=[group()])
    assert not progress(waiting)["done"] and diagnose(waiting) is None


def test_a_worker_that_cannot_be_scheduled_is_the_groups_finding():
    leader = group_pod("0", running(ready=False, started_ago=5))
    unschedulable = unschedulable_status("0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
    worker = group_pod("1", unschedulable, gpus="8")
    finding = diagnose(snap(targets=GROUP_TARGETS, deployments=[], leaderworkersets=[group()], pods=[leader, worker]))
    assert finding is not None and finding.object == "Pod/big-lws-0-1"
    assert finding.reason == "unschedulable_no_capacity" and "8 nvidia.com/gpu" in finding.message


def test_a_missing_set_is_named_after_the_grace():
    late = snap(targets=GROUP_TARGETS, deployments=[], leaderworkersets=[], started=NOW - 3600)
    finding = diagnose(late)
    assert finding.reason == "not_found" and finding.object == "LeaderWorkerSet/big-lws"


@pytest.mark.parametrize(
    ("line", "hint"),
    [
        (  # vllm 0.9.0 executor/ray_utils.py:243-246
            "ValueError: Cannot provide a placement group of placement_group_specs=[{'GPU': 1.0, 'node:10.0.0.1': "
            "0.001}, {'GPU': 1.0}] within 1800 seconds. See `ray status` and `ray list nodes` to make sure the "
            "cluster has enough resources.",
            "a worker pod did not join the leader",
        ),
        (  # vllm 0.33.0 v1/executor/multiproc_executor.py:380-385
            "ERROR Worker proc VllmWorker-1 died unexpectedly (exit code: 1), shutting down executor.",
            "a worker of the group died",
        ),
        ("/bin/sh: 1: ray: not found", "the image has no Ray"),
        (  # vllm 0.11.2 config/parallel.py:566-570, with tensor x pipeline over one node's GPUs and no --nnodes
            "ValueError: Tensor parallel size (8) cannot be larger than the number of available GPUs (4).",
            "vLLM sees more parallelism than this node's GPUs",
        ),
    ],
)
def test_a_leader_crashing_for_its_group_gets_the_groups_cause(line, hint):
    leader = group_pod("0", crash_status())
    logs = {f"{leader['metadata']['name']}/vllm": {"lines": [line], "error": None}}
    finding = diagnose(
        snap(targets=GROUP_TARGETS, deployments=[], leaderworkersets=[group()], pods=[leader], logs=logs)
    )
    assert finding.reason == "crash_loop" and finding.object == "Pod/big-lws-0"
    assert hint in finding.message
