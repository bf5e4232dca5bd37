# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

# Ansible plugins put their documentation before the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
name: vllm_unsettled
short_description: The Jobs and Deployments of an apply that are not yet done
version_added: 0.1.0
description:
  - Reads the objects a C(kubernetes.core.k8s) apply returned (with their C(status)) and names the Jobs that are not
    Complete and the Deployments not yet rolled out and Available (status not observed for the current generation,
    fewer updated or available replicas than wanted).
  - The roles wait (C(llmops.vllm.vllm_wait)) only when this is not empty, so that a re-deploy of an unchanged,
    settled deployment starts no waiting module at all.
options:
  _input:
    description: The registered result of a C(kubernetes.core.k8s) task.
    type: dict
    required: true
author:
  - llmops.vllm maintainers (@llmops-vllm)
"""

EXAMPLES = r"""
- name: Wait only when something is still on its way
  llmops.vllm.vllm_wait:
    namespace: "{{ vllm_namespace }}"
    deployments: "{{ vllm_server_specs | map(attribute='name') | list }}"
  when: vllm_server_applied | llmops.vllm.vllm_unsettled | length > 0
"""

RETURN = r"""
_value:
  description: C(Kind/name) of each object still on its way.
  type: list
  elements: str
"""

from collections.abc import Mapping
from typing import Any


def _condition(obj: Mapping[str, Any], kind: str) -> str | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond.get("status")
    return None


def _settled(obj: Mapping[str, Any]) -> bool:
    kind = obj.get("kind")
    status = obj.get("status") or {}
    if kind == "Job":
        return _condition(obj, "Complete") == "True"
    if kind == "Deployment":
        wanted = (obj.get("spec") or {}).get("replicas", 1)
        generation = (obj.get("metadata") or {}).get("generation")
        return (
            generation is not None
            and status.get("observedGeneration", 0) >= generation
            and _condition(obj, "Available") == "True"
            and status.get("updatedReplicas", 0) >= wanted
            and status.get("availableReplicas", 0) >= wanted
            and status.get("replicas", 0) == status.get("updatedReplicas", 0)
        )
    return True


def unsettled(registered: Mapping[str, Any]) -> list[str]:
    """``Kind/name`` of the Jobs and Deployments in a registered k8s result that are not done yet."""
    result = registered.get("result")
    nested = result.get("results") if isinstance(result, Mapping) else None
    objects = [r.get("result") or {} for r in nested] if isinstance(nested, list) else [result or {}]
    return [
        f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
        for obj in objects
        if obj.get("kind") in ("Job", "Deployment") and not _settled(obj)
    ]


class FilterModule:
    """llmops.vllm.vllm_unsettled"""

    def filters(self):
        return {"vllm_unsettled": unsettled}
