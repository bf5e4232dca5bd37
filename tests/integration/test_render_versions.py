"""render.yml for vLLM releases other than the seed's: every rendered flag exists in the release the image runs.

No cluster: render.yml never asks one. The catalogues under plugins/plugin_utils/_vllm_releases are the releases'
own argument definitions (tools/vllm_catalogue.py reads them from vLLM's released sources).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from ansible_collections.llmops.vllm.plugins.plugin_utils._vllm_releases import RELEASES, catalogue
from cluster_helpers import BIN, ROOT


def render(tmp_path: Path, extra: dict) -> tuple[subprocess.CompletedProcess, dict]:
    """render.yml with ``extra``; the process and the vLLM container of the Deployment ``mistral``."""
    out = tmp_path / "render"
    proc = subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            str(ROOT / "playbooks" / "render.yml"),
            "-e",
            f"render_dir={out}",
            "-e",
            json.dumps(extra),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
        env={**os.environ, "KUBECONFIG": str(tmp_path / "absent"), "K8S_AUTH_KUBECONFIG": str(tmp_path / "absent")},
    )
    if proc.returncode != 0:
        return proc, {}
    objects = [o for p in sorted(out.glob("*.yml")) for o in yaml.safe_load_all(p.read_text()) if o]
    (deployment,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "mistral"]
    return proc, deployment["spec"]["template"]["spec"]["containers"][0]


def flags_of(args: list[str]) -> list[str]:
    return [a[2:].split("=", 1)[0].replace("_", "-") for a in args if a.startswith("--")]


@pytest.mark.parametrize(
    "image",
    ["vllm/vllm-openai:v0.33.0", "public.ecr.aws/deep-learning-containers/vllm:0.15.1-gpu-py312-ec2"],
)
def test_current_image_renders_only_what_its_release_accepts(image, tmp_path):
    proc, vllm = render(tmp_path, {"vllm_server_image": image})
    assert proc.returncode == 0, proc.stdout[-3000:]
    release = image.rsplit(":", 1)[1].lstrip("v").split("-")[0]
    cat = catalogue(release)
    unknown = [f for f in flags_of(vllm["args"]) if f not in cat["flags"]]
    assert unknown == [], f"flags vLLM {release} does not have: {unknown}"
    # The seed's --swap-space=16 stays where the release still has it (up to 0.17) and goes where it would crash.
    assert ("swap-space" in flags_of(vllm["args"])) == ("swap-space" in cat["flags"])
    ignored = [e["name"] for e in vllm["env"] if e["name"].startswith("VLLM_") and e["name"] not in cat["env"]]
    assert ignored == [], f"environment variables vLLM {release} ignores: {ignored}"
    if "VLLM_ATTENTION_BACKEND" not in cat["env"]:
        assert "--attention-backend=FLASHINFER" in vllm["args"]
    # A release with --shutdown-timeout drains with it; one without gets the preStop wait and the one warning.
    drains = "shutdown-timeout" in cat["flags"]
    assert ("shutdown-timeout" in flags_of(vllm["args"])) == drains
    assert ("exec" in vllm["lifecycle"]["preStop"]) != drains
    warnings = [line for line in proc.stdout.splitlines() if "WARNING" in line]
    if drains:
        assert warnings == []
    else:
        assert len(warnings) == 1 and "has no --shutdown-timeout (from 0.18.0)" in warnings[0], warnings


def test_seed_image_keeps_the_seed_arguments(tmp_path):
    proc, vllm = render(tmp_path, {})
    assert proc.returncode == 0, proc.stdout[-3000:]
    cat = catalogue("0.9.0")
    assert [f for f in flags_of(vllm["args"]) if f not in cat["flags"]] == []
    assert "--swap-space=16" in vllm["args"]
    assert {"name": "VLLM_ATTENTION_BACKEND", "value": "FLASHINFER"} in vllm["env"]


def test_image_without_a_version_warns_once_and_renders_the_seed_defaults(tmp_path):
    proc, vllm = render(tmp_path, {"vllm_server_image": "registry.example/inference@sha256:" + "0" * 64})
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert proc.stdout.count("does not say which vLLM it runs") == 1, proc.stdout[-3000:]
    assert "--swap-space=16" in vllm["args"]


def test_ignored_environment_variable_is_a_warning_not_a_refusal(tmp_path):
    proc, vllm = render(
        tmp_path,
        {
            "vllm_server_image": f"vllm/vllm-openai:v{RELEASES[-1]}",
            "vllm_models": [{"name": "mistral", "labels": {"model": "mistral7b"}, "env": {"VLLM_USE_V1": "0"}}],
        },
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    if "VLLM_USE_V1" in catalogue(RELEASES[-1])["env"]:
        pytest.skip(f"vLLM {RELEASES[-1]} still reads VLLM_USE_V1")
    assert f"vLLM {RELEASES[-1]} does not read the environment variable VLLM_USE_V1" in proc.stdout
    assert {"name": "VLLM_USE_V1", "value": "0"} in vllm["env"]
