# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

# Ansible plugins put their documentation before the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
name: vllm_labels
short_description: The labels of an object the collection manages
version_added: 0.3.0
description:
  - The labels C(app.kubernetes.io/name) (what the object is), C(app.kubernetes.io/instance) (which one, when given)
    and C(app.kubernetes.io/managed-by=llmops.vllm), spelled where every Python caller spells them too, so that
    templates and modules select the same objects.
options:
  _input:
    description: What the object is (C(model-volume), C(gpu-nodepool), C(vllm)); empty for the instance and
      managed-by labels alone (a selector).
    type: str
    required: true
  instance:
    description: Which one (a model's name).
    type: str
author:
  - llmops.vllm maintainers (@llmops-vllm)
"""

EXAMPLES = r"""
- name: Labels of the storage objects
  ansible.builtin.debug:
    msg: "{{ 'model-volume' | llmops.vllm.vllm_labels }}"
"""

RETURN = r"""
_value:
  description: Label key to value.
  type: dict
"""

from ansible_collections.llmops.vllm.plugins.module_utils.names import labels


def vllm_labels(name: str, instance: str | None = None) -> dict[str, str]:
    found = labels(name or "", instance)
    if not name:  # a selector: which instance, by whom
        found.pop("app.kubernetes.io/name")
    return found


class FilterModule:
    def filters(self):
        return {"vllm_labels": vllm_labels}
