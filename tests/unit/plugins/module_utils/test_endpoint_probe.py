"""The endpoint probe engine against a fake vLLM server over real HTTP (tests/vllm_fake_server.py).

Each broken behaviour must fail with its own ``reason`` and a message that says what to do; timings are only
asserted as lower bounds the server's own delays guarantee.
"""

from __future__ import annotations

import json
import math
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ansible_collections.llmops.vllm.plugins.module_utils import endpoint_probe as ep
from ansible_collections.llmops.vllm.tests.vllm_fake_server import (
    DEFAULT_MODEL,
    FakeVLLM,
    FakeVLLMConfig,
    TLSFiles,
    free_port,
    make_tls_files,
)
from werkzeug import Response

ALL = ep.CHECKS


@pytest.fixture()
def fake_vllm() -> Iterator[FakeVLLM]:
    """A started fake vLLM server with the default config; a test changes ``fake_vllm.config`` to break it."""
    with FakeVLLM() as server:
        yield server


def run(url: str, **options) -> dict:
    """Probe ``url``; options of :func:`url_target` and of :class:`ProbeSettings` mixed."""
    target = {
        k: options.pop(k) for k in ("api_key", "validate_certs", "ca_path", "client_cert", "client_key") if k in options
    }
    return ep.probe(ep.url_target(url, **target), ep.ProbeSettings(**options))


def assert_failed(result: dict, check: str, reason: str, *fragments: str) -> dict:
    """The first failing check is ``check`` with ``reason``, and its message carries every fragment."""
    assert result["failed"] is True, result
    assert (result["failed_check"], result["reason"]) == (check, reason), result["msg"]
    entry = result["checks"][check]
    assert entry["passed"] is False and entry["reason"] == reason
    assert result["msg"] == f"{check}: {entry['msg']}"
    for fragment in fragments:
        assert fragment in result["msg"], result["msg"]
    return entry


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


# ---------------------------------------------------------------------------------------------- conforming


def test_conforming_server_passes_every_check(fake_vllm: FakeVLLM) -> None:
    result = run(fake_vllm.url, checks=ALL, load=ep.LoadSettings(requests=6, concurrency=3, max_tokens=16))
    assert result["failed"] is False, result.get("msg")
    assert list(result["checks"]) == [*ALL, "load"]
    assert all(entry["passed"] and entry["reason"] is None for entry in result["checks"].values())
    assert result["model"] == DEFAULT_MODEL and result["models"] == [DEFAULT_MODEL]
    assert result["version"] == "0.9.0" and result["waited_ms"] == 0.0
    assert result["checks"]["models"]["max_model_len"] == 2048
    chat = result["checks"]["chat"]
    assert chat["content"] == "The capital of France is Paris." and chat["finish_reason"] == "stop"
    assert chat["usage"]["completion_tokens"] == 6
    call = result["checks"]["tool_call"]
    assert call["name"] == "get_current_weather" and call["arguments"] == {"city": "Paris"}
    assert re.fullmatch(r"[A-Za-z0-9]{9}", call["id"]) and call["finish_reason"] == "tool_calls"
    stream = result["checks"]["stream"]
    assert stream["content"] == chat["content"] and stream["completion_tokens"] == 6
    assert result["ttft_ms"] == stream["ttft_ms"] > 0 and result["inter_token_ms"] == stream["inter_token_ms"] >= 0
    assert result["checks"]["metrics"]["series"] >= 2
    assert "num_requests_running" in result["checks"]["metrics"]["values"]
    # What went over the wire: the documented requests, in order.
    seen = [(r.method, r.path) for r in fake_vllm.requests]
    assert seen[:4] == [
        ("GET", "/health"),
        ("GET", "/v1/models"),
        ("GET", "/version"),
        ("POST", "/v1/chat/completions"),
    ]
    bodies = [r.json for r in fake_vllm.requests_to("/v1/chat/completions")]
    assert all(b["model"] == DEFAULT_MODEL for b in bodies)
    assert bodies[1]["tool_choice"] == "auto" and bodies[1]["tools"][0]["function"]["name"] == "get_current_weather"
    assert bodies[2]["stream"] is True and bodies[2]["stream_options"] == {"include_usage": True}
    assert len(bodies) == 3 + 6  # chat, tool_call, stream, then the load requests


