#!/usr/bin/env python3
"""Staging benchmark: `cp -r` (what the seed's init container runs) against the staging engine, in one run.

Builds a synthetic model of --size-gb with real safetensors headers (Mistral layout: one big
consolidated.safetensors, the hard case for a copier), then times, per repetition and in alternating order:

- warm cache: the source is in the page cache (read once beforehand);
- cold cache: page cache dropped before each copy (`echo 3 > /proc/sys/vm/drop_caches`; root on a real
  kernel only; otherwise the table says "cold not measurable");
- the engine with --sha256 (every byte hashed during the copy) when --sha256 is given;
- the unchanged re-run (dest already holds the verified copy).

Both copiers run as processes, the engine through its CLI exactly as the init container runs it (Python
start-up included), and both copy into a fresh destination each time. Results are medians, printed as GB/s
and as ratios to `cp -r` measured in the same run. Usage:

    .venv/bin/python bench/stage_bench.py --size-gb 1 --reps 3 --dir /dev/shm/bench --json bench/out/stage.json
    .venv/bin/python bench/stage_bench.py --smoke
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The engine is a package directory, run as `python3 <dir>` as the init container does.
ENGINE_PATH = ROOT / "plugins" / "module_utils" / "model_stage"
FACTORY_PATH = ROOT / "tests" / "model_factory.py"


def _load(name: str, path: Path):
    package = [str(path)] if path.is_dir() else None
    spec = importlib.util.spec_from_file_location(
        name, path / "__init__.py" if package else path, submodule_search_locations=package
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


engine = _load("model_stage", ENGINE_PATH)
factory = _load("model_factory", FACTORY_PATH)


def fs_type(path: Path) -> str:
    """File system type of the mount holding ``path`` (from /proc/mounts)."""
    best, kind = "", "unknown"
    real = os.path.realpath(path)
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                parts = line.split()
                mount_point = parts[1].replace("\\040", " ")
                inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
                if inside and len(mount_point) >= len(best):
                    best, kind = mount_point, parts[2]
    except OSError:
        pass
    return kind


def drop_caches() -> str | None:
    """Drop the page cache; return None on success or the reason it is not possible."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as handle:
            handle.write("3\n")
        return None
    except OSError as err:
        return f"cannot write /proc/sys/vm/drop_caches ({err.strerror})"


def warm(path: Path) -> None:
    for file in sorted(path.rglob("*")):
        if file.is_file():
            with open(file, "rb", buffering=0) as handle:
                while handle.read(16 * 1024 * 1024):
                    pass


def build_model(src: Path, size_bytes: int, writer: str) -> dict:
    shutil.rmtree(src, ignore_errors=True)
    return factory.make_mistral_model(src, target_bytes=size_bytes, writer=writer)


def pick_writer(size_bytes: int, requested: str) -> str:
    """safetensors' numpy API when importable and the model fits comfortably in memory, else the stdlib writer."""
    if requested != "auto":
        return requested
    try:
        import numpy  # noqa: F401
        import safetensors.numpy  # noqa: F401
    except ImportError:
        return "stdlib"
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        available = 0
    # save_file holds the arrays and a serialised copy: about 2x the model in memory.
    return "safetensors" if size_bytes * 3 < available else "stdlib"


def run_timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return seconds, done


def tool_cmd(tool: str, src: Path, dest: Path, workers: int | None) -> list[str]:
    """The command line of one copier: cp -r (+ fsync of each file), or the engine's CLI (+ sha256 / no fsync)."""
    if tool == "cp":
        return ["cp", "-r", str(src), str(dest)]
    if tool == "cp_sync":  # what the engine does by default: every copied file fsynced
        return ["sh", "-c", 'cp -r "$1" "$2" && find "$2" -type f -exec sync {} +', "sh", str(src), str(dest)]
    cmd = [sys.executable, "-I", str(ENGINE_PATH), "stage", "--src", str(src), "--dest", str(dest), "--quiet"]
    if workers:
        cmd += ["--workers", str(workers)]
    if tool == "engine_nofsync":
        cmd.append("--no-fsync")
    if tool == "engine_sha256":
        cmd.append("--sha256")
    return cmd


