"""Run one module of the collection through the real `ansible` CLI, as a user's ad-hoc command would.

Import it as ``ansible_collections.llmops.vllm.tests.ansible_cli`` (tests/conftest.py links the checkout as the
collection; ansible-test units' copy already is one), like ``model_factory``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def run_module(
    module: str,
    args: dict,
    *flags: str,
    env: dict | None = None,
    unset: tuple[str, ...] = ("PYTHONPATH",),
    check_rc: bool = True,
    timeout: int = 300,
) -> dict:
    """Run ``ansible localhost -c local -m <module> -a <args as JSON> <flags>`` and return the task's result.

    The result is the ansible.posix.json callback's entry for localhost. ``env`` is laid over os.environ and
    the callback settings; the variables named in ``unset`` are then removed (by default PYTHONPATH:
    ansible-test units points it at a stub ansible package that the real CLI must not import). With
    ``check_rc``, the exit code must be 2 for a failed task and 0 otherwise. Fails the test when ansible
    prints no JSON.
    """
    cli_env = dict(
        os.environ,
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="true",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        **(env or {}),
    )
    for name in unset:
        cli_env.pop(name, None)
    done = subprocess.run(
        [str(BIN / "ansible"), "localhost", "-c", "local", "-m", module, "-a", json.dumps(args), *flags],
        capture_output=True,
        check=False,
        text=True,
        env=cli_env,
        timeout=timeout,
    )
    try:
        report = json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"ansible printed no JSON (rc {done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}")
    result = report["plays"][0]["tasks"][0]["hosts"]["localhost"]
    if check_rc:
        expected = 2 if result.get("failed") else 0
        assert done.returncode == expected, f"ansible exited {done.returncode}, expected {expected}: {done.stderr}"
    return result
