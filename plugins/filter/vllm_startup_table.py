# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

# Ansible plugins put their documentation before the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
name: vllm_startup_table
short_description: The start-up timeline of several steps as one table, with the probes' times to first token
version_added: 0.2.0
description:
  - Joins the C(startup) reports of M(llmops.vllm.vllm_apply) steps (or results of
    M(llmops.vllm.vllm_startup_report)), puts each Deployment's time to first token into its pods' C(first_token)
    row, works out the slowest phase again and returns the table's lines.
options:
  _input:
    description: The reports, each with C(pods) and C(jobs).
    type: list
    elements: dict
    required: true
  first_token_ms:
    description: Time to first token per Deployment, in milliseconds (the probe's C(ttft_ms)).
    type: dict
    default: {}
author:
  - llmops.vllm maintainers (@llmops-vllm)
"""

EXAMPLES = r"""
- name: Show where the start-up time went
  ansible.builtin.debug:
    msg: "{{ applied.steps | selectattr('startup', 'defined') | map(attribute='startup')
      | llmops.vllm.vllm_startup_table({'mistral': probe.ttft_ms}) }}"
"""

RETURN = r"""
_value:
  description: One heading per pod, one line per phase, the slowest phase with its lever; the Jobs first.
  type: list
  elements: str
"""

from typing import Any

from ansible_collections.llmops.vllm.plugins.module_utils.startup_timeline import merged


def vllm_startup_table(reports: list[dict[str, Any]], first_token_ms: dict[str, Any] | None = None) -> list[str]:
    return merged(reports, first_token_ms)["table"]


class FilterModule:
    def filters(self):
        return {"vllm_startup_table": vllm_startup_table}
