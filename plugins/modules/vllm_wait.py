#!/usr/bin/python
# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

# Ansible modules put their documentation before the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
module: vllm_wait
short_description: Wait for a vLLM deployment to come up, or say in one line why it cannot
version_added: 0.1.0
description:
  - Watches the objects a deploy created in one namespace (PersistentVolumeClaims, download Jobs, server
    Deployments) until every PVC is Bound, every Job Complete and every Deployment rolled out and Available.
  - Instead of timing out blindly, it stops as soon as a known failure is certain and fails with one line
    naming the cause and the fix, plus the evidence (the event, container status or last log lines).
  - "Known failures: pods that cannot be scheduled (not enough C(nvidia.com/gpu), an untolerated taint, an
    unmatched node selector; a Karpenter NodePool that may still provision is given O(provision_grace)),
    image pull errors, a failed init container, C(OOMKilled) (with the arithmetic of a Memory C(emptyDir),
    which counts against the pod's memory limit), C(CrashLoopBackOff), a failed Job (a Hugging Face 401/403
    gets a token hint), a Pending PVC (no CSI driver, no matching PV, provisioner absent), and a server
    that does not become Ready within O(startup_budget)."
  - Reads only; polls about once a second with one API client and fetches nodes, storage objects and logs
    only when a diagnosis needs them.
  - For every Job that completed, reads the manifest that the collection's download Job prints as its last log
    line (files, bytes, format, model facts) and returns it in RV(manifests).
author:
  - llmops.vllm maintainers (@llmops-vllm)
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - In check mode the module looks once and does not wait; objects that do not exist yet (they would be
        created by the run being checked) are reported as C(Absent), not as a failure.
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
      - Namespace of the watched objects.
    type: str
    required: true
  deployments:
    description:
      - Names of Deployments that must be rolled out and Available.
    type: list
    elements: str
    default: []
  leaderworkersets:
    description:
      - Names of LeaderWorkerSets (models across nodes) whose groups must all be ready; their pods get the same
        diagnoses as a Deployment's.
    type: list
    elements: str
    default: []
    version_added: 0.2.0
  jobs:
    description:
      - Names of Jobs that must be Complete.
    type: list
    elements: str
    default: []
  pvcs:
    description:
      - Names of PersistentVolumeClaims that must be Bound (a claim whose StorageClass binds on first
        consumer counts as done while Pending).
    type: list
    elements: str
    default: []
  label_selector:
    description:
      - Also watch every Deployment, Job and PVC in O(namespace) whose labels match this equality-based
        selector, for example V(app.kubernetes.io/managed-by=llmops.vllm).
    type: str
  timeout:
    description:
      - Seconds to wait in all before failing with reason C(timeout).
    type: int
    default: 1800
  startup_budget:
    description:
      - Seconds a server container may run without becoming Ready (a cold model load included) before that
        is a failure (reason C(not_ready)).
    type: int
    default: 900
  provision_grace:
    description:
      - Seconds a pod may stay unschedulable while capacity could still appear (a Karpenter NodePool that may
        launch a fitting node, or nodes that fit but are full). When no node and no node pool can ever fit the
        pod, the module fails at once.
    type: int
    default: 600
  provisioner_grace:
    description:
      - Seconds a dynamically provisioned PVC may wait without any event from its provisioner before the
        provisioner is considered absent.
    type: int
    default: 120
  poll_interval:
    description:
      - Seconds between two looks at the cluster (at least 0.5).
    type: float
    default: 1.0
  log_lines:
    description:
      - Last log lines of a failed container kept as evidence.
    type: int
    default: 20
requirements:
  - kubernetes >= 24.2.0
notes:
  - Container logs are read through the API server (C(pods/log)); when they cannot be read, the message says
    so and the container's termination message is used instead.
  - Text that looks like a Hugging Face or bearer token is masked in log lines.
seealso:
  - module: kubernetes.core.k8s
  - module: llmops.vllm.vllm_endpoint_probe
"""

EXAMPLES = r"""
- name: Wait for the model download, then the server
  llmops.vllm.vllm_wait:
    namespace: vllm
    pvcs: [fsx-models]
    jobs: [model-download]
    deployments: [mistral]
    startup_budget: 900

- name: Watch everything the collection labelled, with a short budget in CI
  llmops.vllm.vllm_wait:
    namespace: "{{ vllm_namespace }}"
    label_selector: app.kubernetes.io/managed-by=llmops.vllm
    timeout: 300
    startup_budget: 120
  register: rollout

- name: Show how long the rollout took
  ansible.builtin.debug:
    msg: "ready after {{ rollout.elapsed_ms }} ms"
"""

RETURN = r"""
elapsed_ms:
  description: Milliseconds the module watched.
  returned: always
  type: int
  sample: 4210
polls:
  description: How many times the module looked at the cluster.
  returned: always
  type: int
  sample: 5
states:
  description:
    - Per watched object, its state when the module stopped; C(done) is true once all succeeded.
  returned: always
  type: dict
  sample:
    done: true
    deployments:
      mistral: {status: Available, done: true, ready: 1/1, updated: 1, available: 1}
    jobs:
      model-download: {status: Complete, done: true, active: 0, succeeded: 1, failed: 0}
    pvcs:
      fsx-models: {status: Bound, done: true, volume: fsx-pv}
