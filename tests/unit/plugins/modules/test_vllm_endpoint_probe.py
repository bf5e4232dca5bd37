"""llmops.vllm.vllm_endpoint_probe through Ansible itself: `ansible localhost -m ...`, `ansible-doc`, and
playbooks/probe.yml, against the fake vLLM server (tests/vllm_fake_server.py) over real HTTP.

The last test reaches the fake server through a real Kubernetes API server's service proxy; it runs when the
local control plane (tests/cluster) is up and is skipped otherwise.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from ansible_collections.llmops.vllm.plugins.modules.vllm_endpoint_probe import argspec
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
    env = dict(
        os.environ,
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="true",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        **(env or {}),
    )
    done = subprocess.run(
        [str(BIN / "ansible"), "localhost", "-c", "local", "-m", MODULE, "-a", json.dumps(args), *flags],
        capture_output=True,
        check=False,
        text=True,
        env=env,
        timeout=300,
    )
    try:
        report = json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"ansible printed no JSON (rc {done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}")
    result = report["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert done.returncode == (2 if result.get("failed") else 0), done.stderr
    return result


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
    "loading": ("never", {"wait_timeout": 1.5, "poll_interval": 0.3}, "health", "not_ready", "not ready after 1.5 s"),
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
        "malformed_response",
        "no message.tool_calls",
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


# ---------------------------------------------------------------------------------------------- service proxy


def _local_kubeconfig() -> str | None:
    """A kubeconfig for an API server on this machine (only such a one can proxy to a server started here)."""
    candidates = [os.environ.get("KUBECONFIG", "")]
    line = subprocess.run(
        ["bash", str(ROOT / "tests/cluster/cluster.sh"), "env"], capture_output=True, check=False, text=True
    )
    if line.returncode == 0 and "=" in line.stdout:
        candidates.append(line.stdout.strip().split("=", 1)[1])
    kubernetes = pytest.importorskip("kubernetes")
    for path in filter(None, candidates):
        if not Path(path).is_file():
            continue
        try:
            client = kubernetes.config.new_client_from_config(config_file=path)
            host = client.configuration.host
            if ipaddress.ip_address(socket.gethostbyname(host.split("//")[1].rsplit(":", 1)[0])).is_loopback:
                kubernetes.client.VersionApi(client).get_code(_request_timeout=5)
                return path
        except Exception:  # noqa: BLE001  (unreachable or unusable: try the next one)
            continue
    return None


def _interface_address() -> str | None:
    """An IPv4 address of this machine that the API server may proxy to (not loopback, not link-local)."""
    import fcntl
    import struct

    for _index, name in socket.if_nameindex():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                packed = fcntl.ioctl(sock.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))  # SIOCGIFADDR
            except OSError:
                continue
        address = ipaddress.ip_address(socket.inet_ntoa(packed[20:24]))
        if not (address.is_loopback or address.is_link_local):
            return str(address)
    return None


@contextlib.contextmanager
def _service_for(kubeconfig: str, server: FakeVLLM) -> Iterator[tuple[str, object]]:
    """A namespace with Service `mistral` (port 8080) whose one endpoint is ``server``, Service `empty` whose
    selector matches no pod, and Service `bare` without selector or endpoints.

    The API server proxies only to addresses of pods, so a pod bound to a node that does not exist (nothing runs
    it) carries the server's address.
    """
    kubernetes = pytest.importorskip("kubernetes")
    api = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(config_file=kubeconfig))
    namespace = f"t-probe-{uuid.uuid4().hex[:8]}"
    api.create_namespace({"metadata": {"name": namespace}})
    try:
        pod = {
            "metadata": {"name": "vllm-0"},
            "spec": {"nodeName": "no-such-node", "containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.9.0"}]},
        }
        api.create_namespaced_pod(namespace, pod)
        status = {"phase": "Running", "podIP": server.host, "podIPs": [{"ip": server.host}]}
        api.patch_namespaced_pod_status("vllm-0", namespace, {"status": status})
        port = {"name": "http", "port": 8080, "targetPort": server.port}
        for name, selector in (("mistral", None), ("bare", None), ("empty", {"app": "nothing-matches"})):
            spec = {"ports": [port], "selector": selector}
            api.create_namespaced_service(namespace, {"metadata": {"name": name}, "spec": spec})
        subset = {
            "addresses": [{"ip": server.host, "targetRef": {"kind": "Pod", "name": "vllm-0", "namespace": namespace}}],
            "ports": [{"name": "http", "port": server.port}],
        }
        api.create_namespaced_endpoints(namespace, {"metadata": {"name": "mistral"}, "subsets": [subset]})
        yield namespace, api
    finally:
        api.delete_namespace(namespace, propagation_policy="Background")


def test_service_through_the_api_server_proxy() -> None:
    kubeconfig = _local_kubeconfig()
    if not kubeconfig:
        pytest.skip("no API server on this machine (make cluster-up starts one)")
    address = _interface_address()
    if not address:
        pytest.skip("no non-loopback IPv4 address for the API server to proxy to")
    env = {"KUBECONFIG": kubeconfig}
    with FakeVLLM(host=address) as server, _service_for(kubeconfig, server) as (namespace, _api):
        service = {"name": "mistral", "namespace": namespace, "port": 8080}
        checks = ["health", "models", "version", "chat", "tool_call", "stream", "metrics"]
        result = ansible({"service": service, "checks": checks, "load": {"requests": 4}}, env=env)
        assert result.get("failed") is not True, result.get("msg")
        assert result["service"] == f"{namespace}/mistral:8080"
        assert result["url"].endswith(f"/api/v1/namespaces/{namespace}/services/mistral:8080/proxy")
        assert result["model"] == DEFAULT_MODEL and result["ttft_ms"] > 0 and result["load"]["errors"] == 0
        assert len(server.requests_to("/v1/chat/completions")) == 3 + 4

        # Port by name, and the playbook's Service path.
        assert ansible({"service": dict(service, port="http"), "checks": ["health"]}, env=env).get("failed") is None
        done = subprocess.run(
            [
                str(BIN / "ansible-playbook"),
                str(ROOT / "playbooks" / "probe.yml"),
                "-e",
                f"probe_namespace={namespace}",
                "-e",
                "probe_service=mistral",
                "-e",
                "probe_wait_timeout=10",
            ],
            capture_output=True,
            check=False,
            text=True,
            env=dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_NOCOLOR="1", **env),
            timeout=300,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        assert f'"{namespace}/mistral:8080: {DEFAULT_MODEL} (vLLM 0.9.0)"' in done.stdout
        assert "no load test (set probe_load)" in done.stdout

        # No ready pod behind a Service: the API server's 503 is "not ready yet" until wait_timeout; so is a
        # Service whose endpoints are not recorded yet (404 for its Endpoints, not for the Service).
        empty = ansible({"service": dict(service, name="empty"), "wait_timeout": 1.5, "poll_interval": 0.3}, env=env)
        assert (empty["failed_check"], empty["reason"]) == ("health", "not_ready")
        assert "no endpoints available for service" in empty["msg"] and "not ready after 1.5 s" in empty["msg"]
        bare = ansible({"service": dict(service, name="bare")}, env=env)
        assert bare["reason"] == "not_ready" and "exists but has no endpoints yet" in bare["msg"]

        missing = ansible({"service": dict(service, name="nope")}, env=env)
        assert missing["reason"] == "service_not_found" and 'services "nope" not found' in missing["msg"]

        # vLLM behind --api-key: the API server does not pass an Authorization header on.
        server.config.api_key = "s3cret"
        keyed = ansible({"service": service}, env=env)
        assert keyed["reason"] == "unauthorized" and "service proxy drops the Authorization header" in keyed["msg"]

        # Credentials the API server rejects.
        host = _api.api_client.configuration.host
        bogus = ansible({"service": service, "host": host, "api_key": "bogus", "validate_certs": False}, env=env)
        assert bogus["reason"] == "unauthorized" and "Kubernetes API server rejected the credentials" in bogus["msg"]


def test_service_without_a_kubeconfig_says_so(tmp_path: Path) -> None:
    result = ansible(
        {"service": {"name": "mistral"}},
        env={"KUBECONFIG": str(tmp_path / "missing"), "HOME": str(tmp_path), "KUBERNETES_SERVICE_HOST": ""},
    )
    assert result["failed"] is True and result["reason"] == "kubeconfig_error", result["msg"]
    assert result["msg"].startswith("cannot load the Kubernetes client configuration")
