# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# PRIVATE to the collection; part of the staging engine (see __init__.py): standard library only, relative imports.

"""Model layouts (Hugging Face, Mistral consolidated) and the facts vLLM reads from them: inspect_model."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .common import ENGINE, SCHEMA_VERSION, InvalidModelError, _is_int, _list_files, _now_iso, _read_json
from .safetensors_header import read_safetensors_header

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
