"""The start-up timeline's rows from objects as the API server returns them: each phase's source, the shapes where a
different phase is the slowest (pull-, staging-, load-, node-bound), and the phases that cannot be known.
The same against a real API server (status subresource, kubelet-shaped events, canned logs) is in
tests/integration/test_startup_timeline.py."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from ansible_collections.llmops.vllm.plugins.module_utils import model_stage as ms
from ansible_collections.llmops.vllm.plugins.module_utils import startup_timeline as st

T0 = dt.datetime(2026, 1, 15, 10, 0, 0, tzinfo=dt.UTC)
IMAGE = "vllm/vllm-openai:v0.9.0"
# A RESULT line as the staging engine prints it (model_stage cli.main; checked against it below).
STAGED = (
    'RESULT {"bytes": 14496666118, "changed": true, "command": "stage", "copied_files": 3, "elapsed_ms": 14950.2, '
    '"reused_files": 0, "throughput_bytes_per_s": 969666625}'
)


def at(seconds: float) -> str:
    return (T0 + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(scheduled=0.0, stage=(114, 129), started=130, ready=199, init=True, node="gpu-a", restarts=0) -> dict:
    """A server pod as the API server returns it after a start with these times (seconds after creation)."""
    spec = {"nodeName": node, "containers": [{"name": "vllm", "image": IMAGE, "args": ["--model", "/ram-models/m"]}]}
    status: dict = {"conditions": [], "containerStatuses": []}
    if scheduled is not None:
        status["conditions"].append({"type": "PodScheduled", "status": "True", "lastTransitionTime": at(scheduled)})
    if ready is not None:
        status["conditions"].append({"type": "Ready", "status": "True", "lastTransitionTime": at(ready)})
    if init:
        spec["initContainers"] = [{"name": "model-loader", "image": IMAGE}]
        state = (
            {"terminated": {"exitCode": 0, "startedAt": at(stage[0]), "finishedAt": at(stage[1])}}
            if stage[1] is not None
            else {"running": {"startedAt": at(stage[0])}}
        )
        status["initContainerStatuses"] = [{"name": "model-loader", "state": state, "restartCount": restarts}]
    if started is not None:
        status["containerStatuses"] = [{"name": "vllm", "state": {"running": {"startedAt": at(started)}}}]
    meta = {"name": "mistral-abc", "namespace": "ns", "uid": "u-1", "creationTimestamp": at(0)}
    return {"metadata": meta, "spec": spec, "status": status}


def event(reason: str, message: str, seconds: float, container="model-loader", init=True, uid="u-1") -> dict:
    """A core/v1 Event as the kubelet records it (kubernetes v1.35.4 pkg/kubelet/container/ref.go field paths)."""
    field = f"spec.{'initContainers' if init else 'containers'}{{{container}}}"
    involved = {"kind": "Pod", "name": "mistral-abc", "uid": uid, "fieldPath": field}
    return {"involvedObject": involved, "reason": reason, "message": message, "firstTimestamp": at(seconds)}


def pulled(seconds: float, pull: str, total: str | None = None, size: int | None = 10_800_000_000) -> dict:
    """The kubelet's Pulled message (kubernetes v1.35.4 pkg/kubelet/images/image_manager.go), or an older one."""
    text = f'Successfully pulled image "{IMAGE}" in {pull}'
    text += f" ({total} including waiting)" if total else ""
    text += f". Image size: {size} bytes." if size else ""
    return event("Pulled", text, seconds)


PRESENT = event("Pulled", f'Container image "{IMAGE}" already present on machine', 129, "vllm", init=False)


def rows(report: dict) -> dict:
    return {row["phase"]: row for row in report["phases"]}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1m52.3s", 112.3), ("39.356s", 39.356), ("512ms", 0.512), ("1h2m3s", 3723), ("0s", 0), ("1.5µs", 1.5e-6)],
)
def test_go_durations_as_the_kubelet_prints_them(text, seconds):
    assert st.go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "1m52.3", "fast", "1m 2s"])
def test_what_is_not_a_go_duration(text):
    assert st.go_duration(text) is None


def test_pull_bound_start_names_the_pull_and_its_lever():
    events = [event("Pulling", f'Pulling image "{IMAGE}"', 1), pulled(113, "1m50.1s", "1m52.3s"), PRESENT]
    report = st.pod_timeline(pod(), events, stage_log=["stage: ...", STAGED], ttft_ms=61.3)
    got = rows(report)
    assert report["unknown"] == [] and report["ready_seconds"] == 199
    assert got["node"]["seconds"] == 0 and "already there" not in got["node"]["detail"]  # no Node object given
    assert got["image_pull"]["seconds"] == pytest.approx(112.3) and got["image_pull"]["start"] == at(1)
    assert got["image_pull"]["detail"] == (
        "model-loader: pulled 10.8 GB in 1m50s (98.1 MB/s) after 2.2s queued behind other pulls; vllm: already present"
    )
    assert got["staging"]["seconds"] == 15 and got["staging"]["bytes"] == 14496666118
    assert got["model_load"]["seconds"] == 69 and got["first_token"]["seconds"] == pytest.approx(0.0613)
    assert report["slowest"]["phase"] == "image_pull"
    assert report["slowest"]["lever"].startswith("image pull 1m52s: pre-pull the image")


