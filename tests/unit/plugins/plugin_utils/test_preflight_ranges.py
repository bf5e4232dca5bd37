"""Values that go into Kubernetes fields are refused in one line before anything is applied (the API server would
refuse the Deployment only after the namespace and the storage had been applied, and render.yml would write them)."""

from __future__ import annotations

import pytest
from ansible_collections.llmops.vllm.plugins.filter.vllm_preflight import preflight
from ansible_collections.llmops.vllm.tests.unit.plugins.plugin_utils.test_engine_arg_check import specs


@pytest.mark.parametrize(
    "entry, line",
    [
        ({"gpus": -1}, "model mistral: resources.requests.nvidia.com/gpu -1 must not be negative"),
        ({"port": 70000}, "model mistral: port 70000 must be a whole number from 1 to 65535"),
        ({"port": 0}, "model mistral: port 0 must be a whole number from 1 to 65535"),
        ({"port": "http"}, "model mistral: port 'http' must be a whole number from 1 to 65535"),
        ({"gpus": 1.5}, "model mistral: resources.requests.nvidia.com/gpu 1.5 must be a whole number of GPUs"),
        (
            {"resources": {"limits": {"cpu": "lots", "memory": "32Gi"}}},
            "model mistral: resources.limits.cpu 'lots' is not a quantity (like 4, 500m, 32Gi)",
        ),
        ({"startup_timeout": 0}, "model mistral: startup_timeout 0 must be a whole number of 1 or more"),
        ({"stage_workers": 0}, "model mistral: stage_workers 0 must be a whole number of 1 or more"),
    ],
)
def test_a_value_kubernetes_would_refuse_is_refused_first(entry, line):
    assert line in preflight(specs(**entry))


def test_the_defaults_pass():
    assert preflight(specs()) == []
