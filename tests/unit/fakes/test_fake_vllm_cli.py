"""The fake vLLM of the real node's images (tests/fake_vllm_cli.py) parses as the release's parser does and stops on
SIGTERM as the release does: what the rollout tests measure depends on it being no kinder than vLLM."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from pathlib import Path

import pytest
import yaml
from ansible_collections.llmops.vllm.tests.fake_vllm_cli import UsageError, parse, sigterm_mode
from ansible_collections.llmops.vllm.tests.vllm_fake_server import FakeVLLM, FakeVLLMConfig

WORKSHOP = Path(__file__).resolve().parents[2] / "data" / "workshop-vllm-deployment.yml"


def workshop_args() -> list[str]:
    deployment = next(d for d in yaml.safe_load_all(WORKSHOP.read_text()) if d and d["kind"] == "Deployment")
    return deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def test_the_workshops_arguments_parse_on_its_release() -> None:
    args = parse(workshop_args(), "0.9.0", "api_server")
    assert args["port"] == "8080" and args["model"] == "/ram-models/mistral-7b-v0-3"
    assert args["enable-auto-tool-choice"] is True and args["tool-call-parser"] == "mistral"


def test_a_flag_the_release_lacks_is_refused_as_argparse_does() -> None:
    with pytest.raises(UsageError, match=r"^unrecognized arguments: --shutdown-timeout=30$"):
        parse(["--port=8080", "--shutdown-timeout=30"], "0.9.0", "api_server")
    assert parse(["serve", "/m", "--shutdown-timeout=30"], "0.23.0", "vllm")["shutdown-timeout"] == "30"


def test_vllm_serve_takes_the_model_as_its_positional_and_moves_model_there() -> None:
    assert parse(["serve", "/ram-models/m", "--port", "8080"], "0.23.0", "vllm")["model"] == "/ram-models/m"
    # From 0.11.1 --model is moved to the front with a warning, in both spellings; what follows still parses.
    assert parse(["serve", "--port=8080", "--model=/m", "--max-num-seqs=8"], "0.23.0", "vllm")["model"] == "/m"
    assert parse(["serve", "--model", "/m", "--port", "1"], "0.11.1", "vllm")["port"] == "1"
    with pytest.raises(SystemExit, match="instead of via the `--model` option"):
        parse(["serve", "--model", "/m"], "0.10.2", "vllm")


@pytest.mark.parametrize(
    ("release", "timeout", "mode"),
    [
        ("0.9.0", 0, "strand"),
        ("0.17.1", 0, "strand"),
        ("0.18.0", 0, "abort"),
        ("0.23.0", 0, "abort"),
        ("0.23.0", 30, "drain"),
    ],
)
def test_sigterm_mode_per_release(release: str, timeout: float, mode: str) -> None:
    assert sigterm_mode(release, timeout) == mode


def stream(server: FakeVLLM, out: list) -> None:
    """One streamed chat; appends the finish_reason of its last event (None: the stream ended without one)."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    body = {"model": server.config.models[0], "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    finish = None
    for line in conn.getresponse():
        if line.startswith(b"data: {"):
            choices = json.loads(line[6:])["choices"]
            finish = (choices[0].get("finish_reason") if choices else None) or finish
    out.append(finish)


def refused(server: FakeVLLM) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((server.host, server.port)) != 0


@pytest.mark.parametrize(("drain", "finish"), [(0.0, "abort"), (10.0, "stop")])
def test_shutdown_closes_the_listener_and_aborts_or_drains_the_streams_in_flight(drain: float, finish: str) -> None:
    config = FakeVLLMConfig(reply=" ".join(["word"] * 40), token_delay=0.02)
    server = FakeVLLM(config).start()
    out: list = []
    client = threading.Thread(target=stream, args=(server, out))
    client.start()
    while not server.in_flight:
        threading.Event().wait(0.01)
    stopper = threading.Thread(target=server.shutdown, kwargs={"drain_seconds": drain})
    stopper.start()
    threading.Event().wait(0.2)
    assert refused(server)  # no new connection from the first moment
    client.join(15)
    stopper.join(15)
    assert out == [finish]
