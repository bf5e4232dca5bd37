# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# PRIVATE to the collection (controller side), behind the filter llmops.vllm.vllm_download_facts.

"""What the download step brought, per model: the manifests read back from the Jobs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def download_facts(jobs: list[Mapping[str, Any]], manifests: Mapping[str, Any] | None) -> dict[str, Any]:
    """Model directory to the facts of the manifest its Job printed, where known."""
    facts = {}
    for job in jobs or []:
        manifest = (manifests or {}).get(job["name"])
        if isinstance(manifest, Mapping) and isinstance(manifest.get("facts"), Mapping):
            facts[job["model_dir"]] = dict(manifest["facts"])
    return facts
