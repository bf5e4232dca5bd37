"""docs/vllm-versions.md is generated from the committed vLLM catalogues and kept in step with them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_committed_versions_doc_matches_the_catalogues() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "gen_vllm_versions.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{done.stderr}\n{done.stdout[-4000:]}"