def test_staging_bound_start_names_the_rate_and_the_levers():
    slow = STAGED.replace('"throughput_bytes_per_s": 969666625', '"throughput_bytes_per_s": 402000000')
    events = [pulled(3, "2.1s", "2.1s"), PRESENT]
    report = st.pod_timeline(pod(stage=(4, 40), started=41, ready=60), events, stage_log=[slow])
    assert report["slowest"]["phase"] == "staging"
    assert report["slowest"]["lever"] == (
        "staging 36.0s at 402.0 MB/s: a higher FSx throughput tier or more stage workers; "
        "direct or runai_streamer skip the copy"
    )


def test_load_bound_start_names_the_engine_start_up():
    events = [pulled(3, "2.1s", "2.1s"), PRESENT]
    report = st.pod_timeline(pod(stage=(4, 12), started=13, ready=253), events, stage_log=[STAGED])
    assert report["slowest"]["phase"] == "model_load"
    assert report["slowest"]["lever"].startswith("model load 4m00s: engine start-up")


def test_direct_load_has_no_staging_and_points_at_ram_copy():
    events = [pulled(3, "1s", "1s")]
    p = pod(init=False, started=5, ready=185)
    report = st.pod_timeline(
        p,
        [dict(e, involvedObject=dict(e["involvedObject"], fieldPath="spec.containers{vllm}")) for e in events],
        load_strategy="direct",
    )
    got = rows(report)
    assert got["staging"]["known"] and got["staging"].get("skipped") and got["staging"]["seconds"] == 0
    assert report["slowest"]["lever"].startswith("model load 3m00s: the weights are read from the volume")


def test_node_from_karpenter_reports_the_nodeclaim_launch():
    claim = {
        "metadata": {"name": "gpu-x7k2p", "creationTimestamp": at(1)},
        "status": {
            "nodeName": "gpu-a",
            # karpenter v1.8.0 pkg/apis/v1/nodeclaim_status.go condition types
            "conditions": [
                {"type": "Launched", "status": "True", "lastTransitionTime": at(31)},
                {"type": "Registered", "status": "True", "lastTransitionTime": at(95)},
                {"type": "Initialized", "status": "True", "lastTransitionTime": at(110)},
            ],
        },
    }
    p = pod(scheduled=112, stage=(130, 140), started=141, ready=160)
    events = [pulled(128, "15s"), PRESENT]
    report = st.pod_timeline(p, events, stage_log=[STAGED], nodeclaim=claim)
    got = rows(report)
    assert got["node"]["seconds"] == 112 and got["node"]["nodeclaim"] == "gpu-x7k2p"
    assert "(launched +30.0s, registered +1m34s, initialized +1m49s)" in got["node"]["detail"]
    assert report["slowest"]["phase"] == "node" and "Karpenter launched a node" in report["slowest"]["lever"]


def test_a_node_that_joined_after_the_pod_and_one_that_was_there():
    late = {"metadata": {"creationTimestamp": at(40)}}
    early = {"metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"}}
    assert "joined 40.0s after the pod was created" in st.node_phase(pod(scheduled=50), late, None)["detail"]
    assert st.node_phase(pod(), early, None)["detail"] == "on gpu-a, a node that was already there"


def test_older_kubelet_messages_without_waiting_or_size():
    report = st.pod_timeline(pod(), [pulled(60, "58.2s", None, None), PRESENT], stage_log=[STAGED])
    assert rows(report)["image_pull"]["seconds"] == pytest.approx(58.2)
    assert rows(report)["image_pull"]["detail"].startswith("model-loader: pulled in 58.2s;")


def test_what_cannot_be_known_says_why():
    report = st.pod_timeline(pod(), [], stage_log='pods "mistral-abc" not found')
    got = rows(report)
    assert report["unknown"] == ["image_pull", "first_token"]
    assert got["image_pull"]["seconds"] is None and "events are kept 1 h" in got["image_pull"]["detail"]
    assert got["staging"]["seconds"] == 15  # the container state still tells the span
    assert 'its log cannot be read: pods "mistral-abc" not found' in got["staging"]["detail"]
    assert "no probe ran" in got["first_token"]["detail"]
    # Another pod's events (same name, another uid: a pod re-created under the name) are not this pod's.
    other = [dict(pulled(113, "1s"), involvedObject=dict(pulled(1, "1s")["involvedObject"], uid="u-2"))]
    assert "no kubelet events" in rows(st.pod_timeline(pod(), other))["image_pull"]["detail"]


