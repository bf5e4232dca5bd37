"""A fleet in one run: the playbooks over an inventory whose group vllm_clusters holds the clusters, against two
real API servers side by side (the local control plane and a second one on other ports) and one that is gone.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from cluster_helpers import BIN, CLUSTER_SH, ROOT, Kubectl


@pytest.fixture(scope="module")
def second_cluster(tmp_path_factory, kubeconfig):
    """A second local control plane on other ports (the harness supports several); stopped afterwards."""
    if "llmops-vllm/cluster" not in kubeconfig:
        pytest.skip("tests run against an external cluster; the local harness is not in use")
    state = tmp_path_factory.mktemp("fleet") / "west"
    env = {
        **os.environ,
        "KUBECONFIG": "",
        "LLMOPS_VLLM_CLUSTER_DIR": str(state),
        "LLMOPS_VLLM_API_PORT": "27443",
        "LLMOPS_VLLM_ETCD_PORT": "27379",
        "LLMOPS_VLLM_PORT_OFFSET": "11000",
    }
    subprocess.run(["bash", str(CLUSTER_SH), "up"], env=env, check=True, capture_output=True, timeout=240)
    try:
        yield str(state / "kubeconfig")
    finally:
        subprocess.run(["bash", str(CLUSTER_SH), "down"], env=env, check=False, capture_output=True, timeout=120)


def fleet_run(playbook: str, inventory: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """ansible-playbook over the inventory with the JSON callback (custom stats shown): the process and report."""
    env = {
        **os.environ,
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "true",
        "ANSIBLE_SHOW_CUSTOM_STATS": "true",
    }
    env.pop("KUBECONFIG", None)
    env.pop("K8S_AUTH_KUBECONFIG", None)
    cmd = [str(BIN / "ansible-playbook"), "-i", str(inventory), "-f", "3", str(ROOT / "playbooks" / playbook), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False, cwd=ROOT)
    return proc, json.loads(proc.stdout)


def test_deploy_to_a_fleet_contains_failures_summarizes_and_limits(tmp_path, kubeconfig, second_cluster):
    east_ns = f"fleet-{uuid.uuid4().hex[:6]}"
    dead = tmp_path / "gone-kubeconfig"
    dead.write_text(Path(second_cluster).read_text().replace("https://127.0.0.1:27443", "https://127.0.0.1:1"))
    inventory = tmp_path / "clusters.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "vllm_clusters": {
                    "hosts": {
                        # Per-cluster overrides as host vars: a namespace and a PV name of their own here.
                        "east": {"vllm_kubeconfig": kubeconfig, "vllm_namespace": east_ns, "storage_pv_name": east_ns},
                        "west": {"vllm_kubeconfig": second_cluster, "vllm_namespace": "serving"},
                        "gone": {"vllm_kubeconfig": str(dead)},
                    }
                }
            }
        )
    )
    east, west = Kubectl(kubeconfig), Kubectl(second_cluster)
    try:
        proc, report = fleet_run("deploy.yml", inventory)
        stats = report["stats"]
        assert stats["east"]["failures"] == 0 and stats["west"]["failures"] == 0, proc.stdout[-3000:]
        assert stats["gone"]["failures"] == 1
        assert east.exists("-n", east_ns, "deployment", "mistral") and west.exists(
            "-n", "serving", "deployment", "mistral"
        )
        rows = {r["cluster"]: r for r in report["global_custom_stats"]["vllm_fleet"]}
        assert rows["east"]["state"] == rows["west"]["state"] == "changed"
        assert rows["west"]["endpoints"] == ["serving/mistral:8080"] and rows["west"]["seconds"] > 0
        assert rows["gone"]["state"] == "failed" and "https://127.0.0.1:1" in rows["gone"]["message"]
        assert "\n" not in rows["gone"]["message"]
        [summary] = [
            t["hosts"]
            for p in report["plays"]
            for t in p["tasks"]
            if t["task"]["name"] == "Summarize the fleet" and t["hosts"]
        ]
        table = next(iter(summary.values()))["msg"]
        [gone_line] = [line for line in table if line.startswith("gone ")]
        assert len(table) == 4 and " failed " in gone_line and "https://127.0.0.1:1" in gone_line

        proc, report = fleet_run("deploy.yml", inventory, "--limit", "west")
        assert set(report["stats"]) == {"west"} and report["stats"]["west"]["changed"] == 0, proc.stdout[-3000:]

        proc, report = fleet_run("teardown.yml", inventory, "--limit", "east")
        assert report["stats"]["east"]["failures"] == 0, proc.stdout[-3000:]
        assert not east.exists("-n", east_ns, "deployment", "mistral")
        assert west.exists("-n", "serving", "deployment", "mistral"), "the other cluster is left alone"
    finally:
        east.run("delete", "namespace", east_ns, "--wait=false", check=False)
        east.run("delete", "pv", east_ns, "--ignore-not-found", "--wait=false", check=False)
