"""Faults of the platform itself: the control plane dies mid-deploy, a run is interrupted, another field
manager owns a field, an immutable field changes. Data must never be lost and nothing duplicated.

The kill tests run against a throw-away control plane of their own (tests/cluster/cluster.sh on other ports,
state in the test's tmp dir): they kill -9 its kube-apiserver and etcd by the PIDs in its state dir and
restart them with ``cluster.sh up``, which starts only what is down. The shared cluster other tests use is
never touched.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from cluster_helpers import BIN, CLUSTER_SH, ROOT, Kubectl, kubectl_binary, run_playbook, wait_until
from cluster_helpers import apply_object as apply

# Ports of the throw-away control plane (the harness test in test_cluster.py uses 26xxx).
OWN_API_PORT, OWN_ETCD_PORT, OWN_PORT_OFFSET = 27443, 27379, 11000


class OwnCluster:
    """A control plane this module started, and may therefore kill."""

    def __init__(self, state: Path):
        self.state = state
        self.kubeconfig = str(state / "kubeconfig")
        self.env = {
            **os.environ,
            "KUBECONFIG": "",
            "LLMOPS_VLLM_CLUSTER_DIR": str(state),
            "LLMOPS_VLLM_API_PORT": str(OWN_API_PORT),
            "LLMOPS_VLLM_ETCD_PORT": str(OWN_ETCD_PORT),
            "LLMOPS_VLLM_PORT_OFFSET": str(OWN_PORT_OFFSET),
        }

    def up(self) -> float:
        """``cluster.sh up``: starts whatever is down; returns the seconds it took."""
        start = time.monotonic()
        subprocess.run(["bash", str(CLUSTER_SH), "up"], env=self.env, check=True, capture_output=True, timeout=180)
        return time.monotonic() - start

    def down(self) -> None:
        subprocess.run(["bash", str(CLUSTER_SH), "down"], check=False, env=self.env, capture_output=True, timeout=120)

    def kill(self, *components: str) -> None:
        """kill -9 the components by their recorded PIDs and wait until they are gone."""
        pids = [int((self.state / f"{name}.pid").read_text().strip()) for name in components]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        end = time.monotonic() + 20
        while any(Path(f"/proc/{pid}").exists() and _alive(pid) for pid in pids) and time.monotonic() < end:
            time.sleep(0.2)

    @property
    def kubectl(self) -> Kubectl:
        return Kubectl(self.kubeconfig)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory):
    """A second local control plane, only for this module's kill tests."""
    binaries = Path(kubectl_binary()).parent
    if not (binaries / "kube-apiserver").exists():
        pytest.skip("the local control plane binaries are not built (tests/cluster/build.sh)")
    cluster = OwnCluster(tmp_path_factory.mktemp("faults") / "cluster")
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down()


def wait_module(kubeconfig: str, tmp_path: Path, **args) -> subprocess.Popen:
    """``ansible localhost -m llmops.vllm.vllm_wait`` in the background, JSON on stdout."""
    env = {
        **os.environ,
        "K8S_AUTH_KUBECONFIG": kubeconfig,
        "KUBECONFIG": kubeconfig,
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_STDOUT_CALLBACK": "json",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
    }
    cmd = [str(BIN / "ansible"), "localhost", "-m", "llmops.vllm.vllm_wait", "-a", json.dumps(args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def module_result(proc: subprocess.Popen, timeout: float = 150) -> dict:
    out, err = proc.communicate(timeout=timeout)
    try:
        return json.loads(out)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError) as exc:
        raise AssertionError(f"no module result: {out[-2000:]}\n{err[-2000:]}") from exc


def small_server(name: str, ns: str) -> dict:
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
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "nodeSelector": {"nvidia.com/gpu.present": "true"},
                    "containers": [
                        {
                            "name": "vllm",
                            "image": "vllm/vllm-openai:v0.9.0",
                            "resources": {"limits": {"nvidia.com/gpu": "1", "cpu": "1", "memory": "1Gi"}},
                        }
                    ],
                },
            },
        },
    }


# --------------------------------------------------------------------------------- the wait step itself


def test_wait_rides_out_an_api_server_and_etcd_restart(own_cluster: OwnCluster, tmp_path):
    """kill -9 kube-apiserver and etcd while vllm_wait watches: it keeps polling and succeeds after the restart."""
    kubectl = own_cluster.kubectl
    ns = f"w-{os.getpid()}"
    kubectl.run("create", "namespace", ns)
    proc = wait_module(own_cluster.kubeconfig, tmp_path, namespace=ns, deployments=["mistral"], timeout=120)
    time.sleep(4)  # the module is polling for the (not yet created) Deployment
    own_cluster.kill("kube-apiserver", "etcd")
    time.sleep(3)
    assert proc.poll() is None, "vllm_wait gave up while the API was down"
    restart = own_cluster.up()
    assert apply(kubectl, small_server("mistral", ns)).returncode == 0
    result = module_result(proc)
    print(f"control plane restart took {restart:.1f}s; vllm_wait finished after {result.get('elapsed_ms')} ms")
    assert result.get("failed") is not True, result
    assert result["states"]["deployments"]["mistral"]["status"] == "Available"
    assert result["polls"] > 5


