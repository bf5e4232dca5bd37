# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

# Ansible plugins put their documentation before the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
name: vllm_apply_diff
short_description: What a kubernetes.core.k8s apply of several objects changed, object by object
version_added: 0.1.0
description:
  - C(kubernetes.core.k8s) with a list of objects nests each object's C(diff) in C(result.results), where the
    C(--diff) output does not show it. This filter lifts the changed ones out, so that a role can show them.
  - Works on the registered result of one object too.
options:
  _input:
    description: The registered result of a C(kubernetes.core.k8s) task.
    type: dict
    required: true
author:
  - llmops.vllm maintainers (@llmops-vllm)
"""

EXAMPLES = r"""
- name: Show what the apply changes
  ansible.builtin.debug:
    msg: "{{ vllm_server_applied | llmops.vllm.vllm_apply_diff }}"
  when: ansible_diff_mode and vllm_server_applied is changed
"""

RETURN = r"""
_value:
  description:
    - One entry per changed object, with C(object) (C(Kind/name)) and C(action) (C(create) or C(update)); an update
      also has C(before) and C(after), the fields that differ.
  type: list
  elements: dict
"""

from collections.abc import Mapping
from typing import Any


def _name(result: Mapping[str, Any]) -> str:
    obj = result.get("result") or {}
    kind = obj.get("kind", "?")
    meta = obj.get("metadata") or {}
    return f"{kind}/{meta.get('name', '?')}"


# Fields the API server changes on every write, or the controllers on their own: not the user's change.
_NOISE = {"status": None, "metadata": {"generation", "resourceVersion", "managedFields"}}


def _denoise(side: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in (side or {}).items():
        drop = _NOISE.get(key, ())
        if key in _NOISE and drop is None:
            continue
        if drop and isinstance(value, Mapping):
            value = {k: v for k, v in value.items() if k not in drop}
            if not value:
                continue
        out[key] = value
    return out


def apply_diff(registered: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The changed objects of a registered k8s result, each with what differs before and after."""
    nested = (
        ((registered.get("result") or {}).get("results")) if isinstance(registered.get("result"), Mapping) else None
    )
    results = nested if isinstance(nested, list) else [registered]
    out = []
    for result in results:
        if not result.get("changed"):
            continue
        diff = result.get("diff") or {}
        if result.get("method") == "create" or not diff.get("before"):
            # A new object in full is what render.yml writes; name it only.
            out.append({"object": _name(result), "action": "create"})
            continue
        before, after = _denoise(diff["before"]), _denoise(diff.get("after") or {})
        if before or after:
            out.append({"object": _name(result), "action": "update", "before": before, "after": after})
    return out


class FilterModule:
    """llmops.vllm.vllm_apply_diff"""

    def filters(self):
        return {"vllm_apply_diff": apply_diff}
