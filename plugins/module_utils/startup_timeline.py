# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Where a server pod's start-up went: one row per phase, from what the cluster recorded. Pure: objects in, rows out.

Phases of a server pod, in the order a kubelet runs them:

- ``node``: pod created -> PodScheduled (the scheduler's condition); when Karpenter made the node, its NodeClaim's
  conditions say when the instance launched, registered and initialized (karpenter v1.8.0
  pkg/apis/v1/nodeclaim_status.go: Launched, Registered, Initialized; ``status.nodeName``).
- ``image_pull``: the kubelet's ``Pulling``/``Pulled`` events per container (kubernetes v1.35.4
  pkg/kubelet/images/image_manager.go: ``Successfully pulled image %q in %v (%v including waiting). Image size:
  %v bytes.``, or ``Container image %q already present on machine``; the container is the event's
  ``involvedObject.fieldPath``, ``spec.initContainers{name}``/``spec.containers{name}``, pkg/kubelet/container/ref.go).
  Events live one hour by default (kube-apiserver ``--event-ttl``): older pods' pulls cannot be known.
- ``staging``: the staging init container's start -> finish (its container state), with the bytes and rate of the
  engine's ``RESULT`` line (the model_stage CLI) when its log is still readable.
- ``model_load``: the vLLM container's start -> the pod's Ready condition (to the readiness check that passed).
- ``first_token``: the probe's time to first token, when a probe ran.

