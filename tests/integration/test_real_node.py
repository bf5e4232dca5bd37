"""Pods that really run: the reference deployment on the local cluster's real node (a kubelet and containerd,
tests/cluster/node.sh), where what kwok only pretends happens — an init container stages files into a RAM volume,
a Job downloads from the (fake) Hub onto the model volume, a server answers through its Service.

Traffic goes only to Services and pods of this cluster (in the network namespaces its CNI made) and to loopback;
every request loop is bounded in count and time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from cluster_helpers import CLUSTER_SH, LOCAL_VARS, Kubectl, apply_object, cluster_path, run_playbook, wait_until

pytestmark = pytest.mark.cluster

# The fake Hub's Service on the real node (tests/cluster/node.sh HUB_IP, tests/cluster/local-vars.yml).
HUB = "http://10.96.100.1"
HUB_REPO = "mistralai/Mistral-7B-Instruct-v0.3"
MODEL = "/ram-models/mistral-7b-v0-3"


def http(url: str, body: dict | None = None, timeout: float = 5) -> tuple[int, bytes]:
    """One request; the status and body (0 and the error text when nothing answered)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - a ClusterIP of this cluster
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc).encode()


def until_answers(url: str, body: dict | None = None, tries: int = 60) -> tuple[int, bytes]:
    """The first answer of a new Service (kube-proxy writes its rules within a second or two): at most ``tries``
    requests, 0.5 s apart."""
    return wait_until(lambda: (answer := http(url, body, timeout=2))[0] and answer, timeout=tries * 0.5) or (0, b"")


def real_pod(name: str, init: str, main: list[str]) -> dict:
    """A pod for the real node only (its taint and label), with a Memory emptyDir shared by an init container and
    the main container."""
    volume = [{"name": "data", "mountPath": "/data"}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "tolerations": [
                {"key": "llmops.test/real-node", "operator": "Exists"},
                {"key": "nvidia.com/gpu", "operator": "Exists"},
            ],
            "nodeSelector": {"llmops.test/node": "real"},
            "initContainers": [
                {
                    "name": "init",
                    "image": "python:3.11-slim",
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-c", init],
                    "volumeMounts": volume,
                }
            ],
            "containers": [
                {
                    "name": "web",
                    "image": "python:3.11-slim",
                    "imagePullPolicy": "Never",
                    "command": main,
                    "volumeMounts": volume,
                    "readinessProbe": {"httpGet": {"path": "/", "port": 8000}, "periodSeconds": 1},
                }
            ],
            "volumes": [{"name": "data", "emptyDir": {"medium": "Memory"}}],
        },
    }