# ------------------------------------------------------------------------------------ deploy and teardown

needs_playbooks = pytest.mark.skipif(
    not all((ROOT / "playbooks" / p).exists() for p in ("deploy.yml", "teardown.yml", "render.yml")),
    reason="playbooks/deploy.yml, teardown.yml and render.yml are not written yet",
)


def deploy_vars(ns: str, **extra) -> dict:
    # PersistentVolumes are cluster-scoped: one per test namespace.
    return {"vllm_namespace": ns, "storage_pv_name": f"fsx-{ns}", **extra}


def start_playbook(playbook: str, kubeconfig: str, extra_vars: dict) -> subprocess.Popen:
    """A playbook run in the background (its own process group, so the test can kill exactly it)."""
    cmd = [str(BIN / "ansible-playbook"), str(ROOT / "playbooks" / playbook), "-e", json.dumps(extra_vars)]
    env = {**os.environ, "K8S_AUTH_KUBECONFIG": kubeconfig, "KUBECONFIG": kubeconfig}
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT, start_new_session=True
    )


def recap_changed(proc: subprocess.CompletedProcess) -> int:
    found = re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)", proc.stdout)
    assert found, proc.stdout[-3000:]
    return int(found.group(1))


def inventory(kubectl: Kubectl, ns: str) -> dict[str, dict[str, str]]:
    """Every object deploy makes or causes in the namespace, and its PV: kind -> {name: uid}."""
    kinds = "deployments,replicasets,jobs,pods,services,configmaps,secrets,persistentvolumeclaims"
    found: dict[str, dict[str, str]] = {}
    for obj in kubectl.json("-n", ns, "get", kinds)["items"]:
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == "kube-root-ca.crt":
            continue
        if obj["kind"] == "Pod" and obj["metadata"].get("deletionTimestamp"):
            continue
        found.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj["metadata"]["uid"]
    for pv in kubectl.json("get", "persistentvolumes")["items"]:
        if (pv["spec"].get("claimRef") or {}).get("namespace") == ns:
            found.setdefault("PersistentVolume", {})[pv["metadata"]["name"]] = pv["metadata"]["uid"]
    return found


def assert_one_reference_deployment(kubectl: Kubectl, ns: str, inv: dict) -> None:
    assert sorted(inv["Deployment"]) == ["mistral"], inv
    assert sorted(inv["Service"]) == ["mistral"], inv
    assert sorted(inv["Job"]) == ["model-download"], inv
    assert sorted(inv["PersistentVolumeClaim"]) == ["fsx-models"], inv
    assert sorted(inv["PersistentVolume"]) == [f"fsx-{ns}"], inv
    assert len(inv["ReplicaSet"]) == 1, f"the server was rolled out more than once: {inv['ReplicaSet']}"
    server_pods = [p for p in inv["Pod"] if p.startswith("mistral-")]
    download_pods = [p for p in inv["Pod"] if p.startswith("model-download-")]
    assert len(server_pods) == 1, inv["Pod"]
    assert len(download_pods) == 1, f"the model was downloaded more than once: {download_pods}"
    pvc = kubectl.json("-n", ns, "get", "pvc", "fsx-models")
    assert pvc["status"]["phase"] == "Bound" and pvc["spec"]["volumeName"] == f"fsx-{ns}"