reason:
  description:
    - Machine-readable cause.
    - One of C(unschedulable_no_capacity), C(unschedulable_untolerated_taint), C(unschedulable_node_selector),
      C(unschedulable_provisioning_timeout), C(unschedulable_timeout), C(image_pull), C(config_error),
      C(init_failed), C(oom_killed), C(crash_loop), C(job_failed), C(job_auth), C(pvc_pending), C(not_ready),
      C(replica_failure), C(not_found), C(api_unreachable), C(timeout).
  returned: failure
  type: str
  sample: oom_killed
object:
  description: The object the failure was found on, as C(Kind/name).
  returned: failure
  type: str
  sample: Pod/mistral-6d9f7c5b8-x2x7q
manifests:
  description:
    - Per Job that is Complete, the manifest the staging engine printed as the last line of its log (the same
      dictionary as RV(llmops.vllm.vllm_model_stage#module:manifest)); null when the log cannot be read any more
      or the Job does not run the staging engine.
  returned: success
  type: dict
  sample:
    model-download:
      format: mistral
      file_count: 3
      total_bytes: 14496666118
      facts: {num_layers: 32, hidden_size: 4096, dtype: bfloat16, parameter_count: 7248023552}
evidence:
  description: What the diagnosis rests on, for example the event, the container status, the last log lines.
  returned: failure
  type: dict
  sample:
    container: vllm
    terminated: {exitCode: 137, reason: OOMKilled}
    memory_limit: 32Gi
    memory_volumes: [{name: ram-models, sizeLimit: 20Gi}]
    swap_space: 16Gi
"""

import copy

from ansible_collections.kubernetes.core.plugins.module_utils.ansiblemodule import AnsibleModule
from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.exceptions import CoreException
from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis import (
    DeploymentWatch,
    PollTiming,
    Settings,
    WatchScope,
)
from ansible_collections.llmops.vllm.plugins.module_utils.kube_client import ApiUnavailable, connect, unreachable


def argspec() -> dict:
    """Options: kubernetes.core's connection options plus what to watch and how long."""
    spec = copy.deepcopy(AUTH_ARG_SPEC)
    spec.update(
        namespace=dict(type="str", required=True),
        deployments=dict(type="list", elements="str", default=[]),
        leaderworkersets=dict(type="list", elements="str", default=[]),
        jobs=dict(type="list", elements="str", default=[]),
        pvcs=dict(type="list", elements="str", default=[]),
        label_selector=dict(type="str"),
        timeout=dict(type="int", default=1800),
        startup_budget=dict(type="int", default=900),
        provision_grace=dict(type="int", default=600),
        provisioner_grace=dict(type="int", default=120),
        poll_interval=dict(type="float", default=1.0),
        log_lines=dict(type="int", default=20),
    )
    return spec


def main() -> None:
    # AnsibleK8SModule fails cleanly when the kubernetes library is missing.
    module = AnsibleK8SModule(module_class=AnsibleModule, argument_spec=argspec(), supports_check_mode=True)
    params = module.params
    if not any(params[k] for k in ("deployments", "leaderworkersets", "jobs", "pvcs", "label_selector")):
        module.fail_json(msg="nothing to watch: give deployments, leaderworkersets, jobs, pvcs or label_selector")
    try:
        # Bounded: making kubernetes.core's client may ask the server its version, without a timeout of its own.
        kube = connect({k: params.get(k) for k in AUTH_ARG_SPEC}, min(60, max(params["timeout"], 1)))
    except ApiUnavailable as exc:
        module.fail_json(msg=unreachable(exc), reason="api_unreachable")
    except CoreException as exc:
        module.fail_json(msg=f"cannot reach the Kubernetes API: {exc}", reason="api_unreachable")
    settings = Settings(
        startup_budget=params["startup_budget"],
        provision_grace=params["provision_grace"],
        provisioner_grace=params["provisioner_grace"],
        log_lines=params["log_lines"],
        # In check mode missing objects are the ones the checked run would create.
        missing_grace=float("inf") if module.check_mode else 60,
    )
    scope = WatchScope.of(
        params["namespace"],
        params["label_selector"],
        **{kind: params[kind] for kind in ("deployments", "jobs", "pvcs", "leaderworkersets")},
    )
    watch = DeploymentWatch(kube, scope, settings, PollTiming(interval=params["poll_interval"]))
    result = watch.run(timeout=params["timeout"], once=module.check_mode)
    common = dict(changed=False, elapsed_ms=result.elapsed_ms, polls=result.polls, states=result.states)
    if result.finding:
        finding = result.finding
        module.fail_json(
            msg=finding.message, reason=finding.reason, object=finding.object, evidence=finding.evidence, **common
        )
    # The download Jobs' manifests (files, bytes, format, model facts), read back from their logs.
    manifests = {
        name: watch.job_manifest(name)["manifest"]
        for name, state in result.states.get("jobs", {}).items()
        if state.get("done")
    }
    module.exit_json(manifests=manifests, **common)


if __name__ == "__main__":
    main()
