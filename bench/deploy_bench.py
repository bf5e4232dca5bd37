"""Deploy speed against kubectl and Helm, measured side by side in one run on a real API server.

For each repetition, in fresh namespaces: the collection's playbooks/deploy.yml against `kubectl apply` of
the objects playbooks/render.yml writes followed by `kubectl wait` for the same conditions (Job Complete,
Deployment Available); the no-op re-run of each; teardown.yml against `kubectl delete`; and (once, or
--scaling-reps times) deploy of 1, 5, 10 and 20 models in one run against kubectl on the same rendered
objects, each tool's namespace removed before the next starts, on extra simulated 8-GPU nodes the bench adds
for the run (the cluster's own 8 GPUs cannot hold 20 one-GPU servers). Prints medians and ratios
(collection / kubectl), writes bench/out/deploy.md, deploy.json and deploy.png.

    python bench/deploy_bench.py --reps 3          # make bench
    python bench/deploy_bench.py --smoke           # one repetition, one model (the CI smoke test)
    python bench/deploy_bench.py --helm "$(bench/helm.sh)"   # with Helm columns (builds helm once)

Helm is measured too when a helm binary is found: --helm PATH, else $LLMOPS_VLLM_HELM, else the one
bench/helm.sh has cached (the bench never builds it; `bench/helm.sh` does, once, from the Go module proxy).
Helm gets a throw-away chart whose templates/ are the files render.yml wrote, verbatim except that `{{` is
escaped (the staging engine's ConfigMap carries Python source), and runs `helm upgrade --install --wait
--wait-for-jobs --timeout 5m` for the cold deploy and the no-op re-deploy and `helm uninstall --wait` for
teardown (Helm 4 spells the wait `--wait=watcher`). To compare like with like:

- Same objects. The PersistentVolume (cluster-scoped) is in the chart like any other object. The Namespace
  is not: Helm stores its release record in the release namespace before it creates the chart's objects, so
  the namespace comes from `--create-namespace` (timed; the rendered Namespace has no labels or annotations,
  so the object is the same). The chart also marks the PVC and PV `helm.sh/resource-policy: keep`, because
  teardown.yml and the kubectl baseline keep the model volume, and so `helm uninstall` keeps it too. Helm adds
  its ownership label and annotations to every object and a release Secret per revision.
- Same conditions. `--wait-for-jobs` makes Helm 4's watcher count a Job only once it is Complete; a
  Deployment counts once it is Available with its new ReplicaSet rolled out. Helm also waits for every other
  object to be current, which `kubectl wait` does not (the PVC bound: at once on this cluster).
- The no-op re-deploy of Helm is the same command again: it writes a new release revision and waits
  (already satisfied), which is what a user re-running it gets; kubectl's no-op is a bare apply, no wait.
- Helm 4 applies server-side, like the kubectl baseline; Helm 3 (`HELM_VERSION=v3.22.0 bench/helm.sh`)
  patches with a client-side three-way merge.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
# The same cluster discovery as the tests: KUBECONFIG when it answers, else the local control plane.
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from cluster_helpers import cluster_kubeconfig, kubectl_binary  # noqa: E402  # pylint: disable=wrong-import-position

HELM_RELEASE = "vllm"
HELM_MISSING = (
    "Helm not measured: no helm binary (`bench/helm.sh` builds one once from the Go module proxy; "
    "then rerun, or pass --helm PATH or set LLMOPS_VLLM_HELM)."
)
# One repetition's seconds for one case: collection, kubectl, Helm (None when Helm is not measured).
Times = tuple[float, float, float | None]


def models(count: int) -> list[dict]:
    """`count` model entries shaped like the reference one, each with its own name."""
    if count == 1:
        return [{"name": "mistral", "labels": {"model": "mistral7b"}}]
    return [
        {"name": f"mistral-{i}", "labels": {"model": f"mistral7b-{i}"}, "model_dir": f"mistral-7b-v0-3-{i}"}
        for i in range(count)
    ]


def find_helm(option: str | None) -> str | None:
    """The helm binary to measure: --helm, else $LLMOPS_VLLM_HELM, else the one bench/helm.sh cached; never builds."""
    wanted = option or os.environ.get("LLMOPS_VLLM_HELM")
    if wanted:
        path = shutil.which(wanted)
        if path is None:
            raise SystemExit(f"error: helm binary {wanted!r} (--helm or LLMOPS_VLLM_HELM) is not an executable")
        return path
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "helm.sh"), "--cached"], capture_output=True, text=True, check=False
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def helm_chart(files: Path, into: Path) -> Path:
    """A throw-away chart whose templates are the rendered files; the storage file is adapted as the docstring says."""
    templates = into / "templates"
    templates.mkdir(parents=True)
    (into / "Chart.yaml").write_text("apiVersion: v2\nname: llmops-vllm-bench\nversion: 0.1.0\n")
    for path in sorted(files.glob("*.yml")):
        text = path.read_text()
        if path.name.startswith("10-storage"):
            objects = [o for o in yaml.safe_load_all(text) if o and o["kind"] != "Namespace"]
            for obj in objects:
                if obj["kind"] in ("PersistentVolume", "PersistentVolumeClaim"):
                    obj["metadata"].setdefault("annotations", {})["helm.sh/resource-policy"] = "keep"
            text = yaml.safe_dump_all(objects, explicit_start=True, sort_keys=False)
        # Helm renders templates/ with Go templates: `{{` becomes a template printing a literal `{{`.
        (templates / path.name).write_text(text.replace("{{", '{{ "{{" }}'))
    return into


class Bench:
    def __init__(self, kubeconfig_path: str, helm: str | None = None, helm_home: Path | None = None):
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
        self.helm = helm
        self.helm_version = ""
        self.helm_wait = ""
        if helm:
            # Helm's config, cache and data go to a throw-away folder, not the user's.
            home = helm_home or Path(tempfile.mkdtemp(prefix="bench-helm-"))
            for kind in ("CACHE", "CONFIG", "DATA"):
                self.env[f"HELM_{kind}_HOME"] = str(home / kind.lower())
            proc = subprocess.run(
                [helm, "version", "--template", "{{.Version}}"],
                capture_output=True,
                text=True,
                env=self.env,
                check=True,
            )
            self.helm_version = proc.stdout.strip()
            # Helm 3's --wait is a switch; Helm 4's takes a strategy, `watcher` being the one that waits.
            self.helm_wait = "--wait" if self.helm_version.startswith("v3.") else "--wait=watcher"

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

    def helm_deploy(self, ns: str, chart: Path) -> float:
        """helm upgrade --install of the chart, waiting for Jobs Complete and Deployments Available (and the rest)."""
        assert self.helm
        return self.timed(
            [
                self.helm,
                "upgrade",
                "--install",
                HELM_RELEASE,
                str(chart),
                "--namespace",
                ns,
                "--create-namespace",
                self.helm_wait,
                "--wait-for-jobs",
                "--timeout",
                "5m",
                "--kubeconfig",
                self.kubeconfig,
            ]
        )

    def helm_teardown(self, ns: str) -> float:
        """helm uninstall, waiting until the objects are gone; the volume stays (resource-policy keep)."""
        assert self.helm
        return self.timed(
            [
                self.helm,
                "uninstall",
                HELM_RELEASE,
                "--namespace",
                ns,
                self.helm_wait,
                "--timeout",
                "5m",
                "--kubeconfig",
                self.kubeconfig,
            ]
        )

    def kubectl_cmd(self, *args: str) -> list[str]:
        """The kubectl command line for ``args`` against the bench's cluster."""
        return [self.kubectl, "--kubeconfig", self.kubeconfig, *args]

    def run_k(self, *args: str) -> None:
        proc = subprocess.run(self.kubectl_cmd(*args), check=False, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args[:4])} failed: {proc.stderr[-2000:]}")

    def render(self, ns: str, count: int, into: Path) -> Path:
        self.timed(self.playbook("render.yml", {**self.vars(ns, count), "render_dir": str(into)}))
        return into

    def chart(self, ns: str, count: int, tmp: Path, tag: str) -> Path | None:
        """The Helm chart for namespace `ns`, or None when Helm is not measured."""
        if not self.helm:
            return None
        return helm_chart(self.render(ns, count, tmp / f"render-h{count}-{tag}"), tmp / f"chart-{count}-{tag}")

    def cleanup(self, *namespaces: str, wait: bool = False) -> None:
        """Delete the namespaces and their PVs; with ``wait``, until the namespaces (and their pods' GPUs) are gone."""
        for ns in namespaces:
            subprocess.run(
                self.kubectl_cmd("delete", "namespace", ns, "--wait=false"),
                check=False,
                capture_output=True,
            )
            subprocess.run(
                self.kubectl_cmd("delete", "pv", f"fsx-{ns}", "--wait=false"),
                check=False,
                capture_output=True,
            )
        if wait:
            for ns in namespaces:
                subprocess.run(
                    self.kubectl_cmd("wait", "--for=delete", f"namespace/{ns}", "--timeout=180s"),
                    check=False,
                    capture_output=True,
                )

    def add_gpu_capacity(self, gpus: int) -> list[str]:
        """Simulated 8-GPU nodes (p5.48xlarge-shaped, labelled and tainted like the cluster's GPU nodes) for
        ``gpus`` GPUs, so that the scaling run measures deploys, not a full cluster. Returns their names."""
        names = [f"bench-gpu-node-{i}" for i in range(-(-gpus // 8))]
        nodes = []
        for name in names:
            capacity = {
                "cpu": "192",
                "memory": "2048Gi",
                "pods": "250",
                "nvidia.com/gpu": "8",
                "ephemeral-storage": "400Gi",
            }
            nodes.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "annotations": {"kwok.x-k8s.io/node": "fake"},
                        "labels": {
                            "kubernetes.io/hostname": name,
                            "kubernetes.io/os": "linux",
                            "type": "kwok",
                            "nvidia.com/gpu.present": "true",
                            "llmops.bench/node": "true",
                        },
                    },
                    "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]},
                    "status": {"allocatable": capacity, "capacity": capacity},
                }
            )
        if nodes:
            proc = subprocess.run(
                [
                    *self.kubectl_cmd("apply", "--server-side", "--field-manager", "bench", "-f", "-"),
                ],
                input=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes}),
                check=False,
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"could not add the bench's GPU nodes: {proc.stderr[-2000:]}")
        return names

    def remove_nodes(self, names: list[str]) -> None:
        if names:
            subprocess.run(
                self.kubectl_cmd("delete", "node", *names, "--wait=false"),
                check=False,
                capture_output=True,
            )

    def floor(self, tmp: Path) -> float:
        """What ansible-playbook itself costs: one debug task on localhost, the floor of any playbook run."""
        book = tmp / "floor.yml"
        book.write_text(
            "- hosts: localhost\n  connection: local\n  gather_facts: false\n"
            "  tasks:\n    - ansible.builtin.debug:\n        msg: floor\n"
        )
        return self.timed([str(BIN / "ansible-playbook"), str(book)])

    def reference(self, tmp: Path) -> dict[str, Times]:
        """One repetition of cold deploy, no-op re-deploy and teardown; (collection, kubectl, helm) seconds each."""
        tag = uuid.uuid4().hex[:6]
        ans, kub, hel = f"bench-a-{tag}", f"bench-k-{tag}", f"bench-h-{tag}"
        files = self.render(kub, 1, tmp / f"render-{tag}")
        chart = self.chart(hel, 1, tmp, tag)
        try:
            cold = (
                self.timed(self.playbook("deploy.yml", self.vars(ans, 1))),
                self.kubectl_deploy(kub, files),
                self.helm_deploy(hel, chart) if chart else None,
            )
            noop = (
                self.timed(self.playbook("deploy.yml", self.vars(ans, 1))),
                self.timed(self.kubectl_cmd("apply", "--server-side", "--field-manager", "bench", "-f", str(files))),
                self.helm_deploy(hel, chart) if chart else None,
            )
            server = [f for f in sorted(files.iterdir()) if not f.name.startswith("10-storage")]
            teardown = (
                self.timed(self.playbook("teardown.yml", self.vars(ans, 1))),
                self.timed(self.kubectl_cmd("delete", "--wait=true", *[a for f in server for a in ("-f", str(f))])),
                self.helm_teardown(hel) if chart else None,
            )
        finally:
            self.cleanup(ans, kub, hel)
        return {"cold deploy (+wait)": cold, "no-op re-deploy": noop, "teardown": teardown}

    def scaling(self, tmp: Path, count: int) -> Times:
        """Deploy ``count`` models with each tool in turn; each namespace is removed (and its GPUs freed) before
        the next tool starts, so every tool finds the same free capacity."""
        tag = uuid.uuid4().hex[:6]
        ans, kub, hel = f"bench-a{count}-{tag}", f"bench-k{count}-{tag}", f"bench-h{count}-{tag}"
        files = self.render(kub, count, tmp / f"render-{count}-{tag}")
        chart = self.chart(hel, count, tmp, tag)
        try:
            ours = self.timed(self.playbook("deploy.yml", self.vars(ans, count)))
            self.cleanup(ans, wait=True)
            theirs = self.kubectl_deploy(kub, files)
            self.cleanup(kub, wait=True)
            helm = self.helm_deploy(hel, chart) if chart else None
            return ours, theirs, helm
        finally:
            self.cleanup(ans, kub, hel, wait=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--models", default="1,5,10,20", help="model counts for the scaling run")
    parser.add_argument("--scaling-reps", type=int, default=1, help="repetitions of the scaling run (default 1)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out"))
    parser.add_argument("--smoke", action="store_true", help="one repetition, one model: checks the script works")
    parser.add_argument(
        "--helm",
        metavar="PATH",
        help="helm binary to measure too (default: $LLMOPS_VLLM_HELM, else the one bench/helm.sh cached)",
    )
    parser.add_argument("--no-helm", action="store_true", help="do not measure Helm even if a helm binary is found")
    args = parser.parse_args(argv)
    if args.smoke:
        args.reps, args.scaling_reps, args.models = 1, 1, "1"
    counts = [int(c) for c in args.models.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    helm = None if args.no_helm else find_helm(args.helm)

    rows: dict[str, list[Times]] = {}
    floors: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(cluster_kubeconfig(), helm, Path(tmp) / "helm-home")
        nodes = bench.add_gpu_capacity(max(counts) if max(counts) > 1 else 0)
        try:
            for rep in range(args.reps):
                floors.append(bench.floor(Path(tmp)))
                for name, times in bench.reference(Path(tmp)).items():
                    rows.setdefault(name, []).append(times)
                if rep < args.scaling_reps:
                    for count in counts:
                        rows.setdefault(f"deploy {count} model(s)", []).append(bench.scaling(Path(tmp), count))
                print(f"repetition {rep + 1}/{args.reps} done", file=sys.stderr)
        finally:
            bench.remove_nodes(nodes)

    table = []
    for name, runs in rows.items():
        ours = statistics.median(t[0] for t in runs)
        theirs = statistics.median(t[1] for t in runs)
        row = {
            "case": name,
            "collection_s": round(ours, 2),
            "kubectl_s": round(theirs, 2),
            "ratio": round(ours / theirs, 2),
        }
        if helm:
            helms = statistics.median(t[2] for t in runs if t[2] is not None)
            row |= {"helm_s": round(helms, 2), "ratio_helm": round(ours / helms, 2)}
        table.append({**row, "vs_floor": round(ours / statistics.median(floors), 2), "reps": len(runs)})
    first = next(r for r in table if r["case"] == f"deploy {counts[0]} model(s)")
    for row in table:
        if row["case"].startswith("deploy ") and row["case"].endswith("model(s)"):
            row["vs_first_count"] = round(row["collection_s"] / first["collection_s"], 2)

    def scale_note(r: dict) -> str:
        return f" (vs {counts[0]} model: {r['vs_first_count']}x)" if "vs_first_count" in r else ""

    machine = f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"
    if helm:
        title = f"Deploy benchmark ({machine}; ratio = collection / kubectl, vs helm = collection / helm, same run)"
        lines = [
            "| case | collection (s, median) | kubectl (s, median) | ratio | helm (s, median) | vs helm | reps |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['case']} | {r['collection_s']} | {r['kubectl_s']} | {r['ratio']}x{scale_note(r)}"
            f" | {r['helm_s']} | {r['ratio_helm']}x | {r['reps']} |"
            for r in table
        ]
        footer = (
            f"Helm {bench.helm_version}: `helm upgrade --install {bench.helm_wait} --wait-for-jobs` and "
            f"`helm uninstall {bench.helm_wait}` of a chart made of the rendered objects (see bench/deploy_bench.py)."
        )
    else:
        title = f"Deploy benchmark ({machine}; ratio = collection / kubectl, same run)"
        lines = ["| case | collection (s, median) | kubectl (s, median) | ratio | reps |", "|---|---|---|---|---|"]
        lines += [
            f"| {r['case']} | {r['collection_s']} | {r['kubectl_s']} | {r['ratio']}x{scale_note(r)} | {r['reps']} |"
            for r in table
        ]
        footer = HELM_MISSING
    floor = statistics.median(floors)
    by_case = {r["case"]: r for r in table}
    floor_line = (
        f"Floor: a one-task `ansible-playbook` (debug on localhost) takes {floor:.2f} s (median) on this machine; "
        f"no-op re-deploy = {by_case['no-op re-deploy']['vs_floor']}x the floor, teardown = "
        f"{by_case['teardown']['vs_floor']}x (targets 1.5x)."
    )
    text = "\n".join([title, "", *lines, "", floor_line, "", footer])
    print(text)
    (out / "deploy.md").write_text(text + "\n")
    helm_info = {"measured": bool(helm), "version": bench.helm_version or None, "note": footer}
    report = {"machine": machine, "floor_s": round(floor, 2), "helm": helm_info, "rows": table}
    (out / "deploy.json").write_text(json.dumps(report, indent=2))
    chart(table, counts, out / "deploy.png")
    return 0


def chart(table: list[dict], counts: list[int], path: Path) -> None:
    """Time against model count: collection vs kubectl, and Helm when measured."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no chart", file=sys.stderr)
        return
    by = {r["case"]: r for r in table}
    scaling = [by[f"deploy {c} model(s)"] for c in counts]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(counts, [r["collection_s"] for r in scaling], marker="o", label="ansible-playbook deploy.yml")
    ax.plot(counts, [r["kubectl_s"] for r in scaling], marker="s", label="kubectl apply + wait")
    if all("helm_s" in r for r in scaling):
        ax.plot(counts, [r["helm_s"] for r in scaling], marker="^", label="helm upgrade --install --wait")
    ax.set_xlabel("models in one run")
    ax.set_ylabel("seconds (median)")
    ax.set_title("Deploy time against model count")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    raise SystemExit(main())
