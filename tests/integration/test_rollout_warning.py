"""A change that takes a serving endpoint down says so: on the kwok GPU nodes, the reference deployment (the
workshop's Recreate) redeployed with another engine argument warns, in --check and in the run, how long the endpoint
is down and that RollingUpdate has room; a redeploy that changes nothing, or one with RollingUpdate, does not."""

from __future__ import annotations

import re

import pytest
from cluster_helpers import run_playbook

pytestmark = pytest.mark.cluster

CHANGED = {"vllm_models": [{"name": "mistral", "labels": {"model": "mistral7b"}, "engine_args": {"max-num-seqs": 128}}]}
WARNING = re.compile(
    r"Deployment mistral \(strategy Recreate\) serves and this change replaces its pods all at once: the endpoint is "
    r"down (for about \S+ \(its pods' last start\)|until its new pods are Ready); (\d+) GPU\(s\) are free where it can "
    r"run, room for a second copy: strategy RollingUpdate \(vllm_server_strategy\) makes this change without a gap"
)


def warnings(proc) -> list[re.Match]:
    """The warning in a playbook's output (Ansible prints warnings on stderr)."""
    return list(WARNING.finditer(" ".join((proc.stdout + proc.stderr).split())))


def test_a_recreate_of_a_serving_deployment_warns_and_names_the_way_without_a_gap(kubeconfig, base_vars):
    first = run_playbook("deploy.yml", kubeconfig, base_vars, check=True)
    assert not warnings(first)  # nothing served before
    assert not warnings(run_playbook("deploy.yml", kubeconfig, base_vars, check=True))  # no change

    checked = run_playbook("deploy.yml", kubeconfig, {**base_vars, **CHANGED}, "--check", check=True)
    [found] = warnings(checked)
    assert found.group(1).startswith("for about") and int(found.group(2)) >= 1, found.group(0)
    applied = run_playbook("deploy.yml", kubeconfig, {**base_vars, **CHANGED}, check=True)
    assert len(warnings(applied)) == 1

    # The way without a gap: the same change back under RollingUpdate says nothing.
    rolling = {**base_vars, "vllm_server_strategy": "RollingUpdate"}
    assert not warnings(run_playbook("deploy.yml", kubeconfig, rolling, check=True))
    run_playbook("teardown.yml", kubeconfig, {**base_vars, "purge": True}, check=True)
