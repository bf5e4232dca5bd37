# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The arguments of llmops.vllm.vllm_apply, shared by its action plugin and its documentation stub (private)."""

from __future__ import annotations

# kubernetes.core's connection options, as its modules take them (kubeconfig, context, host, api_key, ...).
try:
    from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
except ImportError:  # pragma: no cover - kubernetes.core is a dependency of the collection
    AUTH_ARG_SPEC = {}

WAIT_SPEC = {
    "jobs": {"type": "list", "elements": "str", "default": []},
    "deployments": {"type": "list", "elements": "str", "default": []},
    "leaderworkersets": {"type": "list", "elements": "str", "default": []},
    "pvcs": {"type": "list", "elements": "str", "default": []},
    "namespace": {"type": "str", "required": True},
    "timeout": {"type": "int", "default": 1800},
    "startup_budget": {"type": "int", "default": 900},
    "poll_interval": {"type": "float", "default": 0.5},
    "report": {"type": "bool", "default": False},
}
STEP_SPEC = {
    "what": {"type": "str", "required": True},
    "objects": {"type": "list", "elements": "dict", "default": []},
    "wait": {"type": "dict", "options": WAIT_SPEC},
    "delete_wait": {"type": "int", "default": 0},
}
ARGUMENT_SPEC = {
    "steps": {"type": "list", "elements": "dict", "options": STEP_SPEC, "required": True},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
    "force_conflicts": {"type": "bool", "default": False},
    "replace_immutable": {"type": "bool", "default": False},
    "api_timeout": {"type": "int", "default": 60},
    "cluster_checks": {
        "type": "dict",
        "options": {
            "gpu_node_label": {"type": "str"},
            "gpus_per_pod": {"type": "int", "default": 0},
            "csi_driver": {"type": "str"},
            "groups": {"type": "list", "elements": "dict", "default": []},
            "kinds": {"type": "list", "elements": "str", "default": []},
        },
    },
    **{name: dict(spec) for name, spec in AUTH_ARG_SPEC.items()},
}
