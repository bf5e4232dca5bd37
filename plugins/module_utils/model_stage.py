# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
#
# Standard library only, no ansible imports: this one file is also shipped verbatim into pods (a ConfigMap)
# and run as `python3 model_stage.py stage|verify|download ...` by the vLLM image's Python (init container)
# and by a python:3.11-slim download Job. Keep it importable on Python 3.8+ (ansible-core's target floor).

"""Model weights staging engine: verify a model directory, copy it in parallel and atomically, download it.

One implementation, three call sites: the ``llmops.vllm.vllm_model_stage`` module, the model download Job
and the init container that copies weights into a RAM volume.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fnmatch
import hashlib
import json
import mmap
import os
import re
import shutil
import struct
import sys
import threading
import time
import urllib.error
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from pathlib import Path
from typing import IO, Any

try:  # POSIX only; without it concurrent stagers into one parent are not serialised.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

ENGINE = "llmops.vllm.model_stage"
SCHEMA_VERSION = 1
MANIFEST_NAME = ".llmops-manifest.json"
# The CLI's last line on stdout: this prefix, then the manifest as one JSON object.
MANIFEST_PREFIX = "MANIFEST "
# What one run did (bytes moved, time, rate): a line on stderr just before the manifest (stdout keeps to file names
# and the manifest). The start-up timeline reads it from the init container's and the download Job's logs.
RESULT_PREFIX = "RESULT "
PARTIAL_DIR = ".partial"
HF_ENDPOINT = "https://huggingface.co"

# safetensors refuses a header longer than this (0.8.0 safetensors/src/tensor.rs:10 `MAX_HEADER_SIZE: usize =
# 100_000_000`, checked as `n > MAX_HEADER_SIZE` in read_metadata): anything larger is not a header.
MAX_HEADER_BYTES = 100_000_000
# Scheduling unit of the parallel copy: small enough that one 14.5 GB file spreads over every worker.
DEFAULT_CHUNK_BYTES = 32 * 1024 * 1024
# With sha256 on, chunks are held in memory until hashed in order: at most 2 x workers of them.
HASH_CHUNK_BYTES = 8 * 1024 * 1024
IO_BUFFER_BYTES = 8 * 1024 * 1024
PROGRESS_INTERVAL_S = 2.0
HTTP_TIMEOUT_S = 60.0
HTTP_RETRIES = 4
HTTP_RETRY_BASE_S = 1.0

# Bits per element of every dtype safetensors 0.8.0 reads, exactly its `Dtype` enum and `Dtype::bitsize`
# (safetensors/src/tensor.rs:811-892); the library refuses any other name (serde: "unknown variant").
DTYPE_BITS = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E4M3": 8,
    "F8_E5M2": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "I64": 64,
    "U64": 64,
    "F64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}
# safetensors dtype -> the name vLLM and config.json use: torch's, as safetensors 0.8.0 maps them
# (bindings/python/src/lib.rs:2328-2378 get_pydtype; it maps no F6 type, torch has none).
TORCH_DTYPE = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "I16": "int16",
    "U16": "uint16",
    "F16": "float16",
    "BF16": "bfloat16",
    "I32": "int32",
    "U32": "uint32",
    "F32": "float32",
    "C64": "complex64",
    "I64": "int64",
    "U64": "uint64",
    "F64": "float64",
    "F4": "float4_e2m1fn_x2",
    "F6_E2M3": "float6_e2m3fn",
    "F6_E3M2": "float6_e3m2fn",
}
MISTRAL_TOKENIZERS = ("tokenizer.model.v3", "tokenizer.model", "tekken.json")
# The files vLLM's Mistral tokenizer loads from a directory; it refuses none or several
# (vllm 0.9.0 vllm/transformers_utils/tokenizers/mistral.py:128-144 find_tokenizer_file).
MISTRAL_TOKENIZER_FILE = re.compile(r"^tokenizer\.model\.v.*$|^tekken\.json$|^tokenizer\.mm\.model\.v.*$")
HF_TOKENIZERS = ("tokenizer.json", "tokenizer.model")
ROPE_KEYS = ("rope_type", "type", "factor", "original_max_position_embeddings")


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


# --------------------------------------------------------------------------------------------------------
# Small helpers


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


def _fmt_bytes(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


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


# --------------------------------------------------------------------------------------------------------
# safetensors


def read_safetensors_header(path: str | os.PathLike) -> dict[str, Any]:
    """Parse and check one safetensors file without reading tensor data.

    Checks the 8-byte little-endian header length, the JSON header, every tensor's dtype/shape against
    its ``data_offsets`` extent, that the extents tile the data area without holes or overlaps, and that
    8 + header + data is exactly the file size (catches truncation and trailing garbage).
    Returns ``{"size", "header_bytes", "data_bytes", "metadata", "tensors": {name: {dtype, shape,
    data_offsets}}, "parameters", "dtype_bytes": {dtype: bytes}}``.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise InvalidModelError(
                    path, "truncated", f"truncated: {size} bytes, shorter than the 8-byte header length"
                )
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > MAX_HEADER_BYTES or header_len < 2:
                raise InvalidModelError(
                    path, "corrupt", f"corrupt: header length {header_len} is implausible (not a safetensors file?)"
                )
            if 8 + header_len > size:
                raise InvalidModelError(
                    path, "truncated", f"truncated: the header declares {header_len} bytes but the file has {size}"
                )
            raw = handle.read(header_len)
    except OSError as err:
        raise _os_error(err, path, "read") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        # RecursionError: JSON nested deeper than Python parses; the library refuses such a header too.
        raise InvalidModelError(path, "corrupt", "corrupt: the safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise InvalidModelError(path, "corrupt", "corrupt: the safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    # The library reads it as Option<HashMap<String, String>> (0.8.0 safetensors/src/tensor.rs:540-543).
    if metadata is not None and (
        not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values())
    ):
        raise InvalidModelError(path, "corrupt", "corrupt: __metadata__ is not a JSON object of strings")
    tensors: dict[str, dict[str, Any]] = {}
    spans: list[tuple[int, int, str]] = []
    parameters = 0
    dtype_bytes: dict[str, int] = {}
    for name, info in header.items():
        dtype, shape, offsets = _tensor_entry(path, name, info)
        count = 1
        for dim in shape:
            count *= dim
        bits = count * DTYPE_BITS[dtype]
        begin, end = offsets
        if bits % 8 or bits // 8 != end - begin:
            raise InvalidModelError(
                path,
                "corrupt",
                f"corrupt: tensor {name!r} is {dtype}{list(shape)} ({bits / 8:g} bytes) but its data_offsets span "
                f"{end - begin} bytes",
                tensor=name,
            )
        tensors[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}
        spans.append((begin, end, name))
        parameters += count
        dtype_bytes[dtype] = dtype_bytes.get(dtype, 0) + (end - begin)
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            what = "overlaps the previous tensor" if begin < position else f"leaves a hole of {begin - position} bytes"
            raise InvalidModelError(
                path, "corrupt", f"corrupt: tensor {name!r} starts at {begin} and {what}", tensor=name
            )
        position = end
    expected = 8 + header_len + position
    if size < expected:
        raise InvalidModelError(
            path,
            "truncated",
            f"truncated: header and tensors need {expected} bytes, the file has {size} "
            f"({expected - size} bytes missing)",
            expected_size=expected,
            actual_size=size,
        )
    if size > expected:
        raise InvalidModelError(
            path,
            "corrupt",
            f"corrupt: {size - expected} bytes of trailing data after the last tensor (expected {expected} bytes, "
            f"file has {size})",
            expected_size=expected,
            actual_size=size,
        )
    return {
        "size": size,
        "header_bytes": header_len,
        "data_bytes": position,
        "metadata": metadata,
        "tensors": tensors,
        "parameters": parameters,
        "dtype_bytes": dtype_bytes,
    }