def test_openai_base_url_with_v1_and_an_explicit_model(fake_vllm: FakeVLLM) -> None:
    result = run(fake_vllm.url + "/v1/", model=DEFAULT_MODEL, checks=("chat",))
    assert result["failed"] is False, result.get("msg")
    # With the model given, /v1/models is not needed.
    assert list(result["checks"]) == ["health", "chat"]
    assert result["url"] == fake_vllm.url


def test_load_mode_reports_percentiles_and_throughput(fake_vllm: FakeVLLM) -> None:
    fake_vllm.config.reply = " ".join(f"word{i}" for i in range(40))
    fake_vllm.config.token_delay = 0.005
    result = run(fake_vllm.url, checks=("health",), load=ep.LoadSettings(requests=12, concurrency=4, max_tokens=20))
    assert result["failed"] is False, result.get("msg")
    load = result["load"]
    assert (load["requests"], load["concurrency"], load["succeeded"], load["errors"]) == (12, 4, 12, 0)
    assert load["first_error"] is None and load["errors_by_reason"] == {}
    for key in ("latency_ms", "ttft_ms", "inter_token_ms"):
        assert 0 <= load[key]["p50"] <= load[key]["p95"] <= load[key]["p99"]
    # Every request waited 20 token delays: the server's sleeps bound latency and per-token time from below.
    assert load["latency_ms"]["p50"] >= 20 * 5 and load["inter_token_ms"]["p50"] >= 5
    assert load["output_tokens"] == 12 * 20
    assert load["output_tokens_per_s"] == pytest.approx(240 / (load["duration_ms"] / 1000), rel=0.01)
    assert len(fake_vllm.requests_to("/v1/chat/completions")) == 12
    assert result["checks"]["load"] == {
        "passed": True,
        "reason": None,
        "latency_ms": load["latency_ms"]["p50"],
        "succeeded": 12,
        "errors": 0,
        "output_tokens_per_s": load["output_tokens_per_s"],
    }


def test_load_mode_counts_errors_and_keeps_the_first(fake_vllm: FakeVLLM) -> None:
    fake_vllm.config.malformed_json = {"/v1/chat/completions"}
    result = run(fake_vllm.url, checks=("health",), load=ep.LoadSettings(requests=5, concurrency=2))
    entry = assert_failed(result, "load", "malformed_response", "5 of 5 requests failed", "is not JSON")
    assert entry["errors"] == 5 and entry["succeeded"] == 0
    assert result["load"]["errors_by_reason"] == {"malformed_response": 5}
    assert result["load"]["latency_ms"] == {"p50": None, "p95": None, "p99": None}


def test_percentile_interpolates_between_ranks() -> None:
    assert ep.percentile([], 50) is None
    assert ep.percentile([7.0], 99) == 7.0
    values = [float(v) for v in range(1, 101)]
    assert ep.percentile(values, 50) == 50.5 and ep.percentile(values, 95) == 95.0
    assert ep.percentile(values, 99) == 99.0 and ep.percentile(list(reversed(values)), 100) == 100.0


# ---------------------------------------------------------------------------------------------- reach


def test_connection_refused() -> None:
    result = run(f"http://127.0.0.1:{free_port()}")
    assert_failed(result, "health", "connection_refused", "connection refused by 127.0.0.1:", "port")
    # Nothing else can pass: the rest is marked, not attempted.
    assert {name: entry["reason"] for name, entry in result["checks"].items() if name != "health"} == dict.fromkeys(
        ("models", "version", "chat", "tool_call", "stream"), "not_run"
    )


def test_dns_failure() -> None:
    result = run("http://vllm.invalid:8000")
    assert_failed(result, "health", "dns_failure", "cannot resolve host 'vllm.invalid'")


