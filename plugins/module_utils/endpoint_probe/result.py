# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""What a probe returns: one entry per check (passed, failed or not run) and the result that gathers them with
what the checks found, naming the first failing check and what to do about it."""

from __future__ import annotations

import typing as t

from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.errors import ProbeError
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.session import _Findings
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.target import Target


def _passed(measured: dict[str, t.Any]) -> dict[str, t.Any]:
    return dict({"passed": True, "reason": None}, **measured)


def _failed(err: ProbeError) -> dict[str, t.Any]:
    return dict({"passed": False, "reason": err.reason, "msg": err.message}, **err.details)


def _not_run(check: str, reason: str | None) -> dict[str, t.Any]:
    return {"passed": False, "reason": "not_run", "msg": f"not run: {check} failed ({reason})"}


def _result(target: Target, found: _Findings, elapsed_ms: float) -> dict[str, t.Any]:
    """The probe's result; see :func:`probe` for its keys."""
    failed = [(name, entry) for name, entry in found.checks.items() if not entry["passed"]]
    first = next(((n, e) for n, e in failed if e["reason"] != "not_run"), failed[0] if failed else None)
    result: dict[str, t.Any] = {
        "url": target.base_url,
        "service": target.service,
        "model": found.model,
        "models": found.models,
        "version": found.version,
        "waited_ms": found.waited_ms,
        "ttft_ms": found.ttft_ms,
        "inter_token_ms": found.inter_token_ms,
        "load": found.load,
        "checks": found.checks,
        "elapsed_ms": elapsed_ms,
        "failed": first is not None,
    }
    if first is not None:
        name, entry = first
        result.update(failed_check=name, reason=entry["reason"], msg=f"{name}: {entry['msg']}")
    return result