def _tensor_entry(path: Path, name: str, info: Any) -> tuple[str, tuple[int, ...], tuple[int, int]]:
    if not isinstance(info, dict):
        raise InvalidModelError(path, "corrupt", f"corrupt: tensor {name!r} entry is not a JSON object", tensor=name)
    dtype = info.get("dtype")
    shape = info.get("shape")
    offsets = info.get("data_offsets")
    if dtype not in DTYPE_BITS:
        raise InvalidModelError(path, "corrupt", f"corrupt: tensor {name!r} has unknown dtype {dtype!r}", tensor=name)
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise InvalidModelError(path, "corrupt", f"corrupt: tensor {name!r} has invalid shape {shape!r}", tensor=name)
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_int(o) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise InvalidModelError(
            path, "corrupt", f"corrupt: tensor {name!r} has invalid data_offsets {offsets!r}", tensor=name
        )
    return dtype, tuple(shape), (offsets[0], offsets[1])


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------------------------
# Model layout and facts


def _pos_int(config: Mapping[str, Any], keys: Iterable[str], where: Path, required: bool = True) -> int | None:
    keys = list(keys)
    for key in keys:
        if key in config and config[key] is not None:
            value = config[key]
            if not _is_int(value) or value <= 0:
                raise InvalidModelError(
                    where, "bad_config", f"{key} must be a positive integer, got {value!r}", field=key
                )
            return value
    if required:
        names = " or ".join(keys)
        raise InvalidModelError(where, "bad_config", f"required field {names} is missing", field=keys[0])
    return None


def _mistral_facts(root: Path) -> dict[str, Any]:
    where = root / "params.json"
    params = _read_json(where)
    if not isinstance(params, dict):
        raise InvalidModelError(where, "bad_config", "expected a JSON object")
    hidden = _pos_int(params, ["dim"], where)
    heads = _pos_int(params, ["n_heads"], where)
    return {
        "architecture": "mistral",
        "hidden_size": hidden,
        "num_layers": _pos_int(params, ["n_layers"], where),
        "num_attention_heads": heads,
        "num_kv_heads": _pos_int(params, ["n_kv_heads"], where, required=False) or heads,
        "head_dim": _pos_int(params, ["head_dim"], where, required=False) or hidden // heads,  # type: ignore[operator]
        "intermediate_size": _pos_int(params, ["hidden_dim"], where, required=False),
        "vocab_size": _pos_int(params, ["vocab_size"], where),
        "max_position_embeddings": _pos_int(params, ["max_seq_len", "max_position_embeddings"], where, required=False),
        "config_dtype": None,
    }


def _hf_facts(root: Path) -> dict[str, Any]:
    where = root / "config.json"
    config = _read_json(where)
    if not isinstance(config, dict):
        raise InvalidModelError(where, "bad_config", "expected a JSON object")
    text = config
    # Multimodal configs keep the language model's sizes in text_config.
    if "hidden_size" not in config and isinstance(config.get("text_config"), dict):
        text = {**config, **config["text_config"]}
    hidden = _pos_int(text, ["hidden_size", "n_embd", "d_model"], where)
    heads = _pos_int(text, ["num_attention_heads", "n_head"], where)
    architectures = config.get("architectures")
    dtype = text.get("torch_dtype") or text.get("dtype")
    rope = text.get("rope_scaling")
    return {
        "architecture": architectures[0] if isinstance(architectures, list) and architectures else None,
        "hidden_size": hidden,
        "num_layers": _pos_int(text, ["num_hidden_layers", "n_layer", "num_layers"], where),
        "num_attention_heads": heads,
        "num_kv_heads": _pos_int(text, ["num_key_value_heads"], where, required=False) or heads,
        "head_dim": _pos_int(text, ["head_dim"], where, required=False) or hidden // heads,  # type: ignore[operator]
        "intermediate_size": _pos_int(text, ["intermediate_size", "n_inner"], where, required=False),
        "vocab_size": _pos_int(text, ["vocab_size"], where),
        "max_position_embeddings": _pos_int(
            text, ["max_position_embeddings", "n_positions", "max_seq_len", "seq_length"], where, required=False
        ),
        "config_dtype": dtype if isinstance(dtype, str) else None,
        # What vLLM derives max_model_len from (0.9.0 vllm/config.py:3211-3235 _get_and_verify_max_len).
        "rope_scaling": {k: rope[k] for k in ROPE_KEYS if k in rope} if isinstance(rope, dict) else None,
    }