Nothing is guessed: a phase whose source is gone or was never written is ``known: false`` with the reason.
"""

from __future__ import annotations

import datetime as dt
import re
import typing as t

from ansible_collections.llmops.vllm.plugins.module_utils import load_steps
from ansible_collections.llmops.vllm.plugins.module_utils._timeline_rows import format_seconds
from ansible_collections.llmops.vllm.plugins.module_utils._timeline_rows import iso as _iso
from ansible_collections.llmops.vllm.plugins.module_utils._timeline_rows import row as _phase
from ansible_collections.llmops.vllm.plugins.module_utils._timeline_rows import unknown as _unknown
from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.snapshot import condition, parse_time
from ansible_collections.llmops.vllm.plugins.module_utils.model_stage import format_si_bytes, result_from_log

PHASES = ("node", "image_pull", "staging", "model_load", "first_token")
TITLES = {
    "node": "node",
    "image_pull": "image pull",
    "staging": "staging",
    "model_load": "model load",
    "first_token": "first token",
}
EVENT_TTL_NOTE = "not recorded, or expired: events are kept 1 h by default"
# Older kubelets leave out the waiting (before 1.28) and the size (before 1.30); the pull alone is then the time.
_PULLED = re.compile(
    r'Successfully pulled image "(?P<image>[^"]+)" in (?P<pull>[0-9.hmsuµμn]+)'
    r"(?: \((?P<total>[0-9.hmsuµμn]+) including waiting\))?(?:\. Image size: (?P<size>\d+) bytes)?"
)
_PRESENT = re.compile(r'Container image "(?P<image>[^"]+)" already present on machine')
_GO_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9}
_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|μs|ns|h|m|s)")


def go_duration(text: str) -> float | None:
    """Seconds of a Go ``time.Duration`` string (``1m52.3s``, ``512ms``, ``0s``); None when it is not one."""
    parts = _GO_PART.findall(text or "")
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _GO_UNIT[u] for n, u in parts)


def _true_since(obj: t.Mapping[str, t.Any], kind: str) -> dt.datetime | None:
    """When a condition became True; None while it is not."""
    cond = condition(obj, kind)
    return parse_time(cond.get("lastTransitionTime")) if cond and cond.get("status") == "True" else None


def _event_time(event: t.Mapping[str, t.Any], last: bool = False) -> dt.datetime | None:
    first = event.get("lastTimestamp") if last else event.get("firstTimestamp")
    return parse_time(first or event.get("eventTime") or (event.get("metadata") or {}).get("creationTimestamp"))


# -- node
def node_phase(
    pod: t.Mapping[str, t.Any], node: t.Mapping[str, t.Any] | None, nodeclaim: t.Mapping[str, t.Any] | None
) -> dict[str, t.Any]:
    created = parse_time((pod.get("metadata") or {}).get("creationTimestamp"))
    scheduled = _true_since(pod, "PodScheduled")
    if not scheduled:
        return _unknown("node", "not scheduled yet")
    node_name = (pod.get("spec") or {}).get("nodeName") or "?"
    detail = f"on {node_name}"
    extra: dict[str, t.Any] = {"node": node_name}
    if nodeclaim:
        claim_created = parse_time((nodeclaim.get("metadata") or {}).get("creationTimestamp"))
        steps = [(k, _true_since(nodeclaim, k)) for k in ("Launched", "Registered", "Initialized")]
        said = [
            f"{k.lower()} +{format_seconds((at - claim_created).total_seconds())}"
            for k, at in steps
            if at and claim_created
        ]
        extra["nodeclaim"] = (nodeclaim.get("metadata") or {}).get("name")
        detail += f", a new node from Karpenter NodeClaim {extra['nodeclaim']}" + (
            f" ({', '.join(said)})" if said else ""
        )
    elif node is not None:
        node_created = parse_time((node.get("metadata") or {}).get("creationTimestamp"))
        if node_created and created and node_created > created:
            joined = format_seconds((node_created - created).total_seconds())
            detail += f", a node that joined {joined} after the pod was created"
        else:
            detail += ", a node that was already there"
    return _phase("node", created, scheduled, detail=detail, **extra)


# -- image pulls
def _container_paths(pod: t.Mapping[str, t.Any]) -> list[tuple[str, str, str]]:
    spec = pod.get("spec") or {}
    found = [
        (f"spec.initContainers{{{c['name']}}}", c["name"], c.get("image", "")) for c in spec.get("initContainers") or []
    ]
    return found + [
        (f"spec.containers{{{c['name']}}}", c["name"], c.get("image", "")) for c in spec.get("containers") or []
    ]


def pull_phase(pod: t.Mapping[str, t.Any], events: t.Sequence[t.Mapping[str, t.Any]]) -> dict[str, t.Any]:
    """Every container's pull from the kubelet's events; known only when each container has its Pulled event."""
    meta = pod.get("metadata") or {}
    mine = [
        e
        for e in events
        if (e.get("involvedObject") or {}).get("kind") == "Pod"
        and ((e.get("involvedObject") or {}).get("uid") or meta.get("uid")) == meta.get("uid")
        and (e.get("involvedObject") or {}).get("name") == meta.get("name")
    ]
    if not mine:
        return _unknown("image_pull", f"no kubelet events for the pod ({EVENT_TTL_NOTE})")
    pulls, start, end, total, missing = [], None, None, 0.0, []
    for path, name, image in _container_paths(pod):
        here = [e for e in mine if (e.get("involvedObject") or {}).get("fieldPath") == path]
        pulled = [e for e in here if e.get("reason") == "Pulled"]
        pulling = [e for e in here if e.get("reason") == "Pulling"]
        if not pulled:
            missing.append(name)
            continue
        event = min(pulled, key=lambda e: _event_time(e) or dt.datetime.max.replace(tzinfo=dt.timezone.utc))
        at = _event_time(event)
        message = str(event.get("message") or "")
        if match := _PULLED.search(message):
            pull = go_duration(match["pull"]) or 0.0
            seconds = max(pull, go_duration(match["total"] or "") or 0.0)
            size = int(match["size"]) if match["size"] else None
            began = _event_time(pulling[0]) if pulling else (at - dt.timedelta(seconds=seconds) if at else None)
            rate = f" ({format_si_bytes(size / pull)}/s)" if size and pull else ""
            what = (f"{format_si_bytes(size)} " if size else "") + f"in {format_seconds(pull)}{rate}"
            if seconds - pull >= 1:  # the kubelet pulls one image at a time by default (serializeImagePulls)
                what += f" after {format_seconds(seconds - pull)} queued behind other pulls"
            pulls.append(
                {"container": name, "image": match["image"], "seconds": seconds, "bytes": size, "present": False}
            )
            text = f"{name}: pulled {what}"
        elif _PRESENT.search(message):
            seconds, began = 0.0, at
            pulls.append({"container": name, "image": image, "seconds": 0.0, "bytes": None, "present": True})
            text = f"{name}: already present"
        else:
            missing.append(name)
            continue
        total += seconds
        start = min(filter(None, (start, began)), default=None)
        end = max(filter(None, (end, at)), default=None)
        pulls[-1]["detail"] = text
    details = [p["detail"] for p in pulls]
    if missing:
        return _phase(
            "image_pull",
            start,
            end,
            seconds=None,
            known=False,
            detail="; ".join(details + [f"{', '.join(missing)}: no Pulled event from the kubelet ({EVENT_TTL_NOTE})"]),
            pulls=pulls,
        )
    return _phase("image_pull", start, end, seconds=total, detail="; ".join(details), pulls=pulls)


# -- staging, load, first token
def _container_status(pod: t.Mapping[str, t.Any], name: str, init: bool) -> t.Mapping[str, t.Any] | None:
    key = "initContainerStatuses" if init else "containerStatuses"
    return next((s for s in (pod.get("status") or {}).get(key) or [] if s.get("name") == name), None)


def _restarts(status: t.Mapping[str, t.Any]) -> str:
    count = int(status.get("restartCount") or 0)
    return f", after {count} restart{'s' if count > 1 else ''}" if count else ""


def _no_result(log_lines: t.Sequence[str] | str | None) -> str:
    """Why a log gives no RESULT line: ``log_lines`` is the log, or the reason it could not be read (a str)."""
    if isinstance(log_lines, str):
        return f"its log cannot be read: {log_lines}"
    return "its log has no RESULT line (an engine older than the line, or a cut-off log)"


def _result(log_lines: t.Sequence[str] | str | None) -> dict[str, t.Any] | None:
    return None if log_lines is None or isinstance(log_lines, str) else result_from_log(log_lines)


def staging_phase(
    pod: t.Mapping[str, t.Any], container: str, log_lines: t.Sequence[str] | str | None
) -> dict[str, t.Any]:
    """The staging init container's run, with the engine's bytes and rate from its log's RESULT line."""
    names = [c.get("name") for c in (pod.get("spec") or {}).get("initContainers") or []]
    if container not in names:
        return _phase("staging", seconds=0.0, detail="no staging (the model is read where it lies)", skipped=True)
    status = _container_status(pod, container, init=True)
    state = (status or {}).get("state") or {}
    if "terminated" not in state:
        running = parse_time((state.get("running") or {}).get("startedAt"))
        return _unknown("staging", f"still staging since {_iso(running)}" if running else "not started yet")
    done = state["terminated"]
    start, end = parse_time(done.get("startedAt")), parse_time(done.get("finishedAt"))
    detail = f"{container} exit {done.get('exitCode')}{_restarts(status or {})}"
    result = _result(log_lines)
    extra: dict[str, t.Any] = {}
    if result:
        if result.get("changed"):
            rate = result.get("throughput_bytes_per_s") or 0
            copied = format_si_bytes(result.get("bytes") or 0)
            detail = f"{copied} copied at {format_si_bytes(rate)}/s ({result.get('copied_files')} files)"
            extra.update(bytes=result.get("bytes"), throughput_bytes_per_s=rate)
        else:
            detail = "the RAM volume already held a verified copy; nothing copied"
    else:
        detail += f"; bytes and rate unknown ({_no_result(log_lines)})"
    # A kubelet stamps container states to the second: a staging shorter than that reads 0 s between them. The
    # engine's own clock (RESULT elapsed_ms) is the better figure then; the container's span counts Python too.
    span = (end - start).total_seconds() if start and end else None
    engine = (result or {}).get("elapsed_ms")
    seconds = max(span or 0.0, float(engine) / 1000) if engine is not None else span
    return _phase("staging", start, end, seconds=seconds, detail=detail, **extra)


