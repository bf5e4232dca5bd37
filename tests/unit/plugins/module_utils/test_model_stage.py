"""The staging engine (plugins/module_utils/model_stage/) on real files: generated models of both layouts.

Download tests run against a local HTTP server (pytest-httpserver) that answers the same URL shapes as the
Hugging Face Hub (``/api/models/{repo}/revision/{rev}?blobs=true`` and ``/{repo}/resolve/{rev}/{file}``
with Range): there is no network to the real Hub here.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from ansible_collections.llmops.vllm.plugins.module_utils import model_stage as ms
from ansible_collections.llmops.vllm.plugins.module_utils.stage_engine import MODULES
from ansible_collections.llmops.vllm.tests import model_factory as mf
from ansible_collections.llmops.vllm.tests.hub_fake_server import FakeHub

# The engine is a package directory, run as `python3 <dir>` in pods.
ENGINE = Path(ms.__file__).resolve().parent
ENGINE_MODULES = [importlib.import_module(f"{ms.__name__}.{name}") for name in MODULES if not name.startswith("__")]


def patch_engine(monkeypatch: pytest.MonkeyPatch, name: str, value: object) -> None:
    """Replace ``name`` in every file of the engine that uses it (each file imports what it needs)."""
    holders = [module for module in ENGINE_MODULES if hasattr(module, name)]
    assert holders, f"no engine file has {name}"
    for module in holders:
        monkeypatch.setattr(module, name, value)


KiB = 1024


# ----------------------------------------------------------------------------------------------- helpers


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(root: Path) -> dict[str, tuple]:
    """Everything a user could notice about a directory: content, size, mtime and inode of every file."""
    if not root.exists():
        return {}
    state = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            st = path.stat()
            state[path.relative_to(root).as_posix()] = (sha256_of(path), st.st_size, st.st_mtime_ns, st.st_ino)
    return state


def leftovers(parent: Path) -> list[str]:
    """Temporary siblings the engine may create; none may survive a run."""
    return sorted(p.name for p in parent.iterdir() if ".staging-" in p.name or ".old-" in p.name)


def one_line(message: str) -> bool:
    return "\n" not in message and message.strip() == message and message != ""


@pytest.fixture()
def mistral(tmp_path: Path) -> dict:
    return mf.make_mistral_model(tmp_path / "src")


@pytest.fixture()
def hf(tmp_path: Path) -> dict:
    return mf.make_hf_model(tmp_path / "src", shards=3)


def touch_later(path: Path, seconds: int = 5) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 1_000_000_000))


# ----------------------------------------------------------------------------------------------- staging


def test_first_copy_mistral_is_identical_keeps_mtimes_and_reports_facts(tmp_path: Path, mistral: dict) -> None:
    src, dest = mistral["path"], tmp_path / "ram" / "mistral"
    # 64 KiB chunks: the 2.9 MB consolidated.safetensors is split across the 4 workers.
    result = ms.stage(src, dest, workers=4, chunk_bytes=64 * KiB)

    assert result["changed"] is True
    assert result["copied_files"] == ["consolidated.safetensors", "params.json", "tokenizer.model.v3"]
    total = sum((src / n).stat().st_size for n in mistral["files"])
    assert result["bytes_copied"] == total and result["throughput_bytes_per_s"] > 0
    for name in mistral["files"]:
        assert (dest / name).read_bytes() == (src / name).read_bytes()
        assert (dest / name).stat().st_mtime_ns == (src / name).stat().st_mtime_ns
    manifest = result["manifest"]
    assert json.loads((dest / ms.MANIFEST_NAME).read_text()) == manifest
    assert manifest["format"] == "mistral" and manifest["total_bytes"] == total
    assert [f["path"] for f in manifest["files"]] == mistral["files"]
    facts = manifest["facts"]
    params = mistral["params"]
    assert (facts["hidden_size"], facts["num_layers"], facts["vocab_size"]) == (
        params["dim"],
        params["n_layers"],
        params["vocab_size"],
    )
    assert (facts["num_attention_heads"], facts["num_kv_heads"], facts["head_dim"]) == (8, 4, 32)
    assert facts["dtype"] == "bfloat16" and facts["max_position_embeddings"] is None
    assert facts["parameter_count"] == mistral["parameter_count"]
    assert facts["tokenizer"] == "tokenizer.model.v3"
    assert leftovers(dest.parent) == []


def test_first_copy_sharded_hugging_face_model(tmp_path: Path, hf: dict) -> None:
    src, dest = hf["path"], tmp_path / "out" / "model"
    result = ms.stage(src, dest, workers=3, chunk_bytes=100_000)

    assert result["changed"] is True
    assert sorted(result["copied_files"]) == hf["files"]
    assert snapshot(dest).keys() == set(hf["files"]) | {ms.MANIFEST_NAME}
    for name in hf["files"]:
        assert sha256_of(dest / name) == sha256_of(src / name)
    facts = result["manifest"]["facts"]
    assert result["manifest"]["format"] == "huggingface"
    assert facts["weight_files"] == hf["weight_files"]
    assert facts["parameter_count"] == hf["parameter_count"]
    assert facts["max_position_embeddings"] == 32768 and facts["architecture"] == "MistralForCausalLM"
    assert facts["dtype"] == "bfloat16" and facts["config_dtype"] == "bfloat16"


def test_sha256_is_computed_during_the_copy_not_in_a_second_pass(
    tmp_path: Path, mistral: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    def second_pass(*_args, **_kwargs):
        raise AssertionError("stage re-read a file to hash it")

    patch_engine(monkeypatch, "_hash_file", second_pass)
    result = ms.stage(mistral["path"], tmp_path / "dest", workers=4, chunk_bytes=32 * KiB, sha256=True)

    recorded = {f["path"]: f["sha256"] for f in result["manifest"]["files"]}
    assert recorded == {n: sha256_of(mistral["path"] / n) for n in mistral["files"]}


def _forbid(name: str):
    def forbidden(*_args, **_kwargs):
        raise AssertionError(f"{name} must not be used here")

    return forbidden


@pytest.mark.parametrize(
    "fs, in_kernel, forbidden",
    [
        ("tmpfs", True, ["_copy_range"]),  # RAM volume: written through mmap
        ("ext4", True, ["_copy_range_mmap", "_thread_buffer"]),  # copy_file_range only
        ("ext4", False, ["_copy_range_mmap"]),  # pread/pwrite, as across file systems
    ],
)
def test_every_copy_path_makes_identical_copies(
    tmp_path: Path, hf: dict, monkeypatch: pytest.MonkeyPatch, fs: str, in_kernel: bool, forbidden: list[str]
) -> None:
    patch_engine(monkeypatch, "_fs_type", lambda _path: fs)
    patch_engine(monkeypatch, "_copy_file_range_ok", in_kernel and hasattr(os, "copy_file_range"))
    for name in forbidden:
        patch_engine(monkeypatch, name, _forbid(name))
    ms.stage(hf["path"], tmp_path / "dest", workers=4, chunk_bytes=48 * KiB)
    for name in hf["files"]:
        assert sha256_of(tmp_path / "dest" / name) == sha256_of(hf["path"] / name)


def test_unchanged_rerun_reads_and_writes_nothing(
    tmp_path: Path, mistral: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "dest"
    ms.stage(mistral["path"], dest, sha256=True)
    before = snapshot(dest)

    def must_not_run(*_args, **_kwargs):
        raise AssertionError("an unchanged model was read again")

    for name in ("read_safetensors_header", "_copy_files", "_hash_file", "_stage_into", "save_manifest"):
        patch_engine(monkeypatch, name, must_not_run)
    result = ms.stage(mistral["path"], dest, sha256=True)

    assert result["changed"] is False
    assert result["copied_files"] == [] and result["bytes_copied"] == 0
    assert result["manifest"]["facts"]["num_layers"] == 2
    assert snapshot(dest) == before  # same inodes, mtimes and content, manifest included
    assert leftovers(tmp_path) == []


def test_restage_when_sha256_is_asked_for_and_the_manifest_has_none(tmp_path: Path, mistral: dict) -> None:
    dest = tmp_path / "dest"
    ms.stage(mistral["path"], dest)
    result = ms.stage(mistral["path"], dest, sha256=True)
    assert result["changed"] is True
    assert all(f.get("sha256") for f in json.loads((dest / ms.MANIFEST_NAME).read_text())["files"])


def test_one_changed_file_is_copied_and_the_rest_reused(tmp_path: Path, mistral: dict) -> None:
    src, dest = mistral["path"], tmp_path / "dest"
    ms.stage(src, dest)
    weights_inode = (dest / "consolidated.safetensors").stat().st_ino
    (src / "tokenizer.model.v3").write_bytes(b"new tokenizer" * 100)

    result = ms.stage(src, dest)

    assert result["changed"] is True
    assert result["copied_files"] == ["tokenizer.model.v3"]
    assert result["reused_files"] == ["consolidated.safetensors", "params.json"]
    assert result["bytes_copied"] == 1300
    assert (dest / "tokenizer.model.v3").read_bytes() == b"new tokenizer" * 100
    assert (dest / "consolidated.safetensors").stat().st_ino == weights_inode  # hard-linked, not copied
    manifest = json.loads((dest / ms.MANIFEST_NAME).read_text())
    assert {f["path"]: f["size"] for f in manifest["files"]}["tokenizer.model.v3"] == 1300
    assert leftovers(tmp_path) == []


def test_file_gone_from_source_is_gone_from_dest(tmp_path: Path, hf: dict) -> None:
    dest = tmp_path / "dest"
    ms.stage(hf["path"], dest)
    (hf["path"] / "generation_config.json").unlink()
    result = ms.stage(hf["path"], dest)
    assert result["changed"] is True and result["removed_files"] == ["generation_config.json"]
    assert not (dest / "generation_config.json").exists()


def test_same_size_edit_with_new_mtime_is_restaged(tmp_path: Path, mistral: dict) -> None:
    src, dest = mistral["path"], tmp_path / "dest"
    ms.stage(src, dest)
    params = src / "params.json"
    params.write_text(params.read_text().replace('"norm_eps": 1e-05', '"norm_eps": 2e-05'))
    touch_later(params)
    result = ms.stage(src, dest)
    assert result["copied_files"] == ["params.json"]
    assert "2e-05" in (dest / "params.json").read_text()


def test_check_mode_reports_what_it_would_copy_and_writes_nothing(tmp_path: Path, mistral: dict) -> None:
    dest = tmp_path / "out" / "dest"
    result = ms.stage(mistral["path"], dest, check_mode=True)
    assert result["changed"] is True
    assert result["copied_files"] == mistral["files"]
    assert result["bytes_copied"] == sum((mistral["path"] / n).stat().st_size for n in mistral["files"])
    assert not (tmp_path / "out").exists()
    assert "consolidated.safetensors" in result["diff"]["after"] and result["diff"]["before"] == ""

    ms.stage(mistral["path"], dest)
    assert ms.stage(mistral["path"], dest, check_mode=True)["changed"] is False


def test_diff_lists_the_changed_file(tmp_path: Path, mistral: dict) -> None:
    src, dest = mistral["path"], tmp_path / "dest"
    ms.stage(src, dest)
    (src / "tokenizer.model.v3").write_bytes(b"x" * 10)
    diff = ms.stage(src, dest, check_mode=True)["diff"]
    changed_before = [line for line in diff["before"].splitlines() if line not in diff["after"].splitlines()]
    changed_after = [line for line in diff["after"].splitlines() if line not in diff["before"].splitlines()]
    assert [line.split()[0] for line in changed_before] == ["tokenizer.model.v3"]
    assert changed_after and changed_after[0].startswith("tokenizer.model.v3  size=10")


def test_progress_lines_are_readable(tmp_path: Path, mistral: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    patch_engine(monkeypatch, "PROGRESS_INTERVAL_S", 0.0)
    stream = io.StringIO()
    ms.stage(mistral["path"], tmp_path / "dest", workers=2, chunk_bytes=256 * KiB, progress=stream)
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 2
    assert all(re.fullmatch(r"stage: \d+\.\d/\d+\.\d MB \d+\.\d\d MB/s", line) for line in lines), lines
    assert lines[-1].startswith("stage: 2.9/2.9 MB")


def test_foreign_destination_is_not_replaced_without_force(tmp_path: Path, mistral: dict) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(ms.InvalidModelError) as caught:
        ms.stage(mistral["path"], dest)
    assert caught.value.problem == "foreign_dest" and str(dest) in str(caught.value)
    assert (dest / "notes.txt").read_text() == "mine"

    ms.stage(mistral["path"], dest, force=True)
    assert not (dest / "notes.txt").exists() and (dest / "params.json").exists()


def test_interrupted_run_leftovers_are_cleaned(tmp_path: Path, mistral: dict) -> None:
    stale = tmp_path / ".dest.staging-999999"
    stale.mkdir()
    (stale / "consolidated.safetensors").write_bytes(b"half")
    ms.stage(mistral["path"], tmp_path / "dest")
    assert leftovers(tmp_path) == []


# ----------------------------------------------------------------------------------------------- failures


def _truncate(src: Path) -> None:
    path = src / "consolidated.safetensors"
    os.truncate(path, path.stat().st_size - 1000)


def _trailing(src: Path) -> None:
    with open(src / "consolidated.safetensors", "ab") as handle:
        handle.write(b"\0" * 16)


def _bad_header(src: Path) -> None:
    with open(src / "consolidated.safetensors", "r+b") as handle:
        handle.seek(8)
        handle.write(b"not json at all")


def _overlap(src: Path) -> None:
    # Rewrite the header so that two tensors claim the same bytes (the header length stays the same).
    path = src / "consolidated.safetensors"
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    # wk and wv have the same shape, so only the overlap is wrong.
    header["layers.0.attention.wv.weight"]["data_offsets"] = list(
        header["layers.0.attention.wk.weight"]["data_offsets"]
    )
    text = json.dumps(header, separators=(",", ":")).encode()
    path.write_bytes(raw[:8] + text.ljust(n) + raw[8 + n :])


def _missing_params(src: Path) -> None:
    (src / "params.json").unlink()


def _bad_params(src: Path) -> None:
    params = json.loads((src / "params.json").read_text())
    params["n_layers"] = 0
    (src / "params.json").write_text(json.dumps(params))


def _missing_tokenizer(src: Path) -> None:
    (src / "tokenizer.model.v3").unlink()


def _unknown(src: Path) -> None:
    for path in src.iterdir():
        path.unlink()
    (src / "README.md").write_text("weights live elsewhere")


def _metadata_not_strings(src: Path) -> None:
    # safetensors reads __metadata__ as a map of string to string: a number in it makes the file unloadable.
    path = src / "consolidated.safetensors"
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = {"__metadata__": {"format": "pt", "step": 5}, **json.loads(raw[8 : 8 + n])}
    text = json.dumps(header, separators=(",", ":")).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])


def _deeply_nested_header(src: Path) -> None:
    # Valid JSON nested deeper than Python's parser recurses: before, the engine died with a RecursionError
    # traceback (exit 1, so the Job retried) instead of refusing the file (exit 2).
    path = src / "consolidated.safetensors"
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    text = b"[" * 100_000 + b"]" * 100_000
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])


MISTRAL_BREAKAGE = {
    "deeply nested header": (_deeply_nested_header, "corrupt", "consolidated.safetensors", "header is not valid JSON"),
    "truncated": (_truncate, "truncated", "consolidated.safetensors", "(1000 bytes missing)"),
    "trailing garbage": (_trailing, "corrupt", "consolidated.safetensors", "16 bytes of trailing data"),
    "header not json": (_bad_header, "corrupt", "consolidated.safetensors", "header is not valid JSON"),
    "overlapping tensors": (_overlap, "corrupt", "consolidated.safetensors", "overlaps the previous tensor"),
    "metadata not strings": (_metadata_not_strings, "corrupt", "consolidated.safetensors", "__metadata__ is not"),
    "missing params.json": (_missing_params, "missing_file", "params.json", "Mistral layout"),
    "params.json not sane": (_bad_params, "bad_config", "params.json", "n_layers must be a positive integer, got 0"),
    "missing tokenizer": (_missing_tokenizer, "missing_file", "tokenizer.model.v3", "needs a tokenizer"),
    "unknown layout": (_unknown, "unknown_format", "src", "found README.md"),
}


@pytest.mark.parametrize("case", list(MISTRAL_BREAKAGE))
def test_broken_source_fails_with_one_line_and_dest_is_unchanged(tmp_path: Path, mistral: dict, case: str) -> None:
    breakage, problem, named, says = MISTRAL_BREAKAGE[case]
    src, dest = mistral["path"], tmp_path / "dest"
    ms.stage(src, dest)  # a previous good copy that must survive
    before = snapshot(dest)
    breakage(src)

    with pytest.raises(ms.InvalidModelError) as caught:
        ms.stage(src, dest)

    err = caught.value
    assert err.problem == problem and err.details["problem"] == problem
    assert err.path.endswith(named) and one_line(str(err)) and str(err).startswith(str(src))
    assert says in str(err)
    assert err.exit_code == 2
    assert snapshot(dest) == before and leftovers(tmp_path) == []


def _shard_gone(src: Path) -> None:
    (src / "model-00002-of-00003.safetensors").unlink()


def _tensor_in_wrong_shard(src: Path) -> None:
    index_path = src / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["lm_head.weight"] = "model-00001-of-00003.safetensors"
    index_path.write_text(json.dumps(index))


def _index_gone(src: Path) -> None:
    (src / "model.safetensors.index.json").unlink()


def _config_gone(src: Path) -> None:
    (src / "config.json").unlink()


HF_BREAKAGE = {
    "shard missing from index": (
        _shard_gone,
        "shard_missing",
        "model-00002-of-00003.safetensors",
        "listed in model.safetensors.index.json",
    ),
    "tensor not in its shard": (
        _tensor_in_wrong_shard,
        "tensor_missing",
        "model-00001-of-00003.safetensors",
        "tensor 'lm_head.weight' listed in model.safetensors.index.json is not in this shard",
    ),
    "missing config.json": (_config_gone, "missing_file", "config.json", "needs config.json"),
}


@pytest.mark.parametrize("case", list(HF_BREAKAGE))
def test_broken_sharded_model_fails_and_dest_is_unchanged(tmp_path: Path, hf: dict, case: str) -> None:
    breakage, problem, named, says = HF_BREAKAGE[case]
    dest = tmp_path / "dest"
    ms.stage(hf["path"], dest)
    before = snapshot(dest)
    breakage(hf["path"])
    with pytest.raises(ms.InvalidModelError) as caught:
        ms.stage(hf["path"], dest)
    assert caught.value.problem == problem and caught.value.path.endswith(named)
    assert one_line(str(caught.value)) and says in str(caught.value)
    assert snapshot(dest) == before and leftovers(tmp_path) == []


def test_bad_sha256_fails_after_copying_and_dest_is_unchanged(tmp_path: Path, mistral: dict) -> None:
    src, dest = mistral["path"], tmp_path / "dest"
    ms.stage(src, dest)
    before = snapshot(dest)
    wrong = {"consolidated.safetensors": "0" * 64, "params.json": sha256_of(src / "params.json")}

    with pytest.raises(ms.InvalidModelError) as caught:
        ms.stage(src, dest, expected_sha256=wrong, chunk_bytes=64 * KiB)

    err = caught.value
    assert err.problem == "sha256_mismatch" and err.path == str(src / "consolidated.safetensors")
    assert err.details["expected_sha256"] == "0" * 64
    assert err.details["actual_sha256"] == sha256_of(src / "consolidated.safetensors")
    assert snapshot(dest) == before and leftovers(tmp_path) == []


def test_bit_rot_caught_against_the_sources_own_manifest(tmp_path: Path, mistral: dict) -> None:
    """A file that changed content but kept size and mtime (bit rot, a bad write) fails sha256 staging."""
    src = mistral["path"]
    ms.verify(src, sha256=True, write_manifest=True)
    weights = src / "consolidated.safetensors"
    st = weights.stat()
    with open(weights, "r+b") as handle:
        handle.seek(st.st_size - 10)
        handle.write(b"\xff" * 4)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))

    with pytest.raises(ms.InvalidModelError) as caught:
        ms.stage(src, tmp_path / "dest", sha256=True)
    assert caught.value.problem == "sha256_mismatch" and caught.value.path == str(weights)
    assert not (tmp_path / "dest").exists() and leftovers(tmp_path) == []
    with pytest.raises(ms.InvalidModelError, match="sha256 mismatch"):
        ms.verify(src, sha256=True)


def test_sha256_for_a_file_not_in_the_model_is_refused(tmp_path: Path, mistral: dict) -> None:
    with pytest.raises(ms.InvalidModelError) as caught:
        ms.stage(mistral["path"], tmp_path / "dest", expected_sha256={"model.bin": "a" * 64})
    assert caught.value.problem == "missing_file" and caught.value.path.endswith("model.bin")


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(ms.InvalidModelError) as caught:
        ms.stage(tmp_path / "nope", tmp_path / "dest")
    assert caught.value.problem == "source_missing" and caught.value.path == str(tmp_path / "nope")
    assert not (tmp_path / "dest").exists()


def test_destination_inside_source_is_refused(mistral: dict) -> None:
    with pytest.raises(ms.InvalidModelError, match="overlaps the source"):
        ms.stage(mistral["path"], mistral["path"] / "copy")


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str):
    """Mount a tmpfs of ``size`` at path (root only); yields False where mounting is not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    mount = shutil.which("mount")
    if os.geteuid() != 0 or not mount:
        yield False
        return
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=False, capture_output=True
    )
    if done.returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_destination_too_small_is_refused_before_copying(tmp_path: Path, mistral: dict, monkeypatch) -> None:
    with small_tmpfs(tmp_path / "ram", "2m") as mounted:
        if not mounted:  # fall back to the free-space probe
            patch_engine(monkeypatch, "_free_bytes", lambda _path: 1_000_000)
        dest = tmp_path / "ram" / "model"
        small = mf.make_mistral_model(tmp_path / "small", dim=64, hidden_dim=128, vocab_size=128)
        ms.stage(small["path"], dest)  # a previous good copy that must survive
        before = snapshot(dest)

        with pytest.raises(ms.ModelStageError) as caught:
            ms.stage(mistral["path"], dest, workers=2)

        err = caught.value
        assert err.problem == "no_space" and err.exit_code == 1
        assert err.path == str(dest.parent) and "destination too small" in str(err) and one_line(str(err))
        assert err.details["needed_bytes"] > err.details["free_bytes"]
        assert snapshot(dest) == before and leftovers(dest.parent) == []


