# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

# Ansible plugins put their documentation before the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
name: vllm_storage_preflight
short_description: What FSx for Lustre would refuse in a dynamic StorageClass, one line per problem
version_added: 0.1.0
description:
  - Checks the storage role's dynamic settings against what the FSx API's C(CreateFileSystem) accepts, without a
    cluster or AWS credentials. The FSx CSI driver passes the StorageClass parameters to that API unchecked, so
    a refused value would otherwise only show as a claim left Pending after apply.
  - "Checks: the deployment type is C(SCRATCH_1), C(SCRATCH_2), C(PERSISTENT_1) or C(PERSISTENT_2); data
    compression is C(LZ4) or C(NONE); the throughput per TiB is one the deployment type offers on SSD
    (C(PERSISTENT_1) 50, 100, 200; C(PERSISTENT_2) 125, 250, 500, 1000; SCRATCH types take none); S3 import,
    export and auto import are only set for deployment types that take them at creation (not C(PERSISTENT_2),
    which links to S3 through data repository associations); paths are C(s3://) paths, an export path or an
    auto import policy comes with an import path, the export path is in the import bucket, and the auto import
    policy is C(NONE), C(NEW), C(NEW_CHANGED) or C(NEW_CHANGED_DELETED)."
  - Each line names the role variable and says how to fix it. An empty list means the settings are fine.
  - Sources are cited in C(plugins/plugin_utils/_fsx.py).
options:
  _input:
    description:
      - The storage role's variables by name (C(storage_deployment_type), C(storage_per_unit_storage_throughput),
        C(storage_data_compression_type), C(storage_s3_import_path), C(storage_s3_export_path),
        C(storage_auto_import_policy)); a missing one counts as empty.
    type: dict
    required: true
author:
  - llmops.vllm maintainers (@llmops-vllm)
"""

EXAMPLES = r"""
- name: Refuse StorageClass parameters FSx would refuse
  ansible.builtin.assert:
    that: storage_fsx_problems | length == 0
    fail_msg: "{{ storage_fsx_problems | join('; ') }}"
  vars:
    storage_fsx_problems: >-
      {{ {'storage_deployment_type': storage_deployment_type,
          'storage_per_unit_storage_throughput': storage_per_unit_storage_throughput,
          'storage_data_compression_type': storage_data_compression_type,
          'storage_s3_import_path': storage_s3_import_path,
          'storage_s3_export_path': storage_s3_export_path,
          'storage_auto_import_policy': storage_auto_import_policy} | llmops.vllm.vllm_storage_preflight }}
"""

RETURN = r"""
_value:
  description: One line per problem; empty when there is none.
  type: list
  elements: str
"""

from ansible_collections.llmops.vllm.plugins.plugin_utils._fsx import check_storage_class


class FilterModule:
    """llmops.vllm.vllm_storage_preflight"""

    def filters(self):
        return {"vllm_storage_preflight": check_storage_class}