@needs_playbooks
@pytest.mark.parametrize("victims", [("kube-apiserver",), ("kube-apiserver", "etcd")], ids=["apiserver", "etcd"])
def test_deploy_killed_mid_run_converges_to_the_same_objects(own_cluster: OwnCluster, victims, tmp_path):
    """kill -9 the API server (and etcd) while deploy runs; after the restart deploy converges, nothing doubled."""
    kubectl = own_cluster.kubectl
    ns = f"kill-{victims[-1]}-{os.getpid()}"
    run = start_playbook("deploy.yml", own_cluster.kubeconfig, deploy_vars(ns))
    try:
        # In the middle: the volume is applied and the download Job exists; the server step has not finished.
        assert wait_until(lambda: kubectl.exists("-n", ns, "job", "model-download") or run.poll() is not None, 180)
        assert run.poll() is None, "deploy finished before it could be interrupted:\n" + run.stdout.read()[-3000:]
        own_cluster.kill(*victims)
        time.sleep(2)
        restart = own_cluster.up()
        # The interrupted run fails or, when vllm_wait was watching, rides the outage out; either is fine.
        run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    print(f"killed {'+'.join(victims)} mid-deploy; first run rc={run.returncode}; restart took {restart:.1f}s")

    run_playbook("deploy.yml", own_cluster.kubeconfig, deploy_vars(ns), check=True)
    converged = inventory(kubectl, ns)
    assert_one_reference_deployment(kubectl, ns, converged)
    rendered_names = rendered_objects(own_cluster.kubeconfig, ns, tmp_path / "render")
    live_names = {(kind, name) for kind, names in converged.items() for name in names}
    assert rendered_names - live_names == set(), "objects render.yml lists are missing after the re-run"

    third = run_playbook("deploy.yml", own_cluster.kubeconfig, deploy_vars(ns), check=True)
    assert recap_changed(third) == 0, third.stdout[-3000:]
    assert inventory(kubectl, ns) == converged, "a converged re-run replaced objects"


def rendered_objects(kubeconfig: str, ns: str, out: Path) -> set[tuple[str, str]]:
    """(kind, name) of every object render.yml writes for these vars: what deploy should have applied."""
    run_playbook("render.yml", kubeconfig, {**deploy_vars(ns), "render_dir": str(out)}, check=True)
    names = set()
    for path in sorted(out.glob("*.y*ml")):
        for obj in yaml.safe_load_all(path.read_text()):
            if obj and obj["kind"] != "Namespace":
                names.add((obj["kind"], obj["metadata"]["name"]))
    return names


@pytest.fixture()
def deployed_ns(kubectl: Kubectl, kubeconfig: str, namespace: str):
    """The reference deployment in a fresh namespace of the shared cluster; its PV removed afterwards."""
    if not all((ROOT / "playbooks" / p).exists() for p in ("deploy.yml", "teardown.yml")):
        pytest.skip("playbooks/deploy.yml and teardown.yml are not written yet")
    run_playbook("deploy.yml", kubeconfig, deploy_vars(namespace), check=True)
    yield namespace
    kubectl.run("delete", "pv", f"fsx-{namespace}", "--wait=false", check=False)


def volume_kept(kubectl: Kubectl, ns: str) -> bool:
    if not kubectl.exists("-n", ns, "pvc", "fsx-models"):
        return False
    pv = kubectl.json("get", "pv", f"fsx-{ns}")
    return pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain" and not pv["metadata"].get("deletionTimestamp")


def test_teardown_keeps_the_model_volume_unless_purge_is_explicit(kubectl, kubeconfig, deployed_ns):
    ns = deployed_ns
    for extra in ({}, {"purge": False}, {"purge": "no"}):
        run_playbook("teardown.yml", kubeconfig, deploy_vars(ns, **extra), check=True)
        assert volume_kept(kubectl, ns), f"teardown with {extra or 'no purge'} removed the model volume"
        for kind, name in (("deployment", "mistral"), ("service", "mistral"), ("job", "model-download")):
            assert not kubectl.exists("-n", ns, kind, name), f"teardown left {kind}/{name}"
    assert kubectl.json("-n", ns, "get", "pvc", "fsx-models")["status"]["phase"] == "Bound"

    run_playbook("teardown.yml", kubeconfig, deploy_vars(ns, purge=True), check=True)
    assert not kubectl.exists("-n", ns, "pvc", "fsx-models")
    assert wait_until(lambda: not kubectl.exists("pv", f"fsx-{ns}"), 60), "purge left the PV"


def test_interrupted_teardown_never_removes_the_model_volume(kubectl, kubeconfig, deployed_ns):
    ns = deployed_ns
    run = start_playbook("teardown.yml", kubeconfig, deploy_vars(ns))
    try:
        # Interrupt it once it has started removing things.
        assert wait_until(lambda: not kubectl.exists("-n", ns, "deployment", "mistral") or run.poll() is not None, 120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        run.communicate(timeout=60)
    assert volume_kept(kubectl, ns), "an interrupted teardown removed the model volume"
    run_playbook("teardown.yml", kubeconfig, deploy_vars(ns), check=True)
    assert volume_kept(kubectl, ns)
    assert kubectl.json("-n", ns, "get", "pvc", "fsx-models")["status"]["phase"] == "Bound"


def take_replicas(kubectl: Kubectl, ns: str) -> None:
    """Someone else takes ownership of the replica count (as `kubectl scale --server-side` or a GitOps tool would)."""
    taken = apply(
        kubectl,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "mistral", "namespace": ns},
            "spec": {"replicas": 2},
        },
        manager="someone-else",
        force=True,
    )
    assert taken.returncode == 0, taken.stderr


