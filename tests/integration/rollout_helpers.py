"""The rollout scenarios on the real node, for tests/integration/test_rollout_real_node.py and
bench/rollout_bench.py: deploy.yml with the 0.23.0 image's fake (tests/fake_vllm_cli.py copies its SIGTERM), a change
under the load loop (tests/load_loop.py) until the pods settle, and a teardown that frees the node's GPUs."""

from __future__ import annotations

import json
import subprocess

import yaml
from ansible_collections.llmops.vllm.tests.load_loop import LoadLoop
from cluster_helpers import LOCAL_VARS, Kubectl, run_playbook, wait_until

MODEL = "/ram-models/mistral-7b-v0-3"
SELECTOR = "model=mistral7b"
# The reference model with one engine argument changed (a new pod template: a rollout).
CHANGED = {"vllm_models": [{"name": "mistral", "labels": {"model": "mistral7b"}, "engine_args": {"max-num-seqs": 128}}]}
# Streams of 40 tokens at 50 ms: two seconds each, so a SIGTERM always meets requests in flight.
TOKEN_DELAY = "0.05"


def deploy(kubeconfig: str, base_vars: dict, models: str, **extra) -> str:
    """deploy.yml with the real node's vars, the 0.23.0 image and ``extra``, which must pass; its output (warnings
    included)."""
    proc = run_deploy(kubeconfig, base_vars, models, **extra)
    if proc.returncode != 0:
        raise AssertionError(f"deploy.yml failed rc={proc.returncode}\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr  # Ansible prints warnings on stderr


def run_deploy(kubeconfig: str, base_vars: dict, models: str, **extra) -> subprocess.CompletedProcess:
    """deploy.yml with the real node's vars, the 0.23.0 image and ``extra``; the finished process."""
    local = yaml.safe_load(LOCAL_VARS.read_text())
    variables = {
        **local,
        **base_vars,
        "storage_host_path": models,
        "vllm_server_image": "vllm/vllm-openai:v0.23.0",
        "vllm_server_env": {"LLMOPS_FAKE_VLLM_TOKEN_DELAY": TOKEN_DELAY},
        **extra,
    }
    return run_playbook("deploy.yml", kubeconfig, variables, timeout=900)


def pods(kubectl: Kubectl, ns: str) -> list[dict]:
    return kubectl.json("-n", ns, "get", "pods", "-l", SELECTOR)["items"]


def settled(kubectl: Kubectl, ns: str, replicas: int) -> bool:
    """Exactly ``replicas`` pods, all Ready, none terminating (the old ones are gone, their drain included)."""
    items = pods(kubectl, ns)
    ready = [
        p
        for p in items
        if not p["metadata"].get("deletionTimestamp")
        and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
    ]
    return len(items) == replicas and len(ready) == replicas


def service_ip(kubectl: Kubectl, ns: str) -> str:
    return kubectl.json("-n", ns, "get", "service", "mistral")["spec"]["clusterIP"]


def under_load(kubectl: Kubectl, ns: str, change, replicas: int) -> dict:
    """Run ``change()`` while the load loop runs through the Service; the loop goes on until the pods have settled,
    then a few answers more. The loop's summary, with what ``change()`` returned as ``output`` (a playbook's)."""
    with LoadLoop(service_ip(kubectl, ns), 8080, MODEL, max_seconds=420) as load:
        if not load.wait_for_answers(20, 60):
            raise RuntimeError(f"the Service does not answer before the change: {load.summary()}")
        output = change()
        if not wait_until(lambda: settled(kubectl, ns, replicas), timeout=240, interval=1):
            raise RuntimeError(f"the pods did not settle at {replicas}: {pods(kubectl, ns)}")
        answered = load.summary()["answered"]
        if not load.wait_for_answers(answered + 20, 60):
            raise RuntimeError(f"the Service stopped answering after the change: {load.summary()}")
    summary = load.summary()
    print(json.dumps(summary))
    return {**summary, "output": output if isinstance(output, str) else ""}


def teardown(kubeconfig: str, kubectl: Kubectl, base_vars: dict) -> None:
    """Everything removed, the model too, and the pods gone (their GPUs free for the next test)."""
    variables = {**yaml.safe_load(LOCAL_VARS.read_text()), **base_vars, "purge": True}
    run_playbook("teardown.yml", kubeconfig, variables, check=True)
    if not wait_until(lambda: not pods(kubectl, base_vars["vllm_namespace"]), timeout=120, interval=1):
        raise RuntimeError(f"pods left after teardown: {pods(kubectl, base_vars['vllm_namespace'])}")