def test_disk_full_during_the_copy_leaves_dest_unchanged(tmp_path: Path, mistral: dict, monkeypatch) -> None:
    with small_tmpfs(tmp_path / "ram", "2m") as mounted:
        if not mounted:
            pytest.skip("needs root and mount -t tmpfs to fill a real file system")
        dest = tmp_path / "ram" / "model"
        small = mf.make_mistral_model(tmp_path / "small", dim=64, hidden_dim=128, vocab_size=128)
        ms.stage(small["path"], dest)
        before = snapshot(dest)
        free_before = shutil.disk_usage(dest.parent).free
        patch_engine(monkeypatch, "_free_bytes", lambda _path: 10**12)  # the probe is fooled; the writes are not

        with pytest.raises(ms.ModelStageError) as caught:
            ms.stage(mistral["path"], dest, workers=2, chunk_bytes=128 * KiB)

        assert caught.value.problem == "no_space" and ".staging-" in caught.value.path
        assert one_line(str(caught.value))
        assert snapshot(dest) == before and leftovers(dest.parent) == []
        assert shutil.disk_usage(dest.parent).free == free_before  # the partial copy is gone


def test_required_free_bytes_margin_counts(tmp_path: Path, mistral: dict) -> None:
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(ms.ModelStageError) as caught:
        ms.stage(mistral["path"], tmp_path / "dest", required_free_bytes=free)
    assert caught.value.problem == "no_space" and not (tmp_path / "dest").exists()


