"""The names written into the cluster are owned by plugins/module_utils/names.py; the few templates that spell a
label themselves (a collection filter there would cost each task ~0.07 s) spell exactly those."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ansible_collections.llmops.vllm.plugins.module_utils import names

ROLES = Path(__file__).resolve().parents[4] / "roles"


@pytest.mark.parametrize(("role", "name"), [("storage", "model-volume"), ("gpu_nodepool", "gpu-nodepool")])
def test_templates_spell_the_labels_of_names_py(role: str, name: str) -> None:
    text = (ROLES / role / "templates" / "objects.yml.j2").read_text()
    spelled = {names.NAME_LABEL: name, names.MANAGED_BY_LABEL: names.MANAGED_BY}
    assert "{% set labels = " + repr(spelled) + " %}" in text


def test_the_token_secret_is_labelled_as_names_py_says() -> None:
    tasks = yaml.safe_load((ROLES / "model_download" / "tasks" / "secret.yml").read_text())
    objects = [
        o for task in tasks for o in (task.get("llmops.vllm.vllm_apply") or {}).get("steps", [{}])[0].get("objects", [])
    ]
    secret = next(o for o in objects if o["kind"] == "Secret")
    assert secret["metadata"]["labels"] == {names.MANAGED_BY_LABEL: names.MANAGED_BY}
