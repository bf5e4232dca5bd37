"""llmops.vllm.vllm_endpoint_probe with ``service:``: the fake vLLM server reached through a real API server's
service proxy, as a user without a route into the cluster network probes an endpoint.

The API server proxies only to an Endpoints address that belongs to an existing pod with that IP, so the test
creates a pod carrying the fake server's address (a non-loopback address of this machine; the API server
refuses to proxy to loopback). That pod names a scheduler that does not exist: nothing binds or runs it, and
the pod garbage collector leaves it alone. A pod bound to a missing node instead is deleted by the garbage
collector 0-80 s after it is created (40 s quarantine per node name, checked every 20 s, shared by every test
that used the name), which made this test fail in mid-run when it ran slowly or twice in a row.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from ansible_collections.llmops.vllm.tests.ansible_cli import run_module
from ansible_collections.llmops.vllm.tests.vllm_fake_server import DEFAULT_MODEL, FakeVLLM
from cluster_helpers import BIN, ROOT, Kubectl, apply_object, wait_until

MODULE = "llmops.vllm.vllm_endpoint_probe"
PORT = 8080
# Readiness of what the test created, as seen by the API server and the controller manager; generous because
# the machine may be busy (2 cores shared with other test runs).
READY_TIMEOUT = 90


def probe(args: dict) -> dict:
    """Run the module ad hoc against localhost (KUBECONFIG from the fixture) and return its result."""
    return run_module(MODULE, args, unset=())


def _api_server_url(kubectl: Kubectl) -> str:
    return kubectl.run("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}").stdout.strip()


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


@pytest.fixture()
def fake_vllm_address(kubectl: Kubectl) -> str:
    """Where the fake server listens so that the API server can reach it; skips where it cannot."""
    host = urlsplit(_api_server_url(kubectl)).hostname or ""
    try:
        local = ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        local = False
    if not local:
        pytest.skip(f"the API server ({host}) is not on this machine, so it cannot proxy to a server started here")
    address = _interface_address()
    if not address:
        pytest.skip("no non-loopback IPv4 address for the API server to proxy to")
    return address


def _raw_get(kubectl: Kubectl, path: str) -> subprocess.CompletedProcess:
    return kubectl.run("get", "--raw", path, "--request-timeout=10s", check=False)


@pytest.fixture()
def proxied_services(kubectl: Kubectl, namespace: str, fake_vllm_address: str) -> Iterator[FakeVLLM]:
    """Service `mistral` (port 8080, named `http`) whose one endpoint is the fake server, Service `empty` whose
    selector matches no pod, and Service `bare` without selector or endpoints; yields the started server once
    the API server proxies to it."""
    with FakeVLLM(host=fake_vllm_address) as server:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "vllm-0", "namespace": namespace},
            "spec": {
                "schedulerName": "llmops-test-nobody",
                "containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.9.0"}],
            },
        }
        created = apply_object(kubectl, pod)
        assert created.returncode == 0, created.stderr
        status = {"status": {"phase": "Running", "podIP": server.host, "podIPs": [{"ip": server.host}]}}
        kubectl.run(
            "patch", "pod", "vllm-0", "-n", namespace, "--subresource=status", "--type=merge", "-p", json.dumps(status)
        )
        port = {"name": "http", "port": PORT, "targetPort": server.port}
        for name, selector in (("mistral", None), ("bare", None), ("empty", {"app": "nothing-matches"})):
            service = {"ports": [port], **({"selector": selector} if selector else {})}
            obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace}}
            created = apply_object(kubectl, {**obj, "spec": service})
            assert created.returncode == 0, created.stderr
        endpoints = {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": "mistral", "namespace": namespace},
            "subsets": [
                {
                    "addresses": [
                        {"ip": server.host, "targetRef": {"kind": "Pod", "name": "vllm-0", "namespace": namespace}}
                    ],
                    "ports": [{"name": "http", "port": server.port}],
                }
            ],
        }
        created = apply_object(kubectl, endpoints)
        assert created.returncode == 0, created.stderr

        # The proxy answers once the API server finds the Endpoints and its pod; the endpoints controller
        # writes the empty Endpoints of `empty` on its own schedule, and until then the proxy says 404, not 503.
        health = f"/api/v1/namespaces/{namespace}/services/mistral:{PORT}/proxy/health"
        proxied = wait_until(lambda: _raw_get(kubectl, health).returncode == 0, timeout=READY_TIMEOUT)
        assert proxied, f"the API server does not proxy to {server.url}: {_raw_get(kubectl, health).stderr}"
        recorded = wait_until(lambda: kubectl.exists("endpoints", "empty", "-n", namespace), timeout=READY_TIMEOUT)
        assert recorded, "the endpoints controller never recorded the Endpoints of Service `empty`"
        yield server


def test_service_through_the_api_server_proxy(kubectl: Kubectl, namespace: str, proxied_services: FakeVLLM) -> None:
    server = proxied_services
    service = {"name": "mistral", "namespace": namespace, "port": PORT}
    checks = ["health", "models", "version", "chat", "tool_call", "stream", "metrics"]
    result = probe({"service": service, "checks": checks, "load": {"requests": 4}})
    assert result.get("failed") is not True, result.get("msg")
    assert result["service"] == f"{namespace}/mistral:{PORT}"
    assert result["url"].endswith(f"/api/v1/namespaces/{namespace}/services/mistral:{PORT}/proxy")
    assert result["model"] == DEFAULT_MODEL and result["ttft_ms"] > 0 and result["load"]["errors"] == 0
    assert len(server.requests_to("/v1/chat/completions")) == 3 + 4

    # Port by name, and the playbook's Service path.
    assert probe({"service": dict(service, port="http"), "checks": ["health"]}).get("failed") is None
    done = subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            str(ROOT / "playbooks" / "probe.yml"),
            "-e",
            json.dumps({"probe_namespace": namespace, "probe_service": "mistral", "probe_wait_timeout": 10}),
        ],
        capture_output=True,
        check=False,
        text=True,
        env=dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_NOCOLOR="1"),
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert f'"{namespace}/mistral:{PORT}: {DEFAULT_MODEL} (vLLM 0.9.0)"' in done.stdout
    assert "no load test (set probe_load)" in done.stdout

    # No ready pod behind a Service: the API server's 503 is "not ready yet" until wait_timeout; so is a Service
    # whose endpoints are not recorded (404 for its Endpoints, not for the Service).
    empty = probe({"service": dict(service, name="empty"), "wait_timeout": 1.5, "poll_interval": 0.3})
    assert (empty["failed_check"], empty["reason"]) == ("health", "not_ready")
    assert "no endpoints available for service" in empty["msg"] and "not ready after 1.5 s" in empty["msg"]
    bare = probe({"service": dict(service, name="bare")})
    assert bare["reason"] == "not_ready" and "exists but has no endpoints yet" in bare["msg"]

    missing = probe({"service": dict(service, name="nope")})
    assert missing["reason"] == "service_not_found" and 'services "nope" not found' in missing["msg"]

    # vLLM behind --api-key: the API server does not pass an Authorization header on.
    server.config.api_key = "s3cret"
    keyed = probe({"service": service})
    assert keyed["reason"] == "unauthorized" and "service proxy drops the Authorization header" in keyed["msg"]

    # Credentials the API server rejects.
    host = _api_server_url(kubectl)
    bogus = probe({"service": service, "host": host, "api_key": "bogus", "validate_certs": False})
    assert bogus["reason"] == "unauthorized" and "Kubernetes API server rejected the credentials" in bogus["msg"]
