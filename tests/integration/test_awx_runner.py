"""The playbooks run as AWX runs them: ansible_runner.run() over a private data directory laid out as AWX lays it
out (ansible/awx awx/main/tasks/jobs.py BaseTask.run): the project under project/, survey answers in env/extravars,
a cluster credential as environment variables (K8S_AUTH_*) in env/envvars, the llmops.vllm credential types'
extra vars in a file of their own passed through env/cmdline as ``-e @file`` (awx/main/models/credential.py
_inject_extra_vars), an inventory of localhost. ansible-runner's awx_display callback makes the job events AWX
stores. Then every byte of the artifacts (events, stdout, command) is searched for the secrets.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import uuid
from pathlib import Path

import ansible_runner
import yaml
from ansible_collections.llmops.vllm.tests.vllm_fake_server import FakeVLLM, FakeVLLMConfig
from cluster_helpers import BIN, ROOT

HF_TOKEN = "hf_awxRunnerToken" + uuid.uuid4().hex
API_KEY = "sk-awx-" + uuid.uuid4().hex


def secret_hits(artifacts: Path, secret: str) -> list[str]:
    """Files under ``artifacts`` holding ``secret`` or its base64 (as a Secret's data would), as relative paths."""
    needles = [secret.encode(), base64.b64encode(secret.encode())]
    return sorted(
        str(path.relative_to(artifacts))
        for path in artifacts.rglob("*")
        if path.is_file() and any(needle in path.read_bytes() for needle in needles)
    )


def awx_job(
    tmp_path: Path, kubeconfig: str, survey: dict, credentials: dict, playbook: str, extra: dict | None = None
) -> ansible_runner.Runner:
    """One job: the private data dir as AWX writes it (``extra``: more project files, name -> content), run by
    ansible-runner; returns the finished Runner."""
    data = tmp_path / "job"
    shutil.copytree(ROOT / "playbooks", data / "project" / "playbooks")
    for name, content in (extra or {}).items():
        (data / "project" / name).write_text(content)
    (data / "inventory").mkdir(parents=True)
    (data / "inventory" / "hosts").write_text(
        f"localhost ansible_connection=local ansible_python_interpreter={BIN / 'python'}\n"
    )
    env = data / "env"
    env.mkdir()
    (env / "extravars").write_text(yaml.safe_dump(survey))
    envvars = {
        # The built-in Kubernetes credential's injectors; here a kubeconfig instead of host and bearer token.
        "K8S_AUTH_KUBECONFIG": kubeconfig,
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / ".build" / "collections"),
        "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "true",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    (env / "envvars").write_text(yaml.safe_dump(envvars))
    if credentials:
        injected = env / f"tmp{uuid.uuid4().hex[:8]}"
        injected.write_text(yaml.safe_dump(credentials))
        injected.chmod(0o400)
        (env / "cmdline").write_text(f"-e @{injected}")
    return ansible_runner.run(private_data_dir=str(data), playbook=playbook, ident="1", quiet=True)


def ok_results(runner: ansible_runner.Runner, task_part: str) -> list[dict]:
    return [
        e["event_data"]["res"]
        for e in runner.events
        if e.get("event") in ("runner_on_ok", "runner_item_on_ok") and task_part in e["event_data"].get("task", "")
    ]


def test_deploy_and_teardown_from_awx_carry_results_and_never_the_token(tmp_path, kubeconfig, kubectl, base_vars):
    survey = {**base_vars, "vllm_server_replicas": 1, "vllm_server_load_strategy": "ram_copy"}
    job = awx_job(
        tmp_path / "deploy", kubeconfig, survey, {"model_download_hf_token": HF_TOKEN}, "playbooks/deploy.yml"
    )
    assert job.status == "successful", job.stdout.read()[-3000:]
    [applied] = ok_results(job, "Check the cluster, apply the node pool")
    objects = {o["object"] for step in applied["steps"] for o in step["objects"]}
    assert {"PersistentVolumeClaim/fsx-models", "Job/model-download"} <= objects
    [served] = ok_results(job, "Apply the servers, Services")
    assert "Deployment/mistral" in {o["object"] for step in served["steps"] for o in step["objects"]}
    assert served["steps"][0]["startup"]["pods"], "the start-up timeline travels in the event"
    secret = kubectl.json("-n", base_vars["vllm_namespace"], "get", "secret", "hf-token")
    assert base64.b64decode(secret["data"]["token"]).decode() == HF_TOKEN
    assert secret_hits(tmp_path / "deploy" / "job" / "artifacts", HF_TOKEN) == []

    down = awx_job(tmp_path / "down", kubeconfig, base_vars, {}, "playbooks/teardown.yml")
    assert down.status == "successful", down.stdout.read()[-3000:]
    assert not kubectl.exists("-n", base_vars["vllm_namespace"], "deployment", "mistral")


def test_a_refused_deploy_carries_the_reason_in_its_event(tmp_path, kubeconfig, kubectl):
    survey = {"vllm_namespace": "t-awx-refused", "vllm_server_nodes": 3, "vllm_server_gpus": 4}
    job = awx_job(tmp_path, kubeconfig, survey, {"model_download_hf_token": HF_TOKEN}, "playbooks/deploy.yml")
    assert job.status == "failed"
    [failed] = [e["event_data"]["res"] for e in job.events if e.get("event") == "runner_on_failed"]
    assert failed["reason"] == "nodes_short" and "\n" not in failed["msg"]
    assert secret_hits(tmp_path / "job" / "artifacts", HF_TOKEN) == []
    assert not kubectl.exists("namespace", "t-awx-refused"), "refused before the token Secret was written"


def test_probe_from_awx_reports_checks_and_latencies_and_never_the_key(tmp_path, kubeconfig):
    with FakeVLLM(FakeVLLMConfig(api_key=API_KEY)) as server:
        survey = {"probe_url": server.url, "probe_checks": ["health", "models", "chat", "stream"]}
        job = awx_job(tmp_path, kubeconfig, survey, {"probe_api_key": API_KEY}, "playbooks/probe.yml")
    assert job.status == "successful", job.stdout.read()[-3000:]
    [probed] = ok_results(job, "Probe the endpoint at the URL")
    assert all(probed["checks"][c]["passed"] for c in ("health", "models", "chat", "stream"))
    assert probed["checks"]["chat"]["latency_ms"] > 0 and probed["ttft_ms"] is not None
    assert secret_hits(tmp_path / "job" / "artifacts", API_KEY) == []


def test_the_scan_finds_a_token_a_task_leaks(tmp_path, kubeconfig):
    """The search is not vacuous: a debug task that prints the token puts it into the events and stdout."""
    task = {"ansible.builtin.debug": {"msg": "{{ model_download_hf_token }}"}}
    leak = yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": [task]}])
    credentials = {"model_download_hf_token": HF_TOKEN}
    job = awx_job(tmp_path, kubeconfig, {}, credentials, "playbooks/leak.yml", {"playbooks/leak.yml": leak})
    assert job.status == "successful"
    hits = secret_hits(tmp_path / "job" / "artifacts", HF_TOKEN)
    assert "1/stdout" in hits and any(h.startswith("1/job_events/") for h in hits), json.dumps(hits)