def same_tree(a: Path, b: Path) -> bool:
    names = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    for name in names:
        if subprocess.run(["cmp", "-s", str(a / name), str(b / name)], check=False).returncode != 0:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--size-gb", type=float, default=1.0, help="model size in GB (10^9 bytes), default 1")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per case (median reported), default 3")
    parser.add_argument("--workers", type=int, default=None, help="engine workers (default: the engine's default)")
    parser.add_argument("--dir", default=None, help="where the source model lives (e.g. a tmpfs); default a temp dir")
    parser.add_argument("--dest-dir", default=None, help="where copies go (default: --dir)")
    parser.add_argument("--sha256", action="store_true", help="also time the engine with --sha256")
    parser.add_argument("--writer", choices=["auto", "safetensors", "stdlib"], default="auto")
    parser.add_argument("--json", default=None, help="write the raw numbers to this file")
    parser.add_argument("--smoke", action="store_true", help="tiny model, one repetition: a quick check for CI")
    parser.add_argument("--keep", action="store_true", help="keep the generated model")
    args = parser.parse_args(argv)
    if args.smoke:
        args.size_gb, args.reps = min(args.size_gb, 0.02), 1
        args.sha256 = True

    own_tmp = None
    if args.dir:
        base = Path(args.dir)
        base.mkdir(parents=True, exist_ok=True)
    else:
        own_tmp = base = Path(tempfile.mkdtemp(prefix="stage-bench-"))
    dest_base = Path(args.dest_dir) if args.dest_dir else base
    dest_base.mkdir(parents=True, exist_ok=True)
    src = base / "src-model"
    size_bytes = int(args.size_gb * 1e9)
    writer = pick_writer(size_bytes, args.writer)
    t0 = time.perf_counter()
    info = build_model(src, size_bytes, writer)
    build_s = time.perf_counter() - t0
    total = sum(p.stat().st_size for p in src.iterdir() if p.is_file())
    workers = args.workers or engine.default_workers()
    cold_reason = drop_caches()
    if cold_reason is None and fs_type(src) in ("tmpfs", "ramfs"):
        cold_reason = f"the source is on {fs_type(src)}, which lives in RAM and has no cold state"

    results: dict[str, dict[str, list[float]]] = {}

    def record(case: str, tool: str, seconds: float) -> None:
        results.setdefault(case, {}).setdefault(tool, []).append(seconds)

    def fresh(name: str) -> Path:
        path = dest_base / name
        shutil.rmtree(path, ignore_errors=True)
        return path

    tools = ["cp", "engine_nofsync", "cp_sync", "engine"] + (["engine_sha256"] if args.sha256 else [])
    cases = ["warm"] + (["cold"] if cold_reason is None else [])
    for rep in range(args.reps):
        for case in cases:
            # Alternate the order so that neither copier always runs on a machine the other just warmed up.
            for tool in tools if rep % 2 == 0 else list(reversed(tools)):
                dest = fresh(f"dest-{tool}")
                if case == "cold":
                    drop_caches()
                else:
                    warm(src)
                os.sync()  # no dirty pages of the previous run may slow this one down
                seconds, _unused = run_timed(tool_cmd(tool, src, dest, args.workers))
                record(case, tool, seconds)
                if tool.startswith("engine") and rep == 0 and case == "warm" and not same_tree(src, dest):
                    raise SystemExit(f"bench: the copy made by {tool} differs from the source")
                if tool == "engine" and case == "warm":
                    # The unchanged re-run: the CLI as the init container runs it, and the engine call alone.
                    seconds, done = run_timed(tool_cmd("engine", src, dest, args.workers))
                    if "already holds a verified copy" not in done.stderr:
                        raise SystemExit("bench: the re-run was not recognised as unchanged")
                    record("unchanged", "engine_cli", seconds)
                    start = time.perf_counter()
                    again = engine.stage(src, dest, workers=args.workers)
                    record("unchanged", "engine_call", time.perf_counter() - start)
                    if again["changed"]:
                        raise SystemExit("bench: the engine call did not see the copy as unchanged")
                shutil.rmtree(dest, ignore_errors=True)

    med = {case: {tool: statistics.median(v) for tool, v in tools_.items()} for case, tools_ in results.items()}
    gbps = {
        case: {tool: total / s / 1e9 for tool, s in tools_.items()}
        for case, tools_ in med.items()
        if case != "unchanged"
    }

    print(
        f"model: mistral layout, {total / 1e9:.2f} GB in {len(info['files'])} files "
        f"(consolidated.safetensors {info['weight_bytes'] / 1e9:.2f} GB, {info['params']['n_layers']} layers), "
        f"written with the {'safetensors numpy API' if writer == 'safetensors' else 'stdlib writer'} "
        f"in {build_s:.1f} s"
    )
    print(
        f"machine: {os.cpu_count()} CPUs, {platform.platform()}; src on {fs_type(src)} ({base}), "
        f"dest on {fs_type(dest_base)} ({dest_base}); engine workers {workers}; median of {args.reps}"
    )
    if cold_reason is not None:
        print(f"cold cache: not measurable here: {cold_reason}")
    print()
    header = f"{'case':<34}{'baseline GB/s':>14}{'engine GB/s':>13}{'engine / baseline':>19}"
    print(header)
    print("-" * len(header))
    pairs = [
        ("cp", "engine_nofsync", "cp -r  vs  engine --no-fsync"),
        ("cp_sync", "engine", "cp -r + fsync  vs  engine"),
        ("cp", "engine_sha256", "cp -r  vs  engine --sha256"),
    ]
    for case in cases:
        for base_tool, engine_tool, label in pairs:
            if engine_tool not in gbps[case]:
                continue
            ratio = gbps[case][engine_tool] / gbps[case][base_tool]
            line = f"{case + ': ' + label:<34}{gbps[case][base_tool]:>14.2f}{gbps[case][engine_tool]:>13.2f}"
            print(f"{line}{ratio:>18.2f}x")
    cli, call = med["unchanged"]["engine_cli"], med["unchanged"]["engine_call"]
    cp_warm = med["warm"]["cp"]
    print(
        f"{'unchanged re-run (CLI)':<34}{cp_warm * 1000:>11.0f} ms{cli * 1000:>10.0f} ms{cli / cp_warm:>18.3f}x"
        f"  (engine call alone {call * 1000:.2f} ms = {call / cp_warm:.5f}x of cp -r)"
    )
    print()
    print("engine / baseline > 1: the engine is faster. The engine verifies the source's and the copy's headers and")
    print("extents, writes its manifest and renames atomically in every row; --sha256 also hashes every byte.")
    print("The unchanged row compares a re-run with a fresh cp -r (times shown, since that is what is compared).")

    report = {
        "total_bytes": total,
        "files": info["files"],
        "writer": writer,
        "build_seconds": build_s,
        "cpus": os.cpu_count(),
        "workers": workers,
        "reps": args.reps,
        "src_dir": str(base),
        "src_fs": fs_type(src),
        "dest_dir": str(dest_base),
        "dest_fs": fs_type(dest_base),
        "cold": cold_reason or "measured",
        "seconds": results,
        "median_seconds": med,
        "gb_per_s": gbps,
        "platform": platform.platform(),
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if not args.keep:
        shutil.rmtree(src, ignore_errors=True)
        if own_tmp:
            shutil.rmtree(own_tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