def _detect_layout(root: Path, top: set[str]) -> tuple[str, list[str]]:
    """Return (primary format, every complete layout found); raise naming the missing file otherwise."""
    consolidated = sorted(n for n in top if n.startswith("consolidated") and n.endswith(".safetensors"))
    hf_weights = sorted(n for n in top if n.startswith("model") and n.endswith(".safetensors"))
    hf_present = bool(hf_weights) or "model.safetensors.index.json" in top
    layouts = []
    if consolidated and "params.json" in top:
        if "tokenizer.model" not in top and not any(MISTRAL_TOKENIZER_FILE.match(n) for n in top):
            raise InvalidModelError(
                root / "tokenizer.model.v3",
                "missing_file",
                "required file missing: the Mistral layout needs a tokenizer (tokenizer.model.v3, tokenizer.model "
                "or tekken.json)",
            )
        layouts.append("mistral")
    if hf_present and "config.json" in top:
        if not layouts and not any(t in top for t in HF_TOKENIZERS):
            raise InvalidModelError(
                root / "tokenizer.json",
                "missing_file",
                "required file missing: the Hugging Face layout needs tokenizer.json or tokenizer.model",
            )
        layouts.append("huggingface")
    if layouts:
        return layouts[0], layouts
    if consolidated:
        raise InvalidModelError(
            root / "params.json",
            "missing_file",
            f"required file missing: the Mistral layout ({consolidated[0]} found) needs params.json",
        )
    if hf_present:
        raise InvalidModelError(
            root / "config.json",
            "missing_file",
            f"required file missing: the Hugging Face layout ({(hf_weights or ['model.safetensors.index.json'])[0]} "
            "found) needs config.json",
        )
    if "params.json" in top:
        raise InvalidModelError(
            root / "consolidated.safetensors", "missing_file", "required file missing: params.json found but no weights"
        )
    if "config.json" in top:
        raise InvalidModelError(
            root / "model.safetensors",
            "missing_file",
            "required file missing: config.json found but no model*.safetensors (only safetensors weights are "
            "supported)",
        )
    listing = ", ".join(sorted(top)[:8]) or "nothing"
    raise InvalidModelError(
        root,
        "unknown_format",
        "unknown model layout: expected params.json + consolidated*.safetensors (Mistral) or config.json + "
        f"model*.safetensors (Hugging Face); found {listing}",
    )


