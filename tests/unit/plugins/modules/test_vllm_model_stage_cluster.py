"""llmops.vllm.vllm_model_stage's cluster-side mode, refused before it asks any cluster: `ansible localhost -m ...`.

The API server these runs are pointed at does not exist (127.0.0.1:9, nothing listens there), so an answer
other than "cannot reach the Kubernetes API" proves the options were judged before any connection.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible_collections.llmops.vllm.tests import model_factory as mf
from ansible_collections.llmops.vllm.tests.ansible_cli import run_module

MODULE = "llmops.vllm.vllm_model_stage"
CLUSTER = {
    "pvc": "fsx-models",
    "namespace": "vllm",
    "path": "mistral-7b-v0-3",
    "hf_repo": "mistralai/Mistral-7B-Instruct-v0.3",
}


def ansible(args: dict, *flags: str) -> dict:
    """Run the module ad hoc against localhost, with an API server that is not there; its result."""
    env = {"K8S_AUTH_HOST": "https://127.0.0.1:9", "K8S_AUTH_VALIDATE_CERTS": "false"}
    return run_module(MODULE, args, *flags, env=env, unset=("PYTHONPATH", "KUBECONFIG"), check_rc=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({**CLUSTER, "src": "/fsx/models/mistral-7b-v0-3"}, "parameters are mutually exclusive: src|pvc"),
        ({**CLUSTER, "dest": "/mnt/nvme/mistral"}, "parameters are mutually exclusive: pvc|dest"),
        ({**CLUSTER, "workers": 4}, "parameters are mutually exclusive: pvc|workers"),
        ({"src": "/fsx/models/mistral-7b-v0-3", "hf_repo": "mistralai/Mistral-7B-Instruct-v0.3"}, "src|hf_repo"),
        ({"namespace": "vllm"}, "one of the following is required: src, pvc"),
        ({k: v for k, v in CLUSTER.items() if k != "namespace"}, "namespace is required with pvc"),
        ({**CLUSTER, "path": "../../etc"}, "path: '../../etc' must name a directory inside the volume"),
        ({**CLUSTER, "hf_repo": "mistral"}, "hf_repo: 'mistral' is not a Hugging Face repo id (owner/name)"),
        ({**CLUSTER, "job_name": "Model_Download"}, "job_name: 'Model_Download' is not a valid Job name"),
    ],
)
def test_bad_input_is_refused_in_one_line_before_any_connection(args: dict, message: str) -> None:
    result = ansible(args)
    assert result.get("failed") is True
    assert message in result["msg"], result["msg"]
    assert "\n" not in result["msg"]
    assert "cannot reach" not in result["msg"]


def test_good_input_goes_on_to_the_cluster() -> None:
    """The counter-check of the test above: valid options do get as far as the (absent) API server."""
    result = ansible(CLUSTER, "--check")
    assert result.get("failed") is True
    assert result["reason"] == "api_unreachable", result["msg"]
    assert "\n" not in result["msg"]


def test_namespace_from_module_defaults_does_not_disturb_local_mode(tmp_path: Path) -> None:
    """module_defaults of group/llmops.vllm.vllm may hand every module a namespace and a kubeconfig."""
    model = mf.make_mistral_model(tmp_path / "mistral")
    result = ansible({"src": str(model["path"]), "namespace": "vllm", "kubeconfig": "/nonexistent/kubeconfig"})
    assert result.get("failed") is not True, result.get("msg")
    assert result["manifest"]["format"] == "mistral"
