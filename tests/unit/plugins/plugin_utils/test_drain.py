# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""How a server pod ends: the drain each release gets, the grace period refused when too short, and the preStop of
a release without a drain really waiting for the requests in flight (run against the fake vLLM)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from ansible_collections.llmops.vllm.plugins.filter.vllm_preflight import preflight
from ansible_collections.llmops.vllm.plugins.plugin_utils._drain import drain_plan
from ansible_collections.llmops.vllm.tests.unit.plugins.plugin_utils.test_engine_arg_check import specs
from ansible_collections.llmops.vllm.tests.vllm_fake_server import FakeVLLM, FakeVLLMConfig

NEW, OLD = "vllm/vllm-openai:v0.23.0", "vllm/vllm-openai:v0.17.1"


def test_a_release_with_a_drain_gets_the_flag_a_sleep_and_room_for_both():
    (spec,) = specs(NEW)
    assert "--shutdown-timeout=30" in spec["args"]
    assert spec["drain"]["prestop"] == {"sleep": {"seconds": 15}} and spec["drain"]["grace_seconds"] == 60


def test_a_release_without_one_waits_in_its_prestop_and_says_so():
    (spec,) = specs(OLD)
    assert not any(a.startswith("--shutdown-timeout") for a in spec["args"])
    assert spec["drain"]["prestop"]["exec"]["command"][:2] == ["python3", "-c"]
    assert "vLLM 0.17.1 has no --shutdown-timeout (from 0.18.0)" in spec["warnings"][0]
    assert preflight([spec]) == []


def test_the_drain_can_be_turned_off():
    (spec,) = specs(NEW, prestop_seconds=0, shutdown_timeout=0)
    assert spec["drain"]["prestop"] is None and "--shutdown-timeout=0" in spec["args"]
    assert spec["drain"]["grace_seconds"] == 15


@pytest.mark.parametrize(
    "entry, line",
    [
        (
            {"termination_grace_seconds": 20},
            "model mistral: termination_grace_seconds 20 is shorter than prestop_seconds 15 + shutdown_timeout 30, so "
            "the kubelet kills vLLM before the requests in flight end; set at least 45 or leave it unset (60)",
        ),
        ({"shutdown_timeout": -1}, "model mistral: shutdown_timeout -1 must be a whole number of seconds, 0 or more"),
        (
            {"prestop_seconds": "soon"},
            "model mistral: prestop_seconds 'soon' must be a whole number of seconds, 0 or more",
        ),
        (
            {"engine_args": {"shutdown_timeout": 5}},
            "model mistral: engine_args sets shutdown-timeout; set shutdown_timeout instead",
        ),
        ({"strategy": "BlueGreen"}, "model mistral: strategy 'BlueGreen' is not one of Recreate, RollingUpdate"),
    ],
)
def test_settings_that_cannot_work_are_refused_in_one_line(entry, line):
    assert line in preflight(specs(NEW, **entry))


def test_a_rolling_update_never_goes_below_the_replicas_serving():
    (spec,) = specs(NEW, strategy="RollingUpdate")
    assert spec["rolling_update"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert specs(NEW)[0]["rolling_update"] is None


def _run_prestop(server: FakeVLLM, prestop: int = 0, timeout: int = 20) -> float:
    """The preStop of a release without a drain, run as the kubelet runs it, against ``server``; its seconds."""
    plan = drain_plan({"port": server.port, "prestop_seconds": prestop, "shutdown_timeout": timeout}, {})
    started = time.monotonic()
    subprocess.run([sys.executable, *plan["prestop"]["exec"]["command"][1:]], check=True, timeout=timeout + 10)
    return time.monotonic() - started


def _stream(server: FakeVLLM) -> None:
    body = {"model": server.config.models[0], "messages": [{"role": "user", "content": "hi"}], "stream": True}
    request = urllib.request.Request(
        f"{server.url}/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=20) as answer:
        answer.read()


def test_the_prestop_waits_until_nothing_is_in_flight():
    config = FakeVLLMConfig(release="0.9.0", token_delay=0.05, reply=" ".join(["word"] * 40))
    with FakeVLLM(config) as server:
        stream = threading.Thread(target=_stream, args=(server,))
        stream.start()
        deadline = time.monotonic() + 5
        while not server.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.in_flight
        waited = _run_prestop(server)
        assert not server.in_flight and waited >= 1.0  # 40 tokens at 50 ms, less what had been sent
        stream.join(5)
        assert _run_prestop(server) < 1.0  # idle: no wait


def test_the_prestop_ends_when_the_server_is_gone():
    server = FakeVLLM(FakeVLLMConfig(release="0.9.0"))
    assert _run_prestop(server, timeout=20) < 5.0


@pytest.mark.parametrize(
    "image, command",
    [
        (
            "public.ecr.aws/deep-learning-containers/vllm:0.9.0-gpu-py312-ec2",
            ["python3", "-m", "vllm.entrypoints.openai.api_server"],
        ),
        (
            "763104351884.dkr.ecr.us-east-1.amazonaws.com/vllm:0.10.2-gpu-py312-cu128-ubuntu22.04-ec2",
            ["python3", "-m", "vllm.entrypoints.openai.api_server"],
        ),
        ("vllm/vllm-openai:v0.23.0", []),
        ("registry.example/deep-learning-containers-mirror/vllm:0.9.0", []),
    ],
)
def test_a_dlc_image_runs_vllm_as_pid_1_so_that_sigterm_reaches_it(image, command):
    assert specs(image)[0]["command"] == command


SLOT = "llmops.vllm/slot"


def test_the_spec_puts_the_slot_in_the_selectors_and_refuses_what_cannot_switch():
    (spec,) = specs("vllm/vllm-openai:v0.23.0", upgrade="blue_green")
    assert spec["selector"][SLOT] == "mistral" and spec["service_selector"][SLOT] == "mistral"
    assert spec["deployment_annotations"] == {"llmops.vllm/upgrade": "blue_green"}
    assert SLOT not in specs("vllm/vllm-openai:v0.23.0")[0]["selector"]
    assert "model mistral: upgrade 'canary' is not one of '', 'blue_green'" in preflight(
        specs("vllm/vllm-openai:v0.23.0", upgrade="canary")
    )
    scaled = specs("vllm/vllm-openai:v0.23.0", upgrade="blue_green", autoscaling={"max_replicas": 3})
    assert (
        "model mistral: upgrade blue_green is not supported with an autoscaler; use strategy RollingUpdate"
        in preflight(scaled)
    )
