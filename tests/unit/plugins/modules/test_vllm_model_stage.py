"""llmops.vllm.vllm_model_stage through Ansible itself: `ansible localhost -m ...` and `ansible-doc`.

tests/conftest.py links this checkout as the llmops.vllm collection and points ANSIBLE_COLLECTIONS_PATH at it,
so these run the module exactly as a user's ad-hoc command or playbook would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_collections.llmops.vllm.tests import model_factory as mf
from ansible_collections.llmops.vllm.tests.ansible_cli import run_module

BIN = Path(sys.executable).parent
MODULE = "llmops.vllm.vllm_model_stage"


CLI_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def ansible(args: dict, *flags: str) -> dict:
    """Run the module ad hoc against localhost and return its result (the json callback's host entry)."""
    return run_module(MODULE, args, *flags, check_rc=False)


@pytest.fixture()
def model(tmp_path: Path) -> dict:
    return mf.make_mistral_model(tmp_path / "fsx" / "mistral-7b-v0-3")


def test_adhoc_stage_copies_then_reports_unchanged(tmp_path: Path, model: dict) -> None:
    dest = tmp_path / "ram" / "mistral-7b-v0-3"
    first = ansible({"src": str(model["path"]), "dest": str(dest), "workers": 3})
    assert first.get("failed") is not True, first.get("msg")
    assert first["changed"] is True and first["dest"] == str(dest)
    assert first["copied_files"] == model["files"]
    assert first["bytes_copied"] == sum((model["path"] / n).stat().st_size for n in model["files"])
    assert isinstance(first["elapsed_ms"], float) and first["throughput_bytes_per_s"] > 0
    manifest = first["manifest"]
    assert manifest["format"] == "mistral" and manifest["facts"]["num_layers"] == 2
    assert manifest == json.loads((dest / ".llmops-manifest.json").read_text())
    for name in model["files"]:
        assert (dest / name).read_bytes() == (model["path"] / name).read_bytes()

    second = ansible({"src": str(model["path"]), "dest": str(dest)})
    assert second["changed"] is False and second["copied_files"] == [] and second["bytes_copied"] == 0


def test_check_mode_with_diff_reports_the_copy_and_writes_nothing(tmp_path: Path, model: dict) -> None:
    dest = tmp_path / "ram" / "model"
    result = ansible({"src": str(model["path"]), "dest": str(dest)}, "--check", "--diff")
    assert result["changed"] is True and result["copied_files"] == model["files"]
    assert not dest.exists() and not dest.parent.exists()
    diff = result["diff"]
    assert diff["before"] == ""
    assert [line.split()[0] for line in diff["after"].splitlines()] == model["files"]


def test_failure_is_one_actionable_line_with_details(tmp_path: Path, model: dict) -> None:
    weights = model["path"] / "consolidated.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    dest = tmp_path / "ram" / "model"
    result = ansible({"src": str(model["path"]), "dest": str(dest)})
    assert result["failed"] is True
    assert "\n" not in result["msg"] and result["msg"].startswith(f"{weights}: truncated:")
    assert result["details"]["problem"] == "truncated" and result["details"]["path"] == str(weights)
    assert result["details"]["actual_size"] == weights.stat().st_size
    assert not dest.exists()


def test_verify_only_mode_with_expected_sha256(tmp_path: Path, model: dict) -> None:
    import hashlib

    digest = hashlib.sha256((model["path"] / "params.json").read_bytes()).hexdigest()
    args = {"src": str(model["path"]), "write_manifest": True, "sha256": {"params.json": digest}}
    first = ansible(args)
    assert first["changed"] is True and first["dest"] == str(model["path"])
    recorded = {f["path"]: f.get("sha256") for f in first["manifest"]["files"]}
    assert recorded["params.json"] == digest and all(recorded.values())
    assert ansible(args)["changed"] is False

    bad = ansible(dict(args, sha256={"params.json": "f" * 64}))
    assert bad["failed"] is True and bad["details"]["problem"] == "sha256_mismatch"
    assert bad["msg"].startswith(f"{model['path'] / 'params.json'}: sha256 mismatch")


def test_ansible_doc_shows_complete_docs() -> None:
    done = subprocess.run(
        [str(BIN / "ansible-doc"), "--json", MODULE],
        check=False,
        env=CLI_ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    entry = json.loads(done.stdout)[MODULE]
    doc = entry["doc"]
    local = {"src", "dest", "workers", "verify_sha256", "sha256", "required_free_bytes", "write_manifest", "force"}
    cluster = {"pvc", "namespace", "path", "hf_repo", "hf_revision", "hf_files", "hf_token_secret", "hf_token_key"}
    cluster |= {"hf_endpoint", "image", "job_name", "stage_configmap", "tolerations", "node_selector", "timeout"}
    connection = {"kubeconfig", "context", "host", "api_key", "validate_certs"}  # kubernetes.core's, among others
    assert local | cluster | connection <= set(doc["options"])
    assert all(option.get("description") for option in doc["options"].values())
    assert all(doc["options"][name].get("type") for name in local | cluster)
    # One of src (local files) and pvc (a cluster volume) is required; neither is on its own.
    assert not doc["options"]["src"].get("required") and not doc["options"]["pvc"].get("required")
    assert {name: doc["attributes"][name]["support"] for name in ("check_mode", "diff_mode", "idempotent")} == {
        "check_mode": "full",
        "diff_mode": "full",
        "idempotent": "full",
    }
    returned = entry["return"]
    for key in ("changed", "manifest", "copied_files", "bytes_copied", "elapsed_ms", "throughput_bytes_per_s", "dest"):
        assert returned[key]["description"], key
    for key in ("job", "applied", "pod", "states", "reason", "object", "evidence"):  # cluster-side mode
        assert returned[key]["description"], key
    assert "facts" in returned["manifest"]["contains"]
    assert "llmops.vllm.vllm_model_stage:" in entry["examples"]

    text = subprocess.run(
        [str(BIN / "ansible-doc"), MODULE], check=False, env=CLI_ENV, capture_output=True, text=True, timeout=120
    )
    assert text.returncode == 0 and "OPTIONS" in text.stdout and "RETURN VALUES" in text.stdout
