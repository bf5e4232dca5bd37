"""The one-line explanation of a refused apply, and which objects the replace path names."""

from __future__ import annotations

import json

from ansible_collections.llmops.vllm.plugins.filter.vllm_apply_failure import apply_failure
from ansible_collections.llmops.vllm.plugins.test.vllm_refused import refused


def k8s_failure(code: int, reason: str, message: str, kind: str, name: str, field: str | None = None) -> dict:
    """A failed kubernetes.core.k8s result as the module returns it: the API server's Status inside msg."""
    status = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": {"name": name, "kind": kind, "causes": [{"field": field}] if field else []},
        "code": code,
    }
    msg = "Failed to apply object: " + json.dumps(status) + "\n"
    return {"changed": False, "msg": msg, "failed_when_result": False}


def deployment(labels: dict) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "mistral", "namespace": "llm"},
        "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}}},
    }


def job(revision: str | None, name: str = "model-download") -> dict:
    """A download Job as the role writes it: the hash of its pod template (here: the revision) annotated."""
    annotations = {"llmops.vllm/pod-template-hash": f"hash-of-{revision}"} if revision else {}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "llm", "annotations": annotations},
        "spec": {"template": {"spec": {"containers": [{"name": "model-download"}]}}},
    }


IMMUTABLE_SELECTOR = k8s_failure(
    422,
    "Invalid",
    'Deployment.apps "mistral" is invalid: spec.selector: Invalid value: {}: field is immutable',
    "Deployment",
    "mistral",
    "spec.selector",
)


def test_conflict_names_the_other_manager_and_the_way_to_take_over():
    failed = k8s_failure(
        409, "Conflict", 'Apply failed with 1 conflict: conflict with "someone-else": .spec.replicas', "Deployment", "m"
    )
    out = apply_failure(failed, [deployment({"model": "a"})])
    assert "someone-else" in out["msg"] and ".spec.replicas" in out["msg"] and "vllm_force_conflicts=true" in out["msg"]
    assert out["replace"] == [] and "\n" not in out["msg"]


def test_changed_selector_is_refused_with_both_selectors_unless_replace_is_allowed():
    live = [deployment({"model": "a"})]
    wanted = [deployment({"model": "b"})]
    out = apply_failure(IMMUTABLE_SELECTOR, wanted, live)
    assert out["refused"] and out["replace"] == []
    assert '"a"' in out["msg"] and '"b"' in out["msg"] and "vllm_replace_immutable=true" in out["msg"]

    out = apply_failure(IMMUTABLE_SELECTOR, wanted, live, replace=True)
    assert not out["refused"]
    assert out["replace"] == [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "mistral", "namespace": "llm"}}
    ]


def test_every_job_whose_template_changed_is_replaced_and_unchanged_ones_are_kept():
    failed = k8s_failure(
        422, "Invalid", 'Job.batch "model-download" is invalid: spec.template: field is immutable', "Job", "x"
    )
    unchanged = job("main", name="second")
    out = apply_failure(failed, [job("refs/pr/1"), unchanged], [job("main"), unchanged])
    assert [r["metadata"]["name"] for r in out["replace"]] == ["model-download"]
    assert "Job model-download (spec.template changed)" in out["msg"]


def test_a_job_made_before_the_hash_annotation_counts_as_changed():
    failed = k8s_failure(422, "Invalid", "spec.template: field is immutable", "Job", "model-download")
    out = apply_failure(failed, [job("main")], [job(None)])
    assert [r["kind"] for r in out["replace"]] == ["Job"]


def test_the_volume_is_never_replaced():
    failed = k8s_failure(
        422,
        "Invalid",
        'PersistentVolume "fsx" is invalid: spec.persistentvolumesource: Forbidden: spec.persistentvolumesource is '
        "immutable after creation: field is immutable",
        "PersistentVolume",
        "fsx",
        "spec.persistentvolumesource",
    )
    pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "fsx"}}
    out = apply_failure(failed, [pv], [])
    assert out["replace"] == [] and out["refused"]
    assert "PersistentVolume fsx" in out["msg"] and "never the model volume" in out["msg"]


def test_other_failures_keep_the_api_servers_words_on_one_line():
    failed = k8s_failure(403, "Forbidden", 'deployments.apps is forbidden: User "ci"\ncannot patch', "Deployment", "m")
    out = apply_failure(failed, [])
    assert out["msg"] == 'deployments.apps is forbidden: User "ci" cannot patch' and out["replace"] == []


def test_refused_tells_a_refusal_from_a_run_and_a_skip():
    assert refused(IMMUTABLE_SELECTOR)
    assert not refused({"changed": True, "result": {"results": []}, "failed_when_result": False})
    assert not refused({"changed": False, "skipped": True, "skip_reason": "Conditional result was False"})


# What ansible-core 2.19 registers for a kubernetes.core.k8s task under failed_when: false that raised (the API server
# refused the connection): no msg, no result.
NO_ANSWER = {"changed": False, "failed": False, "failed_when_result": False, "failed_when_suppressed_exception": "(x)"}


def test_an_apply_without_an_answer_counts_as_refused_and_names_the_server(tmp_path, monkeypatch):
    assert refused(NO_ANSWER)
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        json.dumps(
            {
                "clusters": [{"name": "eks", "cluster": {"server": "https://api.example:443"}}],
                "contexts": [{"name": "prod", "context": {"cluster": "eks", "user": "u"}}],
                "current-context": "prod",
            }
        )
    )
    monkeypatch.delenv("K8S_AUTH_HOST", raising=False)
    failure = apply_failure(NO_ANSWER, [], what="the model volume", kubeconfig=str(kubeconfig))
    assert failure["msg"].startswith(
        "applying the model volume: no answer from the Kubernetes API server https://api.example:443 (unreachable"
    )
    assert failure["replace"] == [] and "\n" not in failure["msg"]


def test_an_apply_past_its_deadline_says_so():
    timed_out = {"failed": True, "msg": "Task failed: Timed out after 5 second(s).", "timedout": {"period": 5}}
    msg = apply_failure(timed_out, [], what="the servers", kubeconfig="/nonexistent")["msg"]
    assert msg.startswith(
        "applying the servers: the Kubernetes API server gave no answer within 5 s (vllm_api_timeout)"
    )