def _python_for(uid: int) -> str | None:
    """An interpreter the given user may run (the venv's may live under a private home directory)."""
    for candidate in (sys.executable, "/usr/bin/python3", shutil.which("python3")):
        if not candidate:
            continue
        try:
            probe = subprocess.run(
                [candidate, "-c", "pass"],
                check=False,
                preexec_fn=lambda: (os.setgid(uid), os.setuid(uid)),
                capture_output=True,
            )
        except OSError:
            continue
        if probe.returncode == 0:
            return candidate
    return None


def test_permission_denied_names_the_file_and_changes_nothing(tmp_path: Path) -> None:
    """Root ignores file modes, so as root the engine's CLI runs as nobody; otherwise in-process."""
    nobody = 65534
    base = Path(tempfile.mkdtemp(prefix="stage-perm-", dir="/tmp"))
    try:
        base.chmod(0o755)
        src = mf.make_mistral_model(base / "src")["path"]
        engine = base / "model_stage"
        shutil.copytree(ENGINE, engine, ignore=shutil.ignore_patterns("__pycache__"))
        locked_parent = base / "locked"  # not writable for the unprivileged user
        locked_parent.mkdir(mode=0o755)
        open_parent = base / "open"
        open_parent.mkdir()
        open_parent.chmod(0o777)
        dest = open_parent / "model"
        ms.stage(src, dest)
        before = snapshot(dest)
        os.chmod(src / "consolidated.safetensors", 0o600)
        touch_later(src / "consolidated.safetensors")  # so the unchanged shortcut does not apply

        if os.geteuid() == 0:
            python = _python_for(nobody)
            if python is None:
                pytest.skip("no Python interpreter that user nobody may run")

            def run_as_nobody(*args: str) -> subprocess.CompletedProcess:
                return subprocess.run(
                    [python, "-I", str(engine), *args, "--quiet"],
                    check=False,
                    preexec_fn=lambda: (os.setgid(nobody), os.setuid(nobody)),
                    capture_output=True,
                    text=True,
                    cwd="/",
                )

            unreadable = run_as_nobody("stage", "--src", str(src), "--dest", str(dest))
            os.chmod(src / "consolidated.safetensors", 0o644)
            unwritable = run_as_nobody("stage", "--src", str(src), "--dest", str(locked_parent / "model"))
            results = [(unreadable.returncode, unreadable.stderr), (unwritable.returncode, unwritable.stderr)]
        else:  # pragma: no cover - unprivileged runs
            results = []
            for target in (dest, locked_parent / "model"):
                locked_parent.chmod(0o555)
                try:
                    ms.stage(src, target)
                    results.append((0, ""))
                except ms.ModelStageError as err:
                    results.append((err.exit_code, f"error: {err}\n"))
                os.chmod(src / "consolidated.safetensors", 0o644)

        (code_read, err_read), (code_write, err_write) = results
        assert code_read == 1 and err_read.count("\n") == 1
        assert err_read.startswith(f"error: {src / 'consolidated.safetensors'}: permission denied")
        assert code_write == 1 and err_write.count("\n") == 1
        assert err_write.startswith(f"error: {locked_parent}/.model.staging-") and "permission denied" in err_write
        assert snapshot(dest) == before and leftovers(open_parent) == [] and list(locked_parent.iterdir()) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- verify