def test_tls_error_for_a_self_signed_certificate(tls: TLSFiles) -> None:
    with FakeVLLM(ssl_context=tls.server_context(self_signed=True)) as server:
        result = run(server.url)
        assert_failed(result, "health", "tls_error", "certificate verify failed", "ca_path")
        assert server.requests == []
        # The same server, when told not to verify: everything passes.
        assert run(server.url, validate_certs=False)["failed"] is False


def test_tls_with_a_private_ca_and_a_client_certificate(tls: TLSFiles) -> None:
    with FakeVLLM(ssl_context=tls.server_context(require_client_cert=True)) as server:
        without = run(server.url, ca_path=str(tls.ca))
        assert_failed(without, "health", "tls_error")
        ok = run(server.url, ca_path=str(tls.ca), client_cert=str(tls.client_cert), client_key=str(tls.client_key))
        assert ok["failed"] is False, ok.get("msg")


def test_https_url_against_a_plain_http_server(fake_vllm: FakeVLLM) -> None:
    result = run(fake_vllm.url.replace("http://", "https://"))
    assert_failed(result, "health", "tls_error", "does the server speak https")


def test_http_url_against_an_https_server(tls: TLSFiles) -> None:
    with FakeVLLM(ssl_context=tls.server_context()) as server:
        result = run(server.url.replace("https://", "http://"))
        assert_failed(result, "health", "connection_error", "http or https")


def test_tls_files_that_do_not_load(tmp_path: Path) -> None:
    with pytest.raises(ep.ProbeError) as caught:
        ep.url_target("https://127.0.0.1:1", ca_path=str(tmp_path / "missing.pem"))
    assert caught.value.reason == "tls_error" and "ca_path" in caught.value.message


def test_a_url_that_is_not_http() -> None:
    with pytest.raises(ValueError, match="http"):
        ep.url_target("vllm:8080")


# ---------------------------------------------------------------------------------------------- auth, model


def test_missing_api_key(fake_vllm: FakeVLLM) -> None:
    fake_vllm.config.api_key = "s3cret"
    result = run(fake_vllm.url)
    # vLLM leaves /health open and guards /v1.
    assert result["checks"]["health"]["passed"] is True
    entry = assert_failed(result, "models", "unauthorized", "401 Unauthorized on GET /v1/models", "set api_key")
    assert entry["status"] == 401
    assert result["checks"]["chat"]["reason"] == "not_run"


def test_wrong_api_key(fake_vllm: FakeVLLM) -> None:
    fake_vllm.config.api_key = "s3cret"
    result = run(fake_vllm.url, api_key="wrong", model=DEFAULT_MODEL, checks=("chat",))
    assert_failed(result, "chat", "unauthorized", "API key was rejected")


def test_right_api_key_is_sent_as_a_bearer_token(fake_vllm: FakeVLLM) -> None:
    fake_vllm.config.api_key = "s3cret"
    result = run(fake_vllm.url, api_key="s3cret")
    assert result["failed"] is False, result.get("msg")
    assert {r.headers.get("Authorization") for r in fake_vllm.requests if r.path.startswith("/v1")} == {"Bearer s3cret"}
    assert "s3cret" not in repr(result)


def test_model_not_listed(fake_vllm: FakeVLLM) -> None:
    result = run(fake_vllm.url, model="mistral")
    entry = assert_failed(result, "models", "model_not_found", "'mistral' is not served", DEFAULT_MODEL)
    assert entry["models"] == [DEFAULT_MODEL]
    # Nothing is asked of a model the server does not serve: the checks that need it are not run.
    assert fake_vllm.requests_to("/v1/chat/completions") == []
    assert {result["checks"][c]["reason"] for c in ("chat", "tool_call", "stream")} == {"not_run"}


def test_model_not_found_in_a_request(fake_vllm: FakeVLLM) -> None:
    result = run(fake_vllm.url, model="mistral", checks=("chat", "stream"))
    entry = assert_failed(result, "chat", "model_not_found", "404 Not Found", "The model `mistral` does not exist.")
    assert entry["status"] == 404
    assert result["checks"]["stream"]["reason"] == "model_not_found"


