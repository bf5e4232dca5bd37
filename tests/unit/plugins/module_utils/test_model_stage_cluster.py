"""The cluster-side staging mode's pure parts: checking its options, building the download Job, reading the manifest.

What it does against a real API server is in tests/integration/test_stage_cluster.py.
"""

from __future__ import annotations

import copy
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_collections.llmops.vllm.plugins.module_utils import model_download as md
from ansible_collections.llmops.vllm.plugins.module_utils import model_stage as ms
from ansible_collections.llmops.vllm.plugins.module_utils.model_stage.manifest import _print_manifest as print_manifest
from ansible_collections.llmops.vllm.plugins.module_utils.stage_engine import (
    LEGACY_ENTRY,
    LEGACY_SOURCE,
    engine_files,
    stage_configmap,
)
from ansible_collections.llmops.vllm.tests import model_factory as mf
from ansible_collections.llmops.vllm.tests.configmap_mount import mount_configmap

GOOD = {
    "namespace": "vllm",
    "pvc": "fsx-models",
    "path": "mistral-7b-v0-3",
    "hf_repo": "mistralai/Mistral-7B-Instruct-v0.3",
    "hf_files": ["consolidated.safetensors", "params.json", "tokenizer.model.v3"],
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"namespace": None}, "namespace is required with pvc"),
        ({"path": ""}, "path is required with pvc"),
        ({"hf_repo": None}, "hf_repo is required with pvc"),
        ({"namespace": "Vllm_Prod"}, "namespace: 'Vllm_Prod' is not a valid namespace name"),
        ({"pvc": "fsx models"}, "pvc: 'fsx models' is not a valid claim name"),
        ({"job_name": "Model.Download"}, "job_name: 'Model.Download' is not a valid Job name"),
        ({"job_name": "d" * 64}, "is not a valid Job name"),
        ({"path": "../etc"}, "path: '../etc' must name a directory inside the volume"),
        ({"path": "models/./x"}, "must name a directory inside the volume"),
        ({"path": "/"}, "must name a directory inside the volume"),
        ({"hf_repo": "Mistral-7B"}, "hf_repo: 'Mistral-7B' is not a Hugging Face repo id (owner/name)"),
        ({"hf_files": ["a,b"]}, "hf_files: 'a,b' is not a file name or pattern inside the repository"),
        ({"hf_files": ["../secret"]}, "hf_files: '../secret' is not a file name"),
        ({"timeout": -1}, "timeout: -1 must be 0"),
    ],
)
def test_bad_options_get_one_line_naming_the_option(change: dict, message: str) -> None:
    with pytest.raises(md.DownloadInputError) as err:
        md.check_request({**GOOD, **change})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_good_options_become_the_roles_job_entry() -> None:
    request = md.check_request({**GOOD, "path": "/mistral-7b-v0-3/", "timeout": 0})
    assert request["job"] == {
        "name": "model-download",
        "model_dir": "mistral-7b-v0-3",
        "hf_repo": "mistralai/Mistral-7B-Instruct-v0.3",
        "hf_revision": "main",
        "files": GOOD["hf_files"],
        "models": [],
    }
    assert request["timeout"] == 0
    assert md.check_request(GOOD)["timeout"] == md.DEFAULT_TIMEOUT