def test_verify_in_place_writes_the_manifest_once(mistral: dict) -> None:
    src = mistral["path"]
    first = ms.verify(src, write_manifest=True, sha256=True)
    assert first["changed"] is True and (src / ms.MANIFEST_NAME).exists()
    manifest_mtime = (src / ms.MANIFEST_NAME).stat().st_mtime_ns
    assert {f["path"]: f["sha256"] for f in first["manifest"]["files"]} == {
        n: sha256_of(src / n) for n in mistral["files"]
    }

    second = ms.verify(src, write_manifest=True)  # hashes carry over for unchanged files
    assert second["changed"] is False and (src / ms.MANIFEST_NAME).stat().st_mtime_ns == manifest_mtime

    (src / "tokenizer.model.v3").write_bytes(b"other")
    third = ms.verify(src, write_manifest=True, check_mode=True)
    assert third["changed"] is True and (src / ms.MANIFEST_NAME).stat().st_mtime_ns == manifest_mtime


def test_verify_without_writing_changes_nothing(hf: dict) -> None:
    before = snapshot(hf["path"])
    result = ms.verify(hf["path"])
    assert result["changed"] is False and result["manifest"]["format"] == "huggingface"
    assert snapshot(hf["path"]) == before


def test_model_with_both_layouts_is_mistral_and_both_are_checked(tmp_path: Path) -> None:
    root = tmp_path / "both"
    mf.make_hf_model(root, shards=2)
    mf.make_mistral_model(root)
    manifest = ms.inspect_model(root)
    assert manifest["format"] == "mistral" and manifest["layouts"] == ["mistral", "huggingface"]
    assert manifest["facts"]["weight_files"] == ["consolidated.safetensors"]
    _shard_gone_two = root / "model-00002-of-00002.safetensors"
    _shard_gone_two.unlink()
    with pytest.raises(ms.InvalidModelError) as caught:
        ms.inspect_model(root)
    assert caught.value.problem == "shard_missing"


