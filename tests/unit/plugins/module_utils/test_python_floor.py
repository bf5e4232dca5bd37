"""What runs on managed hosts and in pods keeps to Python 3.8, ansible-core's oldest target: every module_util
imports there and works on a sample (ruff's per-file target catches syntax; this catches the standard library, such
as ``datetime.UTC``, which is 3.11)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]  # this collection's checkout
FLOOR = shutil.which("python3.8")
# A pyenv shim runs only the versions selected; PYENV_VERSION selects 3.8 for this run (ignored without pyenv).
FLOOR_ENV = {**os.environ, "PYENV_VERSION": "3.8"}


def _floor_runs() -> bool:
    if FLOOR is None:
        return False
    done = subprocess.run([FLOOR, "--version"], capture_output=True, env=FLOOR_ENV, timeout=30, check=False)
    return done.returncode == 0


SCRIPT = """
import importlib, pkgutil, sys
sys.path.insert(0, sys.argv[1])
import ansible_collections.llmops.vllm.plugins.module_utils as mu
for info in pkgutil.walk_packages(mu.__path__, mu.__name__ + "."):
    if not info.name.endswith("__main__"):
        importlib.import_module(info.name)
from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.snapshot import parse_time
from ansible_collections.llmops.vllm.plugins.module_utils.startup_timeline import _iso
assert _iso(parse_time("2026-11-30T10:00:00.123456789Z")) == "2026-11-30T10:00:00Z", "time"
print("ok", sys.version_info[:2])
"""


@pytest.mark.skipif(not _floor_runs(), reason="no python3.8 that runs on PATH")
def test_every_module_util_imports_and_reads_api_times_on_python_3_8(tmp_path: Path) -> None:
    link = tmp_path / "ansible_collections" / "llmops" / "vllm"
    link.parent.mkdir(parents=True)
    link.symlink_to(ROOT)
    done = subprocess.run(
        [FLOOR, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=120, check=False, env=FLOOR_ENV
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok (3, 8)")