def test_several_models_and_none_named(fake_vllm: FakeVLLM) -> None:
    fake_vllm.config.models = ["mistral", "mistral-long"]
    result = run(fake_vllm.url)
    assert_failed(result, "models", "model_ambiguous", "mistral, mistral-long", "set model")
    assert result["checks"]["chat"] == {
        "passed": False,
        "reason": "not_run",
        "msg": "not run: models failed (model_ambiguous)",
    }
    assert result["checks"]["version"]["passed"] is True
    assert run(fake_vllm.url, model="mistral-long")["failed"] is False


# ---------------------------------------------------------------------------------------------- malformed


def test_malformed_models_json(fake_vllm: FakeVLLM) -> None:
    fake_vllm.config.malformed_json = {"/v1/models"}
    assert_failed(run(fake_vllm.url), "models", "malformed_response", "GET /v1/models", "not JSON")


def test_malformed_chat_json(fake_vllm: FakeVLLM) -> None:
    fake_vllm.config.malformed_json = {"/v1/chat/completions"}
    result = run(fake_vllm.url)
    assert_failed(result, "chat", "malformed_response", "POST /v1/chat/completions", "not JSON")
    # A malformed answer does not stop the other checks: they say what is wrong with theirs.
    assert result["checks"]["stream"]["reason"] == "malformed_response"
    assert "event 1 is not JSON" in result["checks"]["stream"]["msg"]


def test_a_well_formed_answer_without_a_tool_call(fake_vllm: FakeVLLM) -> None:
    fake_vllm.config.tool_calls = False
    result = run(fake_vllm.url)
    assert_failed(
        result, "tool_call", "no_tool_call", "without a tool call", "--tool-call-parser", "tool_choice: named"
    )
    assert [n for n, e in result["checks"].items() if not e["passed"]] == ["tool_call"]


def test_tool_arguments_that_are_not_json(fake_vllm: FakeVLLM) -> None:
    fake_vllm.config.tool_arguments = '{"city": "Paris"'
    assert_failed(run(fake_vllm.url), "tool_call", "malformed_response", "arguments is not valid JSON")


def test_tool_arguments_that_are_not_an_object(fake_vllm: FakeVLLM) -> None:
    fake_vllm.config.tool_arguments = '"Paris"'
    assert_failed(run(fake_vllm.url), "tool_call", "malformed_response", "not a JSON object")


def test_auto_tool_choice_disabled_on_0_9(fake_vllm: FakeVLLM) -> None:
    fake_vllm.config.auto_tool_choice = False
    result = run(fake_vllm.url)
    assert_failed(result, "tool_call", "tool_calling_disabled", "--enable-auto-tool-choice", "tool_choice: required")
    # Before 0.33 a forced call goes through guided decoding and needs no parser.
    for choice in ("required", "named"):
        forced = run(fake_vllm.url, tool_choice=choice)
        assert forced["failed"] is False, forced.get("msg")
        call = forced["checks"]["tool_call"]
        assert call["id"].startswith("chatcmpl-tool-") and call["finish_reason"] == "stop"
    named = [r.json for r in fake_vllm.requests_to("/v1/chat/completions") if "tools" in r.json][-1]
    assert named["tool_choice"] == {"type": "function", "function": {"name": "get_current_weather"}}


def test_tool_choice_on_0_33_goes_through_the_parser() -> None:
    with FakeVLLM(FakeVLLMConfig(release="0.33.0")) as server:
        required = run(server.url, tool_choice="required")["checks"]["tool_call"]
        named = run(server.url, tool_choice="named")["checks"]["tool_call"]
        assert (required["passed"], required["finish_reason"]) == (True, "tool_calls")
        assert (named["passed"], named["finish_reason"]) == (True, "stop")
        server.config.tool_parser = None
        for choice, said in (("required", 'tool_choice="required"'), ("named", 'tool_choice=function "get_')):
            result = run(server.url, tool_choice=choice)
            assert_failed(result, "tool_call", "tool_calling_disabled", said, "--tool-call-parser=<parser>")
            assert "tool_choice: required" not in result["msg"]
        # No advice to fall back on required where required needs the parser too.
        result = run(server.url)
        assert_failed(result, "tool_call", "tool_calling_disabled", "--enable-auto-tool-choice")
        assert "tool_choice: required" not in result["msg"]


