# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

# Ansible plugins put their documentation before the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
name: vllm_fleet_summary
short_description: One row per cluster of a fleet run - models, state, endpoints, time
version_added: 0.2.0
description:
  - For a play over several clusters (the inventory group C(vllm_clusters)), what each one ended with, from the
    variables the play registered on each host; a cluster that failed is named with the message of its failed
    step when a step registered one.
options:
  _input:
    description: Every host of the play (C(ansible_play_hosts_all)).
    type: list
    elements: str
    required: true
  hostvars:
    description: C(hostvars).
    type: dict
    required: true
  remaining:
    description: The hosts that did not fail (C(ansible_play_hosts)).
    type: list
    elements: str
    required: true
  registered:
    description: Names of the registered results that say whether a cluster changed or why it failed, in order.
    type: list
    elements: str
    default: [vllm_deploy_applied, vllm_server_applied, vllm_deploy_probed]
author:
  - llmops.vllm maintainers (@llmops-vllm)
"""

EXAMPLES = r"""
- name: Summarize the fleet
  ansible.builtin.debug:
    msg: "{{ (ansible_play_hosts_all | llmops.vllm.vllm_fleet_summary(hostvars, ansible_play_hosts)).table }}"
  run_once: true
"""

RETURN = r"""
_value:
  description: C(rows) (each C(cluster), C(models), C(state) V(ok), V(changed) or V(failed), C(message),
    C(endpoints), C(seconds)) and C(table), the rows as lines.
  type: dict
"""

from ansible_collections.llmops.vllm.plugins.plugin_utils._fleet_summary import vllm_fleet_summary


class FilterModule:
    def filters(self):
        return {"vllm_fleet_summary": vllm_fleet_summary}
