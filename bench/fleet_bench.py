"""Fleet benchmark: deploy.yml to 1 cluster, to 3 clusters in one run (forks 3), and to the same 3 clusters in 3
sequential runs, against local control planes started side by side (tests/cluster/cluster.sh on other ports).

    python bench/fleet_bench.py --reps 3        # writes bench/out/fleet.{md,json}

Each repetition deploys into new namespaces (cold: claims bound, Jobs completed, servers Available), then re-runs
the same inventory (no-op). Ratios are from the same run; the floor is a one-task ansible-playbook. Target: 3
clusters in one run <= 1.5x one cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CLUSTER_SH = ROOT / "tests" / "cluster" / "cluster.sh"
# Two more control planes beside the local one: (API port, etcd port, port offset).
EXTRA = [(29443, 29379, 13000), (30443, 30379, 14000)]
ENV = {
    **{k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "K8S_AUTH_KUBECONFIG")},
    "ANSIBLE_COLLECTIONS_PATH": str(ROOT / ".build" / "collections"),
    "ANSIBLE_LOCALHOST_WARNING": "false",
}


def cluster(state: Path, ports: tuple[int, int, int], verb: str) -> None:
    api, etcd, offset = ports
    env = {
        **os.environ,
        "KUBECONFIG": "",
        "LLMOPS_VLLM_CLUSTER_DIR": str(state),
        "LLMOPS_VLLM_API_PORT": str(api),
        "LLMOPS_VLLM_ETCD_PORT": str(etcd),
        "LLMOPS_VLLM_PORT_OFFSET": str(offset),
    }
    subprocess.run(["bash", str(CLUSTER_SH), verb], env=env, check=verb == "up", capture_output=True, timeout=300)


def timed(inventory: Path | None, *args: str) -> float:
    start = time.perf_counter()
    cmd = [str(BIN / "ansible-playbook"), *(["-i", str(inventory)] if inventory else []), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stdout[-3000:]}")
    return time.perf_counter() - start


def inventory(path: Path, kubeconfigs: dict[str, str], tag: str) -> Path:
    hosts = {
        name: {"vllm_kubeconfig": kc, "vllm_namespace": f"fleet-{tag}", "storage_pv_name": f"fsx-fleet-{tag}"}
        for name, kc in kubeconfigs.items()
    }
    path.write_text(yaml.safe_dump({"vllm_clusters": {"hosts": hosts}}))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out"))
    args = parser.parse_args(argv)
    deploy = str(ROOT / "playbooks" / "deploy.yml")
    teardown = str(ROOT / "playbooks" / "teardown.yml")
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp_name:
        tmp = Path(tmp_name)
        main_kc = (
            subprocess.run(["bash", str(CLUSTER_SH), "env"], capture_output=True, text=True, check=True)
            .stdout.split("=", 1)[1]
            .strip()
        )
        states = [tmp / f"c{i}" for i in range(len(EXTRA))]
        try:
            for state, ports in zip(states, EXTRA, strict=True):
                cluster(state, ports, "up")
            clusters = {"c0": main_kc, **{f"c{i + 1}": str(s / "kubeconfig") for i, s in enumerate(states)}}
            floor_book = tmp / "floor.yml"
            floor_book.write_text(
                "- hosts: localhost\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug: {}\n"
            )
            times: dict[str, list[float]] = {k: [] for k in ("one", "fleet", "sequential", "fleet no-op", "floor")}
            for _rep in range(args.reps):
                times["floor"].append(timed(None, str(floor_book)))
                tag = uuid.uuid4().hex[:6]
                one = inventory(tmp / f"one-{tag}.yml", {"c0": main_kc}, f"1{tag}")
                times["one"].append(timed(one, deploy))
                fleet = inventory(tmp / f"fleet-{tag}.yml", clusters, f"f{tag}")
                times["fleet"].append(timed(fleet, "-f", "3", deploy))
                times["fleet no-op"].append(timed(fleet, "-f", "3", deploy))
                seq = 0.0
                for name, kc in clusters.items():
                    seq += timed(inventory(tmp / f"s-{name}-{tag}.yml", {name: kc}, f"s{tag}"), deploy)
                times["sequential"].append(seq)
                for book in (one, fleet):
                    timed(book, "-f", "3", teardown, "-e", "purge=true")
                for name, kc in clusters.items():
                    timed(inventory(tmp / f"t-{name}-{tag}.yml", {name: kc}, f"s{tag}"), teardown, "-e", "purge=true")
        finally:
            for state, ports in zip(states, EXTRA, strict=True):
                cluster(state, ports, "down")
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["fleet"] / med["one"]
    lines = [
        f"Fleet benchmark ({os.cpu_count()} cores; medians of {args.reps}; every cluster a local control plane on "
        "this machine, so the three share its cores)",
        "",
        "| case | seconds | vs one cluster |",
        "|---|---|---|",
        f"| deploy, 1 cluster | {med['one']:.2f} | 1.0x |",
        f"| deploy, 3 clusters in one run (forks 3) | {med['fleet']:.2f} | {ratio:.2f}x |",
        f"| deploy, 3 clusters in 3 sequential runs | {med['sequential']:.2f} | "
        f"{med['sequential'] / med['one']:.2f}x |",
        f"| no-op re-deploy, 3 clusters in one run | {med['fleet no-op']:.2f} | |",
        "",
        f"Floor: a one-task ansible-playbook takes {med['floor']:.2f} s. Target: 3 clusters in one run <= 1.5x one "
        f"cluster: {'met' if ratio <= 1.5 else 'not met'} ({ratio:.2f}x).",
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fleet.md").write_text("\n".join(lines) + "\n")
    (out / "fleet.json").write_text(json.dumps({"medians_s": med, "runs_s": times, "fleet_vs_one": ratio}, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
