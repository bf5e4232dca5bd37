"""docs/roles.md is generated from the roles' meta/argument_specs.yml and kept in step with them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "docs" / "gen_role_docs.py"


def generate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(GENERATOR), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_committed_roles_md_matches_the_argument_specs() -> None:
    done = generate("--check")
    assert done.returncode == 0, f"{done.stderr}\n{done.stdout[-4000:]}"


def test_every_variable_of_every_spec_is_documented(tmp_path: Path) -> None:
    roles = tmp_path / "roles"
    (roles / "storage" / "meta").mkdir(parents=True)
    (roles / "storage" / "defaults").mkdir()
    spec = {
        "argument_specs": {
            "main": {
                "short_description": "Model volume",
                "description": ["FSx for Lustre, static or dynamic.", "Uses C(fsx.csi.aws.com)."],
                "options": {
                    "storage_mode": {"type": "str", "choices": ["static", "dynamic"], "description": "How | why"},
                    "storage_pvc_name": {"type": "str", "required": True, "description": "PVC name."},
                    "storage_models": {
                        "type": "list",
                        "elements": "dict",
                        "description": "Models.",
                        "options": {"name": {"type": "str", "required": True, "description": "DNS label."}},
                    },
                },
            },
            "purge": {"short_description": "Remove the volume", "options": {}},
            "prepare": {"short_description": "Check only", "options": None},
        }
    }
    # An entry point with the same options as main (the roles share them through a YAML anchor).
    spec["argument_specs"]["prepare"]["options"] = spec["argument_specs"]["main"]["options"]
    (roles / "storage" / "meta" / "argument_specs.yml").write_text(yaml.safe_dump(spec))
    (roles / "storage" / "defaults" / "main.yml").write_text(
        yaml.safe_dump({"storage_mode": "static", "storage_models": [{"name": "mistral"}]})
    )
    out = tmp_path / "roles.md"
    assert generate("--roles", str(roles), "--output", str(out)).returncode == 0
    text = out.read_text()
    assert "## `storage`" in text and "Model volume" in text and "Uses `fsx.csi.aws.com`." in text
    assert "| `storage_mode` | str |  | `static` | How \\| why<br>Choices: `static`, `dynamic` |" in text
    assert "| `storage_pvc_name` | str | yes |  | PVC name. |" in text
    assert "| `storage_models` | list of dict |  | see below | Models. |" in text
    assert "| `storage_models[].name` | str | yes |  | DNS label. |" in text
    assert "storage_models:\n- name: mistral" in text
    assert "### Entry point `purge`" in text
    assert "### Entry point `prepare`\n\nCheck only\n\nSame variables as `main`." in text
    # --check notices a spec change.
    spec["argument_specs"]["main"]["options"]["storage_fs_id"] = {"type": "str", "description": "fs-…"}
    (roles / "storage" / "meta" / "argument_specs.yml").write_text(yaml.safe_dump(spec))
    stale = generate("--roles", str(roles), "--output", str(out), "--check")
    assert stale.returncode == 1 and "storage_fs_id" in stale.stdout