# ----------------------------------------------------------------------------------------------- safetensors


def test_parser_agrees_with_the_safetensors_library(tmp_path: Path) -> None:
    safetensors = pytest.importorskip("safetensors")
    pytest.importorskip("numpy")
    tensors = mf.mistral_tensors(**{**mf.SMALL, "n_layers": 1})
    written_by_library = tmp_path / "lib.safetensors"
    mf.write_safetensors_numpy(written_by_library, tensors)
    ours = ms.read_safetensors_header(written_by_library)
    with safetensors.safe_open(str(written_by_library), "np") as handle:
        assert set(handle.keys()) == set(ours["tensors"])
        for name in handle.keys():
            assert list(handle.get_slice(name).get_shape()) == ours["tensors"][name]["shape"]
    assert ours["parameters"] == mf.parameter_count(tensors)

    written_by_factory = tmp_path / "factory.safetensors"
    mf.write_safetensors(written_by_factory, tensors, metadata={"format": "pt"})
    with safetensors.safe_open(str(written_by_factory), "np") as handle:
        assert handle.metadata() == {"format": "pt"}
        # numpy has no bfloat16, so compare shapes through slices rather than loading the data
        assert handle.get_slice("norm.weight").get_shape() == [mf.SMALL["dim"]]
        assert handle.get_slice("norm.weight").get_dtype() == "BF16"
    assert ms.read_safetensors_header(written_by_factory)["metadata"] == {"format": "pt"}

    os.truncate(written_by_library, written_by_library.stat().st_size - 2)
    with pytest.raises(ms.InvalidModelError, match="truncated"):
        ms.read_safetensors_header(written_by_library)


def test_tensor_extent_must_match_shape_and_dtype(tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 20)
    with pytest.raises(ms.InvalidModelError, match=r"F32\[2, 3\] \(24 bytes\) but its data_offsets span 20 bytes"):
        ms.read_safetensors_header(path)


def test_shorter_than_the_length_prefix_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(b"\x01\x02")
    with pytest.raises(ms.InvalidModelError) as caught:
        ms.read_safetensors_header(path)
    assert caught.value.problem == "truncated"


def write_header_file(path: Path, header: dict, data: bytes, pad_to: int | None = None) -> Path:
    raw = json.dumps(header).encode()
    raw += b" " * ((pad_to or len(raw)) - len(raw))
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


# safetensors 0.8.0's Dtype enum with Dtype::bitsize (safetensors/src/tensor.rs:811-892).
SAFETENSORS_DTYPES = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
    "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}  # fmt: skip


def test_every_dtype_safetensors_reads_is_accepted(tmp_path: Path) -> None:
    header, offset = {}, 0
    for dtype, bits in SAFETENSORS_DTYPES.items():
        size = 8 * bits // 8  # 8 elements: a whole number of bytes for the 4- and 6-bit types too
        header[f"t.{dtype}"] = {"dtype": dtype, "shape": [2, 4], "data_offsets": [offset, offset + size]}
        offset += size
    path = write_header_file(tmp_path / "all.safetensors", header, bytes(offset))
    ours = ms.read_safetensors_header(path)
    assert {t["dtype"] for t in ours["tensors"].values()} == set(SAFETENSORS_DTYPES)
    assert ours["parameters"] == 8 * len(SAFETENSORS_DTYPES)
    odd = write_header_file(
        tmp_path / "odd.safetensors", {"w": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}}, b"ab"
    )
    with pytest.raises(ms.InvalidModelError, match=r"F4\[3\] \(1.5 bytes\)"):  # the library: MisalignedSlice
        ms.read_safetensors_header(odd)

    safetensors = pytest.importorskip("safetensors")
    assert len(safetensors.deserialize(path.read_bytes())) == len(SAFETENSORS_DTYPES)
    with pytest.raises(Exception, match="unknown variant") as caught:  # the library's own list of names
        safetensors.deserialize(
            write_header_file(
                tmp_path / "x", {"w": {"dtype": "E8M0", "shape": [], "data_offsets": [0, 1]}}, b"a"
            ).read_bytes()
        )
    assert set(re.findall(r"`(\w+)`", str(caught.value).split("expected one of", 1)[1])) == set(ms.DTYPE_BITS)


