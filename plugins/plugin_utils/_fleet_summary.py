# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# PRIVATE to the collection (controller side), behind the filter llmops.vllm.vllm_fleet_summary.

"""One row per cluster of a fleet run, and the table printed at the end of deploy."""

from __future__ import annotations

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
