# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# PRIVATE to the collection; part of the staging engine (see __init__.py): standard library only, relative imports.

"""stage and verify: make a destination a verified copy of a model, atomically and idempotently."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

try:  # POSIX only; without it concurrent stagers into one parent are not serialised.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

from .common import (
    DEFAULT_CHUNK_BYTES,
    MANIFEST_NAME,
    InvalidModelError,
    ModelStageError,
    _free_bytes,
    _fs_type,
    _fsync_dir,
    _list_files,
    _os_error,
    _Progress,
    _remove_tree,
    _same_file_state,
    _stat,
    default_workers,
)
from .integrity import _check_hashes, _expectations, _hash_files
from .layout import inspect_model
from .manifest import (
    _listing,
    _manifest_files,
    _manifest_key,
    load_expected_sha256,
    load_manifest,
    save_manifest,
)
from .parallel_copy import MMAP_FILESYSTEMS, _copy_files, _CopyJob


@contextlib.contextmanager
def _dir_lock(path: Path) -> Iterator[bool]:
    """Serialise stagers into one parent directory (flock on the directory; no lock file left behind)."""
    if fcntl is None:  # pragma: no cover
        yield False
        return
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            locked = True
        except OSError:  # e.g. Lustre mounted without -o flock
            locked = False
        yield locked
    finally:
        os.close(fd)


def _clean_leftovers(dest: Path, locked: bool) -> None:
    """Remove temporary siblings of dest from interrupted runs (all of them when we hold the lock)."""
    pid = os.getpid()
    try:
        siblings = list(dest.parent.iterdir())
    except OSError:
        return
    for entry in siblings:
        for marker in (f".{dest.name}.staging-", f".{dest.name}.old-"):
            if entry.name.startswith(marker) and (locked or entry.name == f"{marker}{pid}"):
                _remove_tree(entry)


@dataclass
class _Outcome:
    """What one stage, verify or download run did; ``result()`` is the dict the callers return."""

    changed: bool
    dest: Path
    manifest: Mapping[str, Any]
    start: float
    before: str
    after: str
    src: Path | None = None
    copied: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    bytes_copied: int = 0
    check_mode: bool = False

    def result(self) -> dict[str, Any]:
        seconds = time.monotonic() - self.start
        moved = self.bytes_copied
        return {
            "changed": self.changed,
            "dest": str(self.dest),
            "src": None if self.src is None else str(self.src),
            "manifest": dict(self.manifest),
            "copied_files": self.copied,
            "reused_files": self.reused,
            "removed_files": self.removed,
            "bytes_copied": moved,
            "elapsed_ms": round(seconds * 1000, 3),
            "throughput_bytes_per_s": int(moved / seconds) if moved and seconds > 0 and not self.check_mode else 0,
            "check_mode": self.check_mode,
            "diff": {"before": self.before, "after": self.after},
        }


def _copied(outcome: _Outcome, files: tuple[list[str], list[str], list[str]], nbytes: int) -> dict[str, Any]:
    """The result of a run that copies (or in check mode would): which files were copied, reused and removed."""
    outcome.copied, outcome.reused, outcome.removed = files
    outcome.bytes_copied = nbytes
    return outcome.result()


def _plan(
    src_files: list[tuple[str, os.stat_result]],
    dest: Path,
    old: Mapping[str, Any] | None,
    need_sha: bool,
    expected: Mapping[str, str],
) -> tuple[list[str], list[str], list[str]]:
    """Split the source files into (copy, reuse from the current dest, remove from dest)."""
    old_files = _manifest_files(old)
    dest_files: dict[str, os.stat_result] = {}
    if dest.is_dir():
        with contextlib.suppress(ModelStageError):
            dest_files = dict(_list_files(dest))
    copy, reuse = [], []
    for rel, st in src_files:
        entry = old_files.get(rel)
        dst_st = dest_files.get(rel)
        trusted = (
            entry is not None
            and dst_st is not None
            and _same_file_state(entry, st)
            # dest keeps the source mtime; allow a coarser-grained destination file system.
            and _same_file_state(entry, dst_st, tolerance_ns=1_000_000_000)
            and (not need_sha or bool(entry.get("sha256")))
            and expected.get(rel, entry.get("sha256")) == entry.get("sha256")
        )
        (reuse if trusted else copy).append(rel)
    names = {rel for rel, _st in src_files}
    removed = sorted(set(dest_files) - names)
    return copy, reuse, removed


def stage(
    src: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    workers: int | None = None,
    sha256: bool = False,
    expected_sha256: Mapping[str, str] | str | os.PathLike | None = None,
    required_free_bytes: int = 0,
    force: bool = False,
    check_mode: bool = False,
    progress: IO[str] | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    durable: bool = True,
) -> dict[str, Any]:
    """Make ``dest`` a verified copy of the model in ``src``; return the result with the manifest.

    Unchanged (``changed=False``) when dest's manifest and the sizes/mtimes of both sides say dest already
    holds a verified copy: nothing is read or hashed. Otherwise the source is verified, free space is
    checked, changed files are copied by ``workers`` threads (big files in parallel chunks) into a
    temporary sibling directory while unchanged ones are hard-linked from the current dest, the copy is
    verified (headers, extents, sizes; sha256 computed during the copy when ``sha256`` or expected values
    are given), the manifest is written last and the directory is renamed into place. On any failure dest
    is left as it was and the temporary directory is removed. ``check_mode`` only plans. ``durable``
    fsyncs every copied file before the manifest vouches for it (free on a RAM volume; on a disk it is
    what makes the manifest trustworthy after a crash).
    """
    start = time.monotonic()
    src_path = Path(src).absolute()
    dest_path = Path(dest).absolute()
    workers = workers or default_workers()
    if workers < 1:
        raise InvalidModelError(None, "bad_input", f"workers must be at least 1, got {workers}")
    if not src_path.exists():
        raise InvalidModelError(src_path, "source_missing", "source model directory does not exist")
    if not src_path.is_dir():
        raise InvalidModelError(src_path, "source_missing", "source is not a directory")
    real_src, real_dest = os.path.realpath(src_path), os.path.realpath(dest_path)
    if real_src == real_dest or real_dest.startswith(real_src + os.sep) or real_src.startswith(real_dest + os.sep):
        raise InvalidModelError(dest_path, "bad_input", f"destination overlaps the source {src_path}")
    if dest_path.exists() and not dest_path.is_dir():
        raise InvalidModelError(dest_path, "bad_input", "destination exists and is not a directory")

    explicit = load_expected_sha256(expected_sha256)
    need_sha = sha256 or bool(explicit)
    src_files = _list_files(src_path)
    expected = _expectations(src_path, src_files, explicit, load_manifest(src_path)) if need_sha else {}
    old = load_manifest(dest_path) if dest_path.is_dir() else None
    copy, reuse, removed = _plan(src_files, dest_path, old, need_sha, expected)
    after = _listing(
        [
            {"path": rel, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": expected.get(rel)}
            for rel, st in src_files
        ]
    )
    before = _listing(old["files"]) if old else _listing_of_dir(dest_path)
    if old is not None and not copy and not removed and set(_manifest_files(old)) == {r for r, _st in src_files}:
        unchanged = _Outcome(
            False, dest_path, old, start, before, before, src_path, reused=reuse, check_mode=check_mode
        )
        return unchanged.result()

    if dest_path.is_dir() and old is None and not force and any(dest_path.iterdir()):
        raise InvalidModelError(
            dest_path,
            "foreign_dest",
            f"destination holds files but no {MANIFEST_NAME}, so it was not staged by this engine; "
            "remove it or set force to replace it",
        )
    if dest_path.is_dir() and os.path.ismount(dest_path):
        raise InvalidModelError(
            dest_path,
            "bad_input",
            "destination is a mount point and cannot be replaced atomically; stage into a "
            "sub-directory of it (e.g. <mount>/model)",
        )
    manifest = inspect_model(src_path, src_files)  # verify the source before touching anything
    sizes = dict(src_files)
    copy_bytes = sum(sizes[rel].st_size for rel in copy)
    needed = copy_bytes + max(0, int(required_free_bytes))
    free = _free_bytes(dest_path.parent)
    if free < needed:
        raise ModelStageError(
            dest_path.parent,
            "no_space",
            f"destination too small: {needed} bytes needed ({copy_bytes} to copy + {int(required_free_bytes)} "
            f"margin), {free} available",
            needed_bytes=needed,
            free_bytes=free,
        )
    if check_mode:
        manifest["files"] = [
            dict(e, sha256=expected[e["path"]]) if e["path"] in expected else e for e in manifest["files"]
        ]
        planned = _Outcome(True, dest_path, manifest, start, before, after, src_path, check_mode=True)
        return _copied(planned, (copy, reuse, removed), copy_bytes)

    try:
        dest_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _os_error(err, dest_path.parent, "create the destination's parent directory") from None
    with _dir_lock(dest_path.parent) as locked:
        _clean_leftovers(dest_path, locked)
        tmp = dest_path.parent / f".{dest_path.name}.staging-{os.getpid()}"
        try:
            plan = _StagePlan(src_path, dest_path, src_files, copy, reuse, old, need_sha, expected)
            manifest, copy, reuse = _stage_into(tmp, plan, _CopySettings(workers, chunk_bytes, progress, durable))
            _swap_into_place(tmp, dest_path)
        except BaseException:
            _remove_tree(tmp)
            raise
    done = _Outcome(True, dest_path, manifest, start, before, _listing(manifest["files"]), src_path)
    return _copied(done, (copy, reuse, removed), copy_bytes)


def _listing_of_dir(path: Path) -> str:
    if not path.is_dir():
        return ""
    try:
        files = _list_files(path)
    except ModelStageError:
        return ""
    return _listing({"path": rel, "size": st.st_size, "mtime_ns": st.st_mtime_ns} for rel, st in files)


@dataclass(frozen=True)
class _StagePlan:
    """What a stage run copies: the source's files, which to copy and which to reuse from dest, what is expected."""

    src: Path
    dest: Path
    src_files: list[tuple[str, os.stat_result]]
    copy: list[str]
    reuse: list[str]
    old: Mapping[str, Any] | None
    need_sha: bool
    expected: Mapping[str, str]


