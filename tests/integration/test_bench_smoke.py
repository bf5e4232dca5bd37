"""Smoke of the benchmarks (one repetition, tiny sizes): they run and report ratios. Not a timing test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cached_helm() -> str | None:
    """The helm binary the bench would find ($LLMOPS_VLLM_HELM or bench/helm.sh's cache), without building one."""
    if os.environ.get("LLMOPS_VLLM_HELM"):
        return os.environ["LLMOPS_VLLM_HELM"]
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "helm.sh"), "--cached"], capture_output=True, text=True, check=False
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def run_deploy_bench(kubeconfig: str, out: Path, *args: str) -> tuple[dict[str, dict], dict, str]:
    """Run the deploy bench's smoke into `out`; its rows by case, its JSON and its Markdown."""
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "deploy_bench.py"), "--smoke", "--out", str(out), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "deploy.json").read_text())
    rows = {r["case"]: r for r in report["rows"]}
    assert set(rows) == {"cold deploy (+wait)", "no-op re-deploy", "teardown", "deploy 1 model(s)"}
    for row in rows.values():
        assert row["collection_s"] > 0 and row["kubectl_s"] > 0
        # The ratio comes from unrounded seconds; the printed seconds are rounded to 10 ms.
        assert row["ratio"] == pytest.approx(row["collection_s"] / row["kubectl_s"], rel=0.1)
        # The floor (a one-task playbook) is measured in the same run and named next to the ratio.
        assert row["vs_floor"] == pytest.approx(row["collection_s"] / report["floor_s"], rel=0.1)
    markdown = (out / "deploy.md").read_text()
    assert "Floor: a one-task `ansible-playbook`" in markdown
    assert "| cold deploy (+wait) |" in markdown
    assert (out / "deploy.png").stat().st_size > 1000
    return rows, report, markdown


def test_deploy_bench_reports_ratios_against_kubectl(kubeconfig, tmp_path):
    rows, report, markdown = run_deploy_bench(kubeconfig, tmp_path, "--no-helm")
    # Without helm the table is kubectl's alone, and one line says how to add Helm.
    assert all("helm_s" not in row for row in rows.values())
    assert report["helm"]["measured"] is False
    assert "Helm not measured" in markdown and "bench/helm.sh" in markdown


@pytest.mark.skipif(cached_helm() is None, reason="no helm binary cached (bench/helm.sh builds one)")
def test_deploy_bench_reports_ratios_against_helm(kubeconfig, tmp_path):
    rows, report, markdown = run_deploy_bench(kubeconfig, tmp_path, "--helm", cached_helm())
    assert report["helm"]["measured"] is True and report["helm"]["version"].startswith("v")
    for row in rows.values():
        assert row["helm_s"] > 0
        assert row["ratio_helm"] == pytest.approx(row["collection_s"] / row["helm_s"], rel=0.1)
    assert "| helm (s, median) |" in markdown


def test_stage_bench_smoke_compares_against_cp(tmp_path):
    out = tmp_path / "stage.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "stage_bench.py"), "--smoke", "--json", str(out), "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cp -r" in proc.stdout
    assert json.loads(out.read_text())
