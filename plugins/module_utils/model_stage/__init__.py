# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
#
# Standard library only, no ansible imports, relative imports between its files: this package is also shipped
# verbatim into pods (one ConfigMap, a key per file, mounted as the directory /opt/llmops/model_stage) and run as
# `python3 /opt/llmops/model_stage stage|verify|download ...` by the vLLM image's Python (init container) and by a
# python:3.11-slim download Job. Keep it importable on Python 3.8+ (ansible-core's target floor).

"""Model weights staging engine: verify a model directory, copy it in parallel and atomically, download it.

One implementation, three call sites: the ``llmops.vllm.vllm_model_stage`` module, the model download Job
and the init container that copies weights into a RAM volume. This file is its one import surface; the
files beside it hold one concern each (common, manifest, safetensors_header, layout, integrity,
parallel_copy, stage, hub, cli).
"""

from __future__ import annotations

from .cli import main
from .common import (
    ENGINE,
    HF_ENDPOINT,
    MANIFEST_NAME,
    MANIFEST_PREFIX,
    PARTIAL_DIR,
    RESULT_PREFIX,
    SCHEMA_VERSION,
    InvalidModelError,
    ModelStageError,
    default_workers,
    format_si_bytes,
)
from .hub import download
from .layout import inspect_model
from .manifest import (
    load_expected_sha256,
    load_manifest,
    manifest_from_log,
    result_from_log,
    run_summary,
    save_manifest,
)
from .safetensors_header import DTYPE_BITS, read_safetensors_header
from .stage import stage, verify

__all__ = [
    "DTYPE_BITS",
    "ENGINE",
    "HF_ENDPOINT",
    "MANIFEST_NAME",
    "MANIFEST_PREFIX",
    "PARTIAL_DIR",
    "RESULT_PREFIX",
    "SCHEMA_VERSION",
    "InvalidModelError",
    "ModelStageError",
    "default_workers",
    "download",
    "format_si_bytes",
    "inspect_model",
    "load_expected_sha256",
    "load_manifest",
    "main",
    "manifest_from_log",
    "read_safetensors_header",
    "result_from_log",
    "run_summary",
    "save_manifest",
    "stage",
    "verify",
]
