# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# PRIVATE to the collection; part of the staging engine (see __init__.py): standard library only, relative imports.

"""Constants, errors, progress lines and file-system helpers shared by the whole engine."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

MANIFEST_NAME = ".llmops-manifest.json"


# The CLI's last line on stdout: this prefix, then the manifest as one JSON object.
MANIFEST_PREFIX = "MANIFEST "


# What one run did (bytes moved, time, rate): a line on stderr just before the manifest (stdout keeps to file names
# and the manifest). The start-up timeline reads it from the init container's and the download Job's logs.
RESULT_PREFIX = "RESULT "


PARTIAL_DIR = ".partial"
ENGINE = "llmops.vllm.model_stage"


SCHEMA_VERSION = 1


HF_ENDPOINT = "https://huggingface.co"


# Scheduling unit of the parallel copy: small enough that one 14.5 GB file spreads over every worker.
DEFAULT_CHUNK_BYTES = 32 * 1024 * 1024


# With sha256 on, chunks are held in memory until hashed in order: at most 2 x workers of them.
HASH_CHUNK_BYTES = 8 * 1024 * 1024


IO_BUFFER_BYTES = 8 * 1024 * 1024


PROGRESS_INTERVAL_S = 2.0


HTTP_TIMEOUT_S = 60.0


HTTP_RETRIES = 4


HTTP_RETRY_BASE_S = 1.0


class ModelStageError(Exception):
    """A staging, verification or download failure.

    ``str(err)`` is one line naming the file and the problem; ``details`` holds the same as data
    (``path``, ``problem`` and problem-specific keys). Exit status 1 from the CLI.
    """

    exit_code = 1

    def __init__(self, path: str | os.PathLike | None, problem: str, message: str, **details: Any) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        text = f"{self.path}: {message}" if self.path else message
        super().__init__(" ".join(text.split()))
        self.details: dict[str, Any] = {"path": self.path, "problem": problem}
        self.details.update(details)


class InvalidModelError(ModelStageError):
    """The model or the input is wrong (bad or missing files, bad arguments, refused token): exit status 2."""

    exit_code = 2


def _os_error(err: OSError, path: str | os.PathLike | None = None, action: str = "access") -> ModelStageError:
    """Turn an OSError into a one-line ModelStageError that names the file."""
    where = err.filename if err.filename is not None else path
    reason = err.strerror or str(err)
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ModelStageError(where, "permission_denied", f"permission denied: cannot {action} ({reason})")
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return ModelStageError(where, "no_space", f"no space left while trying to {action} ({reason})")
    if err.errno == errno.ENOENT:
        return InvalidModelError(where, "missing_file", f"does not exist (cannot {action})")
    return ModelStageError(where, "io_error", f"cannot {action}: {reason}", errno=err.errno)


def default_workers() -> int:
    """Default number of copy workers: 2 per CPU this process may use, at least 4 and at most 16.

    The copy is I/O bound and the threads wait in the kernel with the GIL released, so more threads than
    CPUs keep a network file system (FSx for Lustre answers many concurrent reads) busy; 4 even on small
    boxes overlaps reads; beyond 16 a RAM or page-cache copy is memory-bandwidth bound and sha256 buffers
    (2 x workers x 8 MiB) only grow.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        cpus = os.cpu_count() or 1
    return min(16, max(4, 2 * cpus))


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _iso_ns(ns: int) -> str:
    micros = ns % 1_000_000_000 // 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{micros:06d}Z"


def format_si_bytes(value: float) -> str:
    """Bytes in the decimal units of transfer sizes and rates: ``14.5 GB``, ``96 MB``, ``512 kB``."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B"


def _fmt_rate(done: int, total: int, seconds: float) -> str:
    unit, scale = ("GB", 1e9) if total >= 1e9 else ("MB", 1e6)
    rate = done / seconds if seconds > 0 else 0.0
    return f"{done / scale:.1f}/{total / scale:.1f} {unit} {rate / scale:.2f} {unit}/s"


class _Progress:
    """Throttled progress lines for a person reading `kubectl logs`: ``stage: 3.2/14.5 GB 1.90 GB/s``."""

    def __init__(self, label: str, total: int, stream: IO[str] | None, interval: float | None = None):
        self.label = label
        self.total = total
        self.stream = stream
        self.interval = PROGRESS_INTERVAL_S if interval is None else interval
        self.done = 0
        self.start = time.monotonic()
        self.last = self.start
        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        if self.stream is None:
            return
        with self.lock:
            self.done += n
            now = time.monotonic()
            if now - self.last < self.interval:
                return
            self.last = now
            line = f"{self.label}: {_fmt_rate(self.done, self.total, now - self.start)}"
        self._write(line)

    def finish(self) -> None:
        if self.stream is not None and self.total:
            self._write(f"{self.label}: {_fmt_rate(self.done, self.total, time.monotonic() - self.start)}")

    def _write(self, line: str) -> None:
        try:
            self.stream.write(line + "\n")  # type: ignore[union-attr]
            self.stream.flush()  # type: ignore[union-attr]
        except (OSError, ValueError):  # a closed pipe must not fail the copy
            pass


def _read_json(path: Path) -> Any:
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as err:
        raise _os_error(err, path, "read") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise InvalidModelError(path, "bad_config", f"not valid JSON ({type(err).__name__})") from None


def _list_files(root: Path) -> list[tuple[str, os.stat_result]]:
    """Regular files under root as (posix relative path, stat), sorted; skips the manifest and dot-directories."""
    found: list[tuple[str, os.stat_result]] = []
    try:
        walker = os.walk(root, onerror=_raise)
        for dirpath, dirnames, filenames in walker:
            # .partial (downloads), .cache (huggingface_hub), .git: never part of the model.
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel_dir = os.path.relpath(dirpath, root)
            for name in filenames:
                rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
                if rel == MANIFEST_NAME or (rel_dir == "." and name.startswith(MANIFEST_NAME + ".")):
                    continue
                full = os.path.join(dirpath, name)
                try:
                    st = os.stat(full)
                except FileNotFoundError:
                    raise InvalidModelError(full, "missing_file", "broken symbolic link") from None
                if not _is_regular(st):
                    continue
                found.append((rel, st))
    except OSError as err:
        raise _os_error(err, root, "list") from None
    found.sort()
    return found


def _raise(err: OSError) -> None:
    raise err


def _is_regular(st: os.stat_result) -> bool:
    return (st.st_mode & 0o170000) == 0o100000


def _same_file_state(a: Mapping[str, Any], st: os.stat_result, tolerance_ns: int = 0) -> bool:
    return a.get("size") == st.st_size and abs(int(a.get("mtime_ns", -(10**30))) - st.st_mtime_ns) <= tolerance_ns


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories; the data files are synced already
        pass
    finally:
        os.close(fd)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fs_type(path: Path) -> str:
    """File system type of the mount holding ``path`` (from /proc/self/mounts; "" when unknown)."""
    real = os.path.realpath(path)
    best, kind = "", ""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                    best, kind = point, fields[2]
    except OSError:
        pass
    return kind


def _free_bytes(path: Path) -> int:
    """Bytes available to this (unprivileged) user on the file system holding ``path``."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except OSError as err:
        raise _os_error(err, probe, "read free space of") from None
    return st.f_bavail * st.f_frsize


def _remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        with contextlib.suppress(OSError):
            path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def _stat(path: Path) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as err:
        raise _os_error(err, path, "stat") from None