@dataclass(frozen=True)
class _CopySettings:
    """How the copy runs: threads, chunk size, where progress lines go, fsync or not."""

    workers: int
    chunk_bytes: int
    progress: IO[str] | None
    durable: bool


def _stage_into(tmp: Path, plan: _StagePlan, how: _CopySettings) -> tuple[dict[str, Any], list[str], list[str]]:
    """Build the verified copy in ``tmp``; return (manifest, copied files, hard-linked files)."""
    src, dest, expected = plan.src, plan.dest, plan.expected
    sizes = dict(plan.src_files)
    copy = list(plan.copy)
    linked: list[str] = []
    try:
        tmp.mkdir()
        for rel in sorted({str(Path(r).parent) for r in copy + plan.reuse} - {"."}):
            (tmp / rel).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _os_error(err, tmp, "create the staging directory") from None
    old_files = _manifest_files(plan.old)
    hashes: dict[str, str] = {}
    for rel in plan.reuse:  # unchanged since the last verified staging: hard-link instead of copying
        try:
            os.link(dest / rel, tmp / rel)
        except OSError:  # e.g. a file system without hard links: copy it instead
            copy.append(rel)
            continue
        linked.append(rel)
        if old_files[rel].get("sha256"):
            hashes[rel] = old_files[rel]["sha256"]
    copy.sort()
    mapped = _fs_type(tmp) in MMAP_FILESYSTEMS
    jobs = [_CopyJob(rel, src / rel, tmp / rel, sizes[rel], plan.need_sha, mapped) for rel in copy]
    meter = _Progress("stage", sum(j.size for j in jobs), how.progress)
    _copy_files(jobs, how.workers, how.chunk_bytes, meter, how.durable)
    meter.finish()
    for job in jobs:
        now = _stat(job.src)
        before = sizes[job.rel]
        if now.st_size != before.st_size or now.st_mtime_ns != before.st_mtime_ns:
            raise ModelStageError(job.src, "source_changed", "file changed while being copied; run again")
        try:
            os.utime(job.dst, ns=(before.st_atime_ns, before.st_mtime_ns))
        except OSError as err:
            raise _os_error(err, job.dst, "set the modification time of") from None
        digest = job.hexdigest()
        if digest is not None:
            hashes[job.rel] = digest
    _check_hashes(src, hashes, expected)
    staged_files = _list_files(tmp)
    missing = sorted(set(sizes) - {rel for rel, _st in staged_files})
    if missing:
        raise ModelStageError(tmp / missing[0], "io_error", "missing from the staged copy")
    for rel, st in staged_files:
        if st.st_size != sizes[rel].st_size:
            raise ModelStageError(
                tmp / rel, "io_error", f"copy has {st.st_size} bytes, source has {sizes[rel].st_size}"
            )
    manifest = inspect_model(tmp, staged_files)  # headers and extents of the copy itself
    # The manifest records the source mtimes (the copy carries them too): the next run compares both sides.
    manifest["files"] = [
        dict(e, mtime_ns=sizes[e["path"]].st_mtime_ns, **({"sha256": hashes[e["path"]]} if e["path"] in hashes else {}))
        for e in manifest["files"]
    ]
    manifest["source"] = {"path": str(src)}
    save_manifest(tmp, manifest)
    return manifest, copy, linked


