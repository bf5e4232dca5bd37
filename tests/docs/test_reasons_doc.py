"""docs/reasons.md is generated from the reason table (plugins/module_utils/reasons.py) and kept in step with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_committed_reasons_doc_matches_the_table() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "gen_reasons.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{done.stderr}\n{done.stdout[-4000:]}"
