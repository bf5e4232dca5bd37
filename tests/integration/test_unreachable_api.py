"""deploy.yml against an API server that is not there or never answers: a failed task with one line, in bounded
time, never a green run that applied nothing.

No cluster is needed: the kubeconfig points at a closed port (refused) or at a socket that accepts connections and
never answers (a blackholed load balancer). The preflight lookups are turned off so that the apply steps meet the
dead server first, which is where a failed apply used to pass as success.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from cluster_helpers import BIN, ROOT

LOOKUPS_OFF = {
    "vllm_namespace": "unreachable",
    "vllm_server_check_cluster": False,
    "storage_check_cluster": False,
    "vllm_probe_enabled": False,
}


def kubeconfig_for(path: Path, port: int) -> Path:
    """A kubeconfig whose one context points at https://127.0.0.1:<port>."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}", "insecure-skip-tls-verify": True}}
        ],
        "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def run_ansible(cmd: list[str], kubeconfig: Path, timeout: int = 300) -> tuple[subprocess.CompletedProcess, float]:
    """An ansible command (path under the venv's bin) against ``kubeconfig``; the process and its seconds."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "K8S_AUTH_KUBECONFIG": str(kubeconfig)}
    start = time.monotonic()
    proc = subprocess.run(
        [str(BIN / cmd[0]), *cmd[1:]], capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout, check=False
    )
    return proc, time.monotonic() - start


def deploy(kubeconfig: Path, extra: dict, timeout: int = 300) -> tuple[subprocess.CompletedProcess, float]:
    playbook = str(ROOT / "playbooks" / "deploy.yml")
    return run_ansible(["ansible-playbook", playbook, "-e", json.dumps(extra)], kubeconfig, timeout=timeout)


def fatal_messages(stdout: str) -> list[str]:
    return [json.loads(line.split("=> ", 1)[1])["msg"] for line in stdout.splitlines() if line.startswith("fatal:")]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def blackhole():
    """A port that accepts connections and never answers; yields the port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_an_unreachable_api_server_fails_the_first_apply_in_one_line(tmp_path):
    port = closed_port()
    proc, _seconds = deploy(kubeconfig_for(tmp_path / "kubeconfig", port), LOOKUPS_OFF)
    assert proc.returncode != 0, proc.stdout[-3000:]
    (msg,) = fatal_messages(proc.stdout)
    assert msg == (
        f"applying the model volume: no answer from the Kubernetes API server https://127.0.0.1:{port} (unreachable, "
        "refused or too slow), so nothing of this step was applied; check that the cluster is up and that the "
        "kubeconfig and context point at it, then run again"
    )


def test_an_api_server_that_never_answers_stops_the_run_at_the_deadline(tmp_path, blackhole):
    proc, seconds = deploy(kubeconfig_for(tmp_path / "kubeconfig", blackhole), {**LOOKUPS_OFF, "vllm_api_timeout": 3})
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert seconds < 60, f"took {seconds:.0f} s"
    assert fatal_messages(proc.stdout)[-1] == (
        f"applying the model volume: the Kubernetes API server https://127.0.0.1:{blackhole} gave no answer within "
        "3 s (vllm_api_timeout), so the step stopped; check the endpoint (a load balancer or proxy in front of it) "
        "and run again: what was applied stays, a rerun converges"
    )


def test_the_cluster_checks_before_the_first_apply_are_bounded_too(tmp_path, blackhole):
    """The GPU node and CSI driver checks ask the API server before anything is applied; a server that never
    answers stops them at the deadline as well (they used to be lookups, templated before any task timeout ran)."""
    extra = {"vllm_namespace": "unreachable", "vllm_probe_enabled": False, "vllm_api_timeout": 3}
    proc, seconds = deploy(kubeconfig_for(tmp_path / "kubeconfig", blackhole), extra)
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert seconds < 60, f"took {seconds:.0f} s"
    assert fatal_messages(proc.stdout)[-1].startswith(
        f"checking the cluster: the Kubernetes API server https://127.0.0.1:{blackhole} gave no answer within 3 s "
        "(vllm_api_timeout)"
    )


STEPS = {
    "storage": "applying the model volume",
    "model_download": "applying the staging engine and the download Jobs",
    "vllm_server": "applying the servers, Services and their companions",
    "gpu_nodepool": "applying the GPU node pool",
}


@pytest.mark.parametrize("role", sorted(STEPS))
def test_every_steps_apply_fails_in_one_line_when_the_api_server_is_gone(tmp_path, role):
    """Each role's apply entry point, on its own, against an API server that is not there: a failed task naming the
    step and the server, never a green run."""
    port = closed_port()
    prepares = [
        {"ansible.builtin.import_role": {"name": f"llmops.vllm.{r}", "tasks_from": "prepare"}}
        for r in ("vllm_server", "storage", "model_download", "gpu_nodepool")
    ]
    play = {
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars": {**LOOKUPS_OFF, "gpu_nodepool_enabled": True, "gpu_nodepool_mode": "auto_mode"},
        "tasks": [*prepares, {"ansible.builtin.import_role": {"name": f"llmops.vllm.{role}", "tasks_from": "apply"}}],
    }
    book = tmp_path / "step.yml"
    book.write_text(yaml.safe_dump([play]))
    proc, _seconds = run_ansible(["ansible-playbook", str(book)], kubeconfig_for(tmp_path / "kubeconfig", port))
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert fatal_messages(proc.stdout) == [
        f"{STEPS[role]}: no answer from the Kubernetes API server https://127.0.0.1:{port} (unreachable, refused or "
        "too slow), so nothing of this step was applied; check that the cluster is up and that the kubeconfig and "
        "context point at it, then run again"
    ]


def test_vllm_wait_against_a_server_that_never_answers_stops_within_its_timeout(tmp_path, blackhole):
    """kubernetes.core's client asks a server it has not seen for its version, without a timeout; vllm_wait bounds
    that by its own timeout instead of hanging."""
    args = json.dumps({"namespace": "x", "deployments": ["mistral"], "timeout": 3})
    cmd = ["ansible", "localhost", "-m", "llmops.vllm.vllm_wait", "-a", args]
    proc, seconds = run_ansible(cmd, kubeconfig_for(tmp_path / "kubeconfig", blackhole), timeout=120)
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert seconds < 60
    assert f"cannot reach the Kubernetes API server https://127.0.0.1:{blackhole} (no answer in time)" in proc.stdout
