# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# PRIVATE to the collection; part of the staging engine (see __init__.py): standard library only, relative imports.

"""sha256 of model files: expected values and parallel hashing."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .common import IO_BUFFER_BYTES, InvalidModelError, _os_error, _Progress, _same_file_state
from .manifest import _manifest_files


def _expectations(
    root: Path,
    files: list[tuple[str, os.stat_result]],
    explicit: Mapping[str, str],
    own_manifest: Mapping[str, Any] | None,
) -> dict[str, str]:
    """Expected sha256 per file: explicit values, else the directory's own manifest where size and mtime still match."""
    present = dict(files)
    unknown = sorted(set(explicit) - set(present))
    if unknown:
        raise InvalidModelError(
            root / unknown[0], "missing_file", "a sha256 is given for this file but it is not in the model"
        )
    expected: dict[str, str] = {}
    for rel, entry in _manifest_files(own_manifest).items():
        st = present.get(rel)
        if st is not None and entry.get("sha256") and _same_file_state(entry, st):
            expected[rel] = entry["sha256"]
    expected.update(explicit)
    return expected


def _check_hashes(root: Path, computed: Mapping[str, str], expected: Mapping[str, str]) -> None:
    for rel in sorted(expected):
        got = computed.get(rel)
        if got is not None and got != expected[rel]:
            raise InvalidModelError(
                root / rel,
                "sha256_mismatch",
                f"sha256 mismatch: expected {expected[rel]}, got {got}",
                expected_sha256=expected[rel],
                actual_sha256=got,
            )


def _hash_file(path: Path, progress: _Progress) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(IO_BUFFER_BYTES)
    view = memoryview(buffer)
    try:
        with open(path, "rb", buffering=0) as handle:
            while True:
                n = handle.readinto(buffer)
                if not n:
                    break
                digest.update(view[:n])
                progress.add(n)
    except OSError as err:
        raise _os_error(err, path, "read") from None
    return digest.hexdigest()


def _hash_files(root: Path, names: list[str], workers: int, progress: _Progress) -> dict[str, str]:
    # Files hash in parallel; one file is sequential (sha256 is), at one core's hashing speed.
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="sha256") as pool:
        results = {name: pool.submit(_hash_file, root / name, progress) for name in names}
        return {name: future.result() for name, future in results.items()}
