"""Synthetic models with real safetensors files, for the unit tests, the staging benchmark and integration tests.

Both layouts vLLM loads from a directory:
- Mistral consolidated: ``params.json``, ``consolidated.safetensors``, ``tokenizer.model.v3``;
- Hugging Face: ``config.json``, ``model.safetensors`` or ``model-0000i-of-0000n.safetensors`` with
  ``model.safetensors.index.json``, ``tokenizer.json`` and friends.

Tensor names and shapes follow Mistral 7B's architecture (scaled down); the data is seeded random bytes.
``write_safetensors`` is a standard-library writer; ``writer="safetensors"`` uses the ``safetensors``
package's numpy API instead (float16, since numpy has no bfloat16). Import it as
``ansible_collections.llmops.vllm.tests.model_factory`` (tests/conftest.py links the checkout as the
collection) or put tests/ on sys.path.
"""

from __future__ import annotations

import json
import os
import random
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "U8": 1, "I8": 1, "I32": 4, "I64": 8, "F8_E4M3FNUZ": 1}
# Above this many bytes of tensor data a file repeats one random block instead of drawing every byte.
RANDOM_LIMIT = 64 * 1024 * 1024
BLOCK = 8 * 1024 * 1024

Tensors = Mapping[str, tuple[str, Sequence[int]]]


def _count(shape: Sequence[int]) -> int:
    total = 1
    for dim in shape:
        total *= dim
    return total


def tensor_bytes(tensors: Tensors) -> int:
    """Bytes of tensor data the given (dtype, shape) entries take."""
    return sum(_count(shape) * DTYPE_BYTES[dtype] for dtype, shape in tensors.values())


def parameter_count(tensors: Tensors) -> int:
    """Number of elements in the given (dtype, shape) entries."""
    return sum(_count(shape) for _dtype, shape in tensors.values())


def write_safetensors(
    path: str | os.PathLike, tensors: Tensors, *, metadata: Mapping[str, str] | None = None, seed: int = 0
) -> int:
    """Write a real safetensors file (standard library only); return its size in bytes.

    Layout: 8-byte little-endian header length, JSON header (padded with spaces to 8 bytes), then each
    tensor's bytes in the given order.
    """
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = _count(shape) * DTYPE_BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    rng = random.Random(seed)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)))
        handle.write(raw)
        if offset <= RANDOM_LIMIT:
            handle.write(rng.getrandbits(offset * 8).to_bytes(offset, "little") if offset else b"")
        else:
            block = rng.getrandbits(BLOCK * 8).to_bytes(BLOCK, "little")
            left = offset
            while left:
                n = min(left, BLOCK)
                handle.write(block[:n])
                left -= n
    return 8 + len(raw) + offset


def write_safetensors_numpy(path: str | os.PathLike, tensors: Tensors, *, seed: int = 0) -> int:
    """Write the tensors with ``safetensors.numpy.save_file`` (F16 for BF16: numpy has no bfloat16)."""
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    arrays = {}
    numpy_dtype = {"BF16": np.float16, "F16": np.float16, "F32": np.float32, "U8": np.uint8, "I8": np.int8}
    for name, (dtype, shape) in tensors.items():
        target = numpy_dtype[dtype]
        nbytes = _count(shape) * np.dtype(target).itemsize
        arrays[name] = rng.integers(0, 256, size=nbytes, dtype=np.uint8).view(target).reshape(shape)
    save_file(arrays, str(path))
    return os.path.getsize(path)


def _write(path: Path, tensors: Tensors, writer: str, seed: int, metadata: Mapping[str, str] | None) -> int:
    if writer == "safetensors":
        return write_safetensors_numpy(path, tensors, seed=seed)
    return write_safetensors(path, tensors, metadata=metadata, seed=seed)


