"""Two builds into one cache at once (a second checkout's `make cluster-up`): the second waits for the first's lock,
then finds what the first built instead of building it again into the same files."""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cache_dir(tmp_path: Path, script: str) -> Path:
    function = "cluster_bin_dir" if script == "build.sh" else "addons_cache_dir"
    out = subprocess.run(
        ["bash", "-c", f"source {ROOT}/tests/cluster/versions.env && {function}"],
        env={**os.environ, "LLMOPS_VLLM_CACHE": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip())


@pytest.mark.parametrize("script", ["build.sh", "addons.sh"])
def test_a_second_build_waits_for_the_first_and_finds_its_binaries(tmp_path: Path, script: str) -> None:
    where = cache_dir(tmp_path, script)
    where.mkdir(parents=True)
    with open(where / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first build, running
        env = {**os.environ, "LLMOPS_VLLM_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"}  # no go: it must not build
        args = ["bash", str(ROOT / "tests" / "cluster" / script)] + (["kwok"] if script == "build.sh" else [])
        second = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        assert second.poll() is None, second.communicate()  # waiting, not building beside the first
        # The first one finishes what the second would have built.
        if script == "build.sh":
            (where / "kwok").write_text("#!/bin/sh\n")
            (where / "kwok").chmod(0o755)
        else:
            (where / "bin").mkdir(exist_ok=True)
            (where / "bin" / "lws-manager").write_text("#!/bin/sh\n")
            (where / "bin" / "lws-manager").chmod(0o755)
            (where / "crds").mkdir(exist_ok=True)
            (where / "crds" / ".complete").write_text("")
        fcntl.flock(lock, fcntl.LOCK_UN)
    out, err = second.communicate(timeout=30)
    assert second.returncode == 0, err
    assert "waiting for the" in err and "cached in" in out
