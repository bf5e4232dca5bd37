"""Fixtures for tests against a real Kubernetes API server.

The cluster is the local control plane from tests/cluster (etcd, kube-apiserver, controller-manager,
scheduler built from Go modules, kwok nodes), or whatever KUBECONFIG already reaches (kind, EKS).
"""

from __future__ import annotations

import os
import uuid

import pytest
from cluster_helpers import (  # noqa: F401  # pylint: disable=unused-import
    CLUSTER_SH,
    Kubectl,
    cluster_kubeconfig,
    reachable,
    real_node_unavailable,
    run_playbook,
)


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    """Path of a kubeconfig that reaches a real API server; starts the local control plane if needed."""
    path = cluster_kubeconfig()
    os.environ["KUBECONFIG"] = path
    return path


@pytest.fixture(scope="session")
def kubectl(kubeconfig: str) -> Kubectl:
    return Kubectl(kubeconfig)


@pytest.fixture()
def namespace(kubectl: Kubectl):
    """A fresh namespace for one test, deleted afterwards (without waiting)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "namespace", name)
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture()
def base_vars(namespace: str, kubectl: Kubectl):
    """The namespace and a PV name of its own (PVs are cluster-scoped); the PV is removed afterwards."""
    pv = f"fsx-{namespace}"
    yield {"vllm_namespace": namespace, "storage_pv_name": pv}
    kubectl.run("delete", "pv", pv, "--ignore-not-found", "--wait=false", check=False)


@pytest.fixture(scope="session")
def real_node(kubectl: Kubectl) -> str:
    """The cluster's real node (a kubelet and containerd: tests/cluster/node.sh), where pods really run; the tests
    that need one are skipped, saying why, where the machine cannot run it."""
    nodes = kubectl.json("get", "nodes", "-l", "llmops.test/node=real")["items"]
    if not nodes:
        pytest.skip(f"needs the real node: {real_node_unavailable()}")
    return nodes[0]["metadata"]["name"]