def _check_index(root: Path, index_name: str, headers: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Check a *.safetensors.index.json against its shards; return the shard names it lists."""
    where = root / index_name
    index = _read_json(where)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise InvalidModelError(where, "corrupt", "corrupt: no weight_map object in the index")
    shards: dict[str, list[str]] = {}
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str):
            raise InvalidModelError(where, "corrupt", f"corrupt: weight_map[{tensor!r}] is not a file name")
        shards.setdefault(shard, []).append(tensor)
    for shard in sorted(shards):
        if shard not in headers:
            raise InvalidModelError(
                root / shard,
                "shard_missing",
                f"shard missing: listed in {index_name} for {len(shards[shard])} tensors but not present",
                index=index_name,
            )
        present = headers[shard]["tensors"]
        for tensor in shards[shard]:
            if tensor not in present:
                raise InvalidModelError(
                    root / shard,
                    "tensor_missing",
                    f"tensor {tensor!r} listed in {index_name} is not in this shard",
                    index=index_name,
                    tensor=tensor,
                )
    return sorted(shards)


def _weight_files(
    layout: str, top: set[str], headers: Mapping[str, Any], indexed: Mapping[str, list[str]]
) -> list[str]:
    prefix = "consolidated" if layout == "mistral" else "model"
    index = f"{prefix}.safetensors.index.json"
    if index in indexed:
        return indexed[index]
    return sorted(n for n in top if n.startswith(prefix) and n.endswith(".safetensors") and n in headers)


def inspect_model(path: str | os.PathLike, files: list[tuple[str, os.stat_result]] | None = None) -> dict[str, Any]:
    """Verify a model directory without reading tensor data and return its manifest (no sha256 yet).

    Detects the layout (Mistral consolidated or Hugging Face), checks every safetensors header and extent,
    every index against its shards, and params.json/config.json; raises InvalidModelError naming the file.
    """
    root = Path(path)
    if not root.exists():
        raise InvalidModelError(root, "source_missing", "model directory does not exist")
    if not root.is_dir():
        raise InvalidModelError(root, "source_missing", "not a directory")
    if files is None:
        files = _list_files(root)
    names = {rel for rel, _st in files}
    top = {rel for rel in names if "/" not in rel}
    layout, layouts = _detect_layout(root, top)
    headers = {rel: read_safetensors_header(root / rel) for rel in sorted(names) if rel.endswith(".safetensors")}
    indexed = {
        name: _check_index(root, name, headers) for name in sorted(top) if name.endswith(".safetensors.index.json")
    }
    facts = _mistral_facts(root) if layout == "mistral" else _hf_facts(root)
    for other in layouts[1:]:  # a second complete layout must be sane too (Mistral repos ship both)
        _mistral_facts(root) if other == "mistral" else _hf_facts(root)
    weights = _weight_files(layout, top, headers, indexed)
    dtype_bytes: dict[str, int] = {}
    for name in weights:
        for dtype, count in headers[name]["dtype_bytes"].items():
            dtype_bytes[dtype] = dtype_bytes.get(dtype, 0) + count
    dominant = max(dtype_bytes, key=lambda d: dtype_bytes[d]) if dtype_bytes else None
    tokenizers = MISTRAL_TOKENIZERS if layout == "mistral" else HF_TOKENIZERS
    mistral_tokenizers = sorted(n for n in top if MISTRAL_TOKENIZER_FILE.match(n))
    facts.update(
        {
            "dtype": TORCH_DTYPE.get(dominant) if dominant else facts.get("config_dtype"),
            "parameter_count": sum(headers[n]["parameters"] for n in weights),
            "tensor_count": sum(len(headers[n]["tensors"]) for n in weights),
            "weight_bytes": sum(headers[n]["size"] for n in weights),
            "weight_files": weights,
            "tokenizer": next((t for t in tokenizers if t in top), None),
            # What vLLM's Mistral tokenizer loads (0.9-0.14 need exactly one; a plain tokenizer.model is not it).
            "mistral_tokenizer": mistral_tokenizers[0] if len(mistral_tokenizers) == 1 else None,
        }
    )
    entries = [{"path": rel, "size": st.st_size, "mtime_ns": st.st_mtime_ns} for rel, st in files]
    return {
        "schema": SCHEMA_VERSION,
        "engine": ENGINE,
        "format": layout,
        "layouts": layouts,
        "files": entries,
        "file_count": len(entries),
        "total_bytes": sum(e["size"] for e in entries),
        "facts": facts,
        "created": _now_iso(),
    }


# --------------------------------------------------------------------------------------------------------
# sha256


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


# --------------------------------------------------------------------------------------------------------
# Parallel copy

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


# --------------------------------------------------------------------------------------------------------
# Staging


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


def _remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        with contextlib.suppress(OSError):
            path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


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


def _listing(entries: Iterable[Mapping[str, Any]]) -> str:
    lines = []
    for e in sorted(entries, key=lambda e: e["path"]):
        line = f"{e['path']}  size={e['size']}  mtime={_iso_ns(int(e.get('mtime_ns', 0)))}"
        if e.get("sha256"):
            line += f"  sha256={e['sha256']}"
        lines.append(line)
    return "\n".join(lines) + ("\n" if lines else "")


def _result(
    *,
    changed: bool,
    dest: Path,
    src: Path | None,
    manifest: Mapping[str, Any],
    copied: list[str],
    reused: list[str],
    removed: list[str],
    bytes_copied: int,
    start: float,
    before: str,
    after: str,
    check_mode: bool,
) -> dict[str, Any]:
    seconds = time.monotonic() - start
    return {
        "changed": changed,
        "dest": str(dest),
        "src": None if src is None else str(src),
        "manifest": dict(manifest),
        "copied_files": copied,
        "reused_files": reused,
        "removed_files": removed,
        "bytes_copied": bytes_copied,
        "elapsed_ms": round(seconds * 1000, 3),
        "throughput_bytes_per_s": int(bytes_copied / seconds) if bytes_copied and seconds > 0 and not check_mode else 0,
        "check_mode": check_mode,
        "diff": {"before": before, "after": after},
    }


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
        return _result(
            changed=False,
            dest=dest_path,
            src=src_path,
            manifest=old,
            copied=[],
            reused=reuse,
            removed=[],
            bytes_copied=0,
            start=start,
            before=before,
            after=before,
            check_mode=check_mode,
        )

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
        return _result(
            changed=True,
            dest=dest_path,
            src=src_path,
            manifest=manifest,
            copied=copy,
            reused=reuse,
            removed=removed,
            bytes_copied=copy_bytes,
            start=start,
            before=before,
            after=after,
            check_mode=True,
        )

    try:
        dest_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _os_error(err, dest_path.parent, "create the destination's parent directory") from None
    with _dir_lock(dest_path.parent) as locked:
        _clean_leftovers(dest_path, locked)
        tmp = dest_path.parent / f".{dest_path.name}.staging-{os.getpid()}"
        try:
            manifest, copy, reuse = _stage_into(
                tmp,
                src_path,
                dest_path,
                src_files,
                copy,
                reuse,
                old,
                need_sha,
                expected,
                workers,
                chunk_bytes,
                progress,
                durable,
            )
            _swap_into_place(tmp, dest_path)
        except BaseException:
            _remove_tree(tmp)
            raise
    return _result(
        changed=True,
        dest=dest_path,
        src=src_path,
        manifest=manifest,
        copied=copy,
        reused=reuse,
        removed=removed,
        bytes_copied=copy_bytes,
        start=start,
        before=before,
        after=_listing(manifest["files"]),
        check_mode=False,
    )


def _listing_of_dir(path: Path) -> str:
    if not path.is_dir():
        return ""
    try:
        files = _list_files(path)
    except ModelStageError:
        return ""
    return _listing({"path": rel, "size": st.st_size, "mtime_ns": st.st_mtime_ns} for rel, st in files)


def _stage_into(
    tmp: Path,
    src: Path,
    dest: Path,
    src_files: list[tuple[str, os.stat_result]],
    copy: list[str],
    reuse: list[str],
    old: Mapping[str, Any] | None,
    need_sha: bool,
    expected: Mapping[str, str],
    workers: int,
    chunk_bytes: int,
    progress: IO[str] | None,
    durable: bool,
) -> tuple[dict[str, Any], list[str], list[str]]:
    """Build the verified copy in ``tmp``; return (manifest, copied files, hard-linked files)."""
    sizes = dict(src_files)
    copy = list(copy)
    linked: list[str] = []
    try:
        tmp.mkdir()
        for rel in sorted({str(Path(r).parent) for r in copy + reuse} - {"."}):
            (tmp / rel).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _os_error(err, tmp, "create the staging directory") from None
    old_files = _manifest_files(old)
    hashes: dict[str, str] = {}
    for rel in reuse:  # unchanged since the last verified staging: hard-link instead of copying
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
    jobs = [_CopyJob(rel, src / rel, tmp / rel, sizes[rel], need_sha, mapped) for rel in copy]
    meter = _Progress("stage", sum(j.size for j in jobs), progress)
    _copy_files(jobs, workers, chunk_bytes, meter, durable)
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


def _stat(path: Path) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as err:
        raise _os_error(err, path, "stat") from None


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
    return _result(
        changed=changed,
        dest=root,
        src=None,
        manifest=manifest,
        copied=[],
        reused=[],
        removed=[],
        bytes_copied=0,
        start=start,
        before=before,
        after=after,
        check_mode=check_mode,
    )


def _manifest_key(manifest: Mapping[str, Any]) -> str:
    return json.dumps({k: v for k, v in manifest.items() if k != "created"}, sort_keys=True)


# --------------------------------------------------------------------------------------------------------
# Download from the Hugging Face Hub (stdlib urllib)


def _origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a url, as huggingface_hub 2.4.0 utils/_http.py:790-793 _url_origin."""
    parsed = urllib.parse.urlsplit(url)
    port = parsed.port or {"http": 80, "https": 443}.get(parsed.scheme, 0)
    return parsed.scheme, (parsed.hostname or "").lower(), port


# The token follows a redirect only to the same origin or a Hub origin; never to a CDN's signed URL
# (huggingface_hub 2.4.0 utils/_http.py:796-810 _HUB_ORIGINS and _is_same_or_hub_host).
HUB_ORIGINS = frozenset(
    _origin(u)
    for u in (HF_ENDPOINT, "https://hub-ci.huggingface.co", os.environ.get("HF_ENDPOINT", HF_ENDPOINT), "https://hf.co")
)


def _http_open(url: str, token: str | None, headers: Mapping[str, str] | None = None, timeout: float = HTTP_TIMEOUT_S):
    import urllib.request  # only downloads need it; it costs the CLI's every start-up 20 ms

    class HubRedirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            new = super().redirect_request(req, fp, code, msg, headers, newurl)
            auth = req.unredirected_hdrs.get("Authorization")
            if new is not None and auth and _origin(newurl) in {_origin(req.full_url), *HUB_ORIGINS}:
                new.add_unredirected_header("Authorization", auth)
            return new

    request = urllib.request.Request(url, headers={"User-Agent": f"{ENGINE}/{SCHEMA_VERSION}", **(headers or {})})
    if token:
        # Unredirected: HubRedirects decides per hop (a renamed repo's 307 keeps it, a CDN's 302 drops it).
        request.add_unredirected_header("Authorization", f"Bearer {token}")
    return urllib.request.build_opener(HubRedirects).open(request, timeout=timeout)


def _http_failure(err: urllib.error.HTTPError, url: str, repo_id: str, token_env: str | None) -> ModelStageError:
    where = token_env and f"${token_env}" or "the token"
    if err.code in (401, 403):
        return InvalidModelError(
            url,
            "http_auth",
            f"HTTP {err.code}: {where} is missing or invalid, or {repo_id} is gated (accept its terms on the Hub "
            "with the token's account) or does not exist",
            status=err.code,
        )
    if err.code == 404:
        return InvalidModelError(
            url,
            "not_found",
            f"HTTP 404: not found; check the repo id {repo_id!r}, the revision and the file names",
            status=404,
        )
    return ModelStageError(url, "http_error", f"HTTP {err.code} {err.reason}", status=err.code)


def _transient(err: BaseException) -> bool:
    if isinstance(err, urllib.error.HTTPError):
        return err.code in (408, 425, 429) or err.code >= 500
    return isinstance(err, (urllib.error.URLError, ConnectionError, TimeoutError, OSError, EOFError)) or (
        err.__class__.__name__ == "IncompleteRead"
    )


def _hub_files(info: Mapping[str, Any], endpoint: str, repo_id: str) -> dict[str, dict[str, Any]]:
    siblings = info.get("siblings")
    if not isinstance(siblings, list):
        raise ModelStageError(endpoint, "http_error", f"unexpected Hub answer for {repo_id}: no siblings list")
    files: dict[str, dict[str, Any]] = {}
    for entry in siblings:
        if not isinstance(entry, dict) or not isinstance(entry.get("rfilename"), str):
            continue
        lfs = entry.get("lfs") if isinstance(entry.get("lfs"), dict) else None
        size = (lfs or {}).get("size", entry.get("size"))
        files[entry["rfilename"]] = {
            "size": size if _is_int(size) else None,
            "sha256": (lfs or {}).get("sha256") or (lfs or {}).get("oid"),
            "git_sha1": None if lfs else entry.get("blobId"),
        }
    return files


def _select(available: Mapping[str, Any], wanted: list[str] | None, repo_id: str, revision: str) -> list[str]:
    if not wanted:
        return sorted(available)
    chosen: list[str] = []
    for pattern in wanted:
        matches = sorted(n for n in available if n == pattern or fnmatch.fnmatchcase(n, pattern))
        if not matches:
            raise InvalidModelError(
                None,
                "missing_file",
                f"{pattern}: not in {repo_id}@{revision} (files: {', '.join(sorted(available)[:12])})",
            )
        chosen.extend(m for m in matches if m not in chosen)
    return chosen


def _safe_relpath(name: str) -> str:
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts) or parts[0] in (MANIFEST_NAME, PARTIAL_DIR):
        raise InvalidModelError(None, "bad_input", f"refusing to write unsafe file name from the Hub: {name!r}")
    return name


