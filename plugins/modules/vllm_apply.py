#!/usr/bin/python
# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

# Ansible modules put their documentation before the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
module: vllm_apply
short_description: Apply (or remove) the objects of one or more steps, explain refusals in one line, wait for them
version_added: 0.2.0
description:
  - "The collection's one apply path. Runs in the controller (an action plugin): one kubernetes client for all
    steps and their waits, no module process per step. The roles call it once per step; deploy.yml and
    teardown.yml call it once for several steps."
  - Each step's objects are server-side applied in order under the field manager C(llmops-vllm); each object is
    read first, so the result says C(created), C(configured) or C(unchanged), and C(--diff) shows the fields that
    change, one entry per object (a Secret's values never).
  - A field another field manager owns stops the run with one line naming the manager and the field, unless
    O(force_conflicts=true).
  - "The documented replace path for immutable fields, decided before anything of the step is applied: a Job whose
    pod template changed (its C(llmops.vllm/pod-template-hash) annotation differs) is deleted and created again,
    which never touches the model on the volume; a Deployment whose selector changed is replaced only with
    O(replace_immutable=true), and otherwise the step stops with one line naming the live and wanted selector.
    Volume objects (PersistentVolume, claim) are never replaced."
  - When a step's O(steps[].wait) is given and the apply left its Jobs or Deployments on their way, waits for them
    with the same one-line diagnoses as M(llmops.vllm.vllm_wait), and returns the download Jobs' manifests.
  - Every request has a deadline (O(api_timeout) per step); an API server that accepts connections and never
    answers ends the step in one line naming the server, never hangs it.
author:
  - llmops.vllm maintainers (@llmops-vllm)
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
attributes:
  action:
    support: full
  async:
    support: none
  bypass_host_loop:
    support: none
  check_mode:
    support: full
    details:
      - The API server's dry run; objects in a namespace that does not exist yet are reported as to be created.
  diff_mode:
    support: full
  platform:
    platforms: kubernetes
  idempotent:
    description: A second run on an unchanged cluster reports every object C(unchanged) and C(changed=false).
    support: full
options:
  steps:
    description: The steps, in order; a step that fails stops the ones after it.
    type: list
    elements: dict
    required: true
    suboptions:
      what:
        description: What the objects are, for messages (for example C(the model volume)).
        type: str
        required: true
      objects:
        description: The objects, in the order to apply them (removed last first).
        type: list
        elements: dict
        default: []
      wait:
        description:
          - Wait until the step's claims are Bound, Jobs Complete and Deployments Available, when the apply left any
            not so.
        type: dict
        suboptions:
          namespace:
            description: Their namespace.
            type: str
            required: true
          jobs:
            description: Jobs that must be Complete.
            type: list
            elements: str
            default: []
          deployments:
            description: Deployments that must be rolled out and Available.
            type: list
            elements: str
            default: []
          leaderworkersets:
            description:
              - LeaderWorkerSets whose groups must all be ready (condition C(Available), C(readyReplicas)); their
                pods get the same one-line diagnoses as a Deployment's (a worker that cannot be scheduled, a crash).
            type: list
            elements: str
            default: []
          pvcs:
            description: Claims that must be Bound.
            type: list
            elements: str
            default: []
          timeout:
            description: Seconds to wait in all.
            type: int
            default: 1800
          startup_budget:
            description: Seconds a server container may run without becoming Ready.
            type: int
            default: 900
          poll_interval:
            description: Seconds between two looks (at least 0.5).
            type: float
            default: 0.5
          report:
            description:
              - After the wait (or when nothing needed waiting), read where the start-up time of the step's
                Deployments and Jobs went, as M(llmops.vllm.vllm_startup_report) does, into the step's C(startup).
              - Not in check mode. A report the API server refuses is a warning, not a failure.
            type: bool
            default: false
      delete_wait:
        description: With O(state=absent), seconds to wait until the step's objects are gone (0 does not wait).
        type: int
        default: 0
  state:
    description: C(present) applies, C(absent) deletes (in the background; a Job's pods go with it).
    type: str
    choices: [present, absent]
    default: present
  force_conflicts:
    description: Take over fields owned by another field manager (server-side apply C(force)).
    type: bool
    default: false
  replace_immutable:
    description: Delete and create again a Deployment whose selector changed.
    type: bool
    default: false
  api_timeout:
    description:
      - Seconds one step may spend on the Kubernetes API (the waits have their own timeout); each request gets what
        is left of it.
    type: int
    default: 60
  cluster_checks:
    description: Checks against the cluster made before the first step, with the same client and deadline.
    type: dict
    suboptions:
      gpu_node_label:
        description:
          - Refuse when no node has this label (C(key=value)); return the nodes in RV(cluster).
        type: str
      gpus_per_pod:
        description: Refuse when no node with O(cluster_checks.gpu_node_label) has this many allocatable GPUs.
        type: int
        default: 0
      csi_driver:
        description: Refuse when this CSIDriver is not installed.
        type: str
      groups:
        description:
          - Models across nodes, each C({model, nodes, gpus}); refuse when fewer than C(nodes) GPU nodes have
            C(gpus) allocatable (one LeaderWorkerSet pod per node).
        type: list
        elements: dict
        default: []
      kinds:
        description:
          - Kinds the objects need, each C(<apiVersion> <kind>) (V(leaderworkerset.x-k8s.io/v1 LeaderWorkerSet));
            refuse, naming how to install it, when the cluster does not serve one.
        type: list
        elements: str
        default: []
seealso:
  - module: llmops.vllm.vllm_wait
requirements:
  - kubernetes >= 24.2.0
"""

EXAMPLES = r"""
- name: Apply the model volume
  llmops.vllm.vllm_apply:
    steps:
      - what: the model volume
        objects: "{{ storage_objects }}"
    force_conflicts: "{{ vllm_force_conflicts }}"

- name: Apply the servers and wait until they are Available
  llmops.vllm.vllm_apply:
    steps:
      - what: the servers
        objects: "{{ vllm_server_objects }}"
        wait:
          namespace: "{{ vllm_namespace }}"
          deployments: [mistral]
"""

RETURN = r"""
steps:
  description:
    - One entry per step run, with C(what), C(changed), C(objects) (each C(object) C(Kind/name), C(namespace),
      C(action) C(created), C(configured), C(unchanged), C(replaced), C(deleted) or C(absent)), C(unsettled) (the
      claims, Jobs and Deployments still on their way after the apply), C(diff) (changed objects; a configured one with
      the fields C(before) and C(after)), C(replaced) and C(message) when the replace path ran, after a wait
      C(waited) and C(manifests) (each completed download Job's manifest), and with the wait's C(report) the
      step's C(startup) (C(pods), C(jobs), C(table), C(slowest) as M(llmops.vllm.vllm_startup_report) returns them).
  returned: always
  type: list
  elements: dict
cluster:
  description:
    - What O(cluster_checks) found, C(gpu_nodes) (names), C(simulated) (the servers can land only on kwok nodes, by
      their node selector and tolerations), C(csi_driver).
  returned: when O(cluster_checks) is given
  type: dict
reason:
  description:
    - "Why it failed, one word: C(conflict), C(immutable), C(invalid), C(api_error), C(api_unreachable),
      C(api_timeout), C(api_config), C(no_gpu_nodes), C(gpus_exceed_nodes), C(nodes_short), C(kind_not_served),
      C(no_csi_driver), C(replace_stuck),
      C(delete_stuck), C(probe_failed) (blue/green), or a reason of M(llmops.vllm.vllm_wait)."
  returned: failure
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.llmops.vllm.plugins.module_utils._apply_spec import ARGUMENT_SPEC


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    module.fail_json(msg="llmops.vllm.vllm_apply runs in the controller, as an action plugin; it has no module side")


if __name__ == "__main__":
    main()
