"""Run the endpoint probe (plugins/module_utils/endpoint_probe/) against a running `transformers serve`.

Every check and the load mode, in several runs (the model found through ``GET /v1/models``, then named, with
each tool_choice), a table of the results, and what the server answers on the paths the probe reads (raw, for
telling the probe's findings from the server's quirks). Standard library only; the probe package is imported
from this checkout under its collection name, without Ansible.

    python tests/device/probe_transformers_serve.py --url http://127.0.0.1:8000 --model llmops/tiny-mistral \
        --json out/probe_results.json
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ENGINE = os.path.join(HERE, "..", "..", "plugins", "module_utils", "endpoint_probe")


def load_engine(path: str = ENGINE):
    """The engine package at ``path`` (``<checkout>/plugins/module_utils/endpoint_probe``). Its modules import each
    other as ``ansible_collections.llmops.vllm...``: a temporary ``ansible_collections/llmops/vllm`` link to the
    checkout makes those names resolve."""
    checkout = os.path.abspath(os.path.join(path, "..", "..", ".."))
    layout = tempfile.mkdtemp(prefix="probe-engine-")
    atexit.register(shutil.rmtree, layout, True)
    link = os.path.join(layout, "ansible_collections", "llmops", "vllm")
    os.makedirs(os.path.dirname(link))
    os.symlink(checkout, link, target_is_directory=True)
    sys.path.insert(0, layout)
    return importlib.import_module("ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe")


def settings(engine, cls_name: str, **values):
    """A settings dataclass from the values it has fields for (the engine is being edited: tolerate drift)."""
    cls = getattr(engine, cls_name)
    names = {f.name for f in dataclasses.fields(cls)}
    dropped = sorted(set(values) - names)
    if dropped:
        print(f"note: {cls_name} has no {', '.join(dropped)}; left out")
    return cls(**{k: v for k, v in values.items() if k in names})


def one_line(text, limit: int = 110) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def detail(entry: dict) -> str:
    """What a passed check measured, in one line."""
    skip = {"passed", "reason", "msg", "latency_ms", "status"}
    return json.dumps({k: v for k, v in entry.items() if k not in skip}, default=str)


def table(result: dict) -> str:
    rows = [("check", "passed", "reason", "latency_ms", "msg")]
    for name, entry in result.get("checks", {}).items():
        latency = entry.get("latency_ms")
        rows.append(
            (
                name,
                "yes" if entry.get("passed") else "NO",
                entry.get("reason") or "-",
                "-" if latency is None else f"{latency:g}",
                one_line(entry.get("msg") or detail(entry)),
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(4)]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4])
        if index == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 3)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- raw answers


def raw(url: str, method: str = "GET", payload=None, timeout: float = 60.0, limit: int = 1500) -> dict:
    """One request, its status, the headers that matter and the body (cut to ``limit``)."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, headers, body = response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        status, headers, body = exc.code, exc.headers, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    text = body.decode("utf-8", "replace")
    return {
        "status": status,
        "content_type": headers.get("Content-Type"),
        "ms": round((time.perf_counter() - start) * 1000, 1),
        "bytes": len(body),
        "body": text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)",
    }


def raw_answers(base: str, model: str | None, tool: dict) -> dict:
    """What the server says on each path the probe reads; the stream as its event lines."""
    chat = {
        "model": model,
        "messages": [{"role": "user", "content": "In one short sentence: what is the capital of France?"}],
        "max_tokens": 16,
        "temperature": 0,
    }
    tool_prompt = "What is the weather like in Paris right now? Use the get_current_weather tool."
    tools = {
        "model": model,
        "messages": [{"role": "user", "content": tool_prompt}],
        "max_tokens": 128,
        "temperature": 0,
        "tools": [tool],
        "tool_choice": "auto",
    }
    answers = {
        "GET /health": raw(base + "/health"),
        "GET /v1/models": raw(base + "/v1/models"),
        "GET /version": raw(base + "/version"),
        "GET /metrics": raw(base + "/metrics"),
        "POST /v1/chat/completions": raw(base + "/v1/chat/completions", "POST", chat),
        "POST /v1/chat/completions (tools, auto)": raw(base + "/v1/chat/completions", "POST", tools),
        "POST /v1/chat/completions (tools, required)": raw(
            base + "/v1/chat/completions", "POST", dict(tools, tool_choice="required")
        ),
        "POST /v1/chat/completions (no model)": raw(
            base + "/v1/chat/completions", "POST", {k: v for k, v in chat.items() if k != "model"}
        ),
        "POST /v1/chat/completions (other model)": raw(
            base + "/v1/chat/completions", "POST", dict(chat, model="no-such/model")
        ),
        "POST /v1/chat/completions (stream)": raw(
            base + "/v1/chat/completions",
            "POST",
            dict(chat, stream=True, stream_options={"include_usage": True}),
            limit=6000,
        ),
    }
    stream = answers["POST /v1/chat/completions (stream)"]
    if "body" in stream:
        events = [line for line in stream["body"].splitlines() if line.strip()]
        stream["events"] = len(events)
        stream["last_events"] = events[-2:]
        stream["has_done"] = any(line.strip() == "data: [DONE]" for line in events)
        del stream["body"]
    return answers


