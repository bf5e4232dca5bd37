"""Deploy speed against kubectl, measured side by side in one run on a real API server.

For each repetition, in fresh namespaces: the collection's playbooks/deploy.yml against `kubectl apply` of
the objects playbooks/render.yml writes followed by `kubectl wait` for the same conditions (Job Complete,
Deployment Available); the no-op re-run of each; teardown.yml against `kubectl delete`; and deploy of
1, 5, 10 and 20 models in one run against kubectl on the same rendered objects. Prints medians and
ratios (collection / kubectl), writes bench/out/deploy.md, deploy.json and deploy.png.

    python bench/deploy_bench.py --reps 3          # make bench
    python bench/deploy_bench.py --smoke           # one repetition, one model (the CI smoke test)
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

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# The same cluster discovery as the tests: KUBECONFIG when it answers, else the local control plane.
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from cluster_helpers import cluster_kubeconfig, kubectl_binary  # noqa: E402  # pylint: disable=wrong-import-position


def models(count: int) -> list[dict]:
    """`count` model entries shaped like the reference one, each with its own name."""
    if count == 1:
        return [{"name": "mistral", "labels": {"model": "mistral7b"}}]
    return [
        {"name": f"mistral-{i}", "labels": {"model": f"mistral7b-{i}"}, "model_dir": f"mistral-7b-v0-3-{i}"}
        for i in range(count)
    ]


class Bench:
    def __init__(self, kubeconfig_path: str):
        self.kubeconfig = kubeconfig_path
        self.kubectl = kubectl_binary()
        self.env = {
            **os.environ,
            "KUBECONFIG": kubeconfig_path,
            "K8S_AUTH_KUBECONFIG": kubeconfig_path,
            "ANSIBLE_COLLECTIONS_PATH": str(ROOT / ".build" / "collections"),
            "ANSIBLE_LOCALHOST_WARNING": "false",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
        }

    def timed(self, cmd: list[str]) -> float:
        start = time.perf_counter()
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=self.env, cwd=ROOT)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:3])} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
        return elapsed

    def playbook(self, name: str, extra: dict) -> list[str]:
        return [str(BIN / "ansible-playbook"), str(ROOT / "playbooks" / name), "-e", json.dumps(extra)]

    def vars(self, ns: str, count: int) -> dict:
        return {"vllm_namespace": ns, "vllm_models": models(count), "storage_pv_name": f"fsx-{ns}"}

    def kubectl_deploy(self, ns: str, files: Path) -> float:
        """kubectl apply of the rendered objects, then wait for the conditions deploy.yml waits for."""
        start = time.perf_counter()
        self.run_k("apply", "--server-side", "--field-manager", "bench", "-f", str(files))
        self.run_k("-n", ns, "wait", "job", "--all", "--for=condition=Complete", "--timeout=300s")
        self.run_k("-n", ns, "wait", "deployment", "--all", "--for=condition=Available", "--timeout=300s")
        return time.perf_counter() - start

    def run_k(self, *args: str) -> None:
        proc = subprocess.run(
            [self.kubectl, "--kubeconfig", self.kubeconfig, *args], check=False, capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args[:4])} failed: {proc.stderr[-2000:]}")

    def render(self, ns: str, count: int, into: Path) -> Path:
        self.timed(self.playbook("render.yml", {**self.vars(ns, count), "render_dir": str(into)}))
        return into

    def cleanup(self, *namespaces: str) -> None:
        for ns in namespaces:
            subprocess.run(
                [self.kubectl, "--kubeconfig", self.kubeconfig, "delete", "namespace", ns, "--wait=false"],
                check=False,
                capture_output=True,
            )
            subprocess.run(
                [self.kubectl, "--kubeconfig", self.kubeconfig, "delete", "pv", f"fsx-{ns}", "--wait=false"],
                check=False,
                capture_output=True,
            )

    def reference(self, tmp: Path) -> dict[str, tuple[float, float]]:
        """One repetition of cold deploy, no-op re-deploy and teardown; (collection, kubectl) seconds each."""
        tag = uuid.uuid4().hex[:6]
        ans, kub = f"bench-a-{tag}", f"bench-k-{tag}"
        files = self.render(kub, 1, tmp / f"render-{tag}")
        try:
            cold = (self.timed(self.playbook("deploy.yml", self.vars(ans, 1))), self.kubectl_deploy(kub, files))
            noop = (
                self.timed(self.playbook("deploy.yml", self.vars(ans, 1))),
                self.timed(
                    [
                        self.kubectl,
                        "--kubeconfig",
                        self.kubeconfig,
                        "apply",
                        "--server-side",
                        "--field-manager",
                        "bench",
                        "-f",
                        str(files),
                    ]
                ),
            )
            server = [f for f in sorted(files.iterdir()) if not f.name.startswith("10-storage")]
            teardown = (
                self.timed(self.playbook("teardown.yml", self.vars(ans, 1))),
                self.timed(
                    [
                        self.kubectl,
                        "--kubeconfig",
                        self.kubeconfig,
                        "delete",
                        "--wait=true",
                        *[a for f in server for a in ("-f", str(f))],
                    ]
                ),
            )
        finally:
            self.cleanup(ans, kub)
        return {"cold deploy (+wait)": cold, "no-op re-deploy": noop, "teardown": teardown}

    def scaling(self, tmp: Path, count: int) -> tuple[float, float]:
        tag = uuid.uuid4().hex[:6]
        ans, kub = f"bench-a{count}-{tag}", f"bench-k{count}-{tag}"
        files = self.render(kub, count, tmp / f"render-{count}-{tag}")
        try:
            return self.timed(self.playbook("deploy.yml", self.vars(ans, count))), self.kubectl_deploy(kub, files)
        finally:
            self.cleanup(ans, kub)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--models", default="1,5,10,20", help="model counts for the scaling run")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out"))
    parser.add_argument("--smoke", action="store_true", help="one repetition, one model: checks the script works")
    args = parser.parse_args(argv)
    if args.smoke:
        args.reps, args.models = 1, "1"
    counts = [int(c) for c in args.models.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bench = Bench(cluster_kubeconfig())

    rows: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for name, pair in bench.reference(Path(tmp)).items():
                rows.setdefault(name, []).append(pair)
            for count in counts:
                rows.setdefault(f"deploy {count} model(s)", []).append(bench.scaling(Path(tmp), count))
            print(f"repetition {rep + 1}/{args.reps} done", file=sys.stderr)

    table = []
    for name, pairs in rows.items():
        ours = statistics.median(p[0] for p in pairs)
        theirs = statistics.median(p[1] for p in pairs)
        table.append(
            {
                "case": name,
                "collection_s": round(ours, 2),
                "kubectl_s": round(theirs, 2),
                "ratio": round(ours / theirs, 2),
                "reps": len(pairs),
            }
        )
    first = next(r for r in table if r["case"] == f"deploy {counts[0]} model(s)")
    for row in table:
        if row["case"].startswith("deploy ") and row["case"].endswith("model(s)"):
            row["vs_first_count"] = round(row["collection_s"] / first["collection_s"], 2)

    lines = ["| case | collection (s, median) | kubectl (s, median) | ratio | reps |", "|---|---|---|---|---|"]
    lines += [
        f"| {r['case']} | {r['collection_s']} | {r['kubectl_s']} | {r['ratio']}x"
        + (f" (vs {counts[0]} model: {r['vs_first_count']}x)" if "vs_first_count" in r else "")
        + f" | {r['reps']} |"
        for r in table
    ]
    machine = f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"
    text = "\n".join([f"Deploy benchmark ({machine}; ratio = collection / kubectl, same run)", "", *lines])
    print(text)
    (out / "deploy.md").write_text(text + "\n")
    (out / "deploy.json").write_text(json.dumps({"machine": machine, "rows": table}, indent=2))
    chart(table, counts, out / "deploy.png")
    return 0


def chart(table: list[dict], counts: list[int], path: Path) -> None:
    """Time against model count, collection vs kubectl."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no chart", file=sys.stderr)
        return
    by = {r["case"]: r for r in table}
    ours = [by[f"deploy {c} model(s)"]["collection_s"] for c in counts]
    theirs = [by[f"deploy {c} model(s)"]["kubectl_s"] for c in counts]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(counts, ours, marker="o", label="ansible-playbook deploy.yml")
    ax.plot(counts, theirs, marker="s", label="kubectl apply + wait")
    ax.set_xlabel("models in one run")
    ax.set_ylabel("seconds (median)")
    ax.set_title("Deploy time against model count")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    raise SystemExit(main())