def test_fp8_fnuz_model_stages_with_its_dtype(tmp_path: Path) -> None:
    """ROCm's FP8 checkpoints (float8_e4m3fnuz) are valid safetensors, not corrupt files."""
    model = mf.make_mistral_model(tmp_path / "src", dtype="F8_E4M3FNUZ")
    result = ms.stage(model["path"], tmp_path / "dest")
    facts = result["manifest"]["facts"]
    assert facts["dtype"] == "float8_e4m3fnuz" and facts["parameter_count"] == model["parameter_count"]


@pytest.mark.parametrize("length, problem", [(100_000_000, None), (100_000_001, "corrupt")])
def test_header_limit_is_the_librarys(tmp_path: Path, length: int, problem: str | None) -> None:
    """safetensors refuses a header above 100,000,000 bytes (MAX_HEADER_SIZE), not 100 MiB."""
    path = write_header_file(
        tmp_path / "big.safetensors", {"w": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}, b"ab", length
    )
    if problem is None:
        assert ms.read_safetensors_header(path)["header_bytes"] == length
    else:
        with pytest.raises(ms.InvalidModelError) as caught:
            ms.read_safetensors_header(path)
        assert caught.value.problem == problem and one_line(str(caught.value)) and str(path) in str(caught.value)
    safetensors = pytest.importorskip("safetensors")
    with contextlib.ExitStack() as stack:
        if problem:
            stack.enter_context(pytest.raises(Exception, match="header too large"))
        safetensors.safe_open(str(path), "np")


def test_metadata_must_be_strings_as_the_library_reads_it(tmp_path: Path) -> None:
    tensor = {"w": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}
    fine = write_header_file(tmp_path / "ok.safetensors", {"__metadata__": {"format": "pt"}, **tensor}, b"ab")
    none = write_header_file(tmp_path / "null.safetensors", {"__metadata__": None, **tensor}, b"ab")
    bad = write_header_file(
        tmp_path / "bad.safetensors", {"__metadata__": {"format": "pt", "step": 5}, **tensor}, b"ab"
    )
    assert ms.read_safetensors_header(fine)["metadata"] == {"format": "pt"}
    assert ms.read_safetensors_header(none)["metadata"] is None
    with pytest.raises(ms.InvalidModelError) as caught:
        ms.read_safetensors_header(bad)
    assert caught.value.problem == "corrupt" and str(caught.value).startswith(f"{bad}: corrupt: __metadata__")
    safetensors = pytest.importorskip("safetensors")
    assert len(safetensors.deserialize(fine.read_bytes())) == len(safetensors.deserialize(none.read_bytes())) == 1
    with pytest.raises(Exception, match="expected a string"):
        safetensors.deserialize(bad.read_bytes())


# --------------------------------------------------------------------------------------------- layout facts

WORKSHOP_EXTRAS = ["config.json", "generation_config.json", "special_tokens_map.json", "tokenizer_config.json"]


@pytest.mark.parametrize(
    "tokenizers, tokenizer, mistral_tokenizer",
    [
        # the workshop's Mistral-7B-Instruct-v0.3 download: both layouts' files, weights only consolidated
        (["tokenizer.model.v3", "tokenizer.json", "tokenizer.model"], "tokenizer.model.v3", "tokenizer.model.v3"),
        (["tokenizer.model"], "tokenizer.model", None),  # only newer releases load it (mistral_common)
        (["tekken.json"], "tekken.json", "tekken.json"),
        (["tokenizer.mm.model.v1"], None, "tokenizer.mm.model.v1"),
        (["tokenizer.model.v3", "tekken.json"], "tokenizer.model.v3", None),  # vLLM 0.9 refuses two
    ],
)
def test_mistral_layout_reports_the_tokenizer_vllm_loads(
    tmp_path: Path, tokenizers: list[str], tokenizer: str | None, mistral_tokenizer: str | None
) -> None:
    root = mf.make_mistral_model(tmp_path / "m")["path"]
    (root / "tokenizer.model.v3").unlink()
    for name in tokenizers + (WORKSHOP_EXTRAS if "tokenizer.json" in tokenizers else []):
        (root / name).write_text("{}" if name.endswith(".json") else "spm")
    manifest = ms.inspect_model(root)
    assert manifest["format"] == "mistral" and manifest["layouts"] == ["mistral"]
    assert manifest["facts"]["tokenizer"] == tokenizer
    assert manifest["facts"]["mistral_tokenizer"] == mistral_tokenizer


@pytest.mark.parametrize(
    "rope_scaling, fact",
    [
        (None, None),
        (
            {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768, "beta_fast": 32},
            {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},
        ),
        ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0}, {"rope_type": "llama3", "factor": 8.0}),
    ],
)
def test_hugging_face_facts_carry_rope_scaling(tmp_path: Path, rope_scaling: dict | None, fact: dict | None) -> None:
    root = mf.make_hf_model(tmp_path / "m", shards=1)["path"]
    config = json.loads((root / "config.json").read_text())
    if rope_scaling:
        config["rope_scaling"] = rope_scaling
    (root / "config.json").write_text(json.dumps(config))
    assert ms.inspect_model(root)["facts"]["rope_scaling"] == fact


# ----------------------------------------------------------------------------------------------- inputs


def test_expected_sha256_from_sha256sum_json_and_manifest(tmp_path: Path, mistral: dict) -> None:
    digest = sha256_of(mistral["path"] / "params.json")
    (tmp_path / "sums.txt").write_text(f"{digest}  params.json\n{'a' * 64} *./tokenizer.model.v3\n")
    (tmp_path / "sums.json").write_text(json.dumps({"params.json": digest.upper()}))
    ms.verify(mistral["path"], sha256=True, write_manifest=True)
    assert ms.load_expected_sha256(tmp_path / "sums.txt") == {"params.json": digest, "tokenizer.model.v3": "a" * 64}
    assert ms.load_expected_sha256(str(tmp_path / "sums.json")) == {"params.json": digest}
    from_manifest = ms.load_expected_sha256(mistral["path"] / ms.MANIFEST_NAME)
    assert from_manifest["params.json"] == digest and len(from_manifest) == 3
    with pytest.raises(ms.InvalidModelError, match="not 64 hex digits"):
        ms.load_expected_sha256({"params.json": "abc"})