def test_a_pod_still_starting():
    report = st.pod_timeline(pod(stage=(10, None), started=None, ready=None), [pulled(9, "8s")])
    got = rows(report)
    assert got["staging"]["detail"] == f"still staging since {at(10)}" and not got["staging"]["known"]
    assert not got["model_load"]["known"] and report["ready_seconds"] is None
    unscheduled = st.pod_timeline(pod(scheduled=None, stage=(0, None), started=None, ready=None), [])
    assert rows(unscheduled)["node"]["detail"] == "not scheduled yet"


def test_download_job_rows():
    job = {"metadata": {"name": "model-download"}, "status": {"startTime": at(0), "completionTime": at(252)}}
    fetched = STAGED.replace('"stage"', '"download"').replace("969666625", "57455000")
    assert st.job_timeline(job, [fetched])["detail"] == "14.5 GB fetched at 57.5 MB/s (3 files, 0 already there)"
    reused = fetched.replace('"changed": true', '"changed": false')
    assert st.job_timeline(job, [reused])["detail"] == "already downloaded; nothing fetched"
    assert "no RESULT line" in st.job_timeline(job, ["consolidated.safetensors"])["detail"]
    assert not st.job_timeline({"metadata": {"name": "j"}, "status": {}}, None)["known"]


def test_the_result_line_is_what_the_engine_prints(tmp_path):
    """The canned line above and the kwok logs carry the keys the engine's CLI writes, so they cannot drift."""
    from ansible_collections.llmops.vllm.tests.model_factory import make_mistral_model

    make_mistral_model(tmp_path / "src")
    err = io.StringIO()
    assert ms.main(["stage", "--src", str(tmp_path / "src"), "--dest", str(tmp_path / "dst")], io.StringIO(), err) == 0
    printed = ms.result_from_log(err.getvalue().splitlines())
    assert printed["command"] == "stage" and printed["changed"] and printed["copied_files"] == 3
    assert set(printed) == set(json.loads(STAGED[len(ms.RESULT_PREFIX) :]))


def test_a_staging_inside_one_second_reads_the_engines_clock():
    """The kubelet stamps container states to the second, so a 38 ms copy reads 0 s between them; the RESULT line's
    elapsed_ms is the figure then (seen on the real node: the staging row said 0 ms)."""
    line = STAGED.replace('"elapsed_ms": 14950.2', '"elapsed_ms": 38.0')
    got = rows(st.pod_timeline(pod(stage=(5, 5)), [PRESENT], stage_log=[line]))
    assert got["staging"]["seconds"] == pytest.approx(0.038)


def test_table_lines():
    report = st.pod_timeline(pod(), [pulled(113, "1m50.1s", "1m52.3s"), PRESENT], stage_log=[STAGED])
    lines = st.table([report])
    assert lines[0] == "mistral-abc on gpu-a: Ready after 3m19s (times UTC)"
    assert lines[2].split()[:4] == ["image", "pull", "10:00:00", "1m52s"]
    assert lines[-1].startswith("  slowest: image pull 1m52s")


def test_a_probe_measured_after_the_report_fills_the_first_token_row():
    """deploy.yml reads the timeline in the servers' step and probes afterwards: the filter puts the probe's time
    into the row and works out the slowest phase again."""
    staged_fast = STAGED.replace('"elapsed_ms": 14950.2', '"elapsed_ms": 400.0')
    fast = st.pod_timeline(pod(stage=(1, 2), started=3, ready=4), [pulled(1, "0.5s"), PRESENT], stage_log=[staged_fast])
    report = st.summary([dict(fast, deployment="mistral")], [])
    assert report["pods"][0]["unknown"] == ["first_token"]
    joined = st.merged([report, {"pods": [], "jobs": []}], {"mistral": 9000.0, "other": None})
    [again] = joined["pods"]
    assert again["unknown"] == [] and again["slowest"]["phase"] == "first_token"
    assert joined["slowest"]["lever"].startswith("first token 9.0s")
    assert joined["table"][-2].split()[:4] == ["first", "token", "-", "9.0s"]


def _real_start(log: str, started: str, ready: str, stage: tuple[str, str] | None = None) -> dict:
    """A server pod around a real vLLM 0.23.0 log (tests/unit/.../fixtures): the log has neither the container's
    start nor the Ready condition, so the test sets both."""
    p = pod(init=stage is not None)
    p["status"]["containerStatuses"][0]["state"]["running"]["startedAt"] = started
    p["status"]["conditions"][-1]["lastTransitionTime"] = ready
    p["metadata"]["creationTimestamp"] = stage[0] if stage else started
    if stage:
        p["status"]["initContainerStatuses"][0]["state"]["terminated"].update(startedAt=stage[0], finishedAt=stage[1])
    return p


