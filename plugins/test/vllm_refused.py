# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

# Ansible plugins put their documentation before the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
name: vllm_refused
short_description: Whether a kubernetes.core.k8s apply registered with failed_when false was refused
version_added: 0.1.0
description:
  - The C(llmops.vllm.k8s_apply) role registers its apply with C(failed_when=false), so that a refusal is explained
    in one line (or the objects replaced) instead of printing the raw API error first. This test tells a refused
    apply (an error message and no objects) from one that ran or was skipped.
options:
  _input:
    description: The registered result of a C(kubernetes.core.k8s) task.
    type: dict
    required: true
author:
  - llmops.vllm maintainers (@llmops-vllm)
"""

EXAMPLES = r"""
- name: Explain the refusal
  ansible.builtin.fail:
    msg: "{{ (k8s_apply_result | llmops.vllm.vllm_apply_failure(objects)).msg }}"
  when: k8s_apply_result is llmops.vllm.vllm_refused
"""

RETURN = r"""
_value:
  description: True when the apply was refused.
  type: bool
"""

from collections.abc import Mapping
from typing import Any


def refused(registered: Mapping[str, Any]) -> bool:
    """True for a k8s result that ran and applied nothing (not skipped): an API error, or an exception such as an
    unreachable API server, which ansible-core 2.19 reports under ``failed_when`` without ``msg``
    (``failed_when_suppressed_exception``). A run that applied anything carries ``result``."""
    if not isinstance(registered, Mapping) or registered.get("skipped"):
        return False
    return bool(registered.get("failed_when_result") is False and "result" not in registered)


class TestModule:
    """llmops.vllm.vllm_refused"""

    def tests(self):
        return {"vllm_refused": refused}
