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

from collections.abc import Mapping
from typing import Any

DEFAULT_REGISTERED = ("vllm_deploy_applied", "vllm_server_applied", "vllm_deploy_probed")


def _row(host: str, hv: Mapping[str, Any], failed: bool, registered: list[str]) -> dict[str, Any]:
    results = [hv.get(name) for name in registered if isinstance(hv.get(name), Mapping)]
    specs = hv.get("vllm_server_specs") or []
    namespace = hv.get("vllm_namespace", "default")
    message = next((str(r.get("msg")) for r in results if r.get("failed") and r.get("msg")), "")
    seconds = hv.get("vllm_fleet_seconds")
    return {
        "cluster": host,
        "models": [str(s.get("name")) for s in specs],
        "state": "failed" if failed else ("changed" if any(r.get("changed") for r in results) else "ok"),
        "message": message if failed else "",
        "endpoints": [] if failed else [f"{namespace}/{s.get('name')}:{s.get('port')}" for s in specs],
        "seconds": None if failed or seconds is None else round(float(seconds), 1),
    }


def vllm_fleet_summary(
    hosts: list[str], hostvars: Mapping[str, Any], remaining: list[str], registered: list[str] | None = None
) -> dict[str, Any]:
    names = list(registered or DEFAULT_REGISTERED)
    rows = [_row(h, hostvars[h], h not in remaining, names) for h in hosts]
    width = max([len(r["cluster"]) for r in rows] + [7])
    table = [f"{'cluster':<{width}}  {'state':<7}  {'time':>7}  models -> endpoints"]
    for r in rows:
        took = "-" if r["seconds"] is None else f"{r['seconds']:.1f}s"
        what = ", ".join(r["endpoints"]) if r["endpoints"] else (r["message"] or "see the error above")
        table.append(f"{r['cluster']:<{width}}  {r['state']:<7}  {took:>7}  {', '.join(r['models'])} -> {what}")
    return {"rows": rows, "table": table}


class FilterModule:
    def filters(self):
        return {"vllm_fleet_summary": vllm_fleet_summary}
