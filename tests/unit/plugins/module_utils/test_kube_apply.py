"""The apply engine's judgements that need no API server: the one-line explanation of a refusal, which objects the
replace path takes, what counts as settled, what a diff shows, and how an API server that does not answer is named.
The engine against a real API server is tested in tests/integration (test_faults, test_deploy, test_unreachable_api).
"""

from __future__ import annotations

import json

import pytest
from ansible_collections.llmops.vllm.plugins.module_utils import kube_apply as ka
from ansible_collections.llmops.vllm.plugins.module_utils import kube_client as kc


def status_error(code: int, reason: str, message: str, kind: str, name: str, field: str | None = None) -> kc.ApiError:
    """An ApiError made the way the engine makes it: from the client's exception carrying the API server's Status."""

    class Raised(Exception):
        status = code
        body = json.dumps(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": message,
                "reason": reason,
                "details": {"name": name, "kind": kind, "causes": [{"field": field}] if field else []},
                "code": code,
            }
        ).encode()

    return kc._status_error(Raised())


def deployment(labels: dict) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "mistral", "namespace": "llm"},
        "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}}},
    }


def job(revision: str | None) -> dict:
    """A download Job as the role writes it: the hash of its pod template (here: the revision) annotated."""
    annotations = {ka.TEMPLATE_HASH: f"hash-of-{revision}"} if revision else {}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "model-download", "annotations": annotations}}


def test_conflict_names_the_object_the_other_manager_and_the_way_to_take_over():
    error = status_error(
        409, "Conflict", 'Apply failed with 1 conflict: conflict with "someone-else": .spec.replicas', "Deployment", "m"
    )
    refused = ka.explain(error, deployment({"model": "a"}))
    assert refused.reason == "conflict"
    assert str(refused).startswith("Deployment/mistral: Apply failed with 1 conflict")
    assert "someone-else" in str(refused) and "vllm_force_conflicts=true" in str(refused)


def test_the_volume_is_never_replaced_and_the_line_says_so():
    error = status_error(
        422,
        "Invalid",
        'PersistentVolume "fsx" is invalid: spec.persistentvolumesource: Forbidden: spec.persistentvolumesource is '
        "immutable after creation: field is immutable",
        "PersistentVolume",
        "fsx",
        "spec.persistentvolumesource",
    )
    refused = ka.explain(error, {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "fsx"}})
    assert refused.reason == "immutable"
    assert "PersistentVolume fsx cannot be changed in place (spec.persistentvolumesource is immutable)" in str(refused)
    assert "never the model volume" in str(refused)


def test_other_refusals_keep_the_api_servers_words_on_one_line():
    error = status_error(403, "Forbidden", 'deployments.apps is forbidden: User "ci"\ncannot patch', "Deployment", "m")
    refused = ka.explain(error, deployment({}))
    assert str(refused) == 'Deployment/mistral: deployments.apps is forbidden: User "ci" cannot patch'
    assert refused.reason == "api_error"


def test_an_error_body_that_is_not_a_status_is_cut_and_never_raw_bytes():
    class Raised(Exception):
        status, reason, body = 502, "Bad Gateway", b"\x00\xff" * 100_000

    error = kc._status_error(Raised())
    assert error.status == 502 and error.message == "Bad Gateway"


@pytest.mark.parametrize(
    ("want", "have", "field"),
    [
        (deployment({"model": "b"}), deployment({"model": "a"}), "spec.selector"),
        (deployment({"model": "a"}), deployment({"model": "a"}), None),
        (job("refs/pr/1"), job("main"), "spec.template"),
        (job("main"), job("main"), None),
        # A Job made before the hash annotation existed counts as changed.
        (job("main"), job(None), "spec.template"),
        # Anything else is never taken down the replace path.
        (
            {"kind": "PersistentVolumeClaim", "spec": {"a": 1}},
            {"kind": "PersistentVolumeClaim", "spec": {"a": 2}},
            None,
        ),
    ],
)
def test_the_replace_path_takes_changed_selectors_and_job_templates_only(want, have, field):
    assert ka.changed_immutable(want, have) == field


