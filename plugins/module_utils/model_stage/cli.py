# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# PRIVATE to the collection; part of the staging engine (see __init__.py): standard library only, relative imports.

"""The command line: python3 -m model_stage stage|verify|download (init container, download Job, people)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import IO

from .common import HF_ENDPOINT, MANIFEST_NAME, RESULT_PREFIX, ModelStageError, default_workers, format_si_bytes
from .hub import download
from .manifest import _print_manifest, run_summary
from .stage import stage, verify


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="model_stage",
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
                    f"({format_si_bytes(result['bytes_copied'])}), reused {len(result['reused_files'])}, "
                    f"{format_si_bytes(result['throughput_bytes_per_s'])}/s over {seconds:.1f} s\n"
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
