# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# PRIVATE to the collection; part of the staging engine (see __init__.py): standard library only, relative imports.

"""safetensors files: parse and check the header and tensor extents without reading tensor data."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from .common import InvalidModelError, _is_int, _os_error

# safetensors refuses a header longer than this (0.8.0 safetensors/src/tensor.rs:10 `MAX_HEADER_SIZE: usize =
# 100_000_000`, checked as `n > MAX_HEADER_SIZE` in read_metadata): anything larger is not a header.
MAX_HEADER_BYTES = 100_000_000


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
