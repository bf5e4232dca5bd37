"""What a user of the endpoint sees while deploy.yml changes a model's engine arguments, on the local cluster's real
node: failed requests, aborted streams, and the longest time without an answer, from a steady load of kept-alive and
new connections, streamed and not (tests/load_loop.py), per way of rolling out:

- baseline: the workshop's way, as this collection rendered it before the drain (Recreate, no preStop,
  --shutdown-timeout=0);
- Recreate with the drain (preStop, --shutdown-timeout): what the defaults do where no second copy fits;
- RollingUpdate (maxSurge 1, maxUnavailable 0) with the drain;
- blue/green (a second Deployment, probed through its own Service, then the Service switched) with the drain.

The server is the fake of vLLM 0.23.0 from the image's entry point, whose SIGTERM copies that release's
(tests/fake_vllm_cli.py); its start is the real node's (staging into the RAM volume, then the probes), so the Recreate
gap has a floor: the pod's start, which the deploy warning estimates from the last start (printed beside it).

    python bench/rollout_bench.py                 # writes bench/out/rollout.json and rollout.md
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "integration"), str(ROOT / ".build" / "collections")]
os.environ["ANSIBLE_COLLECTIONS_PATH"] = str(ROOT / ".build" / "collections")

from cluster_helpers import Kubectl, cluster_kubeconfig, real_node_unavailable  # noqa: E402
from rollout_helpers import CHANGED, deploy, teardown, under_load  # noqa: E402

PRESTOP_S, DRAIN_S = 3, 20
WAYS = {
    "baseline: Recreate, no drain": {
        "vllm_server_strategy": "Recreate",
        "vllm_server_prestop_seconds": 0,
        "vllm_server_shutdown_timeout": 0,
    },
    "Recreate + drain": {
        "vllm_server_strategy": "Recreate",
        "vllm_server_prestop_seconds": PRESTOP_S,
        "vllm_server_shutdown_timeout": DRAIN_S,
    },
    "RollingUpdate + drain": {
        "vllm_server_strategy": "RollingUpdate",
        "vllm_server_prestop_seconds": PRESTOP_S,
        "vllm_server_shutdown_timeout": DRAIN_S,
    },
    "blue/green + drain": {
        "vllm_server_upgrade": "blue_green",
        "vllm_server_prestop_seconds": PRESTOP_S,
        "vllm_server_shutdown_timeout": DRAIN_S,
    },
}
ESTIMATE = re.compile(r"the endpoint is down for about (\S+) \(its pods' last start\)")


def one_way(kubeconfig: str, kubectl: Kubectl, name: str, settings: dict) -> dict:
    ns = f"bench-rollout-{uuid.uuid4().hex[:6]}"
    base = {"vllm_namespace": ns, "storage_pv_name": f"fsx-{ns}"}
    models = f"/var/lib/llmops-vllm/models/{ns}"
    kubectl.run("create", "namespace", ns)
    try:
        deploy(kubeconfig, base, models, **settings)
        summary = under_load(kubectl, ns, lambda: deploy(kubeconfig, base, models, **settings, **CHANGED), replicas=1)
        estimate = ESTIMATE.search(" ".join(summary.pop("output").split()))
        teardown(kubeconfig, kubectl, base)
    finally:
        kubectl.run("delete", "namespace", ns, "--wait=false", check=False)
        kubectl.run("delete", "pv", f"fsx-{ns}", "--ignore-not-found", "--wait=false", check=False)
        shutil.rmtree(models, ignore_errors=True)
    return {"way": name, **summary, "estimate": estimate.group(1) if estimate else ""}


def markdown(rows: list[dict]) -> str:
    base = rows[0]
    lines = [
        "| way | requests | failed | aborted | longest gap | gap vs baseline | deploy's estimate of the gap |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        ratio = r["longest_gap_s"] / base["longest_gap_s"] if base["longest_gap_s"] else 0.0
        lines.append(
            f"| {r['way']} | {r['requests']} | {r['failed']} | {r['aborted']} | {r['longest_gap_s']:.1f} s | "
            f"{ratio:.2f} | {r['estimate'] or '-'} |"
        )
    lines.append("")
    lines.append(
        "Floor: with Recreate the endpoint cannot be back before the new pod has started (staging and the probes on "
        "this node), which is what the deploy's estimate reads from the last start; a way that keeps serving cannot "
        "go below the load loop's own spacing between answers (four clients, 40-token streams at 50 ms a token)."
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args(argv)
    kubeconfig = cluster_kubeconfig()
    kubectl = Kubectl(kubeconfig)
    if not kubectl.json("get", "nodes", "-l", "llmops.test/node=real")["items"]:
        print(f"rollout bench skipped: {real_node_unavailable()}")
        return 0
    subprocess.run(["make", "-s", "collection"], cwd=ROOT, check=True)
    rows = [one_way(kubeconfig, kubectl, name, settings) for name, settings in WAYS.items()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rollout.json").write_text(json.dumps(rows, indent=2) + "\n")
    table = markdown(rows)
    (args.out / "rollout.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
