"""Rollouts under load on the real node: a steady stream of chat requests (kept-alive and new connections,
streamed and not, from several clients; tests/load_loop.py) through the model's Service while deploy.yml changes the
engine arguments, while a pod is deleted, and while the Deployment is scaled from 2 to 1.

The server is the fake of vLLM 0.23.0 started from the ``vllm/vllm-openai:v0.23.0`` image's entry point, which on
SIGTERM does what that release does (tests/fake_vllm_cli.py ``sigterm_mode``): the listener closes at once, and the
requests in flight are aborted (``--shutdown-timeout=0``) or run to their end (``--shutdown-timeout`` > 0).

Traffic goes only to this cluster's Service; every loop is bounded in count and time (LoadLoop).
"""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from ansible_collections.llmops.vllm.tests.load_loop import LoadLoop
from cluster_helpers import LOCAL_VARS, Kubectl, run_playbook, wait_until

pytestmark = pytest.mark.cluster

MODEL = "/ram-models/mistral-7b-v0-3"
SELECTOR = "model=mistral7b"
# The reference model with one engine argument changed (a new pod template: a rollout).
CHANGED = {"vllm_models": [{"name": "mistral", "labels": {"model": "mistral7b"}, "engine_args": {"max-num-seqs": 128}}]}
# Streams of 40 tokens at 50 ms: two seconds each, so a SIGTERM always meets requests in flight.
TOKEN_DELAY = "0.05"


def deploy(kubeconfig: str, base_vars: dict, models: str, **extra) -> str:
    """deploy.yml with the real node's vars, the 0.23.0 image and ``extra``; its output."""
    local = yaml.safe_load(LOCAL_VARS.read_text())
    variables = {
        **local,
        **base_vars,
        "storage_host_path": models,
        "vllm_server_image": "vllm/vllm-openai:v0.23.0",
        "vllm_server_env": {"LLMOPS_FAKE_VLLM_TOKEN_DELAY": TOKEN_DELAY},
        **extra,
    }
    return run_playbook("deploy.yml", kubeconfig, variables, check=True, timeout=900).stdout


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
    then a few answers more. The loop's summary."""
    with LoadLoop(service_ip(kubectl, ns), 8080, MODEL, max_seconds=420) as load:
        assert load.wait_for_answers(20, 60), load.summary()
        change()
        assert wait_until(lambda: settled(kubectl, ns, replicas), timeout=240, interval=1), pods(kubectl, ns)
        answered = load.summary()["answered"]
        assert load.wait_for_answers(answered + 20, 60), load.summary()
    summary = load.summary()
    print(json.dumps(summary))
    return summary


def teardown(kubeconfig: str, kubectl: Kubectl, base_vars: dict) -> None:
    """Everything removed, the model too, and the pods gone (their GPUs free for the next test)."""
    variables = {**yaml.safe_load(LOCAL_VARS.read_text()), **base_vars, "purge": True}
    run_playbook("teardown.yml", kubeconfig, variables, check=True)
    assert wait_until(lambda: not pods(kubectl, base_vars["vllm_namespace"]), timeout=120, interval=1)


@pytest.fixture
def models(base_vars: dict, real_node: str):
    """The model volume's directory on the real node, removed afterwards."""
    path = f"/var/lib/llmops-vllm/models/{base_vars['vllm_namespace']}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_rolling_update_a_pod_deletion_and_a_scale_in_drop_nothing(
    kubeconfig: str, kubectl: Kubectl, base_vars: dict, models: str
) -> None:
    ns = base_vars["vllm_namespace"]
    drain = {
        "vllm_server_strategy": "RollingUpdate",
        "vllm_server_prestop_seconds": 3,
        "vllm_server_shutdown_timeout": 20,
    }
    deploy(kubeconfig, base_vars, models, **drain)
    [pod] = pods(kubectl, ns)
    container = pod["spec"]["containers"][0]
    assert "--shutdown-timeout=20" in container["args"]
    assert container["lifecycle"]["preStop"] == {"sleep": {"seconds": 3}}

    # An engine-argument change: the new pod stages and loads beside the old one, which drains.
    changed = {**drain, **CHANGED}
    rollout = under_load(kubectl, ns, lambda: deploy(kubeconfig, base_vars, models, **changed), replicas=1)
    assert (rollout["failed"], rollout["aborted"]) == (0, 0), rollout
    [new] = pods(kubectl, ns)
    assert new["metadata"]["name"] != pod["metadata"]["name"]
    assert "--max-num-seqs=128" in new["spec"]["containers"][0]["args"]

    # Two replicas; one pod deleted (as a node drain or a consolidation does), then a scale-in to one.
    deploy(kubeconfig, base_vars, models, **changed, vllm_server_replicas=2)
    assert wait_until(lambda: settled(kubectl, ns, 2), timeout=240, interval=1)
    victim = pods(kubectl, ns)[0]["metadata"]["name"]
    delete = lambda: kubectl.run("-n", ns, "delete", "pod", victim, "--wait=false")  # noqa: E731
    deleted = under_load(kubectl, ns, delete, replicas=2)
    assert (deleted["failed"], deleted["aborted"]) == (0, 0), deleted
    scaled = under_load(
        kubectl, ns, lambda: deploy(kubeconfig, base_vars, models, **changed, vllm_server_replicas=1), replicas=1
    )
    assert (scaled["failed"], scaled["aborted"]) == (0, 0), scaled
    teardown(kubeconfig, kubectl, base_vars)


def test_without_the_drain_a_recreate_aborts_what_is_in_flight_and_leaves_a_gap(
    kubeconfig: str, kubectl: Kubectl, base_vars: dict, models: str
) -> None:
    """The control: the same loop, the workshop's Recreate with no preStop and --shutdown-timeout=0, counts what a
    user sees — streams aborted at the SIGTERM, refused requests while the new pod stages and loads."""
    ns = base_vars["vllm_namespace"]
    bare = {"vllm_server_strategy": "Recreate", "vllm_server_prestop_seconds": 0, "vllm_server_shutdown_timeout": 0}
    deploy(kubeconfig, base_vars, models, **bare)
    changed = {**bare, **CHANGED}
    recreate = under_load(kubectl, ns, lambda: deploy(kubeconfig, base_vars, models, **changed), replicas=1)
    assert recreate["aborted"] >= 1, recreate
    assert recreate["failed"] > recreate["aborted"] and recreate["longest_gap_s"] >= 2, recreate
    teardown(kubeconfig, kubectl, base_vars)
