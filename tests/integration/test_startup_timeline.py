"""The start-up timeline against a real API server: deploy.yml ends with it, status.yml and the module read it back.

kwok starts pods at once and writes no kubelet events, so the pull-bound start is written the way a kubelet would
write it: the pod's status (init container and container states, the Ready condition) through the status
subresource, and core/v1 Events with the kubelet's reasons, messages and field paths (kubernetes v1.35.4
pkg/kubelet/images/image_manager.go, pkg/kubelet/container/ref.go; the kubelet records through client-go's
legacy EventSinkImpl, cmd/kubelet/app/server.go). The staging and download logs are canned in
tests/cluster/kwok-logs (served in the namespace below by tests/cluster/kwok.yaml) and end in the engine's RESULT line.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid

import pytest
from ansible_collections.llmops.vllm.tests.ansible_cli import run_module
from cluster_helpers import Kubectl, run_playbook

NS = "llmops-timeline"  # kwok serves the canned staging and download logs here
PV = f"fsx-{NS}"
IMAGE_BYTES = 10_800_000_000


@pytest.fixture(scope="module")
def deployed(kubectl: Kubectl, kubeconfig: str):
    """The reference model deployed once into the namespace with canned logs; the deploy's output."""
    end = time.monotonic() + 90
    while kubectl.exists("namespace", NS) and time.monotonic() < end:
        time.sleep(1)  # a previous run's namespace still terminating
    proc = run_playbook("deploy.yml", kubeconfig, {"vllm_namespace": NS, "storage_pv_name": PV})
    try:
        yield proc
    finally:
        kubectl.run("delete", "namespace", NS, "--wait=false", check=False)
        kubectl.run("delete", "pv", PV, "--ignore-not-found", "--wait=false", check=False)


def _server_pod(kubectl: Kubectl) -> dict:
    pods = kubectl.json("-n", NS, "get", "pods", "-l", "app.kubernetes.io/instance=mistral")["items"]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


def _at(base: dt.datetime, seconds: float) -> str:
    return (base + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _kubelet_event(pod: dict, container: str, init: bool, reason: str, message: str, at: str) -> dict:
    """A core/v1 Event as the kubelet records it for a container of ``pod``."""
    meta = pod["metadata"]
    node = pod["spec"]["nodeName"]
    field = f"spec.{'initContainers' if init else 'containers'}{{{container}}}"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "fieldPath": field,
        },
        "reason": reason,
        "message": message,
        "source": {"component": "kubelet", "host": node},
        "firstTimestamp": at,
        "lastTimestamp": at,
        "count": 1,
        "type": "Normal",
        "reportingComponent": "kubelet",
        "reportingInstance": node,
    }


def _pull_bound_start(kubectl: Kubectl, pod: dict) -> None:
    """Write a start where the image pull dominates: pull 1m52.3s, staging 15 s, load 69 s."""
    created = dt.datetime.strptime(pod["metadata"]["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ")
    image = pod["spec"]["containers"][0]["image"]
    status = pod["status"]
    for cond in status["conditions"]:
        if cond["type"] in ("Ready", "ContainersReady"):
            cond["lastTransitionTime"] = _at(created, 199)
        if cond["type"] == "Initialized":
            cond["lastTransitionTime"] = _at(created, 129)
    status["initContainerStatuses"][0]["state"] = {
        "terminated": {
            "exitCode": 0,
            "reason": "Completed",
            "startedAt": _at(created, 114),
            "finishedAt": _at(created, 129),
        }
    }
    status["containerStatuses"][0]["state"] = {"running": {"startedAt": _at(created, 130)}}
    patch = {"status": {k: status[k] for k in ("conditions", "initContainerStatuses", "containerStatuses")}}
    name = pod["metadata"]["name"]
    kubectl.run("-n", NS, "patch", "pod", name, "--subresource=status", "--type=merge", "-p", json.dumps(patch))
    events = [
        _kubelet_event(pod, "model-loader", True, "Pulling", f'Pulling image "{image}"', _at(created, 1)),
        _kubelet_event(
            pod,
            "model-loader",
            True,
            "Pulled",
            f'Successfully pulled image "{image}" in 1m50.1s (1m52.3s including waiting). '
            f"Image size: {IMAGE_BYTES} bytes.",
            _at(created, 113),
        ),
        _kubelet_event(
            pod, "vllm", False, "Pulled", f'Container image "{image}" already present on machine', _at(created, 129)
        ),
    ]
    for event in events:
        kubectl.run("create", "-f", "-", input=json.dumps(event))


def test_deploy_ends_with_the_timeline_and_says_what_cannot_be_known(deployed):
    """On kwok no kubelet writes events and no probe runs: those phases say so; the download Job's row has the
    bytes and rate of its log's RESULT line."""
    assert deployed.returncode == 0, deployed.stdout[-4000:]
    out = deployed.stdout[deployed.stdout.index("Show where each server's start-up time went") :]
    assert "Job model-download: download" in out
    assert "14.5 GB fetched at 57.5 MB/s (3 files, 0 already there)" in out
    assert "image pull" in out and "no Pulled event from the kubelet" in out
    assert "no probe ran" in out
    assert "14.5 GB copied at 969.7 MB/s (3 files)" in out  # the staging init container's RESULT line


def test_status_reads_a_pull_bound_start_from_status_events_and_logs(deployed, kubectl: Kubectl):
    assert deployed.returncode == 0, deployed.stdout[-4000:]
    pod = _server_pod(kubectl)
    _pull_bound_start(kubectl, pod)
    result = run_module(
        "llmops.vllm.vllm_startup_report", {"namespace": NS, "first_token_ms": {"mistral": 61.3}}, unset=()
    )
    assert not result.get("failed"), result.get("msg")
    [report] = result["pods"]
    rows = {row["phase"]: row for row in report["phases"]}
    assert report["deployment"] == "mistral" and report["unknown"] == []
    assert rows["image_pull"]["seconds"] == pytest.approx(112.3)
    assert rows["image_pull"]["detail"] == (
        "model-loader: pulled 10.8 GB in 1m50s (98.1 MB/s) after 2.2s queued behind other pulls; vllm: already present"
    )
    assert rows["staging"]["seconds"] == 15 and rows["staging"]["throughput_bytes_per_s"] == 969666625
    assert rows["model_load"]["seconds"] == 69
    assert rows["first_token"]["seconds"] == pytest.approx(0.0613)
    assert report["ready_seconds"] == 199
    assert report["slowest"]["phase"] == "image_pull" and "pre-pull the image" in report["slowest"]["lever"]
    assert result["slowest"]["pod"] == pod["metadata"]["name"]
    # The same report through the playbook, as a table in the play output.
    proc = run_playbook("status.yml", kubectl.kubeconfig, {"vllm_namespace": NS})
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "slowest: image pull 1m52s: pre-pull the image" in proc.stdout
    assert "model load" in proc.stdout and "1m09s" in proc.stdout


def test_report_names_a_missing_deployment_in_one_line(deployed):
    result = run_module("llmops.vllm.vllm_startup_report", {"namespace": NS, "deployments": ["nope"]}, unset=())
    assert result.get("failed")
    assert result["msg"].startswith(f"startup report in namespace {NS}: ") and "nope" in result["msg"]
    assert "\n" not in result["msg"]