@pytest.mark.parametrize(
    "release, health", [("0.9.0", 200), ("0.10.2", 500), ("0.33.0", 503)], ids=["0.9", "0.10", "0.33"]
)
def test_a_dead_engine_is_named_as_such(release: str, health: int) -> None:
    with FakeVLLM(FakeVLLMConfig(release=release, engine_dead=True)) as server:
        result = run(server.url, wait_timeout=1, poll_interval=0.2)
        if health == 200:  # 0.9.0's /health stays 200: the first request to the engine tells
            assert_failed(result, "chat", "engine_dead", "500 Internal Server Error", "engine died")
        elif health == 500:
            entry = assert_failed(result, "health", "engine_dead", "500 Internal Server Error on GET /health")
            assert entry["attempts"] == 1  # no waiting for a dead engine
        else:
            # A gateway may answer an empty 503 too: the reason stays not_ready, the message says what it means.
            assert_failed(result, "health", "not_ready", "last seen: 503", "engine died")


def test_empty_content(fake_vllm: FakeVLLM) -> None:
    fake_vllm.config.empty_content = True
    result = run(fake_vllm.url)
    assert_failed(result, "chat", "malformed_response", "content is empty")
    assert "no content" in result["checks"]["stream"]["msg"]


def test_a_stream_without_done_that_finished_is_complete(fake_vllm: FakeVLLM) -> None:
    # transformers serve and several gateways send no [DONE]; the last event's finish_reason ends the stream.
    fake_vllm.config.stream_done = False
    result = run(fake_vllm.url, load=ep.LoadSettings(requests=4, concurrency=2))
    assert result["failed"] is False, result.get("msg")
    assert result["checks"]["stream"]["done_marker"] is False and result["load"]["errors"] == 0


def test_a_stream_cut_off_before_it_finished(fake_vllm: FakeVLLM) -> None:
    fake_vllm.config.stream_done = False
    fake_vllm.config.stream_finish = False
    assert_failed(run(fake_vllm.url), "stream", "malformed_response", "without 'data: [DONE]' or a finish_reason")


def test_no_metrics_endpoint(fake_vllm: FakeVLLM) -> None:
    fake_vllm.config.metrics_endpoint = False
    assert_failed(run(fake_vllm.url, checks=("metrics",)), "metrics", "no_metrics_endpoint", "exposes no Prometheus")


def test_metrics_without_vllm_series_and_no_version_endpoint(fake_vllm: FakeVLLM) -> None:
    fake_vllm.config.metrics = False
    fake_vllm.config.version = None
    result = run(fake_vllm.url, checks=("version", "metrics"))
    assert_failed(result, "metrics", "malformed_response", "no vllm: series")
    version = result["checks"]["version"]
    assert (version["passed"], version["status"], version["present"]) == (True, 404, False)
    assert result["version"] is None


# ---------------------------------------------------------------------------------------------- time


def test_slow_streaming_is_measured(fake_vllm: FakeVLLM) -> None:
    fake_vllm.config.token_delay = 0.05
    result = run(fake_vllm.url, checks=("stream",))
    assert result["failed"] is False, result.get("msg")
    # The server sleeps before every token: lower bounds only.
    assert result["ttft_ms"] >= 50 and result["inter_token_ms"] >= 50


def test_stream_slower_than_timeout(fake_vllm: FakeVLLM) -> None:
    fake_vllm.config.token_delay = 0.4
    result = run(fake_vllm.url, checks=("stream",), timeout=1.0)
    assert_failed(result, "stream", "timeout", "within 1 s")


def test_request_timeout(fake_vllm: FakeVLLM) -> None:
    fake_vllm.config.response_delay = 2.0
    result = run(fake_vllm.url, checks=("chat",), timeout=0.5)
    assert_failed(result, "chat", "timeout", "no answer to POST /v1/chat/completions", "within 0.5 s")