def _file_digests(path: Path, git_sha1: bool) -> tuple[str, str | None]:
    sha = hashlib.sha256()
    sha1 = hashlib.sha1(b"blob %d\0" % path.stat().st_size) if git_sha1 else None  # noqa: S324 - git's object id
    with open(path, "rb", buffering=0) as handle:
        buffer = bytearray(IO_BUFFER_BYTES)
        view = memoryview(buffer)
        while True:
            n = handle.readinto(buffer)
            if not n:
                break
            sha.update(view[:n])
            if sha1 is not None:
                sha1.update(view[:n])
    return sha.hexdigest(), None if sha1 is None else sha1.hexdigest()


def _digests_match(info: Mapping[str, Any], sha256_hex: str, sha1_hex: str | None) -> bool:
    if info.get("sha256"):
        return sha256_hex == info["sha256"]
    if info.get("git_sha1") and sha1_hex is not None:
        return sha1_hex == info["git_sha1"]
    return True


def download(
    repo_id: str,
    revision: str,
    dest: str | os.PathLike,
    files: list[str] | None = None,
    token: str | None = None,
    endpoint: str = HF_ENDPOINT,
    *,
    token_env: str | None = None,
    progress: IO[str] | None = None,
    announce: Callable[[str], None] | None = None,
    timeout: float = HTTP_TIMEOUT_S,
    retries: int = HTTP_RETRIES,
) -> dict[str, Any]:
    """Download a model from the Hugging Face Hub (or a mirror with the same URLs) into ``dest``, verified.

    Learns sizes and hashes from ``GET {endpoint}/api/models/{repo}/revision/{rev}?blobs=true``, downloads
    each file into dest/.partial/ with HTTP Range resume, checks each LFS file's sha256 (the git blob id for
    small files), moves it into place and calls ``announce(name)``; finally verifies the model and writes
    the manifest last and atomically. A model whose manifest matches (same repo, revision and file
    selection, commit; files unchanged on disk) returns with ``changed=False``: without any request when
    ``revision`` is a commit sha, after the one listing request that resolves a branch or tag otherwise.
    Every file is fetched by the commit the listing names, so a branch that moves meanwhile cannot mix commits.
    ``files`` are names or glob patterns; ``token`` is sent only to ``endpoint`` and Hub hosts, never logged.
    """
    start = time.monotonic()
    root = Path(dest).absolute()
    endpoint = endpoint.rstrip("/")
    spec = {"repo": repo_id, "revision": revision, "files": list(files) if files else None}
    existing = load_manifest(root)
    held = ((existing or {}).get("source") or {}).get("commit")
    complete = existing is not None and _download_complete(root, existing, spec)

    def unchanged() -> dict[str, Any]:
        if existing is None:  # only called for a complete copy, which has its manifest
            raise ValueError("no manifest to keep")
        for entry in existing["files"]:
            if announce:
                announce(entry["path"])
        before = _listing(existing["files"])
        return _download_result(False, root, existing, [], 0, start, before, before)

    # A commit sha names the same files forever: no request (huggingface_hub 2.4.0 _snapshot_download.py:262-270).
    if complete and held == revision:
        return unchanged()
    quoted_rev = urllib.parse.quote(revision, safe="")
    info_url = f"{endpoint}/api/models/{repo_id}/revision/{quoted_rev}?blobs=true"
    try:
        raw_info = _with_retries(lambda: _read_url(info_url, token, timeout), info_url, repo_id, token_env, retries)
    except ModelStageError as err:
        # Hub unreachable or refusing: the copy already here serves, as snapshot_download falls back to its
        # cached snapshot of the revision (huggingface_hub 2.4.0 _snapshot_download.py:299-345).
        if not complete or err.problem == "not_found":
            raise
        if progress is not None:
            progress.write(f"download: {err}; keeping the verified copy of {revision} ({held}) in {root}\n")
        return unchanged()
    try:
        info = json.loads(raw_info.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ModelStageError(info_url, "http_error", "the Hub's answer is not JSON (wrong --endpoint?)") from None
    if not isinstance(info, dict):
        raise ModelStageError(info_url, "http_error", "the Hub's answer is not a JSON object (wrong --endpoint?)")
    # Resolve the revision once and fetch every file by that commit, as snapshot_download does with repo_info.sha
    # (huggingface_hub 2.4.0 _snapshot_download.py:277-281 and 516-525, revision=commit_hash).
    commit = info.get("sha")
    if not isinstance(commit, str) or not _is_commit(commit):
        raise ModelStageError(info_url, "http_error", "the Hub's answer names no commit sha (wrong --endpoint?)")
    if complete and held == commit:
        return unchanged()
    available = _hub_files(info, endpoint, repo_id)
    chosen = [_safe_relpath(n) for n in _select(available, files, repo_id, revision)]
    try:
        root.mkdir(parents=True, exist_ok=True)
        if existing is not None:  # the old manifest must not vouch for files about to change
            os.unlink(root / MANIFEST_NAME)
    except OSError as err:
        raise _os_error(err, root, "prepare the download directory") from None
    partial_dir = root / PARTIAL_DIR
    pending = []
    vouched = _manifest_files(existing)
    for name in chosen:
        target = root / name
        meta = available[name]
        if target.is_file() and meta["size"] is not None and target.stat().st_size == meta["size"]:
            entry = vouched.get(name, {})
            if meta["sha256"] and entry.get("sha256") == meta["sha256"] and _same_file_state(entry, target.stat()):
                sha_hex, sha1_hex = meta["sha256"], None  # the same blob as our manifest vouched for: not re-read
            else:
                sha_hex, sha1_hex = _file_digests(target, bool(meta["git_sha1"]))
            if _digests_match(meta, sha_hex, sha1_hex):
                meta["computed_sha256"] = sha_hex
                if announce:
                    announce(name)
                continue
        pending.append(name)
    need = sum((available[n]["size"] or 0) - _size_or_zero(partial_dir / n) for n in pending)
    free = _free_bytes(root)
    if need > free:
        raise ModelStageError(
            root,
            "no_space",
            f"destination too small: {need} bytes to download, {free} available",
            needed_bytes=need,
            free_bytes=free,
        )
    total = sum(available[n]["size"] or 0 for n in pending)
    downloaded = 0
    for name in pending:
        meta = available[name]
        url = f"{endpoint}/{repo_id}/resolve/{commit}/{urllib.parse.quote(name)}"
        partial = partial_dir / name
        meta["computed_sha256"] = _download_file(
            url, partial, root / name, meta, token, timeout, retries, repo_id, token_env, progress
        )
        try:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial, root / name)
        except OSError as err:
            raise _os_error(err, root / name, "move the downloaded file into place") from None
        downloaded += meta["size"] or 0
        if announce:
            announce(name)
    with contextlib.suppress(OSError):
        shutil.rmtree(partial_dir)
    manifest = inspect_model(root)
    known = {n: available[n]["computed_sha256"] for n in chosen}
    manifest["files"] = [dict(e, sha256=known[e["path"]]) if e["path"] in known else e for e in manifest["files"]]
    manifest["source"] = dict(spec, endpoint=endpoint, commit=commit)
    save_manifest(root, manifest)
    if progress is not None and total:
        progress.write(f"download: {len(pending)} files, {_fmt_rate(downloaded, total, time.monotonic() - start)}\n")
    return _download_result(True, root, manifest, pending, downloaded, start, "", _listing(manifest["files"]))