def _swap_into_place(tmp: Path, dest: Path) -> None:
    """Rename the staged directory onto dest; the previous dest is renamed aside first and removed after."""
    _fsync_dir(tmp)
    old = None
    if dest.exists() or dest.is_symlink():
        old = dest.parent / f".{dest.name}.old-{os.getpid()}"
        try:
            os.rename(dest, old)
        except OSError as err:
            raise _os_error(err, dest, "move the previous copy aside") from None
    try:
        os.rename(tmp, dest)
    except OSError as err:
        if old is not None:
            with contextlib.suppress(OSError):
                os.rename(old, dest)
        raise _os_error(err, dest, "rename the staged copy into place") from None
    _fsync_dir(dest.parent)
    if old is not None:
        _remove_tree(old)


def verify(
    path: str | os.PathLike,
    *,
    sha256: bool = False,
    expected_sha256: Mapping[str, str] | str | os.PathLike | None = None,
    write_manifest: bool = False,
    check_mode: bool = False,
    workers: int | None = None,
    progress: IO[str] | None = None,
) -> dict[str, Any]:
    """Verify a model directory in place; optionally hash every file and (re)write its manifest.

    With ``sha256`` the files are hashed and checked against ``expected_sha256`` and against the
    directory's own manifest (for files whose size and mtime still match it). ``changed`` is true only
    when ``write_manifest`` writes (or in check mode would write) a manifest that differs from the one there.
    """
    start = time.monotonic()
    root = Path(path).absolute()
    if not root.exists():
        raise InvalidModelError(root, "source_missing", "model directory does not exist")
    explicit = load_expected_sha256(expected_sha256)
    need_sha = sha256 or bool(explicit)
    files = _list_files(root)
    own = load_manifest(root)
    manifest = inspect_model(root, files)
    hashes: dict[str, str] = {}
    if need_sha:
        expected = _expectations(root, files, explicit, own)
        meter = _Progress("verify", sum(st.st_size for _rel, st in files), progress)
        hashes = _hash_files(root, [rel for rel, _st in files], workers or default_workers(), meter)
        meter.finish()
        _check_hashes(root, hashes, expected)
    else:
        # Carry over hashes from an earlier verified manifest for files that have not changed since.
        current = dict(files)
        for rel, entry in _manifest_files(own).items():
            if entry.get("sha256") and rel in current and _same_file_state(entry, current[rel]):
                hashes[rel] = entry["sha256"]
    manifest["files"] = [dict(e, sha256=hashes[e["path"]]) if e["path"] in hashes else e for e in manifest["files"]]
    if own and isinstance(own.get("source"), dict):
        manifest["source"] = own["source"]
    changed = False
    if write_manifest:
        changed = own is None or _manifest_key(own) != _manifest_key(manifest)
        if changed and not check_mode:
            save_manifest(root, manifest)
        elif not changed:
            manifest = own  # type: ignore[assignment]
    before = _listing(own["files"]) if own else ""
    after = _listing(manifest["files"]) if write_manifest else before
    return _Outcome(changed, root, manifest, start, before, after, check_mode=check_mode).result()
