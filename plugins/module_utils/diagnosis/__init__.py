# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Why a vLLM deployment is not coming up, named as soon as it is certain.

Two layers:

- :func:`diagnose` is pure: it takes a *snapshot* (plain dicts, shaped exactly like the API's JSON) of the
  objects deploy created and what surrounds them (pods, events, nodes, PVs, StorageClasses, CSIDrivers,
  Karpenter NodePools, container log tails) and returns a :class:`Finding` when a known failure is certain,
  else ``None``. :func:`progress` says what is done, :func:`logs_wanted` which log tails would help.
- :class:`DeploymentWatch` polls the API (one ``kubernetes`` client, reused; about one poll a second, fetching
  nodes, storage objects and logs only when a finding needs them) until everything succeeded (Job Complete,
  Deployment rolled out and Available, PVC Bound), a finding is certain, or the timeout passes.

Snapshot keys: ``now`` and ``started`` (epoch seconds), ``namespace``, ``targets`` (``{"deployments": [...],
"jobs": [...], "pvcs": [...]}``, names), ``deployments``, ``replicasets``, ``jobs``, ``pvcs``, ``pods``,
``events``, ``nodes``, ``node_pools``, ``pvs``, ``storage_classes``, ``csi_drivers`` (lists of objects; ``None``
for a list that could not be read), ``logs`` (``{"<pod>/<container>": {"lines": [...], "error": str|None}}``)
and ``settings`` (see :class:`Settings`).

This package is the one import surface; the files beside it hold one concern each: ``findings`` (reasons,
:class:`Finding`, :class:`Settings`), ``snapshot`` (lookups over a snapshot), ``progress`` (where each object
stands, which pods are whose), ``objects`` (:func:`diagnose`; PVCs, Jobs, Deployments), ``pods``, ``scheduling``
and ``memory`` (why a pod fails, is not placed, was OOMKilled), ``reader`` (the API calls) and ``watch`` (the loop).
"""

from __future__ import annotations

from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.findings import REASONS, Finding, LogRef, Settings
from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.objects import diagnose
from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.progress import (
    LWS_NAME_LABEL,
    deployment_done,
    group_done,
    job_done,
    logs_wanted,
    progress,
)
from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.reader import MANIFEST_TAIL_LINES, WatchScope
from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.snapshot import redact
from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.watch import DeploymentWatch, PollTiming, WaitResult

__all__ = (
    "LWS_NAME_LABEL",
    "MANIFEST_TAIL_LINES",
    "REASONS",
    "DeploymentWatch",
    "Finding",
    "PollTiming",
    "LogRef",
    "Settings",
    "WaitResult",
    "WatchScope",
    "deployment_done",
    "diagnose",
    "group_done",
    "job_done",
    "logs_wanted",
    "progress",
    "redact",
)
