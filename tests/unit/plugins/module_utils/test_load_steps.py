"""The model load's steps from a vLLM container's log: the real logs of vLLM 0.23.0 starting on an H100
(fixtures/README.md), and lines built from the sources of 0.9.0 and 0.33.0 (each citing the file it copies)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from ansible_collections.llmops.vllm.plugins.module_utils import load_steps as ls
from ansible_collections.llmops.vllm.plugins.module_utils import vllm_log as vl

FIXTURES = Path(__file__).parent / "fixtures"
UTC = dt.UTC


def real(name: str) -> list[str]:
    """A real log: a 7B-shaped start by its name, or a tiny model's (``tiny-...``)."""
    shape = "" if name.startswith("tiny-") else "mistral7b-shape-"
    return (FIXTURES / f"vllm-0.23.0-{shape}{name}.log").read_text(encoding="utf-8").splitlines()


def utc(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


def by_name(rows: list[dict]) -> dict:
    return {r["phase"]: r for r in rows}


def largest_gap(rows: list[dict], started: dt.datetime) -> float:
    """The longest time between one step's end and the next one's start (none: they follow one another)."""
    gaps, since = [], started
    for r in rows:
        begin = dt.datetime.strptime(r["start"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        gaps.append(abs((begin - since).total_seconds()))
        since = begin + dt.timedelta(seconds=r["seconds"])
    return max(gaps)


# The pod around a real log: the log has neither the container's start nor the pod's Ready, so a test puts the start
# 12 s before vLLM's first line and Ready 7 s after uvicorn's "Application startup complete." (a probe's period).
COLD = ("first-start-disk", utc("2026-12-07 12:49:18"), utc("2026-12-07 12:52:00"))
WARM = ("dev-shm-warm-caches", utc("2026-12-07 12:52:30"), utc("2026-12-07 12:53:25"))


@pytest.mark.parametrize(("name", "started", "ready"), [COLD, WARM])
def test_real_starts_add_up_to_the_container_start_to_ready(name, started, ready):
    rows, why = ls.steps(real(name), started, ready)
    assert why == "" and [r["phase"] for r in rows] == list(ls.STEPS) and all(r["known"] for r in rows)
    assert sum(r["seconds"] for r in rows) == pytest.approx((ready - started).total_seconds())
    assert largest_gap(rows, started) < 2


def test_the_cold_start_is_the_jit_warm_up():
    """The first start on the machine: FlashInfer compiles its kernels (no cubin package), 94 s of 'init engine'."""
    rows = ls.steps(real(COLD[0]), COLD[1], COLD[2])[0]
    got = by_name(rows)
    assert got["imports"]["seconds"] == 12 and got["engine_start"]["seconds"] == 34
    assert "the API server's config done after 19.0s" in got["engine_start"]["detail"]
    assert got["weights"]["seconds"] == pytest.approx(8.807736) and got["weights"]["read_seconds"] == 7.32
    assert got["weights"]["detail"] == "13.51 GiB onto the GPU, 7.3s of it reading the weights"
    assert got["warmup"]["seconds"] == 94 and got["warmup"]["graph_seconds"] is None
    assert "--enforce-eager: no CUDA graphs" in got["warmup"]["detail"]
    slowest = max(rows, key=lambda r: r["seconds"])
    assert ls.step_lever(slowest, "direct", None) == (
        "warm-up 1m34s: kernels compiled at start (FlashInfer, Triton); keep the JIT caches on the volume "
        "(not built yet)"
    )


def test_the_warm_start_from_ram_is_vllms_own_start_up():
    rows = ls.steps(real(WARM[0]), WARM[1], WARM[2])[0]
    got = by_name(rows)
    assert got["warmup"]["seconds"] == 1 and got["weights"]["read_seconds"] == 7.15
    assert got["engine_start"]["seconds"] == 20  # config at once, then the engine process's own start
    assert max(rows, key=lambda r: r["seconds"])["phase"] == "engine_start"


def test_an_empty_triton_cache_costs_ten_seconds_of_warm_up():
    rows = ls.steps(real("empty-triton-cache"), utc("2026-12-07 12:54:00"), None)[0]
    got = by_name(rows)
    assert got["warmup"]["seconds"] == 10 and got["weights"]["read_seconds"] == 9.15
    assert not got["readiness"]["known"] and got["readiness"]["detail"] == "not Ready yet"


def test_the_tiny_models_api_server_starts_after_the_engine():
    rows = ls.steps(real("tiny-sigterm-default"), utc("2026-12-07 12:56:30"), utc("2026-12-07 12:57:20"))[0]
    assert by_name(rows)["server_start"]["seconds"] == 6  # 'init engine' at :05, uvicorn's lines at :11


# vLLM 0.9.0, built from its sources (vllm/logger.py: "%(levelname)s %(asctime)s [%(filename)s:%(lineno)d]"; the engine
# process's "(EngineCore_0 pid=N) " prefix from v1/engine/core.py:681 _add_prefix, its name from v1/utils.py:132).
V0_9_0 = [
    # entrypoints/openai/api_server.py:1289
    "INFO 06-01 10:00:05 [api_server.py:1289] vLLM API server version 0.9.0",
    # v1/engine/core.py:65
    "(EngineCore_0 pid=201) INFO 06-01 10:00:21 [core.py:65] Initializing a V1 LLM engine (v0.9.0) with config: "
    "model='/ram-models/m', enforce_eager=False, kv_cache_dtype=auto",
    # model_executor/model_loader/default_loader.py:281
    "(EngineCore_0 pid=201) INFO 06-01 10:00:33 [default_loader.py:280] Loading weights took 7.10 seconds",
    # v1/worker/gpu_model_runner.py:1549
    "(EngineCore_0 pid=201) INFO 06-01 10:00:34 [gpu_model_runner.py:1549] "
    "Model loading took 13.5083 GiB and 8.512345 seconds",
    # compilation/monitor.py:33
    "(EngineCore_0 pid=201) INFO 06-01 10:00:52 [monitor.py:33] torch.compile takes 14.20 s in total",
    # v1/core/kv_cache_utils.py:637 (0.9.0 has no "Available KV cache memory" line)
    "(EngineCore_0 pid=201) INFO 06-01 10:00:55 [kv_cache_utils.py:637] GPU KV cache size: 463,856 tokens",
    # v1/worker/gpu_model_runner.py:1933
    "(EngineCore_0 pid=201) INFO 06-01 10:01:20 [gpu_model_runner.py:1933] Graph capturing finished in 25 secs, "
    "took 0.53 GiB",
    # v1/engine/core.py:167
    "(EngineCore_0 pid=201) INFO 06-01 10:01:20 [core.py:167] init engine (profile, create kv cache, warmup model) "
    "took 46.10 seconds",
    # entrypoints/openai/api_server.py:1336
    "INFO 06-01 10:01:21 [api_server.py:1336] Starting vLLM API server on http://0.0.0.0:8080",
    # uvicorn (untimed)
    "INFO:     Application startup complete.",
]


def test_vllm_0_9_0_lines():
    started, ready = utc("2026-06-01 09:59:50"), utc("2026-06-01 10:01:30")
    rows, why = ls.steps(V0_9_0, started, ready)
    got = by_name(rows)
    assert why == "" and all(r["known"] for r in rows)
    assert got["imports"]["seconds"] == 15 and got["engine_start"]["seconds"] == 16
    assert got["weights"]["seconds"] == pytest.approx(8.512345) and got["weights"]["gib"] == 13.5083
    assert got["kv_cache"]["compile_seconds"] == 14.2 and got["kv_cache"]["seconds"] == 21  # to the KV size line
    assert got["warmup"]["graph_seconds"] == 25 and got["warmup"]["seconds"] == 25
    assert got["server_start"]["seconds"] == 1  # uvicorn's line has the time of the line before it
    assert sum(r["seconds"] for r in rows) == pytest.approx(100)
    assert "engine_start" in ls.STEPS and "config done" not in got["engine_start"]["detail"]  # no APIServer prefix
    assert ls.step_lever(got["warmup"], "ram_copy", None) == (
        "warm-up 25.0s: CUDA graphs 25.0s; --enforce-eager skips them at some decode speed"
    )
    assert ls.step_lever(got["kv_cache"], "ram_copy", None).startswith("profiling 21.0s, torch.compile 14.2s: keep")


# vLLM 0.33.0, built from its sources (vllm/logger.py:28 "(%(vllm_process_name)s pid=%(process)d) %(levelname)s ...";
# entrypoints/launchers/api_server/entry.py:166 decorate_logs("APIServer")), here with the kubelet's timestamps
# (timestamps=true: RFC 3339 with nanoseconds), the container started just before midnight UTC on New Year's Eve.
V0_33_0 = [
    # entrypoints/common/startup.py:38, with VLLM_DISABLE_LOG_LOGO
    "(APIServer pid=1) INFO 12-31 23:59:58 [startup.py:38] vLLM server version 0.33.0, serving model /ram-models/m",
    # v1/engine/core.py:140
    "(EngineCore pid=90) INFO 01-01 00:00:19 [core.py:140] Initializing a V1 LLM engine (v0.33.0) with config: "
    "model='/ram-models/m', enforce_eager=False",
    # model_executor/model_loader/default_loader.py:507
    "(EngineCore pid=90) INFO 01-01 00:00:30 [default_loader.py:506] Loading weights took 7.05 seconds",
    # v1/worker/gpu/model_runner.py:429
    "(EngineCore pid=90) INFO 01-01 00:00:31 [model_runner.py:428] Model loading took 13.51 GiB memory and "
    "8.700000 seconds",
    # compilation/monitor.py:20 (the message) and :62 (the call)
    "(EngineCore pid=90) INFO 01-01 00:00:55 [monitor.py:62] torch.compile took 21.40 s in total",
    # v1/worker/gpu_worker.py:773
    "(EngineCore pid=90) INFO 01-01 00:00:58 [gpu_worker.py:772] Available KV cache memory: 54.12 GiB",
    # v1/worker/gpu/model_runner.py:1164
    "(EngineCore pid=90) INFO 01-01 00:01:10 [model_runner.py:1163] Graph capturing finished in 12 secs, took 0.48 GiB",
    # v1/engine/core.py:406
    "(EngineCore pid=90) INFO 01-01 00:01:11 [core.py:405] init engine (profile, create kv cache, warmup model) took "
    "40.22 s (compilation: 21.40 s)",
    # entrypoints/launchers/api_server/entry.py:139
    "(APIServer pid=1) INFO 01-01 00:01:12 [entry.py:139] Starting vLLM server on http://0.0.0.0:8080",
    "(APIServer pid=1) INFO:     Application startup complete.",
]


def stamped(lines: list[str], start: dt.datetime) -> list[str]:
    """Each line with the kubelet's timestamp in front, 0.4 s after its vLLM time (uvicorn's: 0.7 s after the last)."""
    out, last = [], start
    for line in lines:
        found = vl._VLLM.match(line)
        if found:
            last = vl._year(found["md"], found["hms"], start) + dt.timedelta(seconds=0.4)
        else:
            last = last + dt.timedelta(seconds=0.3)
        out.append(last.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z " + line)
    return out


def test_vllm_0_33_0_lines_with_the_kubelets_timestamps_over_new_year():
    started, ready = utc("2026-12-31 23:59:40"), utc("2027-01-01 00:01:20")
    rows, why = ls.steps(stamped(V0_33_0, started), started, ready)
    got = by_name(rows)
    assert why == "" and all(r["known"] for r in rows)
    assert got["imports"]["seconds"] == pytest.approx(18.4) and got["engine_start"]["start"] == "2026-12-31T23:59:58Z"
    assert got["engine_start"]["end"] == "2027-01-01T00:00:19Z"
    assert got["weights"]["seconds"] == pytest.approx(8.7) and got["weights"]["read_seconds"] == 7.05
    assert got["kv_cache"]["compile_seconds"] == 21.4 and got["warmup"]["graph_seconds"] == 12
    assert got["server_start"]["seconds"] == pytest.approx(1.3)  # uvicorn's line dated by the kubelet
    assert sum(r["seconds"] for r in rows) == pytest.approx(100)
    # The same lines without the kubelet's timestamps: vLLM's own clock, to the second, the year from the start.
    bare = ls.steps(V0_33_0, started, ready)[0]
    assert by_name(bare)["engine_start"]["end"] == "2027-01-01T00:00:19Z"
    assert by_name(bare)["server_start"]["seconds"] == 1


def test_what_the_log_does_not_say_is_not_made_up():
    started = utc("2026-06-01 09:59:50")
    no_kv = [line for line in V0_9_0 if "KV cache size" not in line]
    rows = ls.steps(no_kv, started, utc("2026-06-01 10:01:30"))[0]
    got = by_name(rows)
    assert not got["kv_cache"]["known"] and got["kv_cache"]["seconds"] is None
    assert got["kv_cache"]["detail"] == "no 'Available KV cache memory' line in the log"
    assert got["warmup"]["seconds"] == 46 and got["warmup"]["detail"].endswith("(with kv cache: not logged)")
    assert sum(r["seconds"] or 0 for r in rows) == pytest.approx(100)
    assert ls.steps("container vllm is waiting to start", started, None) == (
        [],
        "its log cannot be read: container vllm is waiting to start",
    )
    assert ls.steps(["RESULT {}"], started, None)[1].startswith("its log holds no vLLM start-up line")
    # A container whose clock is not UTC (TZ=America/New_York): its lines read five hours early.
    assert "not UTC" in ls.steps(V0_9_0, utc("2026-06-01 14:59:50"), None)[1]


def test_the_ram_copy_that_did_not_pay():
    """Staging 8.4 s at 1.7 GB/s for 14.5 GB, then 7.15 s reading from /dev/shm, against 7.32 s reading the same
    checkpoint straight from local disk: both read figures from the real logs."""
    ram = by_name(ls.steps(real(WARM[0]), WARM[1], WARM[2])[0])["weights"]
    disk = by_name(ls.steps(real(COLD[0]), COLD[1], COLD[2])[0])["weights"]
    staging = {"seconds": 8.4, "bytes": 14_496_666_118, "throughput_bytes_per_s": 1_725_793_585}
    measured = ls.ram_copy(staging, ram, direct_read_seconds=disk["read_seconds"])
    assert not measured["paid"] and measured["saved_seconds"] == pytest.approx(0.17)
    assert measured["cost_seconds"] == pytest.approx(8.23)
    assert ls.step_lever(dict(ram, seconds=8.8), "ram_copy", measured) == (
        "weights 8.8s: load_strategy direct (runai_streamer on network storage): the RAM copy cost 8.4s and saved "
        "170ms of reading (the weights read in 7.2s from RAM; a direct start read them in 7.3s)"
    )
    # Without a direct start to compare, the source is read at least as slowly as staging read it.
    bound = ls.ram_copy(staging, ram)
    assert not bound["paid"] and bound["direct_read_seconds"] == pytest.approx(8.4)
    assert "the source gives 14.5 GB at 1.7 GB/s, 8.4s" in ls.ram_copy_lever(bound)
    # A slow network volume read directly (a direct start took 60 s): the copy paid.
    assert ls.ram_copy(staging, ram, direct_read_seconds=60.0)["paid"]
    assert ls.ram_copy({"seconds": 0.0, "bytes": 0}, ram) is None  # nothing copied
    assert ls.ram_copy(staging, dict(ram, read_seconds=None)) is None  # a loader without the line
