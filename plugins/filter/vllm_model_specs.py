# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

# Ansible plugins put their documentation before the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
name: vllm_model_specs
short_description: Resolve vllm_models entries against the defaults into complete model specs
version_added: 0.1.0
description:
  - Every key an entry of O(_input) leaves out comes from O(defaults) (the C(vllm_server) role passes its
    C(vllm_server_*) variables). C(engine_args) and C(env) are merged over the defaults key by key (V(null)
    removes one); every other key replaces the default.
  - Finds the vLLM release each model runs (C(vllm_version), else the image tag) and adapts the default engine
    arguments and environment, written for the seed's vLLM 0.9.0, to that release (see
    C(plugins/plugin_utils/_vllm_release.py)); C(warnings) lists what the user should know (a release that cannot
    be told from the image, variables the release ignores).
  - Adds what the templates need so that they stay plain, for example C(args) (the rendered vLLM argument
    list, through P(llmops.vllm.vllm_engine_args#filter)), C(model_path), C(selector), C(gpus) and the byte
    counts the preflight checks.
  - Never fails on values the preflight rejects (P(llmops.vllm.vllm_preflight#filter) reports those in one line
    each); fails only when the input is not a list of mappings with a C(name).
options:
  _input:
    description: The C(vllm_models) list.
    type: list
    elements: dict
    required: true
  defaults:
    description: Value of every per-model key an entry leaves out.
    type: dict
    required: true
author:
  - llmops.vllm maintainers (@llmops-vllm)
"""

EXAMPLES = r"""
- name: Resolve the models once
  ansible.builtin.set_fact:
    vllm_server_specs: "{{ vllm_models | llmops.vllm.vllm_model_specs(vllm_server_model_defaults) }}"
"""

RETURN = r"""
_value:
  description: One complete spec per entry, in order.
  type: list
  elements: dict
"""

from ansible_collections.llmops.vllm.plugins.plugin_utils._model_specs import model_specs


class FilterModule:
    """llmops.vllm.vllm_model_specs"""

    def filters(self):
        return {"vllm_model_specs": model_specs}
