"""deploy.yml, teardown.yml and render.yml against the real control plane: the workshop's deployment end to end.

kwok plays the kubelets (pods go Running and Ready at once, Job pods Succeed), so these tests see what the
API server and the controllers do with the objects the roles apply: the claim binds to its PV, the download
Job completes, the Deployment becomes Available. Wall times of deploy, the no-op re-deploy and teardown are
printed at the end of the module (for the issue's closing note); they are measured on a shared 2-core machine.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from ansible_collections.llmops.vllm.plugins.module_utils.stage_engine import LEGACY_ENTRY, LEGACY_SOURCE
from ansible_collections.llmops.vllm.tests import model_factory as mf
from ansible_collections.llmops.vllm.tests.configmap_mount import mount_configmap
from cluster_helpers import BIN, ROOT, Kubectl, run_playbook

TIMINGS: list[tuple[str, float]] = []
# The workshop's manifest, verbatim: what the defaults reproduce.
WORKSHOP = {
    d["kind"]: d for d in yaml.safe_load_all((ROOT / "tests" / "data" / "workshop-vllm-deployment.yml").read_text())
}
WORKSHOP_VLLM = WORKSHOP["Deployment"]["spec"]["template"]["spec"]["containers"][0]
SEED_ARGS = WORKSHOP_VLLM["args"]
SEED_FILES = [
    "consolidated.safetensors",
    "params.json",
    "tokenizer.model.v3",
    "config.json",
    "generation_config.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
    "tokenizer.json",
    "tokenizer.model",
]
# Kinds deploy applies into the namespace, for "nothing was created" checks.
NAMESPACED_KINDS = "deployments,services,jobs,pods,persistentvolumeclaims,configmaps,secrets"


# ------------------------------------------------------------------------------------------------ helpers


@pytest.fixture(scope="module", autouse=True)
def report_timings(request):
    """Print the measured wall times at the end of the module, also without -s."""
    yield
    plugins = request.config.pluginmanager
    reporter, capture = plugins.getplugin("terminalreporter"), plugins.getplugin("capturemanager")
    if not (reporter and capture and TIMINGS):
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line("deploy.yml / teardown.yml wall times on the local control plane (this machine, this run):")
        for name, seconds in TIMINGS:
            reporter.write_line(f"  {name:<44} {seconds:6.2f} s")


def timed(label: str, playbook: str, kubeconfig: str, extra: dict, *args: str, check: bool = True):
    start = time.monotonic()
    proc = run_playbook(playbook, kubeconfig, extra, *args, check=check)
    TIMINGS.append((label, time.monotonic() - start))
    return proc


def recap(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """The PLAY RECAP counters of localhost."""
    match = re.search(r"localhost\s*:\s*(.*)", proc.stdout.split("PLAY RECAP")[-1])
    assert match, proc.stdout[-3000:]
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(1))}


def render(kubeconfig: str, extra: dict, out: Path) -> list[dict]:
    """render.yml into ``out``; the objects it wrote, in file order."""
    run_playbook("render.yml", kubeconfig, {**extra, "render_dir": str(out)}, check=True)
    return [obj for path in sorted(out.glob("*.yml")) for obj in yaml.safe_load_all(path.read_text()) if obj]


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def condition(obj: dict, kind: str) -> str | None:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond["type"] == kind:
            return cond["status"]
    return None


def json_run(playbook: str, kubeconfig: str, extra: dict, *args: str, monkeypatch) -> tuple[int, dict]:
    """A playbook run with the JSON callback: its return code and the parsed report."""
    with monkeypatch.context() as patched:
        patched.setenv("ANSIBLE_STDOUT_CALLBACK", "ansible.posix.json")
        patched.setenv("ANSIBLE_LOAD_CALLBACK_PLUGINS", "true")
        proc = run_playbook(playbook, kubeconfig, extra, *args)
    return proc.returncode, json.loads(proc.stdout)


def task_results(report: dict, name_part: str) -> list[dict]:
    return [
        task["hosts"]["localhost"]
        for play in report["plays"]
        for task in play["tasks"]
        if name_part in task["task"]["name"] and "localhost" in task["hosts"]
    ]


def applied_steps(report: dict) -> list[dict]:
    """Every step the llmops.vllm.vllm_apply tasks of a run went through, in order."""
    return [
        step
        for play in report["plays"]
        for task in play["tasks"]
        for step in (task["hosts"].get("localhost") or {}).get("steps") or []
    ]


def short(task_name: str) -> str:
    """A task's name without its role prefix ("llmops.vllm.storage : Apply ..." -> "Apply ...")."""
    return task_name.rsplit(" : ", 1)[-1]


