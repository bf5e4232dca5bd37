"""A model across nodes, against the real LeaderWorkerSet controller and CRD (tests/cluster/addons.sh): the group's
pods land one per simulated GPU node, the Service reaches the leader only, a second run changes nothing, teardown
keeps the volume. A model needing more nodes than exist is refused before anything is applied: a PREFLIGHT case
in test_deploy.py.
"""

from __future__ import annotations

import json

import pytest
import yaml
from cluster_helpers import ROOT, Kubectl, run_playbook
from test_deploy import applied_steps, json_run, recap, render

BIG = {"name": "big", "nodes": 2, "gpus": 4}
WORKER_INDEX = "leaderworkerset.sigs.k8s.io/worker-index"


@pytest.fixture(scope="module", autouse=True)
def lws_served(kubectl: Kubectl):
    if not kubectl.exists("crd", "leaderworkersets.leaderworkerset.x-k8s.io"):
        pytest.skip("the cluster has no LeaderWorkerSet CRD (the local control plane installs it)")


def test_two_node_model_deploys_as_one_group_and_converges(kubectl, kubeconfig, base_vars, monkeypatch):
    ns = base_vars["vllm_namespace"]
    extra = {**base_vars, "vllm_models": [BIG]}
    rc, report = json_run("deploy.yml", kubeconfig, extra, monkeypatch=monkeypatch)
    assert rc == 0, json.dumps(report)[-3000:]
    objects = {o["object"]: o["action"] for step in applied_steps(report) for o in step["objects"]}
    assert objects["LeaderWorkerSet/big-lws"] == "created" and objects["Service/big"] == "created"
    assert "Deployment/big" not in objects

    pods = kubectl.json("-n", ns, "get", "pods", "-l", "leaderworkerset.sigs.k8s.io/name=big-lws")["items"]
    assert sorted(p["metadata"]["labels"][WORKER_INDEX] for p in pods) == ["0", "1"]
    assert len({p["spec"]["nodeName"] for p in pods}) == 2, "one pod of the group per GPU node"
    leader = next(p for p in pods if p["metadata"]["labels"][WORKER_INDEX] == "0")
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in leader["status"]["conditions"])
    # vLLM 0.9.0 (the default image) runs the group as a Ray cluster; every pod stages its own copy.
    for pod in pods:
        assert [c["name"] for c in pod["spec"]["initContainers"]] == ["model-loader"]
        assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert "ray start --head" in leader["spec"]["containers"][0]["args"][0]
    slices = kubectl.json("-n", ns, "get", "endpointslices", "-l", "kubernetes.io/service-name=big")["items"]
    assert [e["targetRef"]["name"] for s in slices for e in s.get("endpoints") or []] == [leader["metadata"]["name"]]

    again = run_playbook("deploy.yml", kubeconfig, extra)
    assert again.returncode == 0 and recap(again)["changed"] == 0, again.stdout[-3000:]
    checked = run_playbook("deploy.yml", kubeconfig, extra, "--check", "--diff")
    assert checked.returncode == 0 and recap(checked)["changed"] == 0, checked.stdout[-3000:]

    down = run_playbook("teardown.yml", kubeconfig, extra)
    assert down.returncode == 0, down.stdout[-3000:]
    assert not kubectl.exists("-n", ns, "leaderworkerset", "big-lws")
    assert kubectl.exists("-n", ns, "pvc", "fsx-models"), "teardown keeps the model volume"


@pytest.mark.parametrize(
    ("image", "leader_tail", "worker"),
    [
        (
            "public.ecr.aws/deep-learning-containers/vllm:0.9.0-gpu-py312-ec2",
            ["--pipeline-parallel-size=2", "--distributed-executor-backend=ray"],
            ["/bin/sh", "-c", "exec ray start --address=$LWS_LEADER_ADDRESS:6379 --block"],
        ),
        (
            "vllm/vllm-openai:v0.33.0",
            ["--nnodes=2", "--master-addr=$(LWS_LEADER_ADDRESS)", "--node-rank=0"],
            ["--nnodes=2", "--master-addr=$(LWS_LEADER_ADDRESS)", "--node-rank=$(LWS_WORKER_INDEX)", "--headless"],
        ),
    ],
)
def test_the_group_recipe_follows_the_vllm_release(kubeconfig, tmp_path, image, leader_tail, worker):
    """Ray before the release with --nnodes/--headless (vLLM's own LWS example); multiprocessing from it (vLLM
    stopped choosing Ray by itself in 0.11.2 and dropped it from its wheel in 0.18.0)."""
    objects = render(kubeconfig, {"vllm_models": [{**BIG, "image": image}]}, tmp_path / "render")
    group = next(o for o in objects if o["kind"] == "LeaderWorkerSet")
    template = group["spec"]["leaderWorkerTemplate"]
    assert template["size"] == 2 and template["restartPolicy"] == "RecreateGroupOnPodRestart"
    leader = template["leaderTemplate"]["spec"]["containers"][0]
    follower = template["workerTemplate"]["spec"]["containers"][0]
    leader_text = " ".join(leader.get("command", []) + leader["args"])
    assert "--tensor-parallel-size=4" in leader_text
    assert leader_text.split()[-len(leader_tail) :] == leader_tail
    assert (follower.get("command", []) + follower["args"])[-len(worker) :] == worker
    assert "readinessProbe" in leader and "readinessProbe" not in follower
    # The leader serves HTTP: it drains (docs/vllm-shutdown.md); the workers end with their group.
    assert "preStop" in leader["lifecycle"] and "lifecycle" not in follower
    assert template["leaderTemplate"]["spec"]["terminationGracePeriodSeconds"] == 60
    assert "terminationGracePeriodSeconds" not in template["workerTemplate"]["spec"]


def test_the_documented_example_renders_as_one_group(kubeconfig, tmp_path):
    """docs/examples/multi-node-llama-405b.yml passes the preflight and becomes a LeaderWorkerSet of 2 x 8 GPUs."""
    example = yaml.safe_load((ROOT / "docs" / "examples" / "multi-node-llama-405b.yml").read_text())
    objects = render(kubeconfig, example, tmp_path / "render")
    group = next(o for o in objects if o["kind"] == "LeaderWorkerSet")
    assert group["metadata"]["name"] == "llama-405b-lws"
    leader = group["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]
    assert {"--tensor-parallel-size=8", "--pipeline-parallel-size=2", "--nnodes=2"} <= set(leader["args"])
    assert leader["resources"]["limits"]["nvidia.com/gpu"] == 8