def test_conflict_with_another_field_manager_is_reported_not_forced(kubectl, kubeconfig, deployed_ns):
    ns = deployed_ns
    take_replicas(kubectl, ns)
    proc = run_playbook("deploy.yml", kubeconfig, deploy_vars(ns))
    assert proc.returncode != 0, "deploy silently took the field back"
    out = proc.stdout + proc.stderr
    assert re.search(r"conflict", out, re.IGNORECASE) and "someone-else" in out and "replicas" in out, out[-3000:]
    assert kubectl.json("-n", ns, "get", "deployment", "mistral")["spec"]["replicas"] == 2


def test_conflict_is_taken_over_when_the_user_asks_to_force(kubectl, kubeconfig, deployed_ns):
    ns = deployed_ns
    take_replicas(kubectl, ns)
    proc = run_playbook("deploy.yml", kubeconfig, deploy_vars(ns, vllm_force_conflicts=True))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert kubectl.json("-n", ns, "get", "deployment", "mistral")["spec"]["replicas"] == 1


def test_changed_deployment_selector_takes_the_documented_replace_path(kubectl, kubeconfig, deployed_ns):
    """The selector is immutable: a label change is refused in one line naming the replace path, then replaced
    when the user asks for it."""
    ns = deployed_ns
    relabelled = [{"name": "mistral", "labels": {"model": "mistral7b-v2"}}]
    proc = run_playbook("deploy.yml", kubeconfig, deploy_vars(ns, vllm_models=relabelled))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, "the selector change went through without being asked to replace"
    assert "vllm_replace_immutable=true" in out and "spec.selector is immutable" in out, out[-3000:]
    assert "Unprocessable Entity" not in out, "the raw API error was relayed"
    assert kubectl.json("-n", ns, "get", "deployment", "mistral")["spec"]["selector"]["matchLabels"] == {
        "model": "mistral7b"
    }

    old_uid = kubectl.json("-n", ns, "get", "deployment", "mistral")["metadata"]["uid"]
    proc = run_playbook("deploy.yml", kubeconfig, deploy_vars(ns, vllm_models=relabelled, vllm_replace_immutable=True))
    assert proc.returncode == 0, proc.stdout[-3000:]
    dep = kubectl.json("-n", ns, "get", "deployment", "mistral")
    assert dep["spec"]["selector"]["matchLabels"] == {"model": "mistral7b-v2"}
    assert dep["metadata"]["uid"] != old_uid, "the Deployment was not replaced"
    assert volume_kept(kubectl, ns), "replacing the Deployment touched the model volume"
    again = run_playbook("deploy.yml", kubeconfig, deploy_vars(ns, vllm_models=relabelled, vllm_replace_immutable=True))
    assert recap_changed(again) == 0, "the replaced deployment does not converge"


def test_changed_completed_job_template_takes_the_documented_replace_path(kubectl, kubeconfig, deployed_ns):
    """A completed Job's pod template is immutable: a new model revision replaces the Job, never the model."""
    ns = deployed_ns
    old_uid = kubectl.json("-n", ns, "get", "job", "model-download")["metadata"]["uid"]
    # --check says so and deletes nothing (it used to dry-run the immutable change and fail).
    checked = run_playbook("deploy.yml", kubeconfig, deploy_vars(ns, vllm_server_hf_revision="refs/pr/1"), "--check")
    assert checked.returncode == 0, checked.stdout[-3000:]
    assert "replacing Job model-download (spec.template changed)" in checked.stdout + checked.stderr
    assert kubectl.json("-n", ns, "get", "job", "model-download")["metadata"]["uid"] == old_uid
    proc = run_playbook("deploy.yml", kubeconfig, deploy_vars(ns, vllm_server_hf_revision="refs/pr/1"))
    assert proc.returncode == 0, proc.stdout[-3000:]
    # Said as a warning (stderr): the replace path deletes and creates again.
    assert "replacing Job model-download (spec.template changed)" in proc.stdout + proc.stderr, proc.stdout[-3000:]
    job = kubectl.json("-n", ns, "get", "job", "model-download")
    assert job["metadata"]["uid"] != old_uid, "the Job was not replaced"
    assert "refs/pr/1" in json.dumps(job["spec"]["template"]), "the Job still downloads the old revision"
    assert volume_kept(kubectl, ns), "replacing the Job touched the model volume"
    again = run_playbook("deploy.yml", kubeconfig, deploy_vars(ns, vllm_server_hf_revision="refs/pr/1"))
    assert recap_changed(again) == 0, "the replaced Job does not converge"
