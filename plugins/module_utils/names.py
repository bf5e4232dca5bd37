# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The names the collection writes into a cluster, owned here: mount paths, volume names, label and annotation keys,
the field manager. Python imports them; templates get them through the values the filters render (the model spec's
``mounts``, ``metadata_labels``, ``instance_selector``), except the labels of the storage and node pool templates and
the token Secret, spelled there (a collection filter in a template costs ~0.07 s per task) and kept equal to these by
tests/unit/plugins/module_utils/test_names.py."""

from __future__ import annotations

# Server-side apply's field manager for every object the collection writes.
FIELD_MANAGER = "llmops-vllm"
MANAGED_BY = "llmops.vllm"

NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
# A selector for everything the collection manages.
MANAGED = f"{MANAGED_BY_LABEL}={MANAGED_BY}"

# A Job's pod template hash: which Jobs the apply engine must replace (a Job's template cannot change).
TEMPLATE_HASH = "llmops.vllm/pod-template-hash"
# Which models a download Job brings (comma-separated names).
MODELS_ANNOTATION = "llmops.vllm/models"
# The staging engine's digest on a server's pod template: a new engine restarts the servers that run it.
ENGINE_SHA256_ANNOTATION = "llmops.vllm/stage-engine-sha256"
# upgrade: blue_green (module_utils/blue_green.py): the Deployment's mark, its pods' slot, the second slot's suffix.
UPGRADE_ANNOTATION = "llmops.vllm/upgrade"
SLOT_LABEL = "llmops.vllm/slot"
NEXT_SUFFIX = "-next"

# Mount paths inside the pods, and the volumes mounted there.
MODELS_MOUNT = "/models"  # the shared model volume (the claim), read-only in servers
RAM_MOUNT = "/ram-models"  # the RAM volume ram_copy stages into
ENGINE_MOUNT = "/opt/llmops/model_stage"  # the staging engine's ConfigMap, a package directory
MODELS_VOLUME = "models"
RAM_VOLUME = "ram-models"
ENGINE_VOLUME = "model-stage"


def labels(name: str, instance: str | None = None) -> dict[str, str]:
    """The labels of an object the collection manages: what it is (``name``), which one (``instance``), by whom."""
    found = {NAME_LABEL: name, MANAGED_BY_LABEL: MANAGED_BY}
    if instance:
        found[INSTANCE_LABEL] = instance
    return found