def _is_commit(revision: str) -> bool:
    return re.fullmatch(r"[0-9a-f]{40}", revision) is not None  # huggingface_hub 2.4.0 REGEX_COMMIT_HASH


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _download_complete(root: Path, manifest: Mapping[str, Any], spec: Mapping[str, Any]) -> bool:
    source = manifest.get("source") or {}
    if source.get("repo") != spec["repo"] or source.get("revision") != spec["revision"]:
        return False
    entries = _manifest_files(manifest)
    if source.get("files") != spec["files"]:
        wanted = spec["files"]
        # A narrower request of plain names that the manifest already covers is complete too.
        if not wanted or any(any(c in w for c in "*?[") or w not in entries for w in wanted):
            return False
    for rel, entry in entries.items():
        try:
            st = os.stat(root / rel)
        except OSError:
            return False
        if not _same_file_state(entry, st):
            return False
    return True


def _download_result(
    changed: bool,
    root: Path,
    manifest: Mapping[str, Any],
    names: list[str],
    nbytes: int,
    start: float,
    before: str,
    after: str,
) -> dict[str, Any]:
    result = _result(
        changed=changed,
        dest=root,
        src=None,
        manifest=manifest,
        copied=names,
        reused=[],
        removed=[],
        bytes_copied=nbytes,
        start=start,
        before=before,
        after=after,
        check_mode=False,
    )
    result["downloaded_files"] = result["copied_files"]
    result["bytes_downloaded"] = result["bytes_copied"]
    return result


