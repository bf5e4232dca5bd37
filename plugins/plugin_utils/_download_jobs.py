# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# PRIVATE to the collection (controller side), behind the filter llmops.vllm.vllm_download_jobs.

"""The downloads the resolved models need: one per model directory."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any


def job_suffix(model_dir: str) -> str:
    """A directory as a DNS label fragment: lower case, runs of other characters as one dash."""
    return re.sub(r"[^a-z0-9]+", "-", model_dir.lower()).strip("-")


def download_jobs(specs: list[Mapping[str, Any]], name: str = "model-download") -> list[dict[str, Any]]:
    """The downloads for ``specs``, one per model directory, in order of first appearance."""
    jobs: dict[str, dict[str, Any]] = {}
    for spec in specs:
        if not spec.get("download"):
            continue
        model_dir = spec["model_dir"]
        if model_dir in jobs:
            jobs[model_dir]["models"].append(spec["name"])
            continue
        jobs[model_dir] = {
            "name": name if not jobs else f"{name}-{job_suffix(model_dir)}"[:63].rstrip("-"),
            "model_dir": model_dir,
            "hf_repo": spec.get("hf_repo"),
            "hf_revision": spec.get("hf_revision") or "main",
            "files": list(spec.get("files") or []),
            "models": [spec["name"]],
        }
    return list(jobs.values())