# ----------------------------------------------------------------------------------------------- CLI


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    # -I -S: isolated, without site-packages: the file must run on a bare Python's standard library.
    return subprocess.run(
        [sys.executable, "-I", "-S", str(ENGINE), *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_engine_imports_only_the_standard_library() -> None:
    imported = set()
    nodes = [node for path in ENGINE.glob("*.py") for node in ast.walk(ast.parse(path.read_text()))]
    for node in nodes:
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert imported - set(sys.stdlib_module_names) - {"__future__"} == set()


def test_cli_stage_prints_the_manifest_last_and_exits_0(tmp_path: Path, mistral: dict) -> None:
    dest = tmp_path / "ram" / "model"
    done = run_cli("stage", "--src", str(mistral["path"]), "--dest", str(dest), "--workers", "3", "--sha256")
    assert done.returncode == 0, done.stderr
    last = done.stdout.splitlines()[-1]
    assert last.startswith("MANIFEST ")
    assert json.loads(last[len("MANIFEST ") :]) == json.loads((dest / ms.MANIFEST_NAME).read_text())
    assert f"stage: {dest} ready: copied 3 files" in done.stderr

    again = run_cli("stage", "--src", str(mistral["path"]), "--dest", str(dest), "--sha256")
    assert again.returncode == 0 and "already holds a verified copy" in again.stderr
    assert again.stdout.splitlines()[-1] == last


def test_cli_invalid_model_exits_2_with_one_error_line(tmp_path: Path, mistral: dict) -> None:
    _truncate(mistral["path"])
    done = run_cli("verify", "--path", str(mistral["path"]))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
    assert "consolidated.safetensors: truncated" in done.stderr and done.stdout == ""


def test_cli_deeply_nested_header_exits_2_with_one_error_line(mistral: dict) -> None:
    _deeply_nested_header(mistral["path"])
    done = run_cli("verify", "--path", str(mistral["path"]))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "consolidated.safetensors: corrupt: the safetensors header is not valid JSON" in done.stderr


def test_cli_other_failure_exits_1(tmp_path: Path, mistral: dict) -> None:
    done = run_cli(
        "stage", "--src", str(mistral["path"]), "--dest", str(tmp_path / "d"), "--required-free-bytes", str(10**18)
    )
    assert done.returncode == 1 and done.stderr.startswith("error: ") and "destination too small" in done.stderr


def test_cli_verify_write_manifest(mistral: dict) -> None:
    done = run_cli("verify", "--path", str(mistral["path"]), "--write-manifest", "--sha256")
    assert done.returncode == 0
    manifest = json.loads(done.stdout.splitlines()[-1][len("MANIFEST ") :])
    assert manifest == json.loads((mistral["path"] / ms.MANIFEST_NAME).read_text())
    assert "verify: " in done.stderr and "mistral layout, 3 files" in done.stderr


# ----------------------------------------------------------------------------------------------- download


@pytest.fixture()
def hub(httpserver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    patch_engine(monkeypatch, "HTTP_RETRY_BASE_S", 0.0)
    model = mf.make_mistral_model(tmp_path / "upstream")
    files = {name: (model["path"] / name).read_bytes() for name in model["files"]}
    return FakeHub(httpserver, "mistralai/Tiny-Instruct", files)


def test_download_lands_files_verified_and_writes_the_manifest_last(tmp_path: Path, hub: FakeHub) -> None:
    landed: list[str] = []
    order: list[bool] = []

    def announce(name: str) -> None:
        landed.append(name)
        order.append((tmp_path / "models" / ms.MANIFEST_NAME).exists())

    result = ms.download(
        "mistralai/Tiny-Instruct", "main", tmp_path / "models", endpoint=hub.endpoint, announce=announce
    )

    dest = tmp_path / "models"
    assert result["changed"] is True and landed == sorted(hub.files)
    assert order == [False, False, False]  # no manifest while files are still landing
    for name, data in hub.files.items():
        assert (dest / name).read_bytes() == data
    manifest = json.loads((dest / ms.MANIFEST_NAME).read_text())
    assert {f["path"]: f["sha256"] for f in manifest["files"]} == {
        n: hashlib.sha256(d).hexdigest() for n, d in hub.files.items()
    }
    assert manifest["source"]["commit"] == hub.refs["main"] and manifest["source"]["revision"] == "main"
    assert manifest["format"] == "mistral" and manifest["facts"]["num_layers"] == 2
    assert not (dest / ms.PARTIAL_DIR).exists()


@pytest.mark.parametrize("by_commit", [False, True], ids=["branch", "commit"])
def test_download_of_a_complete_model_downloads_nothing(tmp_path: Path, hub: FakeHub, by_commit: bool) -> None:
    """A branch is resolved with the one listing request; a commit sha names the same files forever: none."""
    revision = hub.refs["main"] if by_commit else "main"
    ms.download("mistralai/Tiny-Instruct", revision, tmp_path / "m", endpoint=hub.endpoint)
    before = snapshot(tmp_path / "m")
    hub.requests.clear()
    result = ms.download("mistralai/Tiny-Instruct", revision, tmp_path / "m", endpoint=hub.endpoint)
    assert result["changed"] is False and result["downloaded_files"] == []
    assert hub.requests == ([] if by_commit else [("/api/models/mistralai/Tiny-Instruct/revision/main", None)])
    assert snapshot(tmp_path / "m") == before


def test_download_resumes_an_existing_partial_file_with_range(tmp_path: Path, hub: FakeHub) -> None:
    dest = tmp_path / "m"
    data = hub.files["consolidated.safetensors"]
    (dest / ms.PARTIAL_DIR).mkdir(parents=True)
    (dest / ms.PARTIAL_DIR / "consolidated.safetensors").write_bytes(data[: 1024 * 1024])

    ms.download("mistralai/Tiny-Instruct", "main", dest, endpoint=hub.endpoint)

    assert (dest / "consolidated.safetensors").read_bytes() == data
    resolve = f"/mistralai/Tiny-Instruct/resolve/{hub.refs['main']}/consolidated.safetensors"
    assert (resolve, "bytes=1048576-") in hub.requests
    assert hub.served["consolidated.safetensors"] == len(data) - 1024 * 1024


def test_download_resumes_after_the_connection_ends_early(tmp_path: Path, hub: FakeHub) -> None:
    hub.truncate_once.add("consolidated.safetensors")
    ms.download("mistralai/Tiny-Instruct", "main", tmp_path / "m", endpoint=hub.endpoint)
    data = hub.files["consolidated.safetensors"]
    assert (tmp_path / "m" / "consolidated.safetensors").read_bytes() == data
    ranges = [r for p, r in hub.requests if p.endswith("/consolidated.safetensors")]
    assert ranges == [None, f"bytes={len(data) // 3}-"]


def test_download_sha256_mismatch_keeps_nothing(tmp_path: Path, hub: FakeHub) -> None:
    hub.corrupt.add("consolidated.safetensors")
    with pytest.raises(ms.InvalidModelError) as caught:
        ms.download("mistralai/Tiny-Instruct", "main", tmp_path / "m", endpoint=hub.endpoint)
    err = caught.value
    assert err.problem == "sha256_mismatch" and err.path == str(tmp_path / "m" / "consolidated.safetensors")
    assert one_line(str(err))
    assert not (tmp_path / "m" / "consolidated.safetensors").exists()
    assert not (tmp_path / "m" / ms.MANIFEST_NAME).exists()
    assert not (tmp_path / "m" / ms.PARTIAL_DIR / "consolidated.safetensors").exists()


def test_download_selects_files_and_refuses_unknown_names(tmp_path: Path, hub: FakeHub) -> None:
    hub.files["README.md"] = b"# tiny"
    wanted = ["*.safetensors", "params.json", "tokenizer.model.v3"]
    result = ms.download("mistralai/Tiny-Instruct", "main", tmp_path / "m", wanted, endpoint=hub.endpoint)
    assert sorted(result["downloaded_files"]) == ["consolidated.safetensors", "params.json", "tokenizer.model.v3"]
    assert not (tmp_path / "m" / "README.md").exists()
    with pytest.raises(ms.InvalidModelError, match="nope.bin: not in mistralai/Tiny-Instruct@main"):
        ms.download("mistralai/Tiny-Instruct", "main", tmp_path / "n", ["nope.bin"], endpoint=hub.endpoint)


def test_download_cli_401_is_one_line_and_never_shows_the_token(
    tmp_path: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.token = "hf_right_token"
    monkeypatch.setenv("HF_TOKEN", "hf_wrong_token_123")
    out, err = io.StringIO(), io.StringIO()
    args = ["download", "--repo", "mistralai/Tiny-Instruct", "--dest", str(tmp_path / "m"), "--endpoint", hub.endpoint]
    code = ms.main(args, stdout=out, stderr=err)
    assert code == 2 and out.getvalue() == ""
    assert err.getvalue().count("\n") == 1 and err.getvalue().startswith("error: ")
    assert "HTTP 401" in err.getvalue() and "$HF_TOKEN is missing or invalid" in err.getvalue()
    assert "gated" in err.getvalue() and "hf_wrong_token_123" not in err.getvalue()


def test_download_cli_with_token_lists_files_then_manifest(
    tmp_path: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.token = "hf_right_token"
    monkeypatch.setenv("MY_TOKEN", "hf_right_token")
    out, err = io.StringIO(), io.StringIO()
    args = [
        "download", "--repo", "mistralai/Tiny-Instruct", "--revision", "main", "--dest", str(tmp_path / "m"),
        "--files", "consolidated.safetensors,params.json,tokenizer.model.v3", "--token-env", "MY_TOKEN",
        "--endpoint", hub.endpoint,
    ]  # fmt: skip
    code = ms.main(args, stdout=out, stderr=err)
    lines = out.getvalue().splitlines()
    assert code == 0, err.getvalue()
    assert lines[:-1] == ["consolidated.safetensors", "params.json", "tokenizer.model.v3"]
    assert json.loads(lines[-1][len("MANIFEST ") :])["source"]["repo"] == "mistralai/Tiny-Instruct"
    assert "hf_right_token" not in out.getvalue() + err.getvalue()


def test_download_pins_the_commit_while_the_branch_moves(
    tmp_path: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """main moves after the first file: the download still lands one commit; the next run fetches what changed."""
    repo, dest = "mistralai/Tiny-Instruct", tmp_path / "m"
    first, old = hub.refs["main"], dict(hub.files)
    params = json.loads(old["params.json"])
    new = dict(
        old, **{"params.json": json.dumps(dict(params, rope_theta=2e6)).encode(), "tokenizer.model.v3": b"v" * 99}
    )
    hub.after_file = lambda _name: hub.refs["main"] == first and hub.commit(new, "main")

    result = ms.download(repo, "main", dest, endpoint=hub.endpoint)

    second = hub.refs["main"]
    assert second != first and result["changed"] is True
    assert {n: (dest / n).read_bytes() for n in old} == old  # all of the first commit, none of the second
    assert result["manifest"]["source"]["commit"] == first and result["manifest"]["source"]["revision"] == "main"

    hub.after_file = None
    hub.requests.clear()
    hashed: list[str] = []
    patch_engine(monkeypatch, "_file_digests", lambda path, git: hashed.append(path.name) or ("0" * 64, "0" * 40))
    again = ms.download(repo, "main", dest, endpoint=hub.endpoint)

    assert sorted(again["downloaded_files"]) == ["params.json", "tokenizer.model.v3"]
    assert {n: (dest / n).read_bytes() for n in new} == new
    assert again["manifest"]["source"]["commit"] == second
    assert "consolidated.safetensors" not in hashed  # the unchanged weights are not read again
    assert [p for p, _r in hub.requests if "/resolve/" in p] == [
        f"/{repo}/resolve/{second}/params.json",
        f"/{repo}/resolve/{second}/tokenizer.model.v3",
    ]


def test_download_keeps_a_complete_copy_when_the_hub_is_down(tmp_path: Path, hub: FakeHub) -> None:
    ms.download("mistralai/Tiny-Instruct", "main", tmp_path / "m", endpoint=hub.endpoint)
    before = snapshot(tmp_path / "m")
    hub.down = True
    log = io.StringIO()
    result = ms.download("mistralai/Tiny-Instruct", "main", tmp_path / "m", endpoint=hub.endpoint, progress=log)
    assert result["changed"] is False and snapshot(tmp_path / "m") == before
    assert "HTTP 503" in log.getvalue() and f"keeping the verified copy of main ({hub.refs['main']})" in log.getvalue()
    with pytest.raises(ms.ModelStageError, match="HTTP 503"):
        ms.download("mistralai/Tiny-Instruct", "main", tmp_path / "empty", endpoint=hub.endpoint)


def test_download_follows_a_renamed_gated_repo_with_the_token(tmp_path: Path, hub: FakeHub) -> None:
    hub.token = "hf_right_token"
    hub.renamed["mistralai/Tiny-Instruct-Old"] = hub.repo
    result = ms.download(
        "mistralai/Tiny-Instruct-Old", "main", tmp_path / "m", token="hf_right_token", endpoint=hub.endpoint
    )
    assert result["changed"] is True
    assert {n: (tmp_path / "m" / n).read_bytes() for n in hub.files} == hub.files
    assert hub.requests[0][0] == "/api/models/mistralai/Tiny-Instruct-Old/revision/main"
    assert set(hub.tokens_seen) == {("localhost", "Bearer hf_right_token")}  # every hop, the redirected ones too


def test_download_never_sends_the_token_to_the_cdn(tmp_path: Path, hub: FakeHub) -> None:
    hub.token = "hf_right_token"
    hub.cdn = True
    ms.download("mistralai/Tiny-Instruct", "main", tmp_path / "m", token="hf_right_token", endpoint=hub.endpoint)
    assert {n: (tmp_path / "m" / n).read_bytes() for n in hub.files} == hub.files
    cdn = [auth for host, auth in hub.tokens_seen if host == "127.0.0.1"]
    assert len(cdn) == 2 and cdn == [None, None]  # consolidated.safetensors and tokenizer.model.v3, from the CDN
    assert all(auth == "Bearer hf_right_token" for host, auth in hub.tokens_seen if host == "localhost")