def _read_url(url: str, token: str | None, timeout: float) -> bytes:
    with _http_open(url, token, timeout=timeout) as response:
        return response.read()


def _with_retries(action: Callable[[], Any], url: str, repo_id: str, token_env: str | None, retries: int) -> Any:
    attempt = 0
    while True:
        try:
            return action()
        except urllib.error.HTTPError as err:
            if not _transient(err) or attempt >= retries:
                raise _http_failure(err, url, repo_id, token_env) from None
        except ModelStageError:
            raise
        except Exception as err:  # noqa: BLE001 - network errors come in many classes
            if not _transient(err) or attempt >= retries:
                raise ModelStageError(url, "http_error", f"download failed: {err}") from None
        time.sleep(HTTP_RETRY_BASE_S * 2**attempt)
        attempt += 1


def _fresh_hashes(meta: Mapping[str, Any]) -> tuple[Any, Any]:
    """A sha256, and git's blob sha1 for small (non-LFS) files, ready for the file's bytes."""
    size = meta.get("size")
    if meta.get("git_sha1") and size is not None:
        return hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)  # noqa: S324 - git's object id
    return hashlib.sha256(), None


def _download_file(
    url: str,
    partial: Path,
    target: Path,
    meta: Mapping[str, Any],
    token: str | None,
    timeout: float,
    retries: int,
    repo_id: str,
    token_env: str | None,
    progress: IO[str] | None,
) -> str:
    """Fetch one file into its .partial path, resuming with Range; return its verified sha256."""
    size = meta["size"]
    try:
        partial.parent.mkdir(parents=True, exist_ok=True)
        if size is not None and _size_or_zero(partial) > size:
            partial.unlink()
    except OSError as err:
        raise _os_error(err, partial, "prepare") from None
    sha, sha1 = _fresh_hashes(meta)
    have = 0
    if partial.exists():  # resume: the bytes already there count towards the hash
        try:
            with open(partial, "rb") as handle:
                for block in iter(lambda: handle.read(IO_BUFFER_BYTES), b""):
                    sha.update(block)
                    if sha1 is not None:
                        sha1.update(block)
                    have += len(block)
        except OSError as err:
            raise _os_error(err, partial, "read") from None
    meter = _Progress(f"download: {target.name}", size or 0, progress)
    meter.add(have)
    attempt = 0
    while size is None or have < size:
        before = have
        try:
            with _http_open(url, token, {"Range": f"bytes={have}-"} if have else {}, timeout) as response:
                if have and response.status != 206:  # the server ignored Range: start over
                    have = 0
                    sha, sha1 = _fresh_hashes(meta)
                try:
                    out = open(partial, "ab" if have else "wb")
                except OSError as err:
                    raise _os_error(err, partial, "write") from None
                with out:
                    while True:
                        block = response.read(1024 * 1024)
                        if not block:
                            break
                        try:
                            out.write(block)
                            out.flush()  # what `have` counts is in the file if the connection drops next
                        except OSError as err:
                            raise _os_error(err, partial, "write") from None
                        sha.update(block)
                        if sha1 is not None:
                            sha1.update(block)
                        have += len(block)
                        meter.add(len(block))
                    try:
                        os.fsync(out.fileno())
                    except OSError as err:
                        raise _os_error(err, partial, "flush") from None
            if size is None:
                break
            if have < size:  # connection ended early: resume from here
                raise ConnectionError(f"response ended at byte {have} of {size}")
        except ModelStageError:
            raise
        except urllib.error.HTTPError as err:
            if err.code == 416 and size is not None and have >= size:
                break
            if not _transient(err) or attempt >= retries:
                raise _http_failure(err, url, repo_id, token_env) from None
        except Exception as err:  # noqa: BLE001 - URLError, ConnectionError, IncompleteRead, timeouts...
            if not _transient(err) or attempt >= retries:
                raise ModelStageError(url, "http_error", f"download failed after {attempt + 1} tries: {err}") from None
        if have > before:  # progress was made: resume at once, the retry budget is for stalls
            attempt = 0
            continue
        time.sleep(HTTP_RETRY_BASE_S * 2**attempt)
        attempt += 1
    meter.finish()
    if size is not None and have != size:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise ModelStageError(url, "http_error", f"got {have} bytes, the Hub lists {size}")
    digest = sha.hexdigest()
    if meta.get("sha256") and digest != meta["sha256"]:
        with contextlib.suppress(OSError):
            partial.unlink()  # a corrupt partial must not be resumed
        raise InvalidModelError(
            target,
            "sha256_mismatch",
            f"sha256 mismatch: the Hub lists {meta['sha256']}, the download has {digest}",
            expected_sha256=meta["sha256"],
            actual_sha256=digest,
        )
    if sha1 is not None and sha1.hexdigest() != meta["git_sha1"]:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise InvalidModelError(
            target,
            "sha256_mismatch",
            f"git blob id mismatch: the Hub lists {meta['git_sha1']}, the download has {sha1.hexdigest()}",
            expected_git_sha1=meta["git_sha1"],
            actual_git_sha1=sha1.hexdigest(),
        )
    return digest


