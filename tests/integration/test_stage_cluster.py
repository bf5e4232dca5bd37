"""vllm_model_stage's cluster-side mode against the real control plane: create or reuse the download Job, wait, read
the manifest back from its log; and vllm_wait returning the same manifest.

kwok plays the kubelet: the Job's pod succeeds at once (or fails, labelled ``llmops.test/fault: job-failed``), and
in the namespace ``llmops-stage`` kwok serves the log of a completed download (tests/cluster/kwok-logs/
model-download-manifest.log), whose last line is the manifest. Elsewhere kwok has no log for the container.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml
from ansible_collections.llmops.vllm.plugins.module_utils import model_download as md
from ansible_collections.llmops.vllm.plugins.module_utils import model_stage as ms
from ansible_collections.llmops.vllm.plugins.module_utils.stage_engine import (
    LEGACY_ENTRY,
    LEGACY_SOURCE,
    stage_configmap,
)
from ansible_collections.llmops.vllm.tests.ansible_cli import run_module
from cluster_helpers import ROOT, Kubectl, apply_object, run_playbook, wait_until

LOG_NAMESPACE = "llmops-stage"  # kwok.yaml serves the completed download's log for pods here
CANNED_LOG = ROOT / "tests" / "cluster" / "kwok-logs" / "model-download-manifest.log"
FILES = ["consolidated.safetensors", "params.json", "tokenizer.model.v3"]
REPO = "mistralai/Mistral-7B-Instruct-v0.3"


def canned_manifest() -> dict:
    """The manifest the canned log ends with, parsed the way a kubelet serves it (no CRI prefix)."""
    lines = [line.split(" ", 3)[3] for line in CANNED_LOG.read_text().splitlines()]
    manifest = ms.manifest_from_log(lines)
    assert manifest is not None
    return manifest


def stage(kubeconfig: str, args: dict, *flags: str) -> dict:
    """`ansible localhost -m llmops.vllm.vllm_model_stage` (or another module) against the test cluster."""
    module = args.pop("_module", "llmops.vllm.vllm_model_stage")
    cluster = {"K8S_AUTH_KUBECONFIG": kubeconfig, "KUBECONFIG": kubeconfig}
    return run_module(module, args, *flags, env=cluster, unset=(), check_rc=False, timeout=600)


def make_volume(kubectl: Kubectl, namespace: str) -> tuple[str, str]:
    """A static PV bound to a claim in ``namespace`` (the storage role's shape); returns (pv, claim)."""
    pv = f"stage-{uuid.uuid4().hex[:8]}"
    for obj in (
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv},
            "spec": {
                "capacity": {"storage": "1200Gi"},
                "accessModes": ["ReadWriteMany"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "claimRef": {"namespace": namespace, "name": "fsx-models"},
                "csi": {"driver": "fsx.csi.aws.com", "volumeHandle": f"fs-{uuid.uuid4().hex[:17]}"},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "fsx-models", "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "volumeName": pv,
                "resources": {"requests": {"storage": "1200Gi"}},
            },
        },
    ):
        proc = apply_object(kubectl, obj)
        assert proc.returncode == 0, proc.stderr
    return pv, "fsx-models"


@pytest.fixture()
def volume(kubectl: Kubectl, namespace: str):
    pv, claim = make_volume(kubectl, namespace)
    yield namespace, claim
    kubectl.run("delete", "pv", pv, "--ignore-not-found", "--wait=false", check=False)


@pytest.fixture(scope="module")
def log_volume(kubeconfig: str, kubectl: Kubectl):
    """The claim in the namespace kwok serves the download's log in; the namespace goes at the end."""
    # A previous run's namespace may still be terminating.
    wait_until(
        lambda: (
            not kubectl.exists("namespace", LOG_NAMESPACE)
            or kubectl.json("get", "namespace", LOG_NAMESPACE)["status"].get("phase") != "Terminating"
        ),
        timeout=120,
        interval=1,
    )
    if not kubectl.exists("namespace", LOG_NAMESPACE):
        kubectl.run("create", "namespace", LOG_NAMESPACE)
    if not kubectl.exists("-n", LOG_NAMESPACE, "pvc", "fsx-models"):
        pv, claim = make_volume(kubectl, LOG_NAMESPACE)
    else:
        pv, claim = kubectl.json("-n", LOG_NAMESPACE, "get", "pvc", "fsx-models")["spec"]["volumeName"], "fsx-models"
    yield LOG_NAMESPACE, claim
    kubectl.run("delete", "namespace", LOG_NAMESPACE, "--wait=false", check=False)
    kubectl.run("delete", "pv", pv, "--ignore-not-found", "--wait=false", check=False)


