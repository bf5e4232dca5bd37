# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

# Ansible plugins put their documentation before the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
name: vllm_download_facts
short_description: The facts of each downloaded model, by model directory
version_added: 0.1.0
description:
  - Pairs the downloads from P(llmops.vllm.vllm_download_jobs#filter) with the manifests that
    M(llmops.vllm.vllm_wait) read from the finished Jobs' logs, and returns each model directory's facts
    (C(max_position_embeddings), C(rope_scaling), sizes, dtype), for the servers' checks.
  - A directory whose manifest is unknown (its Job finished in an earlier run, or its log is gone) is left out.
options:
  _input:
    description: The downloads, from P(llmops.vllm.vllm_download_jobs#filter).
    type: list
    elements: dict
    required: true
  manifests:
    description: Job name to manifest, M(llmops.vllm.vllm_wait)'s RV(llmops.vllm.vllm_wait#module:manifests).
    type: dict
    required: true
author:
  - llmops.vllm maintainers (@llmops-vllm)
"""

EXAMPLES = r"""
- name: The facts of the models the download Jobs just staged
  ansible.builtin.set_fact:
    model_download_facts: "{{ model_download_jobs | llmops.vllm.vllm_download_facts(wait_result.manifests) }}"
"""

RETURN = r"""
_value:
  description: Model directory to the facts of its manifest.
  type: dict
"""

from ansible_collections.llmops.vllm.plugins.plugin_utils._download_facts import download_facts


class FilterModule:
    """llmops.vllm.vllm_download_facts"""

    def filters(self):
        return {"vllm_download_facts": download_facts}