def test_one_look_at_a_loading_vllm_is_refused_and_says_so(fake_vllm: FakeVLLM) -> None:
    fake_vllm.load_for(math.inf)
    result = run(fake_vllm.url)
    entry = assert_failed(result, "health", "connection_refused", "refuses connections until the model is loaded")
    assert entry["attempts"] == 1


def test_one_look_at_a_loading_server_behind_a_gateway(fake_vllm: FakeVLLM) -> None:
    fake_vllm.config.loading = "status"
    fake_vllm.load_for(math.inf)
    result = run(fake_vllm.url)
    entry = assert_failed(result, "health", "not_ready", "503 Service Unavailable on GET /health", "not serving yet")
    assert entry["attempts"] == 1 and entry["status"] == 503


def test_waits_while_vllm_loads_refusing_connections() -> None:
    with FakeVLLM(FakeVLLMConfig(ready_after=1.5)) as server:
        result = run(server.url, wait_timeout=60, poll_interval=0.2)
        assert result["failed"] is False, result.get("msg")
        assert result["waited_ms"] >= 1000 and result["checks"]["health"]["attempts"] > 1


def test_waits_through_503_until_ready(fake_vllm: FakeVLLM) -> None:
    fake_vllm.config.loading = "status"
    fake_vllm.load_for(2.0)
    start = time.monotonic()
    result = run(fake_vllm.url, wait_timeout=60, poll_interval=0.2)
    assert result["failed"] is False, result.get("msg")
    health = result["checks"]["health"]
    assert health["attempts"] > 1 and result["waited_ms"] == health["waited_ms"]
    # The server answered 503 for 2 s after load_for(): the wait cannot be much shorter than that.
    assert 1500 <= result["waited_ms"] <= (time.monotonic() - start) * 1000
    assert sum(1 for r in fake_vllm.requests_to("/health")) == health["attempts"]


def test_never_ready_fails_at_wait_timeout_with_the_last_status(fake_vllm: FakeVLLM) -> None:
    fake_vllm.config.loading = "status"
    fake_vllm.load_for(math.inf)
    start = time.monotonic()
    result = run(fake_vllm.url, wait_timeout=2, poll_interval=0.5)
    entry = assert_failed(result, "health", "not_ready", "not ready after 2 s (wait_timeout", "last seen: 503")
    assert time.monotonic() - start >= 2.0
    assert entry["status"] == 503 and entry["last_seen"] == "not_ready" and entry["attempts"] >= 3
    assert entry["waited_ms"] >= 2000


def test_waits_through_connection_refused_until_the_server_listens() -> None:
    server = FakeVLLM()
    timer = server.start_later(1.5)
    try:
        result = run(server.url, wait_timeout=60, poll_interval=0.2)
        assert result["failed"] is False, result.get("msg")
        assert result["waited_ms"] >= 1000 and result["checks"]["health"]["attempts"] > 1
    finally:
        timer.join()
        server.stop()


def test_nothing_ever_listens_fails_as_connection_refused_after_the_wait() -> None:
    result = run(f"http://127.0.0.1:{free_port()}", wait_timeout=1, poll_interval=0.3)
    entry = assert_failed(result, "health", "connection_refused", "not ready after 1 s", "connection refused")
    assert entry["attempts"] >= 2


def test_waits_through_a_silent_port() -> None:
    # A proxy that holds the connection while its backend loads: accepted, nothing answers.
    with FakeVLLM(FakeVLLMConfig(loading="silent", ready_after=1.5)) as server:
        result = run(server.url, wait_timeout=60, poll_interval=0.2)
        assert result["failed"] is False, result.get("msg")
        # The first request is held until the model is "loaded", then answered.
        assert result["checks"]["health"]["latency_ms"] >= 1000


def test_a_silent_port_that_never_answers_fails_as_not_ready() -> None:
    with FakeVLLM(FakeVLLMConfig(loading="silent")) as server:
        server.load_for(math.inf)
        result = run(server.url, wait_timeout=2, poll_interval=0.2)
        assert_failed(result, "health", "not_ready", "not ready after 2 s", "last seen: no answer to GET /health")