def load_phase(
    pod: t.Mapping[str, t.Any], container: str, log_lines: t.Sequence[str] | str | None = None
) -> dict[str, t.Any]:
    """The server container's start -> the pod's Ready condition, with its ``steps`` from the container's log
    (load_steps.py; none when the log is not given or cannot be read, and the detail says why)."""
    status = _container_status(pod, container, init=False)
    state = (status or {}).get("state") or {}
    started = parse_time((state.get("running") or {}).get("startedAt"))
    if not started:
        return _unknown("model_load", f"the {container} container is not running", steps=[])
    ready = _true_since(pod, "Ready")
    if ready and ready < started:
        ready = None
    steps, why = load_steps.steps(log_lines, started, ready) if log_lines is not None else ([], "")
    note = f"; steps unknown: {why}" if why else ""
    if not ready:
        return _unknown("model_load", f"{container} running since {_iso(started)}, not Ready yet{note}", steps=steps)
    detail = f"{container} start to Ready{_restarts(status or {})}{note}"
    return _phase("model_load", started, ready, detail=detail, steps=steps)


def first_token_phase(ttft_ms: float | None) -> dict[str, t.Any]:
    if ttft_ms is None:
        return _unknown("first_token", "no probe ran (llmops.vllm.vllm_endpoint_probe measures it)")
    return _phase("first_token", seconds=float(ttft_ms) / 1000, detail="the probe's time to first token")