def mistral_tensors(
    *, dim: int, n_layers: int, n_heads: int, n_kv_heads: int, hidden_dim: int, vocab_size: int, dtype: str = "BF16"
) -> dict[str, tuple[str, list[int]]]:
    """Tensor names and shapes of a Mistral consolidated checkpoint."""
    head_dim = dim // n_heads
    tensors: dict[str, tuple[str, list[int]]] = {"tok_embeddings.weight": (dtype, [vocab_size, dim])}
    for i in range(n_layers):
        p = f"layers.{i}."
        tensors[p + "attention.wq.weight"] = (dtype, [n_heads * head_dim, dim])
        tensors[p + "attention.wk.weight"] = (dtype, [n_kv_heads * head_dim, dim])
        tensors[p + "attention.wv.weight"] = (dtype, [n_kv_heads * head_dim, dim])
        tensors[p + "attention.wo.weight"] = (dtype, [dim, n_heads * head_dim])
        tensors[p + "feed_forward.w1.weight"] = (dtype, [hidden_dim, dim])
        tensors[p + "feed_forward.w2.weight"] = (dtype, [dim, hidden_dim])
        tensors[p + "feed_forward.w3.weight"] = (dtype, [hidden_dim, dim])
        tensors[p + "attention_norm.weight"] = (dtype, [dim])
        tensors[p + "ffn_norm.weight"] = (dtype, [dim])
    tensors["norm.weight"] = (dtype, [dim])
    tensors["output.weight"] = (dtype, [vocab_size, dim])
    return tensors


def hf_tensors(
    *, dim: int, n_layers: int, n_heads: int, n_kv_heads: int, hidden_dim: int, vocab_size: int, dtype: str = "BF16"
) -> dict[str, tuple[str, list[int]]]:
    """Tensor names and shapes of a Hugging Face MistralForCausalLM checkpoint."""
    head_dim = dim // n_heads
    tensors: dict[str, tuple[str, list[int]]] = {"model.embed_tokens.weight": (dtype, [vocab_size, dim])}
    for i in range(n_layers):
        p = f"model.layers.{i}."
        tensors[p + "self_attn.q_proj.weight"] = (dtype, [n_heads * head_dim, dim])
        tensors[p + "self_attn.k_proj.weight"] = (dtype, [n_kv_heads * head_dim, dim])
        tensors[p + "self_attn.v_proj.weight"] = (dtype, [n_kv_heads * head_dim, dim])
        tensors[p + "self_attn.o_proj.weight"] = (dtype, [dim, n_heads * head_dim])
        tensors[p + "mlp.gate_proj.weight"] = (dtype, [hidden_dim, dim])
        tensors[p + "mlp.up_proj.weight"] = (dtype, [hidden_dim, dim])
        tensors[p + "mlp.down_proj.weight"] = (dtype, [dim, hidden_dim])
        tensors[p + "input_layernorm.weight"] = (dtype, [dim])
        tensors[p + "post_attention_layernorm.weight"] = (dtype, [dim])
    tensors["model.norm.weight"] = (dtype, [dim])
    tensors["lm_head.weight"] = (dtype, [vocab_size, dim])
    return tensors


# Small defaults: about 3 MB per model, so a test suite on 2 cores stays quick.
SMALL = {"dim": 256, "n_layers": 2, "n_heads": 8, "n_kv_heads": 4, "hidden_dim": 512, "vocab_size": 512}
# Mistral 7B's real shapes (14.5 GB in bf16).
MISTRAL_7B = {"dim": 4096, "n_layers": 32, "n_heads": 32, "n_kv_heads": 8, "hidden_dim": 14336, "vocab_size": 32768}
# Mid-sized shapes with Mistral's vocabulary, for benchmark models of 0.2 to 8 GB.
MEDIUM = {"dim": 1024, "n_layers": 32, "n_heads": 16, "n_kv_heads": 4, "hidden_dim": 3584, "vocab_size": 32768}


def shapes_for(target_bytes: int, dtype: str = "BF16") -> dict[str, int]:
    """Architecture sizes whose checkpoint is close to ``target_bytes`` (layer count scaled)."""
    base = dict(MISTRAL_7B if target_bytes >= 8 * 10**9 else MEDIUM if target_bytes >= 2 * 10**8 else SMALL)
    one = tensor_bytes(mistral_tensors(**{**base, "n_layers": 1}, dtype=dtype))
    two = tensor_bytes(mistral_tensors(**{**base, "n_layers": 2}, dtype=dtype))
    per_layer = two - one
    fixed = one - per_layer
    base["n_layers"] = max(1, round((target_bytes - fixed) / per_layer))
    return base


