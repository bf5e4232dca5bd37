# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The moments a vLLM server logs while it starts, read from its container's log. Pure: lines in, events out.

A line is as the API server returns it: with the kubelet's timestamp in front (``timestamps=true``: RFC 3339 with
nanoseconds, then a space), or bare. The kubelet's stamp is the clock when there is one (it also dates uvicorn's
lines, which carry no time of their own); otherwise vLLM's own prefix, ``INFO 12-07 12:49:30 [file.py:123] ...``
(vllm/logger.py ``_FORMAT``, ``_DATE_FORMAT = "%m-%d %H:%M:%S"`` in every release from 0.9.0 to 0.33.0): no year, no
zone (the container's clock, UTC in the vLLM images), whole seconds, the year taken from the container's start.

The lines, and where each release writes them (the log prints the file and the line of the ``logger`` call; the
message's wording is the same in every release unless the table says otherwise; 0.14 and 0.15 were not read):

==============  ======================================================================================================
event           releases: file:line of the message
==============  ======================================================================================================
banner          0.9.0 entrypoints/openai/api_server.py:1289, 0.9.2 :1395, 0.10.2 :1896, 0.11.2 :1977, 0.13.0 :1351
                ``vLLM API server version %s``; from 0.16.0 ``log_version_and_model`` (entrypoints/utils.py 0.16.0
                :287, 0.18.0 :297, 0.22.0 :344; entrypoints/serve/utils/api_utils.py 0.23.0 :339, 0.28.0 :333;
                entrypoints/common/startup.py 0.33.0 :38): a logo with ``version %s``, or ``vLLM server version %s,
                serving model %s`` when ``VLLM_DISABLE_LOG_LOGO`` is set
engine          v1/engine/core.py ``Initializing a V1 LLM engine (v%s) with config: %s``: 0.9.0 :65, 0.10.2 :76,
                0.11.2 :94, 0.13.0 :94, 0.17.1 :102, 0.23.0 :114, 0.28.0 :123, 0.33.0 :140
weights_read    model_executor/model_loader/default_loader.py ``Loading weights took %.2f seconds``: 0.9.0 :281,
                0.10.2 :269, 0.11.2 :315, 0.13.0 :309, 0.17.1 :294, 0.23.0 :398, 0.28.0 :431, 0.33.0 :507; the
                runai_streamer loader writes no such line
model_loaded    v1/worker/gpu_model_runner.py ``Model loading took %.4f GiB and %.6f seconds``: 0.9.0 :1549, 0.10.2
                :2392; ``%.4f GiB memory and`` from 0.11.1 (:3335), ``%s GiB memory and`` from 0.16.0 (:4222), 0.33.0
                :5089; the V2 runner v1/worker/gpu/model_runner.py (from 0.12.0) ``%s GiB and`` (0.23.0 :320, as
                model_runner.py:319 in the real logs), ``%s GiB memory and`` from 0.28.0 (:381; 0.33.0 :429)
kv_cache        v1/worker/gpu_worker.py ``Available KV cache memory: %.2f GiB``: from 0.9.1 (:227), 0.10.2 :298,
                0.13.0 :376, ``%s GiB`` from 0.16.0 (:374), 0.23.0 :481, 0.33.0 :773; 0.9.0 has none, its
                v1/core/kv_cache_utils.py:637 ``GPU KV cache size: %s tokens`` (every release; 0.23.0 :1744) is read
                then
compiled        compilation/monitor.py ``torch.compile takes %.2f s in total`` 0.9.0 :33 to 0.17.1 :36; ``took`` from
                0.18.0 (:20), ``%storch.compile took`` (a ``[tag] `` prefix) in 0.33.0 (:20); only when torch.compile
                runs (not ``--enforce-eager``), during the profiling run
graphs          v1/worker/gpu_model_runner.py ``Graph capturing finished in %.0f secs, took %.2f GiB``: 0.9.0 :1933,
                0.13.0 :4588, 0.23.0 :6586, 0.33.0 :6517 (V2 runner 0.23.0 gpu/model_runner.py:702); only with CUDA
                graphs (not ``--enforce-eager``)
initialized     v1/engine/core.py ``init engine (profile, create kv cache, warmup model) took %.2f seconds``: 0.9.0
                :167, 0.10.2 :218, 0.11.2 :251, 0.13.0 :260, 0.18.0 :282; ``took %.2f s`` with ``(compilation: %.2f
                s)`` when torch.compile ran from 0.20.2 (:290-307), 0.23.0 :297-314, 0.33.0 :396-413
listening       entrypoints/openai/api_server.py ``Starting vLLM API server on http%s://%s:%d`` 0.9.0 :1336;
                ``Starting vLLM API server %d on %s`` 0.9.1 :1349 to 0.17.1 :501; ``Starting vLLM server on %s``
                from 0.18.0 (:580), 0.23.0 :583, 0.33.0 entrypoints/launchers/api_server/entry.py:139
serving         uvicorn's ``Application startup complete.`` (uvicorn/lifespan/on.py), untimed: ``INFO:     ...``
==============  ======================================================================================================
"""

from __future__ import annotations

import datetime as dt
import re
import typing as t

from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.snapshot import parse_time

# What the start-up timeline reads from the head of the log: enough for the start-up of any release (the real
# 0.23.0 start of a 7B model is 15 kB; the engine's config line alone is 4 kB), never the whole request log.
HEAD_BYTES = 512 * 1024
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_KUBELET = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)) ")
# The process prefix (``(EngineCore_0 pid=7) ``, ``(APIServer pid=974) ``) comes from vLLM's _add_prefix/decorate_logs
# in front of its lines; VLLM_LOGGING_PREFIX may put more there, so the level and time are searched, not anchored.
_VLLM = re.compile(
    r"^(?:\((?P<proc>[^)]*)\) )?.*?\b(?:DEBUG|INFO|WARNING|ERROR|CRITICAL) (?P<md>\d\d-\d\d) (?P<hms>\d\d:\d\d:\d\d)"
    r"(?:\.\d+)? \[[^\]]+:\d+\] (?P<msg>.*)$"
)
_PROC = re.compile(r"^\((?P<proc>[^)]*)\) ")
_NUM = r"(\d+(?:\.\d+)?)"
# event -> pattern; the groups are the figures vLLM writes (the module docstring says where each comes from).
PATTERNS: dict[str, t.Pattern[str]] = {
    "banner": re.compile(r"(?:vLLM (?:API )?server version|▀▄▀ █ +version) (?P<version>\S+?),?(?: |$)"),
    "engine": re.compile(r"Initializing a V\d LLM engine \(v(?P<version>[^)]+)\) with config: (?P<config>.*)"),
    "weights_read": re.compile(rf"Loading weights took {_NUM} seconds"),
    "model_loaded": re.compile(rf"Model loading took {_NUM} GiB (?:memory )?and {_NUM} seconds"),
    "kv_cache": re.compile(rf"Available KV cache memory: {_NUM} GiB"),
    "kv_tokens": re.compile(r"GPU KV cache size: (?P<tokens>[\d,]+) tokens"),
    "compiled": re.compile(rf"torch\.compile (?:takes|took) {_NUM} s in total"),
    "graphs": re.compile(rf"Graph capturing finished in {_NUM} secs, took {_NUM} GiB"),
    "initialized": re.compile(
        rf"init engine \(profile, create kv cache, warmup model\) took {_NUM} (?:s|seconds)"
        rf"(?: \(compilation: {_NUM} s)?"
    ),
    "listening": re.compile(r"Starting vLLM (?:API )?server (?:\d+ )?on (?P<address>\S+)"),
    "serving": re.compile(r"Application startup complete\."),
}
# Figures written once per start: with several workers (tensor parallel) the last worker's line ends the step.
_LAST = ("weights_read", "model_loaded", "kv_cache", "kv_tokens", "graphs")


def _year(month_day: str, hms: str, near: dt.datetime) -> dt.datetime | None:
    """vLLM's ``MM-DD HH:MM:SS`` in the year that puts it nearest ``near`` (a start on 31 Dec logs 01-01 lines)."""
    found = []
    for year in (near.year - 1, near.year, near.year + 1):
        try:
            found.append(dt.datetime.strptime(f"{year}-{month_day} {hms}", "%Y-%m-%d %H:%M:%S"))
        except ValueError:  # 02-29 outside a leap year
            continue
    moments = [m.replace(tzinfo=dt.timezone.utc) for m in found]
    return min(moments, key=lambda m: abs((m - near).total_seconds()), default=None)


def read(lines: t.Sequence[str], started: dt.datetime) -> dict[str, t.Any]:
    """The start-up events of a vLLM container's log: ``events`` maps each event of PATTERNS found to ``at`` (UTC),
    ``line``, ``process`` and the figures it carries; ``first`` is the first line vLLM timed; ``handoff`` the API
    server's last line before the engine's (its config resolved; only where the API server prefixes its lines,
    ``(APIServer pid=N)``); ``clock`` is ``kubelet`` or ``vllm`` (the log's own prefix, to the second); ``version``
    and ``eager`` (``--enforce-eager``) where logged."""
    events: dict[str, dict[str, t.Any]] = {}
    first: dt.datetime | None = None
    last: dt.datetime | None = None
    handoff: dt.datetime | None = None  # the API server's last line before the engine process's first
    stamped = any(_KUBELET.match(line) for line in lines[:5])
    for raw in lines:
        line = _ANSI.sub("", raw.rstrip("\r\n"))
        at = None
        if stamped and (stamp := _KUBELET.match(line)):
            at, line = parse_time(stamp.group(1)), line[stamp.end() :]
        vllm = _VLLM.match(line)
        if vllm and at is None:
            at = _year(vllm["md"], vllm["hms"], started)
        if vllm and first is None:
            first = at
        at = at or last  # uvicorn's lines are untimed: the line before is the nearest time known
        last = at
        text = vllm["msg"] if vllm else line
        proc = _PROC.match(line)
        if vllm and "engine" not in events and "banner" in events and proc and proc["proc"].startswith("APIServer"):
            handoff = at
        for name, pattern in PATTERNS.items():
            if (found := pattern.search(text)) and at and (name not in events or name in _LAST):
                figures = [float(g) for g in found.groups() if g and re.fullmatch(_NUM, g)]
                events[name] = {"at": at, "line": text, "figures": figures, "process": proc["proc"] if proc else None}
                events[name].update({k: v for k, v in found.groupdict().items() if v is not None})
    engine = events.get("engine", {})
    version = engine.get("version") or events.get("banner", {}).get("version")
    eager = None
    if "config" in engine:
        eager = "enforce_eager=True" in engine["config"]
    return {
        "events": events,
        "first": first,
        "handoff": handoff,
        "clock": "kubelet" if stamped else "vllm",
        "version": version,
        "eager": eager,
    }