# ---------------------------------------------------------------------------------------------- service proxy


def test_target_from_a_kubernetes_configuration(tls: TLSFiles) -> None:
    kubernetes = pytest.importorskip("kubernetes")
    configuration = kubernetes.client.Configuration()
    configuration.host = "https://127.0.0.1:6443"
    configuration.api_key = {"authorization": "Bearer kube-token"}
    configuration.ssl_ca_cert = str(tls.ca)
    target = ep.target_from_kubernetes(configuration, "llm-prod", "mistral", "8080", extra_headers={"X-A": "b"})
    assert target.base_url == "https://127.0.0.1:6443/api/v1/namespaces/llm-prod/services/mistral:8080/proxy"
    assert target.headers == {"X-A": "b", "Authorization": "Bearer kube-token"}
    assert target.service == "llm-prod/mistral:8080" and target.ssl_context is not None
    assert target.proxies == {} and target.sends_api_key is False
    assert target.service_url == "https://127.0.0.1:6443/api/v1/namespaces/llm-prod/services/mistral"
    https = ep.service_target("http://api:8080/", "ns", "svc", "http", scheme="https")
    assert https.base_url == "http://api:8080/api/v1/namespaces/ns/services/https:svc:http/proxy"


# ------------------------------------------------------------------------------------ a server that is not vLLM

# Answers recorded from `transformers serve` (transformers 5.17) by tests/device/run.sh on the GPU machine: no
# /version, no /metrics, a stream without [DONE] whose last event carries finish_reason and usage, a 400 for a model
# other than the pinned one, and /v1/models 500 when the model was loaded from a folder and the hub cache is empty.
TS_MODEL = "llmops/tiny-mistral"
TS_PINNED = "{\"detail\":\"Server is pinned to 'llmops/tiny-mistral'; requested '%s'.\"}"


def _ts_chat(request):
    body = request.get_json(force=True)
    if body.get("model") not in (None, TS_MODEL):
        return Response(TS_PINNED % body["model"], status=400, content_type="application/json")
    meta = {"id": "94a30e59", "created": 1796037744, "model": f"{TS_MODEL}@main", "system_fingerprint": ""}
    usage = {"completion_tokens": 7, "prompt_tokens": 13, "total_tokens": 20}
    if body.get("stream"):
        events = [{"delta": {"content": w}, "index": 0} for w in ("Paris", " is", " the", " capital.")]
        chunks = [{**meta, "object": "chat.completion.chunk", "choices": [e]} for e in events]
        last = {"delta": {}, "finish_reason": "stop", "index": 0}
        chunks.append({**meta, "object": "chat.completion.chunk", "choices": [last], "usage": usage})
        text = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks)
        return Response(text, content_type="text/event-stream; charset=utf-8")
    if body.get("tools"):
        call = {
            "id": "4866e2d8_tool_call_0",
            "type": "function",
            "function": {"arguments": '{"city": "Paris"}', "name": "get_current_weather"},
        }
        message, finish = {"content": "", "role": "assistant", "tool_calls": [call]}, "tool_calls"
    else:
        message, finish = {"content": "Paris is the capital of France.", "role": "assistant"}, "stop"
    doc = {
        **meta,
        "object": "chat.completion",
        "usage": usage,
        "choices": [{"finish_reason": finish, "index": 0, "message": message}],
    }
    return Response(json.dumps(doc), content_type="application/json")


@pytest.fixture()
def transformers_serve(httpserver):
    httpserver.expect_request("/health").respond_with_json({"status": "ok"})
    httpserver.expect_request("/v1/models").respond_with_handler(
        lambda request: Response("Internal Server Error", status=500, content_type="text/plain")
    )
    httpserver.expect_request("/v1/chat/completions", method="POST").respond_with_handler(_ts_chat)
    httpserver.expect_request(re.compile("/(version|metrics)")).respond_with_json({"detail": "Not Found"}, status=404)
    return httpserver.url_for("/").rstrip("/")