def make_mistral_model(
    root: str | os.PathLike,
    *,
    target_bytes: int | None = None,
    dtype: str = "BF16",
    writer: str = "stdlib",
    seed: int = 0,
    **shape: int,
) -> dict[str, Any]:
    """Write a Mistral consolidated-layout model into ``root``; return what a test needs to know about it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    dims = dict(shapes_for(target_bytes, dtype) if target_bytes else SMALL, **shape)
    tensors = mistral_tensors(**dims, dtype=dtype)
    size = _write(root / "consolidated.safetensors", tensors, writer, seed, None)
    params = {
        "dim": dims["dim"],
        "n_layers": dims["n_layers"],
        "head_dim": dims["dim"] // dims["n_heads"],
        "hidden_dim": dims["hidden_dim"],
        "n_heads": dims["n_heads"],
        "n_kv_heads": dims["n_kv_heads"],
        "norm_eps": 1e-05,
        "vocab_size": dims["vocab_size"],
        "rope_theta": 1000000.0,
    }
    (root / "params.json").write_text(json.dumps(params, indent=2) + "\n")
    (root / "tokenizer.model.v3").write_bytes(random.Random(seed + 1).randbytes(4096))
    return {
        "path": root,
        "format": "mistral",
        "params": params,
        "tensors": tensors,
        "parameter_count": parameter_count(tensors),
        "weight_bytes": size,
        "weight_files": ["consolidated.safetensors"],
        "files": sorted(p.name for p in root.iterdir() if p.is_file()),
    }


def make_hf_model(
    root: str | os.PathLike,
    *,
    shards: int = 2,
    target_bytes: int | None = None,
    dtype: str = "BF16",
    writer: str = "stdlib",
    seed: int = 0,
    **shape: int,
) -> dict[str, Any]:
    """Write a Hugging Face-layout model (sharded with an index when ``shards`` > 1) into ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    dims = dict(shapes_for(target_bytes, dtype) if target_bytes else SMALL, **shape)
    tensors = hf_tensors(**dims, dtype=dtype)
    names = list(tensors)
    if shards == 1:
        plan = {"model.safetensors": names}
    else:
        plan = {f"model-{i + 1:05d}-of-{shards:05d}.safetensors": [] for i in range(shards)}
        files = list(plan)
        for position, name in enumerate(names):  # contiguous runs, like transformers' sharding
            plan[files[min(shards - 1, position * shards // len(names))]].append(name)
    weight_map = {}
    total = 0
    for number, (filename, members) in enumerate(plan.items()):
        part = {n: tensors[n] for n in members}
        _write(root / filename, part, writer, seed + number, {"format": "pt"})
        total += tensor_bytes(part)
        weight_map.update({n: filename for n in members})
    if shards > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (root / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    config = {
        "architectures": ["MistralForCausalLM"],
        "model_type": "mistral",
        "hidden_size": dims["dim"],
        "intermediate_size": dims["hidden_dim"],
        "num_hidden_layers": dims["n_layers"],
        "num_attention_heads": dims["n_heads"],
        "num_key_value_heads": dims["n_kv_heads"],
        "head_dim": dims["dim"] // dims["n_heads"],
        "vocab_size": dims["vocab_size"],
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-05,
        "rope_theta": 1000000.0,
        "torch_dtype": "bfloat16" if dtype == "BF16" else "float16",
    }
    (root / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    vocab = {f"tok{i}": i for i in range(dims["vocab_size"])}
    tokenizer = {"version": "1.0", "model": {"type": "BPE", "vocab": vocab, "merges": []}}
    (root / "tokenizer.json").write_text(json.dumps(tokenizer))
    (root / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 32768}) + "\n")
    (root / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}) + "\n")
    return {
        "path": root,
        "format": "huggingface",
        "config": config,
        "tensors": tensors,
        "parameter_count": parameter_count(tensors),
        "weight_files": sorted(plan),
        "shards": plan,
        "files": sorted(p.name for p in root.iterdir() if p.is_file()),
    }
