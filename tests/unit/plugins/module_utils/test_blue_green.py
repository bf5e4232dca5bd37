"""blue/green's object handling without an API server: which objects it takes from a step, how a slot renames a
Deployment and points a Service, and what a teardown deletes. The upgrade itself runs on the real node
(tests/integration/test_rollout_real_node.py)."""

from __future__ import annotations

from ansible_collections.llmops.vllm.plugins.module_utils import blue_green as bg

SLOT = "llmops.vllm/slot"


def objects(upgrade: str = "blue_green") -> list[dict]:
    labels = {"model": "m", SLOT: "mistral"}
    annotations = {"llmops.vllm/upgrade": upgrade} if upgrade else {}
    meta = {"name": "mistral", "namespace": "ns", "labels": dict(labels)}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": dict(meta, annotations=annotations),
        "spec": {"selector": {"matchLabels": dict(labels)}, "template": {"metadata": {"labels": dict(labels)}}},
    }
    service = {"apiVersion": "v1", "kind": "Service", "metadata": dict(meta), "spec": {"selector": dict(labels)}}
    pdb = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": dict(meta), "spec": {}}
    return [deployment, service, pdb]


def test_a_step_hands_the_blue_green_pairs_over_and_keeps_the_rest():
    rest, pairs = bg.split(objects())
    assert [o["kind"] for o in rest] == ["PodDisruptionBudget"]
    assert [(d["kind"], s["kind"]) for d, s in pairs] == [("Deployment", "Service")]
    rest, pairs = bg.split(objects(upgrade=""))
    assert len(rest) == 3 and pairs == []


def test_a_slot_renames_the_deployment_and_its_pods_and_the_service_follows():
    deployment, service = objects()[:2]
    nxt = bg.as_slot(deployment, "mistral-next")
    assert nxt["metadata"]["name"] == "mistral-next"
    assert nxt["spec"]["selector"]["matchLabels"][SLOT] == "mistral-next"
    assert nxt["spec"]["template"]["metadata"]["labels"][SLOT] == "mistral-next"
    assert deployment["spec"]["selector"]["matchLabels"][SLOT] == "mistral"  # the rendered one is left as it was
    candidate = bg.with_slot(service, "mistral-next", "mistral-candidate")
    assert (candidate["metadata"]["name"], candidate["spec"]["selector"][SLOT]) == ("mistral-candidate", "mistral-next")


def test_a_teardown_deletes_both_slots_and_the_candidate_service():
    names = [(o["kind"], o["metadata"]["name"]) for o in bg.absent(objects())]
    assert ("Deployment", "mistral") in names and ("Deployment", "mistral-next") in names
    assert ("Service", "mistral-candidate") in names