def test_another_openai_server_is_measured_with_the_reasons_it_deserves(transformers_serve) -> None:
    result = run(transformers_serve, model=TS_MODEL, checks=ALL, load=ep.LoadSettings(requests=4, concurrency=2))
    checks = result["checks"]
    # /v1/models failed for a reason other than a missing model: the named model is still probed.
    assert (checks["models"]["reason"], checks["models"]["status"]) == ("http_error", 500)
    assert all(checks[c]["passed"] for c in ("health", "version", "chat", "tool_call", "stream", "load")), checks
    assert checks["version"]["present"] is False and checks["stream"]["done_marker"] is False
    assert checks["metrics"]["reason"] == "no_metrics_endpoint"


def test_another_servers_400_for_an_unserved_model_is_model_not_found(transformers_serve) -> None:
    result = run(transformers_serve, model="no-such/model", checks=("chat",))
    assert_failed(result, "chat", "model_not_found", "pinned to 'llmops/tiny-mistral'")


# ------------------------------------------------------------------------------------------- hostile servers


def raw_server(answer) -> tuple[str, threading.Event]:
    """A TCP server that reads one request per connection and hands the socket to ``answer(conn, request_line)``."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _addr = listener.accept()
            except OSError:
                continue
            request = conn.recv(65536).split(b"\r\n", 1)[0].decode()
            threading.Thread(target=answer, args=(conn, request, stop), daemon=True).start()
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}", stop


def _drip(conn, request, stop, content_type=b"application/json", first=b""):
    try:
        if request.startswith("GET /health"):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            return
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type + b"\r\nConnection: close\r\n\r\n" + first)
        while not stop.is_set():  # one byte every 0.2 s, forever: each read returns in time, the answer never ends
            conn.sendall(b" ")
            time.sleep(0.2)
    except OSError:
        pass
    finally:
        conn.close()


@pytest.mark.parametrize(
    "check, content_type, first",
    [("models", b"application/json", b""), ("stream", b"text/event-stream", b'data: {"id": "x", ')],
    ids=["an answer that drips", "a stream line that never ends"],
)
def test_a_dripping_answer_is_cut_off_at_the_timeout(check: str, content_type: bytes, first: bytes) -> None:
    url, stop = raw_server(lambda conn, request, done: _drip(conn, request, done, content_type, first))
    try:
        start = time.monotonic()
        result = run(url, model=DEFAULT_MODEL, checks=(check,), timeout=1.0)
        assert_failed(result, check, "timeout", "within 1 s")
        assert time.monotonic() - start < 5
    finally:
        stop.set()


def test_binary_garbage_is_described_not_echoed() -> None:
    garbage = bytes(range(256)) * 8192  # 2 MiB

    def answer(conn, request, stop):
        if request.startswith("GET /health"):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        else:
            head = (
                f"HTTP/1.1 500 Oops\r\nContent-Type: application/octet-stream\r\nContent-Length: {len(garbage)}\r\n\r\n"
            )
            conn.sendall(head.encode() + garbage)
        conn.close()

    url, stop = raw_server(answer)
    try:
        result = run(url, model=DEFAULT_MODEL, checks=("models",))
        entry = assert_failed(result, "models", "http_error", f"<{len(garbage)} bytes of binary data>")
        assert len(result["msg"]) < 300 and "\x00" not in result["msg"] and "\\x" not in result["msg"]
        assert len(entry["error"]) < 100
    finally:
        stop.set()


def test_a_redirect_loop_is_named_not_reported_as_a_bare_302() -> None:
    """A proxy in front of the server that redirects to itself: urllib gives up after its hops; the probe says so."""

    def answer(conn, request, stop):
        path = request.split(" ")[1] if " " in request else "/"
        conn.sendall(
            f"HTTP/1.1 302 Found\r\nLocation: {path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        conn.close()

    url, stop = raw_server(answer)
    try:
        result = run(url, model=DEFAULT_MODEL, checks=("health",))
        assert_failed(
            result, "health", "redirect", "GET /health", "answers 302 and the redirects loop (last to /health)"
        )
        assert "\n" not in result["msg"]
    finally:
        stop.set()