def namespace_is_untouched(kubectl: Kubectl, namespace: str, pv: str) -> list[str]:
    """What deploy left in an empty namespace (kube-root-ca.crt aside); empty when nothing."""
    items = kubectl.json("-n", namespace, "get", NAMESPACED_KINDS)["items"]
    left = [f"{i['kind']}/{i['metadata']['name']}" for i in items if i["metadata"]["name"] != "kube-root-ca.crt"]
    if kubectl.exists("pv", pv):
        left.append(f"PersistentVolume/{pv}")
    return left


# ------------------------------------------------------------------------------------------- the story


def test_deploy_converges_renders_the_same_and_tears_down(kubectl, kubeconfig, base_vars, tmp_path, monkeypatch):
    ns, pv = base_vars["vllm_namespace"], base_vars["storage_pv_name"]

    first = timed("deploy (empty namespace)", "deploy.yml", kubeconfig, base_vars)
    assert recap(first)["failed"] == 0

    job = kubectl.json("-n", ns, "get", "job", "model-download")
    assert condition(job, "Complete") == "True", job.get("status")
    deployment = kubectl.json("-n", ns, "get", "deployment", "mistral")
    assert condition(deployment, "Available") == "True", deployment.get("status")
    assert deployment["status"]["availableReplicas"] == 1
    service = kubectl.json("-n", ns, "get", "service", "mistral")
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(8080, 8080)]
    pvc = kubectl.json("-n", ns, "get", "pvc", "fsx-models")
    assert pvc["status"]["phase"] == "Bound" and pvc["spec"]["volumeName"] == pv
    pod = kubectl.json("-n", ns, "get", "pods", "-l", "model=mistral7b")["items"][0]
    node = kubectl.json("get", "node", pod["spec"]["nodeName"])
    assert node["metadata"]["labels"].get("nvidia.com/gpu.present") == "true"

    # What render.yml writes for the same variables is exactly what deploy applied: a server-side dry-run
    # apply of the files under deploy's field manager changes nothing (an extra, missing or different field
    # in either would show up as a diff, including fields deploy owns that render lacks).
    rendered_dir = tmp_path / "rendered"
    objects = render(kubeconfig, base_vars, rendered_dir)
    diff = kubectl.run(
        "diff",
        "--server-side",
        "--field-manager=llmops-vllm",
        "--force-conflicts=false",
        "-f",
        str(rendered_dir),
        check=False,
    )
    assert diff.returncode == 0, f"render.yml and deploy.yml disagree:\n{diff.stdout[-4000:]}{diff.stderr[-2000:]}"
    # ... and deploy applied nothing render does not list.
    managed = kubectl.json(
        "-n",
        ns,
        "get",
        "deployments,services,jobs,configmaps,persistentvolumeclaims",
        "-l",
        "app.kubernetes.io/managed-by=llmops.vllm",
    )["items"]
    assert sorted((o["kind"], o["metadata"]["name"]) for o in managed) == sorted(
        (o["kind"], o["metadata"]["name"]) for o in objects if o["kind"] not in ("Namespace", "PersistentVolume")
    )

    again = timed("deploy again (no change)", "deploy.yml", kubeconfig, base_vars)
    assert recap(again)["changed"] == 0, again.stdout[-4000:]

    # --check --diff with one engine argument changed: exactly that change is reported, nothing is applied.
    changed_vars = {
        **base_vars,
        "vllm_models": [{"name": "mistral", "labels": {"model": "mistral7b"}, "engine_args": {"max-model-len": 4096}}],
    }
    rc, report = json_run("deploy.yml", kubeconfig, changed_vars, "--check", "--diff", monkeypatch=monkeypatch)
    assert rc == 0, json.dumps(report)[-3000:]
    changes = [entry for step in applied_steps(report) for entry in step["diff"]]
    assert [c["object"] for c in changes] == ["Deployment/mistral"], changes
    before = changes[0]["before"]["spec"]["template"]["spec"]["containers"][0]["args"]
    after = changes[0]["after"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [(b, a) for b, a in zip(before, after, strict=True) if b != a] == [
        ("--max-model-len=2048", "--max-model-len=4096")
    ]
    assert set(changes[0]["before"]) == {"spec"} and set(changes[0]["after"]) == {"spec"}, changes
    live = kubectl.json("-n", ns, "get", "deployment", "mistral")
    assert live["spec"]["template"]["spec"]["containers"][0]["args"] == SEED_ARGS
    assert live["metadata"]["generation"] == deployment["metadata"]["generation"]

    # teardown: servers, Services, Jobs and the staging engine go; the volume and the model stay.
    down = timed("teardown (keep volume)", "teardown.yml", kubeconfig, base_vars)
    assert recap(down)["failed"] == 0
    left = kubectl.json("-n", ns, "get", "deployments,services,jobs,configmaps")["items"]
    assert [o["metadata"]["name"] for o in left] == ["kube-root-ca.crt"], [o["metadata"]["name"] for o in left]
    assert kubectl.json("-n", ns, "get", "pvc", "fsx-models")["status"]["phase"] == "Bound"
    assert kubectl.exists("pv", pv)

    purged = timed("teardown purge=true", "teardown.yml", kubeconfig, {**base_vars, "purge": True})
    assert recap(purged)["failed"] == 0
    assert not kubectl.exists("-n", ns, "pvc", "fsx-models")
    assert not kubectl.exists("pv", pv)
    assert kubectl.exists("namespace", ns), "teardown must never delete the namespace"


def test_two_models_get_their_own_objects(kubectl, kubeconfig, base_vars):
    ns = base_vars["vllm_namespace"]
    models = [
        {"name": "mistral", "labels": {"model": "mistral7b"}},
        {
            "name": "qwen-small",
            "model_dir": "qwen2-5-0-5b",
            "hf_repo": "Qwen/Qwen2.5-0.5B-Instruct",
            "hf_files": ["model.safetensors", "config.json", "tokenizer.json"],
            "model_size": "1G",
            "load_strategy": "direct",
            "engine_args": {"config-format": None, "tool-call-parser": "hermes", "max-model-len": 8192},
        },
    ]
    proc = timed("deploy (two models)", "deploy.yml", kubeconfig, {**base_vars, "vllm_models": models})
    assert recap(proc)["failed"] == 0

    deployments = {d["metadata"]["name"]: d for d in kubectl.json("-n", ns, "get", "deployments")["items"]}
    assert sorted(deployments) == ["mistral", "qwen-small"]
    for name, d in deployments.items():
        assert condition(d, "Available") == "True", (name, d.get("status"))
    services = {s["metadata"]["name"]: s for s in kubectl.json("-n", ns, "get", "services")["items"]}
    assert services["mistral"]["spec"]["selector"] == {"model": "mistral7b"}
    assert services["qwen-small"]["spec"]["selector"] == {"model": "qwen-small"}
    jobs = {j["metadata"]["name"]: j for j in kubectl.json("-n", ns, "get", "jobs")["items"]}
    assert sorted(jobs) == ["model-download", "model-download-qwen2-5-0-5b"]
    assert all(condition(j, "Complete") == "True" for j in jobs.values())
    qwen_cmd = jobs["model-download-qwen2-5-0-5b"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert qwen_cmd[qwen_cmd.index("--repo") + 1] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert qwen_cmd[qwen_cmd.index("--dest") + 1] == "/models/qwen2-5-0-5b"

    # The second model loads straight from the read-only volume: no init container, no RAM volume.
    qwen = deployments["qwen-small"]["spec"]["template"]["spec"]
    assert "initContainers" not in qwen
    assert [v["name"] for v in qwen["volumes"]] == ["models", "dshm"]
    args = qwen["containers"][0]["args"]
    assert args[:2] == ["--port=8080", "--model=/models/qwen2-5-0-5b"]
    assert "--max-model-len=8192" in args and "--tool-call-parser=hermes" in args
    assert not any(a.startswith("--config-format") for a in args)
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in qwen["containers"][0]["volumeMounts"]

    run_playbook("teardown.yml", kubeconfig, {**base_vars, "vllm_models": models, "purge": True}, check=True)
    assert kubectl.json("-n", ns, "get", "deployments,services,jobs")["items"] == []


# ------------------------------------------------------------------------------------------- preflight

PREFLIGHT_CASES = {
    "ram-volume-smaller-than-model": (
        {"vllm_server_ram_size_limit": "10Gi"},
        "RAM volume sizeLimit 10Gi is smaller than the model (14.5G = 13.5Gi)",
    ),
    "memory-limit-below-volumes-and-working-memory": (
        {"vllm_server_resources": {"limits": {"cpu": 6, "memory": "24Gi", "nvidia.com/gpu": 1}}},
        "memory limit 24Gi is smaller than the Memory volumes plus the server's working memory",
    ),
    "tensor-parallel-above-gpus": (
        {"vllm_models": [{"name": "mistral", "engine_args": {"tensor-parallel-size": 2}}]},
        "tensor-parallel-size x pipeline-parallel-size is 2 but only 1 GPU(s) are requested",
    ),
    "name-not-a-dns-label": (
        {"vllm_models": [{"name": "Mistral_7B"}]},
        "model name 'Mistral_7B' is not a valid DNS label",
    ),
    "unknown-load-strategy": (
        {"vllm_models": [{"name": "mistral", "load_strategy": "mmap"}]},
        "unknown load_strategy 'mmap'",
    ),
    # Engine arguments against the release the image runs (plugins/plugin_utils/_engine_arg_check.py).
    "engine-arg-unknown": (
        {"vllm_models": [{"name": "mistral", "engine_args": {"max-model-length": 4096}}]},
        "model mistral: --max-model-length: vLLM 0.9.0 has no such flag; did you mean --max-model-len?",
    ),
    "engine-arg-removed-in-the-release": (
        {"vllm_models": [{"name": "mistral", "image": "vllm/vllm-openai:v0.33.0", "engine_args": {"swap-space": 4}}]},
        "model mistral: --swap-space was removed in vLLM 0.18 (last in 0.17.1) because the V1 engine never swaps",
    ),
    "engine-arg-value-not-a-choice": (
        {"vllm_models": [{"name": "mistral", "engine_args": {"dtype": "fp32"}}]},
        "model mistral: --dtype does not take 'fp32'; vLLM 0.9.0 takes one of auto,",
    ),
    "engine-arg-switch-given-a-value": (
        {"vllm_models": [{"name": "mistral", "engine_args": {"enforce-eager": "yes"}}]},
        "model mistral: --enforce-eager takes no value (it is a switch): write true or false, not 'yes'",
    ),
    "engine-arg-tool-parser-not-shipped": (
        {"vllm_models": [{"name": "mistral", "engine_args": {"tool-call-parser": "mistrall"}}]},
        "model mistral: --tool-call-parser names 'mistrall', which vLLM 0.9.0 does not ship; use one of",
    ),
    "gpus-left-idle": (
        {"vllm_models": [{"name": "mistral", "gpus": 2}]},
        "tensor-parallel-size x pipeline-parallel-size is 1 but 2 GPU(s) are requested, so 1 would sit idle",
    ),
    "mistral-config-without-params-json": (
        {"vllm_server_hf_files": ["consolidated.safetensors", "tokenizer.model.v3", "config.json"]},
        "model mistral: --config-format=mistral reads params.json, which is not among hf_files",
    ),
    "vllm-version-not-a-version": (
        {"vllm_server_vllm_version": "latest"},
        "model mistral: vllm_version 'latest' is not a vLLM version",
    ),
    # FSx StorageClass parameters the FSx API refuses at CreateFileSystem (plugins/plugin_utils/_fsx.py).
    "fsx-s3-link-on-persistent-2": (
        {
            "storage_mode": "dynamic",
            "storage_subnet_id": "subnet-0123456789abcdef0",
            "storage_security_group_ids": ["sg-0123456789abcdef0"],
            "storage_s3_import_path": "s3://models-bucket/mistral",
        },
        "storage_s3_import_path: FSx takes no S3 link when it creates a PERSISTENT_2 file system",
    ),
    "fsx-throughput-not-offered": (
        {
            "storage_mode": "dynamic",
            "storage_subnet_id": "subnet-0123456789abcdef0",
            "storage_security_group_ids": ["sg-0123456789abcdef0"],
            "storage_per_unit_storage_throughput": 200,
        },
        "storage_per_unit_storage_throughput 200 is not offered for PERSISTENT_2; use 125, 250, 500 or 1000",
    ),
    "no-gpu-nodes-and-no-node-pool": (
        {"vllm_server_gpu_node_label": "llmops.test/no-such-gpu-label=true"},
        "no node has the label llmops.test/no-such-gpu-label=true and no node pool is requested",
    ),
    "invalid-token-secret-name": (
        {"model_download_hf_token_secret": "HF_Token"},
        "model_download_hf_token_secret is not a valid Kubernetes name",
    ),
    "more-gpus-than-any-node-has": (
        {"vllm_models": [{"name": "mistral", "gpus": 16, "engine_args": {"tensor-parallel-size": 16}}]},
        "a server needs 16 GPUs in one pod but the largest GPU node",
    ),
    "no-fsx-csi-driver": (
        {"storage_csi_driver": "fsx.csi.llmops.invalid"},
        "CSIDriver fsx.csi.llmops.invalid is not installed",
    ),
    "autoscaler-on-a-model-across-nodes": (
        {"vllm_models": [{"name": "big", "nodes": 2, "gpus": 4, "autoscaling": {"kind": "hpa"}}]},
        "autoscaling a model across nodes (a LeaderWorkerSet) is not supported",
    ),
    "parallelism-not-the-groups-gpus": (
        {"vllm_models": [{"name": "big", "nodes": 2, "gpus": 4, "engine_args": {"tensor-parallel-size": 8}}]},
        "the group has 2 nodes x 4 GPU(s) = 8",
    ),
    "more-nodes-than-gpu-nodes": (
        {"vllm_models": [{"name": "huge", "nodes": 3, "gpus": 4}]},
        "model huge spans 3 nodes with 4 GPUs each",
    ),
}


@pytest.mark.parametrize("case", sorted(PREFLIGHT_CASES))
def test_preflight_refuses_before_anything_is_created(case, kubectl, kubeconfig, base_vars, monkeypatch):
    extra, expected = PREFLIGHT_CASES[case]
    rc, report = json_run("deploy.yml", kubeconfig, {**base_vars, **extra}, monkeypatch=monkeypatch)
    assert rc != 0
    failed = [
        (task["task"]["name"], task["hosts"]["localhost"])
        for play in report["plays"]
        for task in play["tasks"]
        if task["hosts"].get("localhost", {}).get("failed")
    ]
    assert len(failed) == 1, failed
    task, result = failed[0]
    # A check of the settings, or vllm_apply's cluster checks, which run before its first step.
    cluster_check = result.get("reason") in ("no_gpu_nodes", "gpus_exceed_nodes", "nodes_short", "no_csi_driver")
    assert short(task).startswith("Refuse") or cluster_check, f"failed in {task!r}, not in a preflight check"
    assert expected in result["msg"], result["msg"]
    assert "\n" not in result["msg"].strip(), "the preflight message should be one line"
    # Nothing was applied: no apply step ran, and the namespace holds nothing of ours.
    assert applied_steps(report) == [], applied_steps(report)
    assert namespace_is_untouched(kubectl, base_vars["vllm_namespace"], base_vars["storage_pv_name"]) == []


def test_max_model_len_above_the_downloaded_model_is_refused_before_the_server(kubectl, kubeconfig, monkeypatch):
    """The download Job's manifest (kwok serves tests/cluster/kwok-logs/model-download-hf-4k.log as its log in the
    namespace llmops-facts) says the model has 4096 positions: --max-model-len=8192 stops the run before the server
    is applied, instead of a pod that crash-loops with vLLM's "greater than the derived max_model_len"."""
    ns, pv = "llmops-facts", "fsx-llmops-facts"
    kubectl.run("delete", "namespace", ns, "--ignore-not-found", "--wait=true", "--timeout=60s", check=False)
    extra = {
        "vllm_namespace": ns,
        "storage_pv_name": pv,
        "vllm_models": [
            {
                "name": "tiny",
                "model_dir": "llama-4k",
                "hf_repo": "llmops-test/tiny-llama",
                "hf_files": ["config.json", "tokenizer.json", "model.safetensors"],
                "engine_args": {
                    "max-model-len": 8192,
                    "config-format": None,
                    "tool-call-parser": None,
                    "enable-auto-tool-choice": None,
                },
            }
        ],
    }
    try:
        rc, report = json_run("deploy.yml", kubeconfig, extra, monkeypatch=monkeypatch)
        failed = [
            (t["task"]["name"], t["hosts"]["localhost"])
            for p in report["plays"]
            for t in p["tasks"]
            if t["hosts"].get("localhost", {}).get("failed")
        ]
        assert rc != 0 and len(failed) == 1, failed
        task, result = failed[0]
        assert short(task) == "Refuse a max-model-len the downloaded models cannot take"
        assert result["msg"] == (
            "model tiny: --max-model-len=8192 is above the 4096 tokens the model supports (max_position_embeddings "
            "in its config), so vLLM refuses to start; lower it to 4096 or less, or set "
            "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 in env if you know the model extrapolates"
        )
        assert kubectl.json("-n", ns, "get", "deployments")["items"] == []
        assert [j["metadata"]["name"] for j in kubectl.json("-n", ns, "get", "jobs")["items"]] == ["model-download"]
    finally:
        kubectl.run("delete", "namespace", ns, "--wait=false", check=False)
        kubectl.run("delete", "pv", pv, "--ignore-not-found", "--wait=false", check=False)


# ----------------------------------------------------------------------------------------------- render


def test_render_with_defaults_reproduces_the_workshop(tmp_path):
    out = tmp_path / "render"
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), str(ROOT / "playbooks" / "render.yml"), "-e", f"render_dir={out}"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
        # No cluster: a kubeconfig that points nowhere proves render.yml never asks one.
        env={**os.environ, "KUBECONFIG": str(tmp_path / "absent"), "K8S_AUTH_KUBECONFIG": str(tmp_path / "absent")},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    objects = [o for p in sorted(out.glob("*.yml")) for o in yaml.safe_load_all(p.read_text()) if o]

    pvc = by_kind(objects, "PersistentVolumeClaim")["fsx-models"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["storageClassName"] == "" and pvc["spec"]["volumeName"] == "fsx-pv"
    pv = by_kind(objects, "PersistentVolume")["fsx-pv"]
    assert pv["spec"]["csi"]["driver"] == "fsx.csi.aws.com"
    assert set(pv["spec"]["csi"]["volumeAttributes"]) == {"dnsname", "mountname"}
    assert pv["spec"]["csi"]["volumeHandle"].startswith("fs-")
    assert pv["spec"]["mountOptions"] == ["flock"] and pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"

    job = by_kind(objects, "Job")["model-download"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    cmd = container["command"]
    assert cmd[:3] == ["python3", "/opt/llmops/model_stage", "download"]
    assert cmd[cmd.index("--repo") + 1] == "mistralai/Mistral-7B-Instruct-v0.3"
    assert cmd[cmd.index("--dest") + 1] == "/models/mistral-7b-v0-3"
    assert cmd[cmd.index("--files") + 1].split(",") == SEED_FILES
    assert cmd[cmd.index("--token-env") + 1] == "HF_TOKEN"
    assert container["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "hf-token"
    engine = by_kind(objects, "ConfigMap")["llmops-model-stage"]["data"]
    package = ROOT / "plugins" / "module_utils" / "model_stage"
    assert engine == {path.name: path.read_text() for path in package.glob("*.py")} | {LEGACY_ENTRY: LEGACY_SOURCE}

    deployment = by_kind(objects, "Deployment")["mistral"]
    assert deployment["metadata"]["labels"]["model"] == "mistral7b"
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert deployment["spec"]["selector"] == {"matchLabels": {"model": "mistral7b"}}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["tolerations"] == [{"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    (init,) = pod["initContainers"]
    assert init["name"] == "model-loader"
    assert init["resources"]["requests"] == {"cpu": 6, "memory": "32Gi"} == init["resources"]["limits"]
    assert init["command"][:7] == [
        "python3",
        "/opt/llmops/model_stage",
        "stage",
        "--src",
        "/models/mistral-7b-v0-3",
        "--dest",
        "/ram-models/mistral-7b-v0-3",
    ]
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in init["volumeMounts"]
    (vllm,) = pod["containers"]
    assert vllm["name"] == "vllm"
    for field in ("image", "imagePullPolicy", "args", "env", "resources", "ports"):
        assert vllm[field] == WORKSHOP_VLLM[field], field
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["ram-models"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "20Gi"}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "fsx-models", "readOnly": True}
    assert {"name": "ram-models", "mountPath": "/ram-models", "readOnly": True} in vllm["volumeMounts"]
    assert vllm["readinessProbe"]["httpGet"]["path"] == "/v1/models"
    assert vllm["livenessProbe"]["httpGet"]["path"] == "/health"
    # Beyond the workshop: the DLC's own command, so SIGTERM reaches vLLM (its entry point script is a bash PID 1
    # without exec), and the drain of docs/vllm-shutdown.md (0.9.0 has none: the preStop waits on /metrics).
    assert vllm["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert vllm["lifecycle"]["preStop"]["exec"]["command"][:2] == ["python3", "-c"]
    assert pod["terminationGracePeriodSeconds"] == 60

    run_init_container_from_its_configmap(pod, by_kind(objects, "ConfigMap")["llmops-model-stage"], tmp_path)

    service = by_kind(objects, "Service")["mistral"]
    assert service["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/app-metrics": "true",
        "prometheus.io/port": "8080",
    }
    assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP", "targetPort": 8080}]
    assert service["spec"]["selector"] == {"model": "mistral7b"}
    assert {o["kind"] for o in objects} == {
        "Namespace",
        "PersistentVolume",
        "PersistentVolumeClaim",
        "ConfigMap",
        "Job",
        "Deployment",
        "Service",
    }


def run_init_container_from_its_configmap(pod: dict, configmap: dict, tmp_path: Path) -> None:
    """Run the rendered init container's command here, its volumes mapped to directories: the engine it runs is the
    ConfigMap's files as mounted, the source a generated model on the 'model volume'."""
    (init,) = pod["initContainers"]
    mounts = {m["mountPath"]: tmp_path / "volumes" / m["name"] for m in init["volumeMounts"]}
    mount_configmap(configmap["data"], mounts["/opt/llmops/model_stage"])
    src = init["command"][init["command"].index("--src") + 1]
    mf.make_mistral_model(mounts["/models"] / Path(src).name)
    mounts["/ram-models"].mkdir(parents=True)

    def local(arg: str) -> str:
        for path, directory in mounts.items():
            if arg == path or arg.startswith(path + "/"):
                return str(directory) + arg[len(path) :]
        return arg

    command = [local(arg) for arg in init["command"]]
    assert command[0] == "python3"
    # -I: no site-packages and no working directory on sys.path, as a bare image's Python.
    done = subprocess.run(
        [sys.executable, "-I", *command[1:]], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    dest = Path(local(init["command"][init["command"].index("--dest") + 1]))
    manifest = json.loads(done.stdout.splitlines()[-1].removeprefix("MANIFEST "))
    assert manifest == json.loads((dest / ".llmops-manifest.json").read_text())
    assert manifest["format"] == "mistral" and "stage: " in done.stderr and "RESULT " in done.stderr


def test_every_optional_object_is_valid_for_the_api_server(kubectl, kubeconfig, namespace, tmp_path):
    """Dynamic FSx, the other load strategies, API key, NetworkPolicy, HPA, PDB, Ingress, KEDA, ServiceMonitor,
    Route and Karpenter's NodePool and EC2NodeClass, rendered and checked by the real API server (server-side dry
    run), the CRD kinds by their upstream CRDs."""
    extra = {
        "vllm_namespace": namespace,
        "storage_mode": "dynamic",
        "storage_subnet_id": "subnet-0123456789abcdef0",
        "storage_security_group_ids": ["sg-0123456789abcdef0"],
        # FSx links S3 at creation only for SCRATCH_1, SCRATCH_2 and PERSISTENT_1 (the FSx API reference).
        "storage_deployment_type": "SCRATCH_2",
        "storage_s3_import_path": "s3://models-bucket/mistral",
        "storage_class_name": f"fsx-{namespace}",
        "gpu_nodepool_enabled": True,
        "gpu_nodepool_node_role": "KarpenterNodeRole-test",
        "gpu_nodepool_discovery_tag": "test-cluster",
        "vllm_models": [
            {
                "name": "mistral",
                "labels": {"model": "mistral7b"},
                "api_key_secret": {"name": "vllm-api-key", "key": "api-key"},
                "network_policy": {"from": [{"namespaceSelector": {"matchLabels": {"team": "apps"}}}]},
                "autoscaling": {"kind": "hpa", "min_replicas": 1, "max_replicas": 3},
                "pdb": {"min_available": 1},
                "ingress": {"host": "mistral.example.com"},
                "service_monitor": True,
            },
            {
                "name": "streamed",
                "load_strategy": "runai_streamer",
                "model_uri": "s3://models-bucket/mistral/",
                "route": {"host": "streamed.apps.example.com"},
                "autoscaling": {"kind": "keda"},
            },
            {"name": "direct", "load_strategy": "direct", "download": False},
        ],
    }
    objects = render(kubeconfig, extra, tmp_path / "render")
    kinds = {o["kind"] for o in objects}
    assert {
        "StorageClass",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Ingress",
        "NetworkPolicy",
        "ScaledObject",
        "ServiceMonitor",
        "Route",
        "NodePool",
        "EC2NodeClass",
    } <= kinds
    mistral = by_kind(objects, "Deployment")["mistral"]
    assert "replicas" not in mistral["spec"], "the autoscaler owns replicas"
    env = {e["name"]: e for e in mistral["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["VLLM_API_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "vllm-api-key", "key": "api-key"}}
    streamed = by_kind(objects, "Deployment")["streamed"]["spec"]["template"]["spec"]
    assert streamed["containers"][0]["args"][:3] == [
        "--port=8080",
        "--model=s3://models-bucket/mistral/",
        "--load-format=runai_streamer",
    ]
    assert "models" not in {v["name"] for v in streamed["volumes"]}
    # The direct model downloads nothing, and the streamed one needs no download either.
    assert sorted(by_kind(objects, "Job")) == ["model-download"]

    def dry_run(objs: list[dict]):
        stream = "\n".join("---\n" + yaml.safe_dump(o) for o in objs)
        return kubectl.run(
            "apply",
            "--server-side",
            "--dry-run=server",
            "--field-manager=llmops-vllm",
            "-f",
            "-",
            input=stream,
            check=False,
        )

    dry = dry_run(objects)
    assert dry.returncode == 0, dry.stderr[-3000:]
    # The CRD kinds are validated by their upstream schemas (tests/cluster/addons.sh): a typo is refused.
    for kind in ("ScaledObject", "ServiceMonitor", "Route", "NodePool", "EC2NodeClass"):
        obj = next(o for o in objects if o["kind"] == kind)
        typo = dict(obj, spec={**obj["spec"], "replicaz": 1})
        refused = dry_run([typo])
        assert refused.returncode != 0, f"{kind} with a typo was accepted"
        assert ".spec.replicaz: field not declared in schema" in refused.stderr, refused.stderr[-500:]


def test_check_mode_on_a_new_namespace_reports_and_creates_nothing(kubectl, kubeconfig, monkeypatch):
    """--check before the first deploy: the namespace does not exist yet, so nothing in it can be dry-run; the
    steps report what they would create, and the cluster stays as it was."""
    ns = f"t-new-{uuid.uuid4().hex[:8]}"
    extra = {"vllm_namespace": ns, "storage_pv_name": f"fsx-{ns}"}
    rc, report = json_run("deploy.yml", kubeconfig, extra, "--check", "--diff", monkeypatch=monkeypatch)
    assert rc == 0, json.dumps(report)[-3000:]
    would = [
        f"{obj['object']}: create"
        for step in applied_steps(report)
        for obj in step["objects"]
        if obj["namespace"] and obj["action"] == "created"
    ]
    assert sorted(would) == [
        "ConfigMap/llmops-model-stage: create",
        "Deployment/mistral: create",
        "Job/model-download: create",
        "PersistentVolumeClaim/fsx-models: create",
        "Service/mistral: create",
    ]
    assert report["stats"]["localhost"]["failures"] == 0
    assert not kubectl.exists("namespace", ns)
    assert not kubectl.exists("pv", f"fsx-{ns}")


def test_check_mode_with_a_token_on_a_new_namespace_reports_the_secret(kubectl, kubeconfig, monkeypatch):
    """The token Secret's step runs with no_log: in check mode a namespace that does not exist yet used to fail it
    behind the censored message; now it reports the Secret as to be created and changes nothing."""
    ns = f"t-new-{uuid.uuid4().hex[:8]}"
    extra = {"vllm_namespace": ns, "storage_pv_name": f"fsx-{ns}", "model_download_hf_token": "hf_not_a_real_token"}
    proc = run_playbook("deploy.yml", kubeconfig, extra, "--check")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert recap(proc)["failed"] == 0
    assert "hf_not_a_real_token" not in proc.stdout + proc.stderr
    assert not kubectl.exists("namespace", ns)


def test_vllm_kubeconfig_reaches_every_step_through_module_defaults(kubectl, kubeconfig, base_vars, tmp_path):
    """deploy.yml's module_defaults (group/llmops.vllm.vllm) hand vllm_kubeconfig to vllm_apply, an action plugin,
    as to the modules: with KUBECONFIG pointing nowhere the run still reaches the cluster it names."""
    nowhere = str(tmp_path / "no-such-kubeconfig")
    proc = run_playbook("deploy.yml", nowhere, {**base_vars, "vllm_kubeconfig": kubeconfig})
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert kubectl.exists("-n", base_vars["vllm_namespace"], "deployment", "mistral")


def test_deploy_proves_the_endpoints_when_asked(kubectl, kubeconfig, base_vars):
    """deploy.yml probes every Service after the rollout: on kwok no server answers, so asking for the probe
    (vllm_probe_enabled: true) fails the run at the probe with its one-line reason, after everything was applied."""
    extra = {**base_vars, "vllm_probe_enabled": True, "vllm_probe_wait_timeout": 3}
    proc = run_playbook("deploy.yml", kubeconfig, extra)
    assert proc.returncode != 0
    assert recap(proc)["failed"] == 1
    failed_task = proc.stdout[: proc.stdout.index("failed: [localhost]")].rsplit("TASK [", 1)[1]
    assert failed_task.startswith("Prove every endpoint serves]"), failed_task[:200]
    assert "health: " in proc.stdout  # the probe's own one-line message
    assert kubectl.exists("-n", base_vars["vllm_namespace"], "deployment", "mistral")
