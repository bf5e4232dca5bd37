# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

# Ansible plugins put their documentation before the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
name: vllm_manifest_yaml
short_description: Kubernetes objects as one YAML stream, the way people write manifests
version_added: 0.1.0
description:
  - Dumps a list of objects as C(---)-separated YAML documents, keys in the order the templates wrote them,
    block-style, and multi-line strings (the staging engine in its ConfigMap) as literal blocks, so that a change
    shows as a line diff in review.
  - What P(llmops.vllm.vllm_manifest_yaml#filter) writes reads back (C(from_yaml_all)) as the same objects.
options:
  _input:
    description: The objects.
    type: list
    elements: dict
    required: true
author:
  - llmops.vllm maintainers (@llmops-vllm)
"""

EXAMPLES = r"""
- name: Write the server objects
  ansible.builtin.copy:
    dest: /tmp/render/30-vllm-server.yml
    content: "{{ vllm_server_objects | llmops.vllm.vllm_manifest_yaml }}"
    mode: "0644"
"""

RETURN = r"""
_value:
  description: The YAML stream; empty for no objects.
  type: str
"""

from ansible_collections.llmops.vllm.plugins.plugin_utils._manifest_yaml import manifest_yaml


class FilterModule:
    """llmops.vllm.vllm_manifest_yaml"""

    def filters(self):
        return {"vllm_manifest_yaml": manifest_yaml}
