"""Rollouts under load on the real node: a steady stream of chat requests (kept-alive and new connections,
streamed and not, from several clients; tests/load_loop.py) through the model's Service while deploy.yml changes the
engine arguments, while a pod is deleted, and while the Deployment is scaled from 2 to 1.

The server is the fake of vLLM 0.23.0 started from the ``vllm/vllm-openai:v0.23.0`` image's entry point, which on
SIGTERM does what that release does (tests/fake_vllm_cli.py ``sigterm_mode``): the listener closes at once, and the
requests in flight are aborted (``--shutdown-timeout=0``) or run to their end (``--shutdown-timeout`` > 0).

Traffic goes only to this cluster's Service; every loop is bounded in count and time (LoadLoop).
"""

from __future__ import annotations

import shutil

import pytest
from cluster_helpers import Kubectl, wait_until
from rollout_helpers import CHANGED, TOKEN_DELAY, deploy, pods, run_deploy, settled, teardown, under_load

pytestmark = pytest.mark.cluster


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

    def delete() -> None:
        kubectl.run("-n", ns, "delete", "pod", victim, "--wait=false")

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


def test_a_blue_green_upgrade_drops_nothing_and_a_copy_that_fails_the_probe_leaves_the_old_one_serving(
    kubeconfig: str, kubectl: Kubectl, base_vars: dict, models: str
) -> None:
    ns = base_vars["vllm_namespace"]
    bg = {"vllm_server_upgrade": "blue_green", "vllm_server_prestop_seconds": 3, "vllm_server_shutdown_timeout": 20}
    deploy(kubeconfig, base_vars, models, **bg)

    # The change comes up as mistral-next, is probed through its own Service, then takes the traffic.
    switched = under_load(kubectl, ns, lambda: deploy(kubeconfig, base_vars, models, **bg, **CHANGED), replicas=1)
    assert (switched["failed"], switched["aborted"]) == (0, 0), switched
    assert "Deployment mistral-next passed the probe and took Service mistral" in switched["output"]
    service = kubectl.json("-n", ns, "get", "service", "mistral")
    assert service["spec"]["selector"]["llmops.vllm/slot"] == "mistral-next"
    assert [p["metadata"]["labels"]["llmops.vllm/slot"] for p in pods(kubectl, ns)] == ["mistral-next"]
    assert not kubectl.exists("-n", ns, "deployment", "mistral")

    # A copy that is Ready but answers chat with empty content: removed, the run fails naming the check, and the
    # traffic never left mistral-next.
    broken = {"vllm_server_env": {"LLMOPS_FAKE_VLLM_TOKEN_DELAY": TOKEN_DELAY, "LLMOPS_FAKE_VLLM_EMPTY_CONTENT": "1"}}

    def failing() -> str:
        proc = run_deploy(kubeconfig, base_vars, models, **bg, **broken)
        assert proc.returncode != 0
        return proc.stdout + proc.stderr

    refused = under_load(kubectl, ns, failing, replicas=1)
    assert (refused["failed"], refused["aborted"]) == (0, 0), refused
    line = " ".join(refused["output"].split())
    assert (
        "blue/green: the new copy of mistral (Deployment mistral) failed the probe (chat: " in line
        and "the traffic stays on Deployment mistral-next and the new copy was removed" in line
    ), refused["output"][-3000:]
    assert kubectl.json("-n", ns, "get", "service", "mistral")["spec"]["selector"]["llmops.vllm/slot"] == "mistral-next"
    assert not kubectl.exists("-n", ns, "deployment", "mistral")
    teardown(kubeconfig, kubectl, base_vars)
    assert not kubectl.exists("-n", ns, "deployment", "mistral-next")
