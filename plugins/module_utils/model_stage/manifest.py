# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# PRIVATE to the collection; part of the staging engine (see __init__.py): standard library only, relative imports.

"""The manifest (.llmops-manifest.json), expected sha256 lists, and the CLI's MANIFEST/RESULT log lines."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from .common import MANIFEST_NAME, MANIFEST_PREFIX, RESULT_PREFIX, InvalidModelError, _fsync_dir, _iso_ns, _os_error


def load_manifest(path: str | os.PathLike) -> dict[str, Any] | None:
    """Return the manifest stored in a model directory, or None when it has none (or an unreadable one)."""
    candidate = Path(path) / MANIFEST_NAME
    try:
        with open(candidate, "rb") as handle:
            data = json.loads(handle.read().decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        return None
    return data


def _manifest_files(manifest: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    if not manifest:
        return {}
    return {f["path"]: f for f in manifest.get("files", []) if isinstance(f, dict) and "path" in f}


def save_manifest(path: str | os.PathLike, manifest: Mapping[str, Any]) -> Path:
    """Write ``manifest`` as path/.llmops-manifest.json atomically (temporary file, fsync, os.replace)."""
    root = Path(path)
    target = root / MANIFEST_NAME
    tmp = root / f"{MANIFEST_NAME}.tmp-{os.getpid()}"
    data = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode("utf-8")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _os_error(err, target, "write the manifest") from None
    _fsync_dir(root)
    return target


def load_expected_sha256(source: Mapping[str, str] | str | os.PathLike | None) -> dict[str, str]:
    """Normalise expected sha256 values: a {file: sha256} dict, or a path to a JSON manifest/dict or sha256sum file."""
    if source is None:
        return {}
    if isinstance(source, Mapping):
        pairs = list(source.items())
        origin: str | None = None
    else:
        origin = str(source)
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as err:
            raise _os_error(err, source, "read the sha256 list") from None
        except UnicodeDecodeError:
            raise InvalidModelError(source, "bad_input", "sha256 list is not UTF-8 text") from None
        pairs = _parse_sha256_text(text, origin)
    expected: dict[str, str] = {}
    for name, digest in pairs:
        if not isinstance(name, str) or not isinstance(digest, str):
            raise InvalidModelError(
                origin, "bad_input", f"sha256 entry {name!r}: expected a file name and a hex digest"
            )
        clean = digest.strip().lower()
        if len(clean) != 64 or any(c not in "0123456789abcdef" for c in clean):
            raise InvalidModelError(origin, "bad_input", f"sha256 for {name!r} is not 64 hex digits: {digest!r}")
        key = name[2:] if name.startswith("./") else name
        expected[key] = clean
    return expected


def _parse_sha256_text(text: str, origin: str) -> list[tuple[str, str]]:
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except ValueError as err:
            raise InvalidModelError(origin, "bad_input", f"sha256 list is not valid JSON ({err})") from None
        if isinstance(data.get("files"), list):  # one of our manifests
            return [(f.get("path"), f.get("sha256")) for f in data["files"] if isinstance(f, dict) and f.get("sha256")]
        return list(data.items())
    pairs = []
    for number, line in enumerate(stripped.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) != 2:
            raise InvalidModelError(
                origin, "bad_input", f"line {number}: expected '<sha256>  <file>' (sha256sum format)"
            )
        pairs.append((parts[1].strip().lstrip("*"), parts[0]))
    return pairs


def _listing(entries: Iterable[Mapping[str, Any]]) -> str:
    lines = []
    for e in sorted(entries, key=lambda e: e["path"]):
        line = f"{e['path']}  size={e['size']}  mtime={_iso_ns(int(e.get('mtime_ns', 0)))}"
        if e.get("sha256"):
            line += f"  sha256={e['sha256']}"
        lines.append(line)
    return "\n".join(lines) + ("\n" if lines else "")


def _manifest_key(manifest: Mapping[str, Any]) -> str:
    return json.dumps({k: v for k, v in manifest.items() if k != "created"}, sort_keys=True)


def _print_manifest(manifest: Mapping[str, Any], out: IO[str]) -> None:
    sys.stderr.flush()
    out.write(MANIFEST_PREFIX + json.dumps(manifest, separators=(",", ":"), sort_keys=True) + "\n")
    out.flush()


def run_summary(command: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """What one run of ``command`` did, as its RESULT line carries it."""
    return {
        "command": command,
        "changed": bool(result["changed"]),
        "bytes": int(result["bytes_copied"]),
        "elapsed_ms": result["elapsed_ms"],
        "throughput_bytes_per_s": int(result["throughput_bytes_per_s"]),
        "copied_files": len(result["copied_files"]),
        "reused_files": len(result["reused_files"]),
    }


def _last_json_line(lines: Iterable[str], prefix: str) -> dict[str, Any] | None:
    for line in reversed(list(lines)):
        line = line.rstrip("\r\n")
        if not line.startswith(prefix):
            continue
        try:
            found = json.loads(line[len(prefix) :])
        except ValueError:
            return None
        return found if isinstance(found, dict) else None
    return None


def result_from_log(lines: Iterable[str]) -> dict[str, Any] | None:
    """The run summary the CLI printed (``RESULT {...}``), from its output; ``None`` when there is none (an
    engine older than the line, a cut-off log)."""
    return _last_json_line(lines, RESULT_PREFIX)


def manifest_from_log(lines: Iterable[str]) -> dict[str, Any] | None:
    """The manifest the CLI printed, from its output (a container log): the last ``MANIFEST {...}`` line.

    ``None`` when there is no such line or the last one is not a whole JSON object (a cut-off log).
    """
    return _last_json_line(lines, MANIFEST_PREFIX)
