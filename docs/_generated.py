"""What every generator under docs/ does last: write its files, or with --check compare them and show the diff.

Generated files are never edited by hand; a test runs each generator with --check.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Mapping
from pathlib import Path


def write_or_check(files: Mapping[Path, str], check: bool, remedy: str) -> int:
    """Write ``files`` (path → text), or with ``check`` print a unified diff of each stale one and ``remedy``
    on stderr; the exit status: 1 when ``check`` found a stale file, else 0."""
    stale = 0
    for path, text in files.items():
        old = path.read_text() if path.is_file() else ""
        if old == text:
            continue
        if check:
            stale = 1
            sys.stdout.writelines(
                difflib.unified_diff(old.splitlines(True), text.splitlines(True), str(path), "generated")
            )
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"out of date: {remedy}", file=sys.stderr)
    return stale