# ---------------------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", help="the id the server serves (for the runs that name it)")
    parser.add_argument("--engine", default=ENGINE, help="path of the endpoint_probe package")
    parser.add_argument("--wait", type=float, default=300.0, help="wait_timeout (readiness), seconds")
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--json", help="write every result here")
    parser.add_argument("--runs", default="discovered,auto,required,named", help="which runs, comma-separated")
    parser.add_argument("--no-raw", action="store_true", help="skip the raw answers")
    args = parser.parse_args()

    engine = load_engine(args.engine)
    load = settings(engine, "LoadSettings", requests=args.requests, concurrency=args.concurrency, max_tokens=32)
    runs = {
        "discovered": ("discovered model, tool_choice auto", None, "auto", args.wait),
        "auto": ("named model, tool_choice auto", args.model, "auto", args.wait),
        "required": ("named model, tool_choice required", args.model, "required", args.wait),
        "named": ("named model, tool_choice named", args.model, "named", args.wait),
    }
    runs = [runs[key] for key in args.runs.split(",")]
    results: dict = {"url": args.url, "engine": os.path.abspath(args.engine), "checks": list(engine.CHECKS), "runs": {}}
    target = engine.url_target(args.url)
    failed_runs = 0
    for title, model, tool_choice, wait in runs:
        if tool_choice not in getattr(engine, "TOOL_CHOICES", (tool_choice,)):
            continue
        probe_settings = settings(
            engine,
            "ProbeSettings",
            checks=tuple(engine.CHECKS),
            model=model,
            tool_choice=tool_choice,
            timeout=60.0,
            wait_timeout=wait,
            poll_interval=1.0,
            load=load,
        )
        start = time.perf_counter()
        try:
            result = engine.probe(target, probe_settings)
        except Exception as exc:  # a crash of the engine is a finding too
            result = {"crashed": f"{type(exc).__name__}: {exc}", "checks": {}}
        seconds = time.perf_counter() - start
        results["runs"][title] = result
        failed_runs += bool(result.get("failed") or result.get("crashed"))
        print(
            f"\n=== {title} ({seconds:.1f} s; model {result.get('model')!r}, version {result.get('version')!r}, "
            f"waited {result.get('waited_ms')} ms) ==="
        )
        if result.get("crashed"):
            print(f"probe crashed: {result['crashed']}")
        print(table(result))
        if result.get("failed"):
            print(f"first failure: {one_line(result.get('msg'), 300)}")
        if result.get("load"):
            stats = result["load"]
            print(
                "load: {succeeded}/{requests} ok at concurrency {concurrency}, {duration_ms} ms, "
                "{output_tokens_per_s} tokens/s, latency {latency_ms}, ttft {ttft_ms}".format(**stats)
            )
    model = args.model or next((r.get("model") for r in results["runs"].values() if r.get("model")), None)
    if not args.no_raw:
        results["raw"] = raw_answers(args.url.rstrip("/"), model, engine.TOOL)
        print("\n=== raw answers ===")
        for what, answer in results["raw"].items():
            print(f"{what}: {one_line(json.dumps(answer), 400)}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2, default=str)
        print(f"\nwrote {args.json}")
    print(f"\nprobe runs: {len(results['runs']) - failed_runs} without a failed check, {failed_runs} with one")
    return 0


if __name__ == "__main__":
    sys.exit(main())