def _fixture(name: str) -> list[str]:
    from pathlib import Path

    return (Path(__file__).parent / "fixtures" / f"vllm-0.23.0-{name}.log").read_text(encoding="utf-8").splitlines()


def test_a_cold_load_names_its_slowest_step_from_the_vllm_log():
    """The first start of a 7B model read from disk: 94 s of the 2m42s load is FlashInfer compiling its kernels."""
    p = _real_start("first-start-disk", "2026-12-07T12:49:18Z", "2026-12-07T12:52:00Z")
    log = _fixture("mistral7b-shape-first-start-disk")
    report = st.pod_timeline(p, [PRESENT], server_log=log, load_strategy="direct")
    load = rows(report)["model_load"]
    assert load["seconds"] == 162 and load["detail"] == "vllm start to Ready"  # the row consumers read is unchanged
    assert [s["phase"] for s in load["steps"]] == [
        "imports", "engine_start", "device_setup", "weights", "kv_cache", "warmup", "server_start", "readiness",
    ]  # fmt: skip
    assert sum(s["seconds"] for s in load["steps"]) == pytest.approx(162)
    assert report["slowest"]["phase"] == "model_load"
    assert report["slowest"]["lever"] == (
        "model load 2m42s, slowest step warm-up 1m34s: kernels compiled at start (FlashInfer, Triton); "
        "keep the JIT caches on the volume (not built yet)"
    )
    lines = st.table([report])
    warm = next(line for line in lines if line.startswith("    warm-up "))
    assert warm.split()[1:3] == ["12:50:19", "1m34s"]
    assert lines[lines.index(warm) - 2].startswith("    weights    12:50:07     8.8s  13.51 GiB onto the GPU")


def test_a_ram_copy_that_did_not_pay_says_load_strategy_direct():
    """Staged 14.5 GB at 1.7 GB/s in 8.4 s, then vLLM read them from RAM in 7.15 s (the real warm log): reading the
    source at staging's rate would have taken 8.4 s, so the copy saved 1.3 s for 8.4 s."""
    staged = STAGED.replace('"elapsed_ms": 14950.2', '"elapsed_ms": 8400.0').replace("969666625", "1725793585")
    stage = ("2026-12-07T12:52:21Z", "2026-12-07T12:52:29Z")
    p = _real_start("dev-shm-warm-caches", "2026-12-07T12:52:30Z", "2026-12-07T12:53:25Z", stage)
    log = _fixture("mistral7b-shape-dev-shm-warm-caches")
    report = st.pod_timeline(p, [PRESENT], stage_log=[staged], server_log=log, load_strategy="ram_copy")
    got = rows(report)
    assert got["staging"]["ram_copy"]["paid"] is False and report["ram_copy"]["saved_seconds"] == pytest.approx(1.25)
    assert report["slowest"]["lever"].startswith("model load 55.0s, slowest step engine start 20.0s")
    expected = (
        "load_strategy direct (runai_streamer on network storage): the RAM copy cost 8.4s and saved 1.3s of reading "
        "(the weights read in 7.2s from RAM; the source gives 14.5 GB at 1.7 GB/s, 8.4s)"
    )
    assert st.table([report])[-1] == f"  ram copy: {expected}"
    assert st.lever(got["staging"]) == f"staging 8.4s: {expected}"
    # A copy that paid (a source read at 173 MB/s: 84 s to read directly) keeps the staging lever and adds no line.
    fast = log[:]
    fast[fast.index(next(x for x in fast if "Loading weights took" in x))] = (
        "(EngineCore pid=2366) INFO 12-07 12:53:13 [default_loader.py:397] Loading weights took 0.40 seconds"
    )
    quick = st.pod_timeline(p, [PRESENT], stage_log=[staged.replace("1725793585", "172579358")], server_log=fast)
    assert quick["ram_copy"]["paid"] and not any(line.startswith("  ram copy:") for line in st.table([quick]))


def test_an_unreadable_server_log_keeps_the_load_row_and_says_why():
    report = st.pod_timeline(pod(), [PRESENT], stage_log=[STAGED], server_log='container "vllm" not found')
    load = rows(report)["model_load"]
    assert load["seconds"] == 69 and load["steps"] == []
    assert load["detail"] == 'vllm start to Ready; steps unknown: its log cannot be read: container "vllm" not found'
    assert report["slowest"]["lever"].startswith("model load 1m09s: engine start-up")
