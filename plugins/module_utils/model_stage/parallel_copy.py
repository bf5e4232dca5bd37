# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# PRIVATE to the collection; part of the staging engine (see __init__.py): standard library only, relative imports.

"""The parallel, chunked copy of files (copy_file_range, mmap onto RAM volumes, pread/pwrite)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import mmap
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from pathlib import Path

from .common import HASH_CHUNK_BYTES, IO_BUFFER_BYTES, ModelStageError, _os_error, _Progress

# Destinations written through mmap (see _copy_range_mmap); elsewhere copy_file_range, else pread/pwrite.
MMAP_FILESYSTEMS = ("tmpfs", "ramfs")


_copy_file_range_ok = hasattr(os, "copy_file_range")


_thread_state = threading.local()


def _thread_buffer() -> memoryview:
    view = getattr(_thread_state, "view", None)
    if view is None:
        view = _thread_state.view = memoryview(bytearray(IO_BUFFER_BYTES))
    return view


class _CopyJob:
    """One file being copied by several workers: shared descriptors, in-order sha256 of out-of-order chunks."""

    def __init__(self, rel: str, src: Path, dst: Path, st: os.stat_result, want_hash: bool, mapped: bool) -> None:
        self.rel = rel
        self.src = src
        self.dst = dst
        self.size = st.st_size
        self.mode = st.st_mode & 0o777
        self.lock = threading.Lock()
        self.src_fd: int | None = None
        self.dst_fd: int | None = None
        self.chunks_left = 0
        self.hasher = hashlib.sha256() if want_hash else None
        self.next_offset = 0
        self.pending: dict[int, bytes] = {}
        self.hashing = False
        self.mapped = mapped and not want_hash  # hashing needs the bytes in hand: it reads and pwrites
        self.in_kernel = _copy_file_range_ok

    def open(self) -> tuple[int, int]:
        with self.lock:
            if self.src_fd is None:
                try:
                    self.src_fd = os.open(self.src, os.O_RDONLY)
                except OSError as err:
                    raise _os_error(err, self.src, "read") from None
                try:
                    flags = (os.O_RDWR if self.mapped else os.O_WRONLY) | os.O_CREAT | os.O_TRUNC
                    self.dst_fd = os.open(self.dst, flags, self.mode | 0o200)
                    os.ftruncate(self.dst_fd, self.size)
                except OSError as err:
                    self._close()
                    raise _os_error(err, self.dst, "write") from None
            return self.src_fd, self.dst_fd  # type: ignore[return-value]

    def chunk_done(self, durable: bool) -> None:
        with self.lock:
            self.chunks_left -= 1
            if self.chunks_left == 0 and self.dst_fd is not None:
                try:
                    if durable:
                        os.fsync(self.dst_fd)
                except OSError as err:
                    raise _os_error(err, self.dst, "flush") from None
                finally:
                    self._close()

    def close(self) -> None:
        with self.lock:
            self._close()

    def _close(self) -> None:
        for fd in (self.src_fd, self.dst_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.src_fd = self.dst_fd = None

    def deliver(self, offset: int, data: bytes, permits: threading.Semaphore) -> None:
        """Hand a copied chunk to the file's hash; whoever finds the next chunk in order does the hashing."""
        with self.lock:
            self.pending[offset] = data
            if self.hashing:
                return
            self.hashing = True
        while True:
            with self.lock:
                chunk = self.pending.pop(self.next_offset, None)
                if chunk is None:
                    self.hashing = False
                    return
                self.next_offset += len(chunk)
            self.hasher.update(chunk)  # type: ignore[union-attr]
            permits.release()

    def hexdigest(self) -> str | None:
        if self.hasher is None:
            return None
        if self.next_offset != self.size:  # pragma: no cover - guarded by the copy loop
            raise ModelStageError(self.dst, "io_error", "internal error: not every chunk was hashed")
        return self.hasher.hexdigest()


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int, path: Path) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.pwrite(fd, view, offset)
        except OSError as err:
            raise _os_error(err, path, "write") from None
        view = view[n:]
        offset += n


def _short_read(job: _CopyJob, offset: int) -> ModelStageError:
    return ModelStageError(
        job.src, "source_changed", f"file shrank while being copied (read ended at byte {offset} of {job.size})"
    )


