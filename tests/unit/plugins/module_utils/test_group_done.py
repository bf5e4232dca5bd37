"""A two-node group is done only when every pod of it serves: the LeaderWorkerSet controller (sigs.k8s.io/lws v0.8.0)
marks a group ready and the set Available once the leader is Ready and the workers' StatefulSet has created its pods,
scheduled or not (pkg/controllers/leaderworkerset_controller.go, pkg/utils/statefulset StatefulsetReady), which is how
deploy.yml once reported success with a worker that had no node."""

from __future__ import annotations

import copy

from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis import group_done

NAME = "llama-lws"


def group(generation: int = 1, observed: int = 1) -> dict:
    """The set as the controller leaves it for 1 group of 2 pods: Available, 1 ready, 1 updated."""
    return {
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "metadata": {"name": NAME, "namespace": "ns", "generation": generation},
        "spec": {"replicas": 1, "leaderWorkerTemplate": {"size": 2}},
        "status": {
            "replicas": 1,
            "readyReplicas": 1,
            "updatedReplicas": 1,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "AllGroupsReady", "observedGeneration": observed},
                {"type": "Progressing", "status": "False", "observedGeneration": observed},
            ],
        },
    }


def pod(worker: int, node: str | None = "gpu-a", ready: bool = True) -> dict:
    labels = {"leaderworkerset.sigs.k8s.io/name": NAME, "leaderworkerset.sigs.k8s.io/worker-index": str(worker)}
    status = {"phase": "Running" if node else "Pending", "conditions": []}
    if node:
        status["conditions"].append({"type": "Ready", "status": "True" if ready else "False"})
    else:
        status["conditions"].append(
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available"}
        )
    spec = {"nodeName": node} if node else {}
    return {
        "metadata": {"name": f"{NAME}-0-{worker}" if worker else f"{NAME}-0", "labels": labels},
        "spec": spec,
        "status": status,
    }


def test_every_pod_scheduled_and_ready_is_done():
    assert group_done(group(), [pod(0), pod(1, "gpu-b")])


def test_a_worker_without_a_node_is_not_done_though_the_set_says_available():
    assert not group_done(group(), [pod(0), pod(1, node=None)])


def test_a_worker_not_ready_or_missing_or_going_is_not_done():
    assert not group_done(group(), [pod(0), pod(1, "gpu-b", ready=False)])
    assert not group_done(group(), [pod(0)])
    going = copy.deepcopy(pod(1, "gpu-b"))
    going["metadata"]["deletionTimestamp"] = "2026-12-07T10:00:00Z"
    assert not group_done(group(), [pod(0), going])


def test_a_status_from_an_earlier_spec_is_not_done():
    assert not group_done(group(generation=2, observed=1), [pod(0), pod(1, "gpu-b")])


def test_without_the_pods_nothing_can_be_told():
    assert not group_done(group())
