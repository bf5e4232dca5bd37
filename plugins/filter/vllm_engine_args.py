# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

# Ansible plugins put their documentation before the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
name: vllm_engine_args
short_description: Render the vLLM server's argument list from a mapping of engine arguments
version_added: 0.1.0
description:
  - The one place the collection turns engine arguments into C(vllm serve) / C(api_server) flags.
  - Each key is a flag name without the leading dashes, spelt as vLLM accepts it (C(max-model-len) or
    C(gpu_memory_utilization)); the spelling is kept, so the output matches a hand-written manifest.
  - V(true) gives a bare flag (C(--enforce-eager)); V(false) and V(null) leave the flag out (the model specs
    render V(false) as C(--no-<flag>) where the vLLM release has that form); a mapping is
    passed as compact JSON (C(--model-loader-extra-config={"concurrency":16})); a list gives the flag followed
    by one argument per item (C(nargs='+') flags); anything else gives C(--flag=value).
  - Mapping order is kept. Write decimals as strings where the exact text matters (V("0.90"), not V(0.90)).
options:
  _input:
    description: Engine arguments, flag name to value.
    type: dict
    required: true
author:
  - llmops.vllm maintainers (@llmops-vllm)
"""

EXAMPLES = r"""
- name: The reference deployment's arguments
  ansible.builtin.debug:
    msg: "{{ {'port': 8080, 'model': '/ram-models/mistral-7b-v0-3', 'enforce-eager': true,
              'gpu_memory_utilization': '0.90'} | llmops.vllm.vllm_engine_args }}"
  # ['--port=8080', '--model=/ram-models/mistral-7b-v0-3', '--enforce-eager', '--gpu_memory_utilization=0.90']
"""

RETURN = r"""
_value:
  description: The arguments, in order.
  type: list
  elements: str
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.llmops.vllm.plugins.plugin_utils._engine_args import engine_arg_list


def engine_args_filter(engine_args):
    """The argument list for a mapping of engine arguments (see DOCUMENTATION)."""
    try:
        return engine_arg_list(engine_args)
    except TypeError as exc:
        raise AnsibleFilterError(f"vllm_engine_args: {exc}") from exc


class FilterModule:
    """llmops.vllm.vllm_engine_args"""

    def filters(self):
        return {"vllm_engine_args": engine_args_filter}
