# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The steps of a model load (the vLLM container's start -> the pod's Ready), from the moments vLLM logs
(vllm_log.py), each with the lever that shortens it; and whether a RAM copy paid for itself. Pure.

The steps follow one another: each ends at the moment its line was logged and the next starts there, so they add up
to the container's start -> Ready. A step whose line is missing says so, and the next step that is known takes its
time (saying with what): nothing is estimated.
"""

from __future__ import annotations

import datetime as dt
import typing as t

from ansible_collections.llmops.vllm.plugins.module_utils._timeline_rows import format_seconds, row, unknown
from ansible_collections.llmops.vllm.plugins.module_utils.model_stage import format_si_bytes
from ansible_collections.llmops.vllm.plugins.module_utils.vllm_log import read

STEPS = ("imports", "engine_start", "device_setup", "weights", "kv_cache", "warmup", "server_start", "readiness")
TITLES = {
    "imports": "imports",
    "engine_start": "engine",
    "device_setup": "devices",
    "weights": "weights",
    "kv_cache": "kv cache",
    "warmup": "warm-up",
    "server_start": "server",
    "readiness": "readiness",
}
# The line that ends each step, as the row names it when it is missing.
_ENDS = {
    "imports": "first vLLM",
    "engine_start": "'Initializing a V1 LLM engine'",
    "device_setup": "'Model loading took'",
    "weights": "'Model loading took'",
    "kv_cache": "'Available KV cache memory'",
    "warmup": "'init engine (profile, create kv cache, warmup model) took'",
    "server_start": "'Application startup complete.'",
}
# The vllm_server role's startupProbe and readinessProbe (roles/vllm_server/templates/objects.yml.j2).
PROBE_PERIOD_S = 10
_CLOCK_SLACK_S = 60  # a first line this long before the container's start is another clock (TZ), not a race


def _fig(events: t.Mapping[str, t.Any], name: str, index: int = 0) -> float | None:
    figures = (events.get(name) or {}).get("figures") or []
    return figures[index] if len(figures) > index else None


def _ends(log: t.Mapping[str, t.Any], ready: dt.datetime | None) -> dict[str, dt.datetime | None]:
    ev = log["events"]
    at = {name: (ev.get(name) or {}).get("at") for name in ev}
    loaded, took = at.get("model_loaded"), _fig(ev, "model_loaded", 1)
    if loaded is None and at.get("weights_read"):  # a loader without the runner's line: the read alone
        loaded, took = at["weights_read"], _fig(ev, "weights_read")
    return {
        "imports": at.get("banner") or log["first"],
        "engine_start": at.get("engine"),
        "device_setup": loaded - dt.timedelta(seconds=took) if loaded and took is not None else None,
        "weights": loaded,
        "kv_cache": at.get("kv_cache") or at.get("kv_tokens"),
        "warmup": at.get("initialized"),
        "server_start": at.get("serving"),
        "readiness": ready,
    }


def _detail(name: str, log: t.Mapping[str, t.Any], seconds: float) -> tuple[str, dict[str, t.Any]]:
    ev, extra = log["events"], {}
    if name == "imports":
        return "container start to vLLM's first line: Python start-up and imports", extra
    if name == "engine_start":
        said = f"vLLM {log['version'] or '?'}: config resolution and the engine process's start"
        banner, handoff = (ev.get("banner") or {}).get("at"), log["handoff"]
        if banner and handoff and handoff > banner:
            said += f" (the API server's config done after {format_seconds((handoff - banner).total_seconds())})"
        return said, extra
    if name == "device_setup":
        return "the engine's CUDA, distributed and attention set-up before the weights", extra
    if name == "weights":
        gib, read_s = _fig(ev, "model_loaded"), _fig(ev, "weights_read")
        extra.update(gib=gib, read_seconds=read_s)
        said = f"{gib} GiB onto the GPU" if gib is not None else "the model onto the GPU"
        if read_s is None:
            return said + " (no 'Loading weights took' line: the runai_streamer loader writes none)", extra
        return said + f", {format_seconds(read_s)} of it reading the weights", extra
    if name == "kv_cache":
        compiled, gib = _fig(ev, "compiled"), _fig(ev, "kv_cache")
        extra.update(compile_seconds=compiled)
        said = "profiling run and KV-cache allocation" + (f" ({gib} GiB for the KV cache)" if gib is not None else "")
        return said + (f", torch.compile {format_seconds(compiled)}" if compiled is not None else ""), extra
    if name == "warmup":
        graphs = _fig(ev, "graphs")
        extra.update(graph_seconds=graphs, jit_seconds=max(0.0, seconds - (graphs or 0.0)))
        said = "warm-up" + (f", CUDA graphs captured in {format_seconds(graphs)}" if graphs is not None else "")
        if log["eager"]:
            said += " (--enforce-eager: no CUDA graphs; kernel JIT and autotuning)"
        return said, extra
    if name == "server_start":
        return "the engine ready to uvicorn's 'Application startup complete.'", extra
    return f"to the pod's Ready condition (its probes check every {PROBE_PERIOD_S} s)", extra


def steps(
    lines: t.Sequence[str] | str | None, started: dt.datetime, ready: dt.datetime | None
) -> tuple[list[dict[str, t.Any]], str]:
    """The steps of a model load from the vllm container's log (``lines``; a str: why it cannot be read), and why
    there are none ("" when there are)."""
    if lines is None or isinstance(lines, str):
        return [], f"its log cannot be read: {lines}" if lines else "its log was not read"
    log = read(lines, started)
    if not log["events"]:
        return [], "its log holds no vLLM start-up line (rotated away, or not a vLLM server)"
    ends = _ends(log, ready)
    first = ends["imports"]
    if log["clock"] == "vllm" and first and (first - started).total_seconds() < -_CLOCK_SLACK_S:
        return [], "its log's clock is not UTC (TZ set in the container?); read it with the kubelet's timestamps"
    rows, since, skipped = [], started, []
    for name in STEPS:
        end = ends[name]
        if end is None:
            why = "not Ready yet" if name == "readiness" else f"no {_ENDS[name]} line in the log"
            rows.append(unknown(name, why))
            skipped.append(TITLES[name])
            continue
        end = max(end, since)  # the log's whole seconds can put a derived moment before the one logged ahead of it
        seconds = (end - since).total_seconds()
        detail, extra = _detail(name, log, seconds)
        if skipped:
            detail += f" (with {', '.join(skipped)}: not logged)"
            skipped = []
        rows.append(row(name, since, end, seconds=seconds, detail=detail, **extra))
        since = end
    return rows, ""


def ram_copy(
    staging: t.Mapping[str, t.Any], weights: t.Mapping[str, t.Any] | None, direct_read_seconds: float | None = None
) -> dict[str, t.Any] | None:
    """Whether staging the model in RAM paid: the copy (the staging row) against what reading the weights from RAM
    saved over reading them from the source. Reading from the source directly takes ``direct_read_seconds`` when a
    direct start measured it, else at least the source's bytes at the staging's read rate and at least the RAM read
    (vLLM cannot read faster than from RAM). None when a figure is missing or nothing was copied."""
    copied, rate, staged = staging.get("bytes"), staging.get("throughput_bytes_per_s"), staging.get("seconds")
    read_s = (weights or {}).get("read_seconds")
    if not (copied and rate and staged) or read_s is None:
        return None
    direct = direct_read_seconds if direct_read_seconds is not None else max(read_s, copied / rate)
    saved = max(0.0, direct - read_s)
    return {
        "copy_seconds": staged,
        "read_seconds": read_s,
        "direct_read_seconds": direct,
        "saved_seconds": saved,
        "cost_seconds": staged - saved,
        "paid": saved > staged,
        "bytes": copied,
        "throughput_bytes_per_s": rate,
        "measured": direct_read_seconds is not None,
    }


def ram_copy_lever(verdict: t.Mapping[str, t.Any]) -> str:
    """The load-strategy lever when the RAM copy did not pay (``paid`` false)."""
    direct = format_seconds(verdict["direct_read_seconds"])
    rate = format_si_bytes(verdict["throughput_bytes_per_s"])
    source = (
        f"a direct start read them in {direct}"
        if verdict["measured"]
        else f"the source gives {format_si_bytes(verdict['bytes'])} at {rate}/s, {direct}"
    )
    return (
        f"load_strategy direct (runai_streamer on network storage): the RAM copy cost "
        f"{format_seconds(verdict['copy_seconds'])} and saved {format_seconds(verdict['saved_seconds'])} of reading "
        f"(the weights read in {format_seconds(verdict['read_seconds'])} from RAM; {source})"
    )


def step_lever(step: t.Mapping[str, t.Any], load_strategy: str | None, verdict: t.Mapping[str, t.Any] | None) -> str:
    """What shortens the step ``step``, in one clause."""
    name, took = step["phase"], format_seconds(step.get("seconds"))
    if name == "weights":
        if load_strategy == "ram_copy" and verdict and not verdict["paid"]:
            return f"weights {took}: {ram_copy_lever(verdict)}"
        if load_strategy == "ram_copy":
            return f"weights {took} from the RAM copy: the GPU copy bounds it; a faster load needs fewer bytes"
        return f"weights {took} read from the volume: ram_copy stages them in RAM first, runai_streamer streams them"
    if name == "warmup":
        graphs = step.get("graph_seconds")
        if graphs and graphs >= (step.get("jit_seconds") or 0):
            captured = format_seconds(graphs)
            return f"warm-up {took}: CUDA graphs {captured}; --enforce-eager skips them at some decode speed"
        return f"warm-up {took}: kernels compiled at start (FlashInfer, Triton); keep the JIT caches on the volume" + (
            " (not built yet)"
        )
    if name == "kv_cache":
        if step.get("compile_seconds"):
            return (
                f"profiling {took}, torch.compile {format_seconds(step['compile_seconds'])}: keep vLLM's compile cache "
                "on the volume (not built yet); --enforce-eager skips torch.compile"
            )
        return f"profiling {took}: a forward pass that sizes the KV cache, as long as --max-num-batched-tokens asks"
    if name == "readiness":
        return (
            f"readiness {took}: the probes check every {PROBE_PERIOD_S} s (the vllm_server role's periodSeconds, "
            "not a variable yet)"
        )
    return {
        "imports": f"imports {took}: Python loads torch and vLLM from the image; nothing in the collection shortens it",
        "engine_start": f"engine start {took}: vLLM's config resolution and engine process start (its own imports)",
        "device_setup": f"device set-up {took}: CUDA and NCCL initialisation in the engine",
        "server_start": f"server start {took}: the API server's start after the engine is ready",
    }[name]