# --------------------------------------------------------------------------------------------------------
# Command line (init container, download Job, people)


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="model_stage.py",
        description="Verify, stage (parallel, atomic, idempotent) and download model weights. The last line on "
        "stdout is 'MANIFEST <json>'. Exit 0 ok, 2 invalid model or input, 1 other failure.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_stage = sub.add_parser("stage", help="copy a verified model from --src to --dest")
    p_stage.add_argument("--src", required=True, help="model directory to copy")
    p_stage.add_argument("--dest", required=True, help="directory to create or update (replaced atomically)")
    p_stage.add_argument("--workers", type=int, default=None, help=f"copy threads (default {default_workers()})")
    p_stage.add_argument("--sha256", action="store_true", help="hash every file during the copy and check it")
    p_stage.add_argument("--sha256-from", default=None, help="expected sha256 values: JSON or sha256sum file")
    p_stage.add_argument("--required-free-bytes", type=int, default=0, help="free space to keep at --dest")
    p_stage.add_argument("--force", action="store_true", help="replace a --dest that has files but no manifest")
    p_stage.add_argument(
        "--no-fsync", action="store_true", help="skip fsync of the copied files (a RAM volume gains nothing from it)"
    )
    p_stage.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p_verify = sub.add_parser("verify", help="verify a model directory in place")
    p_verify.add_argument("--path", required=True, help="model directory")
    p_verify.add_argument("--sha256", action="store_true", help="hash every file and check known hashes")
    p_verify.add_argument("--sha256-from", default=None, help="expected sha256 values: JSON or sha256sum file")
    p_verify.add_argument("--write-manifest", action="store_true", help=f"write {MANIFEST_NAME} into --path")
    p_verify.add_argument("--workers", type=int, default=None, help="hashing threads")
    p_verify.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p_dl = sub.add_parser("download", help="download a model from the Hugging Face Hub, verified and resumable")
    p_dl.add_argument("--repo", required=True, help="repo id, e.g. mistralai/Mistral-7B-Instruct-v0.3")
    p_dl.add_argument("--revision", default="main", help="branch, tag or commit (default main)")
    p_dl.add_argument("--dest", required=True, help="directory to download into")
    p_dl.add_argument("--files", default=None, help="comma-separated names or glob patterns (default: all)")
    p_dl.add_argument("--token-env", default="HF_TOKEN", help="environment variable holding the token")
    p_dl.add_argument("--endpoint", default=os.environ.get("HF_ENDPOINT", HF_ENDPOINT), help="Hub URL")
    p_dl.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def main(argv: list[str] | None = None, stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 invalid model or input, 1 other failure)."""
    out = stdout or sys.stdout
    err_stream = stderr or sys.stderr
    args = _parser().parse_args(argv)
    progress = None if args.quiet else err_stream
    try:
        if args.command == "stage":
            result = stage(
                args.src,
                args.dest,
                workers=args.workers,
                sha256=args.sha256,
                expected_sha256=args.sha256_from,
                required_free_bytes=args.required_free_bytes,
                force=args.force,
                progress=progress,
                durable=not args.no_fsync,
            )
            if result["changed"]:
                seconds = result["elapsed_ms"] / 1000
                err_stream.write(
                    f"stage: {result['dest']} ready: copied {len(result['copied_files'])} files "
                    f"({_fmt_bytes(result['bytes_copied'])}), reused {len(result['reused_files'])}, "
                    f"{_fmt_bytes(result['throughput_bytes_per_s'])}/s over {seconds:.1f} s\n"
                )
            else:
                err_stream.write(f"stage: {result['dest']} already holds a verified copy; nothing copied\n")
        elif args.command == "verify":
            result = verify(
                args.path,
                sha256=args.sha256,
                expected_sha256=args.sha256_from,
                write_manifest=args.write_manifest,
                workers=args.workers,
                progress=progress,
            )
            facts = result["manifest"]["facts"]
            err_stream.write(
                f"verify: {result['dest']} ok: {result['manifest']['format']} layout, "
                f"{result['manifest']['file_count']} files, {result['manifest']['total_bytes']} bytes, "
                f"{facts.get('parameter_count')} parameters ({facts.get('dtype')})\n"
            )
        else:
            token = os.environ.get(args.token_env) or None if args.token_env else None
            wanted = [f.strip() for f in args.files.split(",") if f.strip()] if args.files else None

            def announce(name: str) -> None:
                out.write(name + "\n")
                out.flush()

            result = download(
                args.repo,
                args.revision,
                args.dest,
                wanted,
                token,
                args.endpoint,
                token_env=args.token_env,
                progress=progress,
                announce=announce,
            )
            if not result["changed"]:
                err_stream.write(f"download: {result['dest']} already holds a verified copy; nothing downloaded\n")
        err_stream.write(RESULT_PREFIX + json.dumps(run_summary(args.command, result), sort_keys=True) + "\n")
        err_stream.flush()
        _print_manifest(result["manifest"], out)
        return 0
    except ModelStageError as err:
        err_stream.write(f"error: {err}\n")
        err_stream.flush()
        return err.exit_code
    except KeyboardInterrupt:
        err_stream.write("error: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
