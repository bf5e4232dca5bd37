"""What the collection takes from kubernetes.core beyond its documented modules, checked against the installed
release, so that a kubernetes.core upgrade that changes it fails here and not in a user's run. galaxy.yml pins the
range (>=5.0.0,<7.0.0) these were read in."""

from __future__ import annotations

import inspect

from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.kubernetes.core.plugins.module_utils.k8s import client


def test_the_private_helpers_vllm_endpoint_probe_uses_keep_their_signatures():
    # vllm_endpoint_probe._service_target: the service proxy URL, TLS files and headers without discovery.
    assert list(inspect.signature(client._create_auth_spec).parameters) == ["module", "kwargs"]
    assert list(inspect.signature(client._create_configuration).parameters) == ["auth"]
    assert list(inspect.signature(client._create_headers).parameters) == ["module", "kwargs"]


def test_the_public_client_vllm_apply_uses_takes_the_auth_options_as_keywords():
    # kube_client.connect: get_api_client(**auth) with the options of AUTH_ARG_SPEC, as vllm_apply documents them
    # (its doc fragment is kubernetes.core's k8s_auth_options).
    assert list(inspect.signature(client.get_api_client).parameters) == ["module", "kwargs"]
    assert {"kubeconfig", "context", "host", "api_key", "validate_certs", "ca_cert"} <= set(AUTH_ARG_SPEC)