# -- the levers
def lever(row: t.Mapping[str, t.Any], load_strategy: str | None = None) -> str:
    """What shortens the phase ``row``, in one clause; for the model load, what shortens its slowest step."""
    took = format_seconds(row.get("seconds"))
    name = row["phase"]
    if name == "node":
        if row.get("nodeclaim"):
            return (
                f"node {took}: Karpenter launched a node; keep GPU capacity warm (a NodePool floor or placeholder pods)"
            )
        return f"waiting {took} for a node: free GPUs or more GPU nodes"
    if name == "image_pull":
        return f"image pull {took}: pre-pull the image onto the GPU nodes or use a lazy-loading snapshotter (SOCI)"
    if name == "staging":
        verdict = row.get("ram_copy")
        if verdict and not verdict["paid"]:
            return f"staging {took}: {load_steps.ram_copy_lever(verdict)}"
        rate = row.get("throughput_bytes_per_s")
        at = f" at {format_si_bytes(rate)}/s" if rate else ""
        return (
            f"staging {took}{at}: a higher FSx throughput tier or more stage workers; "
            "direct or runai_streamer skip the copy"
        )
    if name == "model_load":
        known = [s for s in row.get("steps") or [] if s["known"] and s["seconds"]]
        if known:
            step = max(known, key=lambda s: s["seconds"])
            return f"model load {took}, slowest step {load_steps.step_lever(step, load_strategy, row.get('ram_copy'))}"
        if load_strategy in ("direct", "runai_streamer"):
            return f"model load {took}: the weights are read from the volume while loading; ram_copy stages them first"
        return (
            f"model load {took}: engine start-up (weights, torch.compile, CUDA graphs); "
            "--enforce-eager skips graph capture"
        )
    return f"first token {took}: the first request after start-up; send a warm-up request"


# -- one pod, one Job
def pod_timeline(
    pod: t.Mapping[str, t.Any],
    events: t.Sequence[t.Mapping[str, t.Any]],
    *,
    stage_log: t.Sequence[str] | str | None = None,
    server_log: t.Sequence[str] | str | None = None,
    node: t.Mapping[str, t.Any] | None = None,
    nodeclaim: t.Mapping[str, t.Any] | None = None,
    ttft_ms: float | None = None,
    containers: tuple[str, str] = ("model-loader", "vllm"),
    load_strategy: str | None = None,
) -> dict[str, t.Any]:
    """The rows of one server pod, its time from creation to Ready, and the slowest phase with its lever."""
    stage, server = containers
    rows = [
        node_phase(pod, node, nodeclaim),
        pull_phase(pod, events),
        staging_phase(pod, stage, stage_log),
        load_phase(pod, server, server_log),
        first_token_phase(ttft_ms),
    ]
    created = parse_time((pod.get("metadata") or {}).get("creationTimestamp"))
    ready = _true_since(pod, "Ready")
    return _summed(
        {
            "pod": (pod.get("metadata") or {}).get("name"),
            "node": (pod.get("spec") or {}).get("nodeName"),
            "load_strategy": load_strategy,
            "ready_seconds": (ready - created).total_seconds() if ready and created and ready >= created else None,
            "phases": rows,
        }
    )


def _summed(report: dict[str, t.Any]) -> dict[str, t.Any]:
    """``report`` with its unknown phases and its slowest phase (with the lever) worked out from its rows."""
    rows = report["phases"]
    _judge_ram_copy(rows)
    known = [r for r in rows if r["known"] and r["seconds"]]
    slowest = max(known, key=lambda r: r["seconds"], default=None)
    report["unknown"] = [r["phase"] for r in rows if not r["known"]]
    report["slowest"] = (
        None
        if slowest is None
        else {
            "phase": slowest["phase"],
            "seconds": slowest["seconds"],
            "lever": lever(slowest, report["load_strategy"]),
        }
    )
    verdict = next((r["ram_copy"] for r in rows if r.get("ram_copy")), None)
    report["ram_copy"] = verdict
    return report


def _judge_ram_copy(rows: t.Sequence[dict[str, t.Any]]) -> None:
    """Put on the staging and model load rows whether the RAM copy paid (load_steps.ram_copy), where it can tell."""
    by = {r["phase"]: r for r in rows}
    staging, load = by.get("staging"), by.get("model_load")
    if not staging or not load or staging.get("skipped"):
        return
    weights = next((s for s in load.get("steps") or [] if s["phase"] == "weights" and s["known"]), None)
    verdict = load_steps.ram_copy(staging, weights)
    if verdict:
        staging["ram_copy"] = load["ram_copy"] = verdict


