#!/usr/bin/python
# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

# Ansible modules put their documentation before the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
module: vllm_startup_report
short_description: Where a vLLM server's start-up time went, phase by phase
version_added: 0.2.0
description:
  - For every pod of the vLLM server Deployments in a namespace, one row per start-up phase with its start, its
    duration and, where known, its throughput; the slowest phase is named with the lever that shortens it.
  - "Phases and their sources: C(node) (pod created to scheduled; a Karpenter NodeClaim's launch when Karpenter
    made the node), C(image_pull) (the kubelet's C(Pulling)/C(Pulled) events, C(already present on machine)
    counting zero), C(staging) (the staging init container's start to finish, with bytes and rate from the
    staging engine's C(RESULT) log line), C(model_load) (the vLLM container's start to the pod's Ready
    condition, in steps read from the head of the vLLM container's log), C(first_token) (the probe's time to first
    token, given in O(first_token_ms))."
  - "The model load's C(steps), from the lines vLLM logs (docs/startup-timeline.md lists them per release):
    C(imports), C(engine_start), C(device_setup), C(weights), C(kv_cache), C(warmup), C(server_start),
    C(readiness); they add up to the model load."
  - "With C(ram_copy), whether the RAM copy paid: the staging time against what reading the weights from RAM saved
    over reading the source at the staging's rate; when it did not, the lever says C(load_strategy direct)."
  - Also the download Jobs (start to completion, with bytes and rate from the engine's C(RESULT) line).
  - A phase whose source is gone or was never written is reported as unknown with the reason (events are kept
    one hour by default, logs go with their pod); nothing is estimated.
  - Reads only.
author:
  - llmops.vllm maintainers (@llmops-vllm)
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - Reads only, so check mode reports the same as a normal run.
  diff_mode:
    support: none
    details:
      - The module changes nothing, so there is no diff.
  platform:
    platforms: kubernetes
  idempotent:
    description: When run twice in a row on an unchanged cluster, the second run reports the same result.
    support: full
options:
  namespace:
    description:
      - Namespace of the servers and the download Jobs.
    type: str
    required: true
  deployments:
    description:
      - Names of the server Deployments to report.
      - When empty, every Deployment of the collection in O(namespace) (labels C(app.kubernetes.io/name=vllm),
        C(app.kubernetes.io/managed-by=llmops.vllm)).
    type: list
    elements: str
    default: []
  jobs:
    description:
      - Names of the download Jobs to report.
      - When empty, every Job of the collection in O(namespace) (label C(app.kubernetes.io/managed-by=llmops.vllm)).
    type: list
    elements: str
    default: []
  first_token_ms:
    description:
      - Time to first token per Deployment, in milliseconds, as llmops.vllm.vllm_endpoint_probe measured it
        (its RV(llmops.vllm.vllm_endpoint_probe#module:ttft_ms)); a Deployment without one has an unknown
        C(first_token) phase.
    type: dict
    default: {}
  stage_container:
    description:
      - Name of the init container that stages the model (the vllm_server role's).
    type: str
    default: model-loader
  server_container:
    description:
      - Name of the vLLM container.
    type: str
    default: vllm
  log_lines:
    description:
      - Lines read from the end of each staging or download log for the engine's C(RESULT) line.
      - The vLLM container's log is read from its start instead (its first 512 KiB, with the kubelet's timestamps).
    type: int
    default: 50
  api_timeout:
    description:
      - Seconds the whole report may wait for the API server.
    type: int
    default: 60
"""

EXAMPLES = r"""
- name: Report where the start-up time went
  llmops.vllm.vllm_startup_report:
    namespace: default
    first_token_ms: {mistral: 61.3}
  register: startup

- name: Show it
  ansible.builtin.debug:
    msg: "{{ startup.table }}"

- name: Fail when staging was the slowest phase of any pod
  ansible.builtin.assert:
    that: startup.pods | map(attribute='slowest.phase', default='') | select('eq', 'staging') | list | length == 0
"""

RETURN = r"""
reason:
  description: Why reading the report failed, V(api_unreachable) or V(api_error) (docs/reasons.md).
  returned: failure
  type: str
  sample: api_unreachable
pods:
  description:
    - Per server pod, C(pod), C(deployment), C(node), C(ready_seconds) (creation to Ready; null when not Ready),
      C(phases) (rows, below), C(unknown) (the phases that cannot be known) and C(slowest) (C(phase),
      C(seconds), C(lever); null when no phase took time; for C(model_load), the lever of its slowest step), and
      C(ram_copy) (null, or C(copy_seconds), C(read_seconds), C(direct_read_seconds), C(saved_seconds),
      C(cost_seconds), C(paid), C(bytes), C(throughput_bytes_per_s), C(measured)).
    - Each row has C(phase), C(start) and C(end) (UTC, null when unknown or not a span), C(seconds) (null when
      unknown), C(known), C(detail) (the source's words, or why it cannot be known) and, where known,
      C(bytes), C(throughput_bytes_per_s), C(pulls) (per container C(container), C(image), C(seconds),
      C(bytes), C(present)), C(node), C(nodeclaim), C(skipped) (a phase the load strategy does not have).
    - The C(model_load) row also has C(steps) (rows of the same shape, empty when the vLLM log cannot be read, the
      detail then says why; a step whose line is missing is C(known) false and the next known step takes its time)
      with, where logged, C(gib) and C(read_seconds) (C(weights)), C(compile_seconds) (C(kv_cache)),
      C(graph_seconds) and C(jit_seconds) (C(warmup)); C(staging) and C(model_load) carry C(ram_copy).
  returned: always
  type: list
  elements: dict
  sample:
    - pod: mistral-6d9f7c5b8-x2x7q
      deployment: mistral
      node: gpu-a
      ready_seconds: 243.0
      unknown: []
      slowest: {phase: image_pull, seconds: 112.3, lever: "image pull 1m52s: pre-pull the image onto the GPU nodes
        or use a lazy-loading snapshotter (SOCI)"}
      phases:
        - {phase: node, start: "2026-01-15T10:00:00Z", end: "2026-01-15T10:00:02Z", seconds: 2.0, known: true,
           detail: "on gpu-a, a node that was already there", node: gpu-a}
        - {phase: image_pull, start: "2026-01-15T10:00:03Z", end: "2026-01-15T10:01:55Z", seconds: 112.3,
           known: true, detail: "model-loader: pulled 10.8 GB in 1m52s (96.2 MB/s); vllm: already present"}
jobs:
  description:
    - Per download Job, C(job), C(phase) (C(download)), C(start), C(end), C(seconds), C(known), C(detail) and,
      where its log still holds the engine's C(RESULT) line, C(bytes) and C(throughput_bytes_per_s).
  returned: always
  type: list
  elements: dict
table:
  description: The report as lines for the play output (one heading per pod, one line per phase, the slowest).
  returned: always
  type: list
  elements: str
slowest:
  description: The slowest phase over all pods, with C(pod), C(phase), C(seconds) and C(lever); null when none.
  returned: always
  type: dict
"""

import copy

from ansible_collections.kubernetes.core.plugins.module_utils.ansiblemodule import AnsibleModule
from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.exceptions import CoreException
from ansible_collections.llmops.vllm.plugins.module_utils.kube_client import (
    ApiError,
    ApiUnavailable,
    connect,
    unreachable,
)
from ansible_collections.llmops.vllm.plugins.module_utils.startup_report import gather


def argspec() -> dict:
    spec = copy.deepcopy(AUTH_ARG_SPEC)
    spec.update(
        namespace=dict(type="str", required=True),
        deployments=dict(type="list", elements="str", default=[]),
        jobs=dict(type="list", elements="str", default=[]),
        first_token_ms=dict(type="dict", default={}, no_log=False),
        stage_container=dict(type="str", default="model-loader"),
        server_container=dict(type="str", default="vllm"),
        log_lines=dict(type="int", default=50),
        api_timeout=dict(type="int", default=60),
    )
    return spec


def main() -> None:
    module = AnsibleK8SModule(module_class=AnsibleModule, argument_spec=argspec(), supports_check_mode=True)
    params = module.params
    try:
        kube = connect({k: params.get(k) for k in AUTH_ARG_SPEC}, max(params["api_timeout"], 1))
        report = gather(
            kube,
            params["namespace"],
            deployments=params["deployments"] or None,
            jobs=params["jobs"] or None,
            first_token_ms=params["first_token_ms"],
            containers=(params["stage_container"], params["server_container"]),
            log_lines=params["log_lines"],
        )
    except ApiUnavailable as exc:
        module.fail_json(msg=unreachable(exc), reason="api_unreachable")
    except ApiError as exc:
        module.fail_json(msg=f"startup report in namespace {params['namespace']}: {exc.message}", reason="api_error")
    except CoreException as exc:
        module.fail_json(msg=f"cannot reach the Kubernetes API: {exc}", reason="api_unreachable")
    module.exit_json(changed=False, **report)


if __name__ == "__main__":
    main()
