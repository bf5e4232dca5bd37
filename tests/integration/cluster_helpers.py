"""Helpers for tests against a real Kubernetes API server: kubectl bound to the test cluster, playbook runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SH = ROOT / "tests" / "cluster" / "cluster.sh"
BIN = Path(sys.executable).parent


def reachable(kubeconfig: str) -> bool:
    try:
        return (
            subprocess.run(
                [kubectl_binary(), "--kubeconfig", kubeconfig, "version", "--request-timeout=5s"],
                check=False,
                capture_output=True,
                timeout=15,
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def cluster_kubeconfig() -> str:
    """A kubeconfig reaching a real API server: KUBECONFIG if it answers, else the local control plane (started)."""
    existing = os.environ.get("KUBECONFIG")
    if existing and reachable(existing):
        return existing
    subprocess.run(["bash", str(CLUSTER_SH), "up"], check=True, env={**os.environ, "KUBECONFIG": ""})
    line = subprocess.run(["bash", str(CLUSTER_SH), "env"], capture_output=True, text=True, check=True).stdout
    return line.strip().split("=", 1)[1]


def cluster_path(function: str) -> Path:
    """A directory tests/cluster/versions.env names (``cluster_bin_dir``, ``cluster_state_dir``)."""
    out = subprocess.run(
        ["bash", "-c", f"source {ROOT}/tests/cluster/versions.env && {function}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return Path(out)


def real_node_unavailable() -> str:
    """Why the local cluster has no real node, as node.sh wrote it."""
    note = cluster_path("cluster_state_dir") / "node" / "unavailable"
    if note.exists():
        return note.read_text().strip()
    return "the cluster has no node labelled llmops.test/node=real (tests/cluster/node.sh makes one)"


# The vars of the local real node (the fake Hub, its taint and label, sizes for 2 CPUs), as make demo passes them.
LOCAL_VARS = ROOT / "tests" / "cluster" / "local-vars.yml"


def kubectl_binary() -> str:
    local = cluster_path("cluster_bin_dir") / "kubectl"
    return str(local) if local.exists() else "kubectl"


class Kubectl:
    """kubectl bound to the test cluster; returns parsed JSON where asked."""

    def __init__(self, kubeconfig: str):
        self.kubeconfig = kubeconfig
        self.binary = kubectl_binary()

    def run(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.binary, "--kubeconfig", self.kubeconfig, *args],
            capture_output=True,
            text=True,
            check=check,
            input=input,
            timeout=120,
        )

    def json(self, *args: str) -> dict:
        return json.loads(self.run(*args, "-o", "json").stdout)

    def exists(self, *args: str) -> bool:
        return self.run("get", *args, check=False).returncode == 0


def run_playbook(
    playbook: str, kubeconfig: str, extra_vars: dict | None = None, *args: str, check: bool = False, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run one of the collection's playbooks against the test cluster; returns the completed process."""
    cmd = [str(BIN / "ansible-playbook"), str(ROOT / "playbooks" / playbook), "-e", json.dumps(extra_vars or {}), *args]
    env = {**os.environ, "K8S_AUTH_KUBECONFIG": kubeconfig, "KUBECONFIG": kubeconfig}
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"{playbook} failed rc={proc.returncode}\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}")
    return proc


def apply_object(
    kubectl: Kubectl, obj: dict, manager: str = "llmops-test", force: bool = False
) -> subprocess.CompletedProcess:
    """Server-side apply of one object under `manager` (taking conflicting fields with `force`); the caller checks
    the result."""
    flags = ["--force-conflicts"] if force else []
    return kubectl.run(
        "apply", "--server-side", *flags, "--field-manager", manager, "-f", "-", input=json.dumps(obj), check=False
    )


def wait_until(predicate, timeout: float = 60, interval: float = 0.5):
    """Poll `predicate` until it returns something truthy or `timeout` seconds pass; returns its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()