def test_download_job_runs_the_engine_onto_the_claim_with_the_roles_defaults() -> None:
    request = md.check_request(
        {**GOOD, "hf_endpoint": "https://hf-mirror.example", "tolerations": [{"operator": "Exists"}]}
    )
    job = md.download_job(request["job"], "vllm", "fsx-models", **request["settings"])
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == [
        "python3",
        "/opt/llmops/model_stage",
        "download",
        "--repo",
        "mistralai/Mistral-7B-Instruct-v0.3",
        "--revision",
        "main",
        "--dest",
        "/models/mistral-7b-v0-3",
        "--files",
        "consolidated.safetensors,params.json,tokenizer.model.v3",
        "--token-env",
        "HF_TOKEN",
    ]
    assert container["image"] == "python:3.11-slim"
    assert {"name": "HF_ENDPOINT", "value": "https://hf-mirror.example"} in container["env"]
    assert container["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token", "optional": True}
    assert pod["tolerations"] == [{"operator": "Exists"}] and "nodeSelector" not in pod
    assert pod["volumes"] == [
        {"name": "models", "persistentVolumeClaim": {"claimName": "fsx-models"}},
        {"name": "model-stage", "configMap": {"name": "llmops-model-stage"}},
    ]
    # Without models to name, only the pod template's hash (which tells the replace path what changed).
    assert list(job["metadata"]["annotations"]) == ["llmops.vllm/pod-template-hash"]
    other = md.download_job({**request["job"], "hf_revision": "refs/pr/1"}, "vllm", "fsx-models", **request["settings"])
    assert other["metadata"]["annotations"] != job["metadata"]["annotations"]
    assert job["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [2]


def test_the_configmap_carries_this_engine_byte_for_byte() -> None:
    files = engine_files()
    package = Path(ms.__file__).parent
    # Every file of the package, no more: a file left out would be missing in the pods.
    assert sorted(files) == sorted(path.name for path in package.glob("*.py"))
    for name, text in files.items():
        assert text == (package / name).read_text(encoding="utf-8")
    cm = stage_configmap("llmops-model-stage", "vllm", files)
    assert cm["data"] == {**files, LEGACY_ENTRY: LEGACY_SOURCE}
    assert cm["metadata"]["labels"]["app.kubernetes.io/name"] == "model-stage"
    # ConfigMaps hold at most 1 MiB (kubernetes validation: MaxSecretSize for ConfigMap data too).
    assert sum(len(text.encode()) for text in files.values()) < 1024 * 1024


def test_manifest_is_read_back_from_what_the_cli_prints() -> None:
    manifest = {"format": "mistral", "file_count": 1, "files": [{"path": "params.json", "size": 2}], "total_bytes": 2}
    out = io.StringIO()
    print_manifest(manifest, out)
    log = ["params.json", "download: params.json: 0.0/0.0 MB 0.00 MB/s", *out.getvalue().splitlines()]
    assert ms.manifest_from_log(log) == manifest
    # The last manifest line wins; progress on stderr after it does not hide it.
    older = "MANIFEST " + json.dumps({"format": "huggingface"})
    assert ms.manifest_from_log([older, *log, "stage: done"]) == manifest


@pytest.mark.parametrize(
    "lines",
    [
        [],
        ["params.json", "error: 401 Unauthorized"],
        ['MANIFEST {"format": "mistral", "files": [{"path"'],  # a log cut mid-line
        ["MANIFEST [1, 2]"],
    ],
)
def test_no_manifest_line_gives_none(lines: list[str]) -> None:
    assert ms.manifest_from_log(lines) is None


def test_the_cluster_modes_defaults_are_the_model_download_roles():
    """vllm_model_stage's cluster mode makes the Job deploy makes for the same model: its defaults are the role's
    (model_download_<key>), kept equal here rather than by hand."""
    from pathlib import Path

    import yaml

    defaults_file = Path(md.__file__).resolve().parents[2] / "roles" / "model_download" / "defaults" / "main.yml"
    role = yaml.safe_load(defaults_file.read_text())
    assert {key: role[f"model_download_{key}"] for key in md.DEFAULTS} == md.DEFAULTS
    assert role["model_download_wait_timeout"] == md.DEFAULT_TIMEOUT


def test_a_job_of_the_single_file_engine_is_the_same_download() -> None:
    # Releases before the engine became a package ran it as /opt/llmops/model_stage.py: its Complete Job is reused.
    request = md.check_request(GOOD)
    job = md.download_job(request["job"], "vllm", "fsx-models", **request["settings"])
    older = copy.deepcopy(job)
    older["spec"]["template"]["spec"]["containers"][0]["command"][1] = "/opt/llmops/model_stage.py"
    assert md._what_it_downloads(older) == md._what_it_downloads(job)
    elsewhere = copy.deepcopy(job)
    elsewhere["spec"]["template"]["spec"]["containers"][0]["command"][-1] = "OTHER_TOKEN"
    assert md._what_it_downloads(elsewhere) != md._what_it_downloads(job)


@pytest.mark.parametrize("layout", ["package directory", "earlier release"])
def test_the_configmap_as_mounted_stages_a_model(tmp_path: Path, layout: str) -> None:
    # Now: mounted at /opt/llmops/model_stage, run as `python3 /opt/llmops/model_stage`. An earlier release's
    # server: the same ConfigMap mounted at /opt/llmops, run as `python3 /opt/llmops/model_stage.py`.
    data = stage_configmap("llmops-model-stage", "vllm")["data"]
    if layout == "package directory":
        entry = mount_configmap(data, tmp_path / "opt" / "llmops" / "model_stage")
    else:
        entry = mount_configmap(data, tmp_path / "opt" / "llmops") / LEGACY_ENTRY
    src = mf.make_mistral_model(tmp_path / "models" / "m")["path"]
    dest = tmp_path / "ram-models" / "m"
    command = [sys.executable, "-I", str(entry), "stage", "--src", str(src), "--dest", str(dest)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1].removeprefix("MANIFEST ")) == ms.load_manifest(dest)