def _copy_range(job: _CopyJob, src_fd: int, dst_fd: int, offset: int, length: int) -> None:
    """Copy one chunk in the kernel (copy_file_range), else with pread/pwrite through a per-thread buffer."""
    done = 0
    if job.in_kernel:
        # One copy inside the kernel instead of two through user space: what cp does, and it matters on busy CPUs.
        try:
            while done < length:
                n = os.copy_file_range(src_fd, dst_fd, length - done, offset + done, offset + done)
                if n == 0:
                    raise _short_read(job, offset + done)
                done += n
            return
        except OSError as err:
            if err.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.ETXTBSY):
                raise _os_error(err, job.dst, "write") from None
            job.in_kernel = False  # e.g. across file systems (EXDEV): pread/pwrite for this file from now on
    view = _thread_buffer()
    while done < length:
        want = min(len(view), length - done)
        try:
            n = os.preadv(src_fd, [view[:want]], offset + done)
        except OSError as err:
            raise _os_error(err, job.src, "read") from None
        if n == 0:
            raise _short_read(job, offset + done)
        _pwrite_all(dst_fd, view[:n], offset + done, job.dst)
        done += n


def _copy_range_mmap(job: _CopyJob, src_fd: int, dst_fd: int, offset: int, length: int) -> None:
    """Copy one chunk by reading straight into a shared mapping of the destination.

    tmpfs serialises write() calls on one file (inode lock), so parallel pwrite into one big file does not
    scale; page faults do. The kernel fills the mapping inside preadv, so a full file system or memory
    limit is an EFAULT from preadv, never a SIGBUS.
    """
    try:
        mapping = mmap.mmap(dst_fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=offset)
    except (OSError, ValueError):
        _copy_range(job, src_fd, dst_fd, offset, length)
        return
    view = memoryview(mapping)
    try:
        done = 0
        while done < length:
            part = view[done:]
            try:
                n = os.preadv(src_fd, [part], offset + done)
            except OSError as err:
                if err.errno == errno.EFAULT:
                    raise ModelStageError(
                        job.dst, "no_space", "no space left while writing (the file system or the memory limit is full)"
                    ) from None
                raise _os_error(err, job.src, "read") from None
            finally:
                part.release()
            if n == 0:
                raise _short_read(job, offset + done)
            done += n
    finally:
        view.release()
        mapping.close()


def _pread_exact(job: _CopyJob, fd: int, offset: int, length: int) -> bytes:
    parts = []
    done = 0
    while done < length:
        try:
            data = os.pread(fd, length - done, offset + done)
        except OSError as err:
            raise _os_error(err, job.src, "read") from None
        if not data:
            raise _short_read(job, offset + done)
        parts.append(data)
        done += len(data)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _copy_files(
    jobs: list[_CopyJob], workers: int, chunk_bytes: int, progress: _Progress, durable: bool = True
) -> None:
    """Copy every job's file with ``workers`` threads; big files are split into chunks copied in parallel."""
    tasks: list[tuple[_CopyJob, int, int]] = []
    for job in sorted(jobs, key=lambda j: (-j.size, j.rel)):
        step = HASH_CHUNK_BYTES if job.hasher is not None else chunk_bytes
        step = max(1, min(step, chunk_bytes))
        if job.mapped:  # mappings start on a page boundary
            step = max(mmap.ALLOCATIONGRANULARITY, step - step % mmap.ALLOCATIONGRANULARITY)
        if job.size == 0:
            job.open()
            job.chunks_left = 1
            job.chunk_done(durable)
            continue
        for offset in range(0, job.size, step):
            tasks.append((job, offset, min(step, job.size - offset)))
            job.chunks_left += 1
    abort = threading.Event()
    errors: list[BaseException] = []
    permits = threading.Semaphore(2 * workers)

    def run(task: tuple[_CopyJob, int, int]) -> None:
        job, offset, length = task
        if abort.is_set():
            return
        try:
            src_fd, dst_fd = job.open()
            if job.hasher is not None:
                data = _pread_exact(job, src_fd, offset, length)
                _pwrite_all(dst_fd, data, offset, job.dst)
                job.deliver(offset, data, permits)
            else:
                (_copy_range_mmap if job.mapped else _copy_range)(job, src_fd, dst_fd, offset, length)
            job.chunk_done(durable)
            progress.add(length)
        except BaseException as err:  # noqa: B036 - every failure must stop the other workers
            errors.append(err)
            abort.set()

    try:
        with ThreadPoolExecutor(max(1, workers), thread_name_prefix="stage") as pool:
            futures = []
            for task in tasks:
                if task[0].hasher is not None:
                    # Bounded memory: a chunk is read only when fewer than 2 x workers wait to be hashed.
                    while not permits.acquire(timeout=0.2):
                        if abort.is_set():
                            break
                if abort.is_set():
                    break
                futures.append(pool.submit(run, task))
            wait_futures(futures)
    finally:
        for job in jobs:
            job.close()
    if errors:
        err = errors[0]
        if isinstance(err, OSError):
            raise _os_error(err, None, "copy") from None
        raise err
