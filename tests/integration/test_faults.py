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
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cluster_helpers import BIN, CLUSTER_SH, ROOT, Kubectl, kubectl_binary

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
        subprocess.run(["bash", str(CLUSTER_SH), "down"], env=self.env, capture_output=True, timeout=120)

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


def apply(kubectl: Kubectl, obj: dict, manager: str = "llmops-test") -> subprocess.CompletedProcess:
    return kubectl.run(
        "apply", "--server-side", "--field-manager", manager, "-f", "-", input=json.dumps(obj), check=False
    )


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