def test_settled_means_complete_jobs_and_rolled_out_available_deployments():
    complete = {"kind": "Job", "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    assert ka.settled(complete) and not ka.settled({"kind": "Job", "status": {}})
    rolled = {
        "kind": "Deployment",
        "metadata": {"generation": 2},
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": 2,
            "replicas": 1,
            "updatedReplicas": 1,
            "availableReplicas": 1,
            "conditions": [{"type": "Available", "status": "True"}],
        },
    }
    assert ka.settled(rolled)
    # A new generation the controller has not seen yet is on its way, whatever the old status says.
    assert not ka.settled({**rolled, "metadata": {"generation": 3}})
    assert ka.settled({"kind": "Service"})
    assert ka.settled({"kind": "PersistentVolumeClaim", "status": {"phase": "Bound"}})
    assert not ka.settled({"kind": "PersistentVolumeClaim", "status": {"phase": "Pending"}})


def test_a_diff_shows_the_changed_fields_and_never_a_secrets_values():
    before = {"kind": "Secret", "metadata": {"name": "hf", "resourceVersion": "1"}, "data": {"token": "b2xk"}}
    after = {"kind": "Secret", "metadata": {"name": "hf", "resourceVersion": "2"}, "data": {"token": "bmV3"}}
    old, new = ka._differing(ka._shown(before), ka._shown(after))
    assert old == {} and new == {}, "a Secret's values, changed or not, are never shown"
    assert ka.denoise(before) != ka.denoise(after), "but a changed value is still a change"

    before = {**deployment({"model": "a"}), "status": {"replicas": 1}, "metadata": {"name": "m", "generation": 1}}
    after = {**deployment({"model": "a"}), "status": {"replicas": 2}, "metadata": {"name": "m", "generation": 2}}
    after["spec"] = {**after["spec"], "replicas": 2}
    old, new = ka._differing(ka.denoise(before), ka.denoise(after))
    assert set(old) == {"spec"} and new["spec"]["replicas"] == 2


def unavailable(**kwargs) -> str:
    return ka.unavailable(kc.ApiUnavailable("Connection refused", **kwargs), "applying the model volume")


def test_an_api_server_that_does_not_answer_is_named_in_one_line():
    msg = unavailable(server="https://api.example:443", timeout=60)
    assert msg.startswith(
        "applying the model volume: no answer from the Kubernetes API server https://api.example:443 (unreachable"
    )
    assert "\n" not in msg
    msg = unavailable(timed_out=True, server=None, timeout=5)
    assert msg.startswith("applying the model volume: the Kubernetes API server gave no answer within 5 s")


def test_the_server_is_read_from_the_kubeconfig_as_kubernetes_core_reads_it(tmp_path, monkeypatch):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        json.dumps(
            {
                "clusters": [
                    {"name": "eks", "cluster": {"server": "https://api.example:443"}},
                    {"name": "dev", "cluster": {"server": "https://dev.example:6443"}},
                ],
                "contexts": [
                    {"name": "prod", "context": {"cluster": "eks", "user": "u"}},
                    {"name": "dev", "context": {"cluster": "dev", "user": "u"}},
                ],
                "current-context": "prod",
            }
        )
    )
    for name in ("K8S_AUTH_HOST", "K8S_AUTH_KUBECONFIG", "K8S_AUTH_CONTEXT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    assert kc.api_server() == "https://api.example:443"
    assert kc.api_server(context="dev") == "https://dev.example:6443"
    assert kc.api_server(host="https://given:1") == "https://given:1"
    assert kc.api_server(str(tmp_path / "missing")) is None


def test_an_api_server_that_keeps_answering_429_is_throttling_not_unreachable():
    """urllib3 retries 429 answers by their Retry-After and then gives up with a MaxRetryError: that is an API server
    asking to slow down (one that just started does for a few seconds), an ApiError 429, not "no answer"."""
    import urllib3

    class Dynamic:
        client = type(
            "C", (), {"configuration": type("Cfg", (), {"host": "https://api.example:6443"})(), "rest_client": None}
        )()

        def request(self, *args, **kwargs):
            raise urllib3.exceptions.MaxRetryError(
                None, "/api/v1/pods", urllib3.exceptions.ResponseError("too many 429 error responses")
            )

    kube = kc.Kube(Dynamic())
    with pytest.raises(kc.ApiError) as raised:
        kube.request("GET", "/api/v1/namespaces/default/pods")
    assert raised.value.status == 429 and "429 Too Many Requests" in raised.value.message
