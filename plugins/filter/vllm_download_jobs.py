# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

# Ansible plugins put their documentation before the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
name: vllm_download_jobs
short_description: One model download per model directory, from resolved model specs
version_added: 0.1.0
description:
  - Groups the specs from P(llmops.vllm.vllm_model_specs#filter) that download their weights by C(model_dir);
    servers that share a directory share one download (two Jobs writing one directory would race).
  - The first directory's Job is named O(name) (the reference deployment's C(model-download)); every other
    directory's Job is O(name) followed by the directory (C(model-download-llama-3-8b)), so appending a model to
    C(vllm_models) never renames an existing Job.
options:
  _input:
    description: Resolved model specs.
    type: list
    elements: dict
    required: true
  name:
    description: Name of the first directory's Job, and prefix of the others.
    type: str
    default: model-download
author:
  - llmops.vllm maintainers (@llmops-vllm)
"""

EXAMPLES = r"""
- name: The downloads deploy would run
  ansible.builtin.debug:
    msg: "{{ vllm_server_specs | llmops.vllm.vllm_download_jobs('model-download') | map(attribute='name') }}"
"""

RETURN = r"""
_value:
  description: One entry per directory, with C(name), C(model_dir), C(hf_repo), C(hf_revision), C(files), C(models).
  type: list
  elements: dict
"""

from ansible_collections.llmops.vllm.plugins.plugin_utils._download_jobs import download_jobs


class FilterModule:
    """llmops.vllm.vllm_download_jobs"""

    def filters(self):
        return {"vllm_download_jobs": download_jobs}
