# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

# Ansible plugins put their documentation before the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
name: vllm_preflight
short_description: What is wrong with resolved model specs, one line per problem
version_added: 0.1.0
description:
  - Checks specs from P(llmops.vllm.vllm_model_specs#filter) without a cluster, so that deploy.yml and
    render.yml refuse the same inputs before anything is applied or written.
  - "Checks: model names are DNS labels (they name the Deployment and the Service) and unique; the load strategy
    is known; C(tensor-parallel-size) times C(pipeline-parallel-size) (times C(data-parallel-size)) equals the GPUs
    requested (per node times C(nodes)); a model across nodes has GPUs and no autoscaler;
    every engine argument exists in the model's vLLM release and takes the value given (kind, type,
    choices; see C(plugins/plugin_utils/_engine_arg_check.py)); Mistral formats have their files; the
    RAM volume's C(sizeLimit) holds the model (C(ram_copy)); the memory limit covers the Memory volumes plus
    the server's working memory (see C(plugins/plugin_utils/_sizing.py)); sizes are valid quantities; labels are
    valid and differ between models; a downloaded model names its Hugging Face repository; models sharing a
    directory agree on what is in it; C(engine_args) leaves C(port), C(model) and C(load-format) to the spec."
  - Each line says what is wrong and how to fix it. An empty list means the specs are fine.
options:
  _input:
    description: Resolved model specs.
    type: list
    elements: dict
    required: true
  facts:
    description:
      - Model directory to the facts of its staging manifest (what the download Jobs printed), when known.
      - Adds the check that C(max-model-len) is not above what the model supports (C(max_position_embeddings) and
        its RoPE scaling, as vLLM derives it), which vLLM otherwise refuses only when the pod starts.
    type: dict
author:
  - llmops.vllm maintainers (@llmops-vllm)
"""

EXAMPLES = r"""
- name: Refuse bad model specs before anything is applied
  ansible.builtin.assert:
    that: vllm_server_problems | length == 0
    fail_msg: "{{ vllm_server_problems | join('; ') }}"
  vars:
    vllm_server_problems: "{{ vllm_server_specs | llmops.vllm.vllm_preflight }}"
"""

RETURN = r"""
_value:
  description: One line per problem; empty when there is none.
  type: list
  elements: str
"""

from ansible_collections.llmops.vllm.plugins.plugin_utils._preflight import preflight


class FilterModule:
    """llmops.vllm.vllm_preflight"""

    def filters(self):
        return {"vllm_preflight": preflight}
