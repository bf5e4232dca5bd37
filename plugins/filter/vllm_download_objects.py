# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

# Ansible plugins put their documentation before the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
name: vllm_download_objects
short_description: The objects of the download step, built by the same code as vllm_model_stage's cluster mode
version_added: 0.1.0
description:
  - The staging engine's ConfigMap (the collection's C(model_stage) package, a key per file) followed by one Job
    per download from P(llmops.vllm.vllm_download_jobs#filter), each running
    C(python3 /opt/llmops/model_stage download) onto the model volume.
  - The Jobs are built by C(plugins/module_utils/model_download.py), which M(llmops.vllm.vllm_model_stage) also uses
    for its cluster-side mode, so the role and the module create the same Job for the same model.
  - Each Job carries C(llmops.vllm/pod-template-hash), a hash of its pod template, so that a changed template
    (new revision, files, image) is replaced exactly where it changed (see M(llmops.vllm.vllm_apply)).
options:
  _input:
    description: Downloads, from P(llmops.vllm.vllm_download_jobs#filter).
    type: list
    elements: dict
    required: true
  namespace:
    description: Namespace of the objects.
    type: str
    required: true
  pvc:
    description: Claim of the model volume.
    type: str
    required: true
  settings:
    description:
      - The model_download role's variables without their C(model_download_) prefix (C(image), C(image_pull_policy),
        C(hf_endpoint), C(hf_token_secret), C(hf_token_key), C(resources), C(tolerations), C(node_selector),
        C(backoff_limit), C(active_deadline), C(stage_configmap)); missing ones take the role's defaults.
    type: dict
    default: {}
author:
  - llmops.vllm maintainers (@llmops-vllm)
"""

EXAMPLES = r"""
- name: Build the download objects
  ansible.builtin.set_fact:
    objects: >-
      {{ specs | llmops.vllm.vllm_download_jobs('model-download')
         | llmops.vllm.vllm_download_objects('llm', 'fsx-models', {'image': 'python:3.11-slim'}) }}
"""

RETURN = r"""
_value:
  description: The ConfigMap, then the Jobs, in apply order.
  type: list
  elements: dict
"""

from collections.abc import Mapping
from typing import Any

from ansible_collections.llmops.vllm.plugins.module_utils.model_download import DEFAULTS, download_job
from ansible_collections.llmops.vllm.plugins.module_utils.stage_engine import stage_configmap


def download_objects(
    jobs: list[Mapping[str, Any]], namespace: str, pvc: str, settings: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The staging engine's ConfigMap and one Job per download."""
    chosen = {key: value for key, value in dict(settings or {}).items() if key in DEFAULTS}
    name = chosen.get("stage_configmap") or DEFAULTS["stage_configmap"]
    configmap = stage_configmap(name, namespace)
    return [configmap] + [download_job(job, namespace, pvc, **chosen) for job in jobs]


class FilterModule:
    """llmops.vllm.vllm_download_objects"""

    def filters(self):
        return {"vllm_download_objects": download_objects}
