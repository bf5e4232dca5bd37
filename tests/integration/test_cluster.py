"""The local control plane behaves like a real cluster: scheduling on GPUs, Jobs, PV binding, validation.

These run against a real kube-apiserver (tests/cluster or KUBECONFIG); kwok only plays the kubelets.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from cluster_helpers import CLUSTER_SH, wait_until
from cluster_helpers import apply_object as apply

GPU_TOLERATION = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def gpu_deployment(name: str, ns: str, gpus: int) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "tolerations": GPU_TOLERATION,
                    "nodeSelector": {"nvidia.com/gpu.present": "true"},
                    "containers": [
                        {
                            "name": "vllm",
                            "image": "vllm/vllm-openai:v0.9.0",
                            "resources": {"limits": {"nvidia.com/gpu": str(gpus), "cpu": "1", "memory": "1Gi"}},
                        }
                    ],
                },
            },
        },
    }


def test_gpu_deployment_lands_on_gpu_node_and_becomes_available(kubectl, namespace):
    assert apply(kubectl, gpu_deployment("gpu-app", namespace, 1)).returncode == 0
    kubectl.run("-n", namespace, "wait", "deployment/gpu-app", "--for=condition=Available", "--timeout=60s")
    pods = kubectl.json("-n", namespace, "get", "pods", "-l", "app=gpu-app")["items"]
    node = kubectl.json("get", "node", pods[0]["spec"]["nodeName"])
    assert node["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "4"


def test_pod_without_gpu_toleration_never_lands_on_gpu_node(kubectl, namespace):
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "cpu-only", "namespace": namespace},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    assert apply(kubectl, pod).returncode == 0
    kubectl.run("-n", namespace, "wait", "pod/cpu-only", "--for=condition=Ready", "--timeout=60s")
    assert kubectl.json("-n", namespace, "get", "pod", "cpu-only")["spec"]["nodeName"] == "cpu-node-0"


def test_job_completes(kubectl, namespace):
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "download", "namespace": namespace},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "dl", "image": "python:3.11-slim"}]}
            },
        },
    }
    assert apply(kubectl, job).returncode == 0
    kubectl.run("-n", namespace, "wait", "job/download", "--for=condition=Complete", "--timeout=90s")
    assert kubectl.json("-n", namespace, "get", "job", "download")["status"]["succeeded"] == 1


def test_static_pv_binds_to_its_claim(kubectl, namespace):
    pv_name = f"fsx-{namespace}"
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": pv_name},
        "spec": {
            "capacity": {"storage": "1200Gi"},
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "mountOptions": ["flock"],
            "csi": {
                "driver": "fsx.csi.aws.com",
                "volumeHandle": "fs-0123456789abcdef0",
                "volumeAttributes": {
                    "dnsname": "fs-0123456789abcdef0.fsx.us-west-2.amazonaws.com",
                    "mountname": "abcdefgh",
                },
            },
        },
    }
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "fsx-models", "namespace": namespace},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "volumeName": pv_name,
            "resources": {"requests": {"storage": "1200Gi"}},
        },
    }
    try:
        assert apply(kubectl, pv).returncode == 0
        assert apply(kubectl, pvc).returncode == 0
        phase = wait_until(
            lambda: kubectl.json("-n", namespace, "get", "pvc", "fsx-models")["status"].get("phase") == "Bound",
            timeout=60,
        )
        assert phase, kubectl.json("-n", namespace, "get", "pvc", "fsx-models")["status"]
        assert kubectl.json("get", "pv", pv_name)["status"]["phase"] == "Bound"
    finally:
        kubectl.run("delete", "pv", pv_name, "--wait=false", check=False)


def test_pod_asking_for_more_gpus_than_exist_stays_pending_with_event(kubectl, namespace):
    assert apply(kubectl, gpu_deployment("too-big", namespace, 16)).returncode == 0

    def failed_scheduling():
        events = kubectl.json("-n", namespace, "get", "events", "--field-selector", "reason=FailedScheduling")
        return [e for e in events["items"] if "nvidia.com/gpu" in e.get("message", "")]

    events = wait_until(failed_scheduling, timeout=60)
    assert events, "no FailedScheduling event naming nvidia.com/gpu"
    assert "Insufficient nvidia.com/gpu" in events[0]["message"]
    pods = kubectl.json("-n", namespace, "get", "pods", "-l", "app=too-big")["items"]
    assert [p["status"]["phase"] for p in pods] == ["Pending"]
    assert not pods[0]["spec"].get("nodeName")


def test_api_server_rejects_deployment_whose_selector_does_not_match_labels(kubectl, namespace):
    bad = gpu_deployment("bad", namespace, 1)
    bad["spec"]["selector"] = {"matchLabels": {"app": "something-else"}}
    proc = apply(kubectl, bad)
    assert proc.returncode != 0
    assert "selector` does not match template `labels`" in proc.stderr
    assert not kubectl.exists("-n", namespace, "deployment", "bad")


def test_immutable_selector_change_is_rejected(kubectl, namespace):
    assert apply(kubectl, gpu_deployment("immutable", namespace, 1)).returncode == 0
    changed = gpu_deployment("immutable", namespace, 1)
    changed["spec"]["selector"]["matchLabels"]["tier"] = "x"
    changed["spec"]["template"]["metadata"]["labels"]["tier"] = "x"
    proc = apply(kubectl, changed)
    assert proc.returncode != 0 and "field is immutable" in proc.stderr


@pytest.mark.skipif(os.environ.get("LLMOPS_VLLM_SKIP_HARNESS_TEST") == "1", reason="asked to skip")
def test_harness_up_is_idempotent_and_down_leaves_no_process(tmp_path: Path, kubeconfig, kubectl):
    """A second, throw-away cluster on other ports: `up` twice keeps one set of processes, `down` kills all, and
    leaves the first cluster's real node (its bridge, routes and rules) alone."""
    if "llmops-vllm/cluster" not in kubeconfig:
        pytest.skip("tests run against an external cluster; the local harness is not in use")
    real = kubectl.json("get", "nodes", "-l", "llmops.test/node=real")["items"]
    env = {
        **os.environ,
        "KUBECONFIG": "",
        "LLMOPS_VLLM_CLUSTER_DIR": str(tmp_path / "c2"),
        "LLMOPS_VLLM_API_PORT": "26443",
        "LLMOPS_VLLM_ETCD_PORT": "26379",
        "LLMOPS_VLLM_PORT_OFFSET": "10000",
    }
    sh = ["bash", str(CLUSTER_SH)]
    try:
        subprocess.run([*sh, "up"], env=env, check=True, capture_output=True, timeout=180)
        pids = {p.name: p.read_text().strip() for p in (tmp_path / "c2").glob("*.pid")}
        assert set(pids) == {
            "etcd.pid",
            "kube-apiserver.pid",
            "kube-controller-manager.pid",
            "kube-scheduler.pid",
            "kwok.pid",
            "lws-manager.pid",
        }
        second = subprocess.run([*sh, "up"], env=env, check=True, capture_output=True, text=True, timeout=60)
        assert "already running" in second.stderr
        assert {p.name: p.read_text().strip() for p in (tmp_path / "c2").glob("*.pid")} == pids
    finally:
        subprocess.run([*sh, "down"], check=False, env=env, capture_output=True, timeout=60)
    alive = [pid for pid in pids.values() if Path(f"/proc/{pid}").exists()]
    assert alive == []
    if real:  # the fake Hub on the first cluster's real node still answers through its Service
        hub = subprocess.run(
            [
                "curl",
                "-fsS",
                "-m",
                "5",
                "http://10.96.100.1/api/models/mistralai/Mistral-7B-Instruct-v0.3/revision/main?blobs=true",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert hub.returncode == 0, hub.stderr