def with_first_token(report: t.Mapping[str, t.Any], ttft_ms: float | None) -> dict[str, t.Any]:
    """A pod's report with the probe's time to first token (measured after the report was made) in its row."""
    rows = [first_token_phase(ttft_ms) if r["phase"] == "first_token" else r for r in report["phases"]]
    return _summed(dict(report, phases=rows))


def job_timeline(job: t.Mapping[str, t.Any], log_lines: t.Sequence[str] | str | None) -> dict[str, t.Any]:
    """A download Job's run: start -> completion, with the engine's bytes and rate from its RESULT line."""
    status = job.get("status") or {}
    start, end = parse_time(status.get("startTime")), parse_time(status.get("completionTime"))
    name = (job.get("metadata") or {}).get("name")
    result = _result(log_lines)
    if not end:
        row = _unknown("download", "not complete")
    elif result and not result.get("changed"):
        row = _phase("download", start, end, detail="already downloaded; nothing fetched", bytes=0)
    elif result:
        rate = result.get("throughput_bytes_per_s") or 0
        row = _phase(
            "download",
            start,
            end,
            detail=f"{format_si_bytes(result.get('bytes') or 0)} fetched at {format_si_bytes(rate)}/s "
            f"({result.get('copied_files')} files, {result.get('reused_files')} already there)",
            bytes=result.get("bytes"),
            throughput_bytes_per_s=rate,
        )
    else:
        row = _phase("download", start, end, detail=f"bytes and rate unknown ({_no_result(log_lines)})")
    return {"job": name, **row}


# -- the table
def table(pods: t.Sequence[t.Mapping[str, t.Any]], jobs: t.Sequence[t.Mapping[str, t.Any]] = ()) -> list[str]:
    """Lines for the play output: per pod a heading, one line per phase, the slowest phase and its lever."""
    lines: list[str] = []
    for job in jobs:
        lines.append(f"Job {job['job']}: download {format_seconds(job['seconds'])}: {job['detail']}")
    for report in pods:
        ready = format_seconds(report["ready_seconds"]) if report["ready_seconds"] is not None else "not Ready"
        lines.append(f"{report['pod']} on {report['node'] or '?'}: Ready after {ready} (times UTC)")
        for row in report["phases"]:
            at = (row["start"] or "")[11:19] or "-"
            took = format_seconds(row["seconds"]) if row["known"] else "unknown"
            lines.append(f"  {TITLES[row['phase']]:<12} {at:<8} {took:>8}  {row['detail']}")
            for step in row.get("steps") or []:
                at = (step["start"] or "")[11:19] or "-"
                took = format_seconds(step["seconds"]) if step["known"] else "unknown"
                lines.append(f"    {load_steps.TITLES[step['phase']]:<10} {at:<8} {took:>8}  {step['detail']}")
        if report["slowest"]:
            lines.append(f"  slowest: {report['slowest']['lever']}")
        verdict = report.get("ram_copy")
        if verdict and not verdict["paid"] and (report["slowest"] or {}).get("phase") != "staging":
            lines.append(f"  ram copy: {load_steps.ram_copy_lever(verdict)}")
    return lines


def summary(pods: t.Sequence[t.Mapping[str, t.Any]], jobs: t.Sequence[t.Mapping[str, t.Any]]) -> dict[str, t.Any]:
    """The whole report: pods, jobs, the table and the slowest phase over all pods."""
    ranked = [dict(r["slowest"], pod=r["pod"]) for r in pods if r["slowest"]]
    return {
        "pods": list(pods),
        "jobs": list(jobs),
        "table": table(pods, jobs),
        "slowest": max(ranked, key=lambda s: s["seconds"], default=None),
    }


def merged(reports: t.Sequence[t.Mapping[str, t.Any]], first_token_ms: t.Mapping[str, t.Any] | None = None):
    """Several reports (one per step that made one) as one, with the probes' times to first token per Deployment."""
    ttft = {str(k): float(v) for k, v in (first_token_ms or {}).items() if v is not None}
    pods = [with_first_token(p, ttft.get(p.get("deployment") or "")) for r in reports for p in r.get("pods") or []]
    return summary(pods, [j for r in reports for j in r.get("jobs") or []])
