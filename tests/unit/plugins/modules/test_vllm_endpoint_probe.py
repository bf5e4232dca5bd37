"""llmops.vllm.vllm_endpoint_probe through Ansible itself: `ansible localhost -m ...`, `ansible-doc`, and
playbooks/probe.yml, against the fake vLLM server (tests/vllm_fake_server.py) over real HTTP on localhost.

Probing through a real API server's service proxy needs a cluster: tests/integration/test_probe_proxy.py.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ansible_collections.llmops.vllm.plugins.modules.vllm_endpoint_probe import argspec
from ansible_collections.llmops.vllm.tests.ansible_cli import run_module
from ansible_collections.llmops.vllm.tests.vllm_fake_server import (
    DEFAULT_MODEL,
    FakeVLLM,
    FakeVLLMConfig,
    free_port,
    make_tls_files,
)

ROOT = Path(__file__).resolve().parents[4]
BIN = Path(sys.executable).parent
MODULE = "llmops.vllm.vllm_endpoint_probe"
ALWAYS = ("url", "service", "model", "models", "version", "waited_ms", "ttft_ms", "inter_token_ms", "load", "checks")


@pytest.fixture()
def fake_vllm() -> Iterator[FakeVLLM]:
    """A started fake vLLM server with the default config; a test changes ``fake_vllm.config`` to break it."""
    with FakeVLLM() as server:
        yield server


def ansible(args: dict, *flags: str, env: dict | None = None) -> dict:
    """Run the module ad hoc against localhost and return its result (the json callback's host entry)."""
    return run_module(MODULE, args, *flags, env=env)


def ansible_doc() -> dict:
    done = subprocess.run(
        [str(BIN / "ansible-doc"), "--json", MODULE], capture_output=True, check=False, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)[MODULE]


# ---------------------------------------------------------------------------------------------- ad hoc


def test_adhoc_probe_of_a_conforming_server_passes(fake_vllm: FakeVLLM) -> None:
    result = ansible({"url": fake_vllm.url})
    assert result.get("failed") is not True, result.get("msg")
    assert result["changed"] is False
    assert set(result["checks"]) == {"health", "models", "version", "chat", "tool_call", "stream"}
    assert all(entry["passed"] for entry in result["checks"].values())
    assert result["model"] == DEFAULT_MODEL and result["version"] == "0.9.0"
    assert result["ttft_ms"] > 0 and result["waited_ms"] == 0
    assert result["load"] is None and result["service"] is None


def test_check_mode_runs_every_check_and_load(fake_vllm: FakeVLLM) -> None:
    args = {
        "url": fake_vllm.url + "/v1",
        "checks": ["health", "models", "version", "chat", "tool_call", "stream", "metrics"],
        "load": {"requests": 6, "concurrency": 2, "max_tokens": 8},
    }
    result = ansible(args, "--check")
    assert result.get("failed") is not True, result.get("msg")
    assert result["changed"] is False and len(result["checks"]) == 8
    assert result["load"]["succeeded"] == 6 and result["load"]["latency_ms"]["p99"] is not None
    # Read-only, so check mode sends the same requests.
    assert len(fake_vllm.requests_to("/v1/chat/completions")) == 3 + 6


def _tls_server(tmp_path: Path) -> FakeVLLM:
    return FakeVLLM(ssl_context=make_tls_files(tmp_path / "tls").server_context(self_signed=True))


FAILURES = {
    # name: (set-up, extra args, failed check, reason, fragment of msg)
    "refused": (None, {"url": "http://127.0.0.1:{free}"}, "health", "connection_refused", "connection refused"),
    "dns": (None, {"url": "http://vllm.invalid:8000"}, "health", "dns_failure", "cannot resolve host"),
    "tls": ("tls", {}, "health", "tls_error", "certificate verify failed"),
    "no key": (
        {"api_key": "s3cret"},
        {},
        "models",
        "unauthorized",
        "401 Unauthorized on GET /v1/models: the server requires an API key",
    ),
    "wrong key": ({"api_key": "s3cret"}, {"api_key": "guess"}, "models", "unauthorized", "API key was rejected"),
    "model": (None, {"model": "mistral"}, "models", "model_not_found", "'mistral' is not served"),
    "model in request": (
        None,
        {"model": "mistral", "checks": ["chat"]},
        "chat",
        "model_not_found",
        "The model `mistral` does not exist.",
    ),
    "loading": (
        "never",
        {"wait_timeout": 1.5, "poll_interval": 0.3},
        "health",
        "connection_refused",
        "not ready after 1.5 s (wait_timeout",
    ),
    "malformed": (
        {"malformed_json": {"/v1/models"}},
        {},
        "models",
        "malformed_response",
        "body is not JSON",
    ),
    "no tool call": (
        {"tool_calls": False},
        {},
        "tool_call",
        "no_tool_call",
        "answered without a tool call",
    ),
    "bad arguments": (
        {"tool_arguments": "{city: Paris}"},
        {},
        "tool_call",
        "malformed_response",
        "arguments is not valid JSON",
    ),
    "empty content": ({"empty_content": True}, {}, "chat", "malformed_response", "content is empty"),
    "no auto tool choice": (
        {"auto_tool_choice": False},
        {},
        "tool_call",
        "tool_calling_disabled",
        "--enable-auto-tool-choice",
    ),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_adhoc_probe_fails_with_the_specific_reason(case: str, tmp_path: Path) -> None:
    setup, extra, check, reason, fragment = FAILURES[case]
    if setup == "tls":
        server = _tls_server(tmp_path)
    else:
        server = FakeVLLM(FakeVLLMConfig(**setup) if isinstance(setup, dict) else None)
    with server:
        if setup == "never":
            server.load_for(math.inf)
        args = {"url": server.url, **extra}
        args["url"] = args["url"].format(free=free_port())
        result = ansible(args)
    assert result["failed"] is True and result["changed"] is False
    assert (result["failed_check"], result["reason"]) == (check, reason), result["msg"]
    assert result["msg"].startswith(f"{check}: ") and fragment in result["msg"], result["msg"]
    assert "\n" not in result["msg"]
    assert result["checks"][check]["reason"] == reason
    if "api_key" in extra:
        # no_log: the key is masked in what ansible reports.
        assert extra["api_key"] not in json.dumps(result)


def test_options_that_cannot_work(fake_vllm: FakeVLLM) -> None:
    both = ansible({"url": fake_vllm.url, "service": {"name": "mistral"}})
    assert both["failed"] is True and "mutually exclusive" in both["msg"]
    neither = ansible({"checks": ["health"]})
    assert neither["failed"] is True and "one of the following is required: url, service" in neither["msg"]
    zero = ansible({"url": fake_vllm.url, "timeout": 0})
    assert (zero["reason"], zero["msg"]) == ("invalid_option", "timeout must be above 0")
    bad_url = ansible({"url": "vllm:8080"})
    assert bad_url["reason"] == "invalid_option" and "http(s)://" in bad_url["msg"]
    unknown = ansible({"url": fake_vllm.url, "checks": ["health", "latency"]})
    assert unknown["failed"] is True and "latency" in unknown["msg"]
    assert fake_vllm.requests == []


# ---------------------------------------------------------------------------------------------- docs


def test_ansible_doc_shows_complete_docs() -> None:
    entry = ansible_doc()
    doc = entry["doc"]
    spec = argspec()
    assert set(doc["options"]) == set(spec)
    for name, option in doc["options"].items():
        assert option.get("description"), name
        assert option.get("type", "str") == spec[name].get("type", "str"), name
        assert option.get("default") == spec[name].get("default"), name
        assert sorted(option.get("aliases", [])) == sorted(spec[name].get("aliases", [])), name
    for name in ("service", "load"):
        assert set(doc["options"][name]["suboptions"]) == set(spec[name]["options"])
        for sub, option in doc["options"][name]["suboptions"].items():
            assert option.get("default") == spec[name]["options"][sub].get("default"), (name, sub)
    assert doc["options"]["checks"]["choices"] == spec["checks"]["choices"]
    assert {name: doc["attributes"][name]["support"] for name in ("check_mode", "diff_mode", "idempotent")} == {
        "check_mode": "full",
        "diff_mode": "none",
        "idempotent": "full",
    }
    assert entry["examples"].count("llmops.vllm.vllm_endpoint_probe:") >= 4
    text = subprocess.run([str(BIN / "ansible-doc"), MODULE], capture_output=True, check=False, text=True, timeout=120)
    assert text.returncode == 0 and "OPTIONS" in text.stdout and "RETURN VALUES" in text.stdout
    assert "EXAMPLES" in text.stdout and "service proxy" in text.stdout


def test_every_returned_key_is_documented(fake_vllm: FakeVLLM) -> None:
    documented = ansible_doc()["return"]
    passed = ansible({"url": fake_vllm.url, "load": {"requests": 2}})
    fake_vllm.config.tool_calls = False
    failed = ansible({"url": fake_vllm.url})
    standard = {"changed", "failed", "msg", "invocation", "action", "exception", "_ansible_no_log"}  # ansible's
    for result in (passed, failed):
        assert set(result) - standard <= set(documented), set(result) - standard - set(documented)
    for key in ALWAYS + ("elapsed_ms",):
        assert documented[key]["returned"] == "always" and key in passed and key in failed
    assert {"failed_check", "reason"} <= set(failed) and documented["reason"]["returned"] == "failure"
    assert set(passed["load"]) == set(documented["load"]["contains"])


# ---------------------------------------------------------------------------------------------- playbook


def test_probe_playbook_against_a_url(fake_vllm: FakeVLLM) -> None:
    fake_vllm.config.api_key = "s3cret"
    done = subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            str(ROOT / "playbooks" / "probe.yml"),
            "-e",
            json.dumps({"probe_url": fake_vllm.url, "probe_api_key": "s3cret", "probe_load": {"requests": 3}}),
        ],
        capture_output=True,
        check=False,
        text=True,
        env=dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_NOCOLOR="1"),
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert f'"{fake_vllm.url}: {DEFAULT_MODEL} (vLLM 0.9.0)"' in done.stdout
    assert '"ready after 0.0 ms; first token after ' in done.stdout
    assert "load of 3 requests: latency p50/p95/p99 " in done.stdout and "tokens/s, 0 errors" in done.stdout
    assert "s3cret" not in done.stdout
    assert len(fake_vllm.requests_to("/v1/chat/completions")) == 3 + 3
    assert len(fake_vllm.requests_to("/metrics")) == 1


# ---------------------------------------------------------------------------------------------- service


def test_service_without_a_kubeconfig_says_so(tmp_path: Path) -> None:
    result = ansible(
        {"service": {"name": "mistral"}},
        env={"KUBECONFIG": str(tmp_path / "missing"), "HOME": str(tmp_path), "KUBERNETES_SERVICE_HOST": ""},
    )
    assert result["failed"] is True and result["reason"] == "kubeconfig_error", result["msg"]
    assert result["msg"].startswith("cannot load the Kubernetes client configuration")
