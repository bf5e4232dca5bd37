"""Smoke of the benchmarks (one repetition, tiny sizes): they run and report ratios. Not a timing test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_deploy_bench_reports_ratios_against_kubectl(kubeconfig, tmp_path):
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "deploy_bench.py"), "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["case"]: r for r in json.loads((tmp_path / "deploy.json").read_text())["rows"]}
    assert set(rows) == {"cold deploy (+wait)", "no-op re-deploy", "teardown", "deploy 1 model(s)"}
    for row in rows.values():
        assert row["collection_s"] > 0 and row["kubectl_s"] > 0
        # The ratio comes from unrounded seconds; the printed seconds are rounded to 10 ms.
        assert row["ratio"] == pytest.approx(row["collection_s"] / row["kubectl_s"], rel=0.1)
    assert "| cold deploy (+wait) |" in (tmp_path / "deploy.md").read_text()
    assert (tmp_path / "deploy.png").stat().st_size > 1000


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