def test_an_init_container_writes_a_ram_volume_that_a_service_serves(
    kubectl: Kubectl, namespace: str, real_node: str
) -> None:
    init = (
        "import os; st = os.statvfs('/data'); "
        "open('/data/index.html', 'w').write(f'written by the init container of {os.uname().nodename}\\n')"
    )
    pod = real_pod("web", init, ["python3", "-m", "http.server", "8000", "-d", "/data"])
    pod["metadata"]["namespace"] = namespace
    assert apply_object(kubectl, pod).returncode == 0
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8000}]},
    }
    assert apply_object(kubectl, service).returncode == 0
    kubectl.run("-n", namespace, "wait", "--for=condition=Ready", "pod/web", "--timeout=90s")
    got = kubectl.json("-n", namespace, "get", "pod", "web")
    assert got["spec"]["nodeName"] == real_node
    assert got["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    # The volume is the kubelet's tmpfs, seen from the main container.
    mounts = kubectl.run(
        "-n", namespace, "exec", "web", "-c", "web", "--", "python3", "-c", "print(open('/proc/mounts').read())"
    ).stdout
    assert re.search(r"^tmpfs /data tmpfs", mounts, re.M), mounts
    ip = kubectl.json("-n", namespace, "get", "service", "web")["spec"]["clusterIP"]
    status, body = until_answers(f"http://{ip}/index.html")
    assert (status, body.decode()) == (200, "written by the init container of web\n")


def test_the_reference_deployment_downloads_stages_serves_and_keeps_its_model(
    kubeconfig: str, kubectl: Kubectl, base_vars: dict, real_node: str
) -> None:
    ns = base_vars["vllm_namespace"]
    models = Path("/var/lib/llmops-vllm/models") / ns
    extra = {**yaml.safe_load(LOCAL_VARS.read_text()), **base_vars, "storage_host_path": str(models)}
    first = run_playbook("deploy.yml", kubeconfig, extra, check=True)

    # The Job really downloaded: the files on the node's volume are the Hub's, byte for byte.
    status, info = http(f"{HUB}/api/models/{HUB_REPO}/revision/main?blobs=true")
    assert status == 200
    siblings = {s["rfilename"]: s for s in json.loads(info)["siblings"]}
    weights = models / "mistral-7b-v0-3" / "consolidated.safetensors"
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == siblings["consolidated.safetensors"]["lfs"]["sha256"]

    # The init container really staged, into the pod's RAM volume, on the real node.
    pods = kubectl.json("-n", ns, "get", "pods", "-l", "model=mistral7b")["items"]
    assert [p["spec"]["nodeName"] for p in pods] == [real_node]
    loader = pods[0]["status"]["initContainerStatuses"][0]
    assert loader["name"] == "model-loader" and loader["state"]["terminated"]["exitCode"] == 0
    log = kubectl.run("-n", ns, "logs", pods[0]["metadata"]["name"], "-c", "model-loader").stdout
    result = json.loads(next(line for line in log.splitlines() if line.startswith("RESULT "))[len("RESULT ") :])
    assert (result["copied_files"], result["bytes"]) == (3, sum(s["size"] for s in siblings.values())), result

    # The server answers through its Service, from this machine.
    ip = kubectl.json("-n", ns, "get", "service", "mistral")["spec"]["clusterIP"]
    status, body = until_answers(
        f"http://{ip}:8080/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "Capital of France?"}]},
    )
    assert status == 200 and "Paris" in json.loads(body)["choices"][0]["message"]["content"]

    # The start-up table: every phase the run went through has a duration, none is unknown.
    table = startup_table(first.stdout)
    assert table["staging"] != "0ms" and table["model load"] != "0ms", table
    assert re.fullmatch(r"\d+ms", table["first token"]), table
    assert not [row for row, value in table.items() if "unknown" in value], table
    assert re.search(r"Job model-download: download .* fetched", first.stdout)

    # Again: nothing changes. Then teardown: the servers go, the model stays; a deploy after it downloads nothing.
    again = run_playbook("deploy.yml", kubeconfig, extra, check=True)
    assert re.search(r"changed=0\b", again.stdout), again.stdout[-3000:]
    run_playbook("teardown.yml", kubeconfig, extra, check=True)
    assert wait_until(lambda: not kubectl.json("-n", ns, "get", "pods")["items"], timeout=60)
    assert weights.exists()
    after = run_playbook("deploy.yml", kubeconfig, extra, check=True)
    assert "already downloaded; nothing fetched" in after.stdout, after.stdout[-3000:]
    run_playbook("teardown.yml", kubeconfig, {**extra, "purge": True}, check=True)
    shutil.rmtree(models)


def startup_table(stdout: str) -> dict[str, str]:
    """Row name -> duration of the start-up table deploy.yml prints (``"  staging  17:26:00  1.0s  ..."``)."""
    rows = {}
    for match in re.finditer(r'"  (node|image pull|staging|model load|first token)\s+\S+\s+(\S+)', stdout):
        rows[match.group(1)] = match.group(2)
    assert set(rows) >= {"staging", "model load", "first token"}, stdout[-3000:]
    return rows


def test_cluster_up_again_finds_the_node_running(real_node: str, kubeconfig: str) -> None:
    """`make cluster-up` on a running cluster (every test session, the bench, molecule's create) leaves its node as it
    is: the same kubelet, no second bridge address."""
    if "llmops-vllm/cluster" not in kubeconfig:
        pytest.skip("tests run against an external cluster; the local harness is not in use")
    kubelet = cluster_path("cluster_state_dir") / "node" / "kubelet.pid"
    before = kubelet.read_text()
    env = {**os.environ, "KUBECONFIG": ""}
    again = subprocess.run(
        ["bash", str(CLUSTER_SH), "up"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert again.returncode == 0 and f"node {real_node} already up" in again.stderr, again.stderr
    assert kubelet.read_text() == before