def require_canned_logs(kubectl: Kubectl, namespace: str, pod: str) -> None:
    """kwok serves the canned log only once it has read this checkout's kwok.yaml (it reads it when it starts)."""
    proc = kubectl.run("-n", namespace, "logs", pod, "-c", "model-download", check=False)
    if "MANIFEST {" not in proc.stdout:
        pytest.fail(
            f"kwok serves no download log in {namespace} ({proc.stderr.strip()[:200]}): it reads "
            "tests/cluster/kwok.yaml only when it starts; restart the control plane (cluster.sh down, then up)"
        )


def args_for(namespace: str, claim: str, job: str, **extra) -> dict:
    return {
        "pvc": claim,
        "namespace": namespace,
        "path": "mistral-7b-v0-3",
        "hf_repo": REPO,
        "hf_files": FILES,
        "job_name": job,
        "timeout": 300,
        **extra,
    }


# ------------------------------------------------------------------------------------------------- tests


def test_creates_the_job_waits_and_returns_its_manifest_then_reuses_it(kubeconfig, kubectl, log_volume):
    namespace, claim = log_volume
    job = f"model-download-{uuid.uuid4().hex[:6]}"
    first = stage(kubeconfig, args_for(namespace, claim, job))
    if first.get("failed") and first.get("reason") == "manifest_unavailable":
        require_canned_logs(kubectl, namespace, first["pod"])
    assert first.get("failed") is not True, first.get("msg")
    assert first["changed"] is True
    assert first["applied"] == ["ConfigMap/llmops-model-stage", f"Job/{job}"]
    assert first["states"]["jobs"][job]["status"] == "Complete"
    # The manifest is the one the Job printed last: files, bytes, format, model facts.
    manifest = first["manifest"]
    assert manifest == canned_manifest()
    assert [f["path"] for f in manifest["files"]] == FILES and manifest["format"] == "mistral"
    assert manifest["total_bytes"] == sum(f["size"] for f in manifest["files"])
    assert manifest["facts"]["num_layers"] == 32 and manifest["source"]["repo"] == REPO

    live = kubectl.json("-n", namespace, "get", "job", job, "--show-managed-fields")
    assert {m["manager"] for m in live["metadata"]["managedFields"]} >= {"llmops-vllm"}
    command = live["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["python3", "/opt/llmops/model_stage", "download"]
    assert command[command.index("--dest") + 1] == "/models/mistral-7b-v0-3"
    engine = kubectl.json("-n", namespace, "get", "configmap", "llmops-model-stage")["data"]
    package = ROOT / "plugins" / "module_utils" / "model_stage"
    assert engine == {path.name: path.read_text() for path in package.glob("*.py")} | {LEGACY_ENTRY: LEGACY_SOURCE}

    # Second run: the Complete Job is reused, not re-created, and reports the same manifest.
    second = stage(kubeconfig, args_for(namespace, claim, job))
    assert second.get("failed") is not True, second.get("msg")
    assert second["changed"] is False and second["applied"] == []
    assert second["manifest"] == manifest
    again = kubectl.json("-n", namespace, "get", "job", job)
    assert again["metadata"]["uid"] == live["metadata"]["uid"]
    assert again["metadata"]["resourceVersion"] == live["metadata"]["resourceVersion"]

    # vllm_wait, as the roles use it, returns the same manifest for the Job it waited for.
    waited = stage(kubeconfig, {"_module": "llmops.vllm.vllm_wait", "namespace": namespace, "jobs": [job]})
    assert waited.get("failed") is not True, waited.get("msg")
    assert waited["manifests"] == {job: manifest}


def test_a_job_for_another_model_is_not_taken_for_this_one(kubeconfig, kubectl, log_volume):
    namespace, claim = log_volume
    job = f"model-download-{uuid.uuid4().hex[:6]}"
    created = stage(kubeconfig, args_for(namespace, claim, job, timeout=0))
    assert created.get("failed") is not True, created.get("msg")
    other = stage(kubeconfig, args_for(namespace, claim, job, path="llama-3-8b", hf_repo="meta-llama/Meta-Llama-3-8B"))
    assert other.get("failed") is True and other["reason"] == "job_mismatch"
    assert f"Job {job} in namespace {namespace} already exists for another download" in other["msg"]
    assert "--dest /models/mistral-7b-v0-3" in other["msg"] and "\n" not in other["msg"]


def test_check_mode_reports_what_it_would_create_and_creates_nothing(kubeconfig, kubectl, volume):
    namespace, claim = volume
    result = stage(kubeconfig, args_for(namespace, claim, "model-download"), "--check", "--diff")
    assert result.get("failed") is not True, result.get("msg")
    assert result["changed"] is True and result["manifest"] is None
    assert result["applied"] == ["ConfigMap/llmops-model-stage", "Job/model-download"]
    assert "Job/model-download: server-side apply" in result["diff"]["after"]
    assert not kubectl.exists("-n", namespace, "job", "model-download")
    assert not kubectl.exists("-n", namespace, "configmap", "llmops-model-stage")


def test_a_missing_claim_is_named_before_anything_is_created(kubeconfig, kubectl, namespace):
    result = stage(kubeconfig, args_for(namespace, "fsx-models", "model-download"))
    assert result.get("failed") is True and result["reason"] == "not_found"
    assert result["msg"].startswith(f"PersistentVolumeClaim fsx-models not found in namespace {namespace}")
    assert not kubectl.exists("-n", namespace, "job", "model-download")


def test_a_failing_download_gives_the_cause_in_one_line(kubeconfig, kubectl, volume):
    """A running download Job (made here as the module would, but labelled for kwok to fail it) is waited for."""
    namespace, claim = volume
    request = md.check_request(args_for(namespace, claim, "model-download"))
    job = md.download_job(request["job"], namespace, claim, **request["settings"])
    job["spec"]["backoffLimit"] = 0  # fail at the first failed pod, not after three retries with back-off
    job["spec"]["template"]["metadata"]["labels"]["llmops.test/fault"] = "job-failed"
    proc = apply_object(kubectl, job, manager="llmops-vllm")
    assert proc.returncode == 0, proc.stderr
    result = stage(kubeconfig, args_for(namespace, claim, "model-download"))
    assert result.get("failed") is True
    assert result["reason"] == "job_failed" and result["object"] == "Job/model-download"
    assert result["msg"].startswith("Job model-download failed (")
    assert "container model-download exited 1" in result["msg"] and "\n" not in result["msg"]
    assert result["changed"] is False and result["applied"] == []


def test_a_complete_job_without_its_log_says_so(kubeconfig, kubectl, volume):
    """Outside llmops-stage kwok has no log for the container: the Job completes, its manifest cannot be read."""
    namespace, claim = volume
    result = stage(kubeconfig, args_for(namespace, claim, "model-download"))
    assert result.get("failed") is True and result["reason"] == "manifest_unavailable"
    assert result["msg"].startswith("Job model-download is Complete but its manifest cannot be read")
    assert "delete the Job and run again" in result["msg"] and "\n" not in result["msg"]
    # vllm_wait does not fail for a missing manifest: the Job is Complete, the manifest is unknown.
    waited = stage(kubeconfig, {"_module": "llmops.vllm.vllm_wait", "namespace": namespace, "jobs": ["model-download"]})
    assert waited.get("failed") is not True and waited["manifests"] == {"model-download": None}


def test_the_module_builds_the_job_and_configmap_the_role_renders(tmp_path: Path):
    """One download Job: what render.yml writes for the reference model is what the module applies (the role's
    defaults and the module's agree, and the role builds its objects with the module's code)."""
    out = tmp_path / "render"
    # No cluster: render.yml needs none.
    run_playbook("render.yml", str(tmp_path / "absent"), {"render_dir": str(out)}, check=True)
    rendered = {
        (o["kind"], o["metadata"]["name"]): o
        for o in yaml.safe_load_all((out / "20-model-download.yml").read_text())
        if o
    }
    defaults = yaml.safe_load((ROOT / "roles" / "vllm_server" / "defaults" / "main.yml").read_text())
    entry = {
        "name": "model-download",
        "model_dir": defaults["vllm_server_model_dir"],
        "hf_repo": defaults["vllm_server_hf_repo"],
        "hf_revision": defaults["vllm_server_hf_revision"],
        "files": defaults["vllm_server_hf_files"],
        "models": [m["name"] for m in defaults["vllm_models"]],
    }
    role_job = rendered[("Job", "model-download")]
    namespace = role_job["metadata"]["namespace"]
    assert md.download_job(entry, namespace, "fsx-models") == role_job
    assert stage_configmap("llmops-model-stage", namespace) == rendered[("ConfigMap", "llmops-model-stage")]
