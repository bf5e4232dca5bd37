# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The load test (``load``): N streamed chat completions at concurrency C, and their statistics (percentiles of
latency, time to first token and per output token; throughput; errors by reason)."""

from __future__ import annotations

import math
import time
import typing as t
from concurrent.futures import ThreadPoolExecutor, as_completed

from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.checks.stream import stream_chat
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.errors import ProbeError
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.session import _Session
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.settings import LoadSettings
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.transport import _ms


def percentile(values: t.Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between closest ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    value = ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
    return round(value, 1)


def _summary(values: t.Sequence[float], quantiles: t.Sequence[int] = (50, 95, 99)) -> dict[str, float | None]:
    return {f"p{q}": percentile(values, q) for q in quantiles}


def check_load(session: _Session) -> dict[str, t.Any]:
    """Stream ``requests`` chat completions, ``concurrency`` at a time; fails past ``max_errors`` failed ones."""
    load = session.settings.load or LoadSettings()
    requests = max(load.requests, 1)
    measured: list[dict[str, t.Any]] = []
    errors: list[ProbeError] = []
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, min(load.concurrency, requests))) as pool:
        futures = [pool.submit(stream_chat, session, load.max_tokens) for _index in range(requests)]
        for future in as_completed(futures):
            try:
                measured.append(future.result())
            except ProbeError as err:
                errors.append(err)
    seconds = time.perf_counter() - start
    tokens = sum(m["completion_tokens"] for m in measured)
    by_reason: dict[str, int] = {}
    for err in errors:
        by_reason[err.reason] = by_reason.get(err.reason, 0) + 1
    stats = {
        "requests": requests,
        "concurrency": load.concurrency,
        "max_tokens": load.max_tokens,
        "succeeded": len(measured),
        "errors": len(errors),
        "errors_by_reason": by_reason,
        "first_error": errors[0].message if errors else None,
        "duration_ms": _ms(seconds),
        "latency_ms": _summary([m["latency_ms"] for m in measured]),
        "ttft_ms": _summary([m["ttft_ms"] for m in measured]),
        "inter_token_ms": _summary([m["inter_token_ms"] for m in measured if m["inter_token_ms"] is not None]),
        "output_tokens": tokens,
        "output_tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else None,
        "requests_per_s": round(len(measured) / seconds, 2) if seconds > 0 else None,
    }
    session.found.load = stats
    summary = {
        "latency_ms": stats["latency_ms"]["p50"],
        "succeeded": len(measured),
        "errors": len(errors),
        "output_tokens_per_s": stats["output_tokens_per_s"],
    }
    if len(errors) > load.max_errors or not measured:
        raise ProbeError(
            errors[0].reason if errors else "http_error",
            f"{len(errors)} of {requests} requests failed (max_errors {load.max_errors}); first: "
            + (errors[0].message if errors else "none"),
            **summary,
        )
    return summary
