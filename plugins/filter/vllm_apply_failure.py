# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

# Ansible plugins put their documentation before the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
name: vllm_apply_failure
short_description: Explain a failed server-side apply in one line and name the objects to replace
version_added: 0.1.0
description:
  - Reads the failed result of a C(kubernetes.core.k8s) apply (the API server's C(Status) inside its C(msg)) and
    turns it into one line naming the object, the field and what to do.
  - A field owned by another field manager (C(409 Conflict)) is reported with the manager and the field; the
    user may take it over with C(vllm_force_conflicts=true).
  - An immutable field (C(422), C(field is immutable)) takes the documented replace path; the filter compares
    the wanted objects with the live ones and names every object that must be deleted and created again, not
    only the first one the API server refused. A Job whose pod template changed (its
    C(llmops.vllm/pod-template-hash) annotation, written by the model_download role, differs) is
    always replaced; that deletes the Job and its pods, never the model on the volume. A Deployment whose
    C(spec.selector) changed is replaced only with O(replace=true) (C(vllm_replace_immutable=true)), because
    the endpoint is down until the new pods are ready. Any other immutable field (a PersistentVolume's source,
    a claim's volume) is refused with a line saying so, because the model volume is never replaced automatically.
options:
  _input:
    description: The failed result of a C(kubernetes.core.k8s) task (C(ansible_failed_result) in a rescue).
    type: dict
    required: true
  wanted:
    description: The objects the apply was given.
    type: list
    elements: dict
    required: true
  live:
    description: The live Jobs and Deployments of those objects (for example from the C(kubernetes.core.k8s) lookup).
    type: list
    elements: dict
    default: []
  replace:
    description: Whether a Deployment whose selector changed may be deleted and created again.
    type: bool
    default: false
  what:
    description: What the objects are (for example C(the model volume)), named when the API server did not answer.
    type: str
  kubeconfig:
    description:
      - The kubeconfig the apply used, to name its API server when it did not answer; unset, C(K8S_AUTH_KUBECONFIG),
        C(KUBECONFIG) or C(~/.kube/config), as kubernetes.core reads them.
    type: str
  context:
    description: The kubeconfig context the apply used; unset, the current one (or C(K8S_AUTH_CONTEXT)).
    type: str
author:
  - llmops.vllm maintainers (@llmops-vllm)
"""

EXAMPLES = r"""
- name: Explain the failure
  ansible.builtin.set_fact:
    failure: "{{ ansible_failed_result | llmops.vllm.vllm_apply_failure(objects, live_jobs, replace=false) }}"
"""

RETURN = r"""
_value:
  description:
    - C(msg), one line; C(replace), the objects to delete and apply again (C(apiVersion), C(kind) and
      C(metadata.name)/C(metadata.namespace)), empty when the failure cannot be fixed by replacing.
    - C(refused), true when the objects would need replacing but O(replace) does not allow it.
  type: dict
"""

import json
import os
from collections.abc import Mapping
from typing import Any

import yaml

TEMPLATE_HASH = "llmops.vllm/pod-template-hash"


def _status(msg: str) -> dict[str, Any]:
    """The API server's Status object inside kubernetes.core's "Failed to apply object: {...}" message."""
    start = msg.find("{")
    if start < 0:
        return {}
    try:
        status = json.loads(msg[start:])
    except ValueError:
        return {}
    return status if isinstance(status, dict) else {}


def _key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return (str(obj.get("kind")), str(meta.get("namespace") or ""), str(meta.get("name")))


def _ref(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Just enough of an object to delete it."""
    kind, namespace, name = _key(obj)
    return {"apiVersion": obj.get("apiVersion"), "kind": kind, "metadata": {"name": name, "namespace": namespace}}


def _label(obj: Mapping[str, Any]) -> str:
    kind, _namespace, name = _key(obj)
    return f"{kind} {name}"


def _changed_immutable(want: Mapping[str, Any], have: Mapping[str, Any]) -> str | None:
    """The immutable field of `want` that differs from the live object `have`, or None."""
    if want.get("kind") == "Deployment":
        wanted = (want.get("spec") or {}).get("selector")
        live = (have.get("spec") or {}).get("selector")
        return "spec.selector" if wanted != live else None
    if want.get("kind") == "Job":
        wanted = ((want.get("metadata") or {}).get("annotations") or {}).get(TEMPLATE_HASH)
        live = ((have.get("metadata") or {}).get("annotations") or {}).get(TEMPLATE_HASH)
        return "spec.template" if wanted != live else None
    return None


def apply_failure(
    failed: Mapping[str, Any],
    wanted: list[Mapping[str, Any]],
    live: list[Mapping[str, Any]] | None = None,
    replace: bool = False,
    what: str | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
) -> dict[str, Any]:
    """One line for a failed apply, and the objects the documented replace path would delete and apply again."""
    step = f"applying {what}: " if what else ""
    server = api_server(kubeconfig, context) if failed.get("timedout") or not failed.get("msg") else None
    at = f" {server}" if server else ""
    if failed.get("timedout"):
        # The task's timeout (vllm_api_timeout) ran out: connected, and no answer.
        timed = failed["timedout"]
        period = timed.get("period") if isinstance(timed, Mapping) else None
        return {
            "msg": f"{step}the Kubernetes API server{at} gave no answer within {period or 'the'} s (vllm_api_timeout), "
            "so the step stopped; check the endpoint (a load balancer or proxy in front of it) and run again: what "
            "was applied stays, a rerun converges",
            "replace": [],
            "refused": False,
        }
    if not (failed.get("msg") or failed.get("error")):
        # No answer at all: the module raised (connection refused, DNS, TLS) before any object was applied.
        return {
            "msg": f"{step}no answer from the Kubernetes API server{at} (unreachable, refused or too slow), so "
            "nothing of this step was applied; check that the cluster is up and that the kubeconfig and context point "
            "at it, then run again",
            "replace": [],
            "refused": False,
        }
    msg = str(failed.get("msg") or failed.get("error") or "the apply failed")
    status = _status(msg)
    message = " ".join(str(status.get("message") or msg).split())
    details = status.get("details") or {}
    if status.get("code") == 409 or status.get("reason") == "Conflict":
        return {
            "msg": f"{message}: another field manager owns these fields; leave them to it, remove them from its "
            "configuration, or re-run with -e vllm_force_conflicts=true to take them over",
            "replace": [],
            "refused": False,
        }
    if "field is immutable" not in message:
        return {"msg": message, "replace": [], "refused": False}

    by_key = {_key(obj): obj for obj in live or []}
    changed = []
    for want in wanted:
        have = by_key.get(_key(want))
        field = _changed_immutable(want, have) if have is not None else None
        if field:
            changed.append((want, field))
    deployments = [(w, f) for w, f in changed if w.get("kind") == "Deployment"]
    if not changed:
        # Neither a selector nor a Job template: the volume objects, which are never replaced automatically.
        causes = ", ".join(str(c.get("field")) for c in details.get("causes") or [] if c.get("field"))
        return {
            "msg": f"{details.get('kind') or 'object'} {details.get('name') or ''} cannot be changed in place"
            f"{' (' + causes + ' is immutable)' if causes else ''}: {message}; llmops.vllm replaces only Jobs and "
            "(with vllm_replace_immutable=true) Deployments, never the model volume: keep the old value, or delete "
            "the object yourself (a Retain PersistentVolume keeps the data)",
            "replace": [],
            "refused": True,
        }
    if deployments and not replace:
        names = "; ".join(
            f"{_label(w)}: {f} is immutable (live {json.dumps(_live_selector(w, by_key), sort_keys=True)}, "
            f"wanted {json.dumps((w.get('spec') or {}).get('selector'), sort_keys=True)})"
            for w, f in deployments
        )
        return {
            "msg": f"{names}; keep the old labels, or re-run with -e vllm_replace_immutable=true to replace it "
            "(delete and create again: the endpoint is down until the new pods are ready)",
            "replace": [],
            "refused": True,
        }
    return {
        "msg": "replacing " + ", ".join(f"{_label(w)} ({f} changed)" for w, f in changed),
        "replace": [_ref(w) for w, _f in changed],
        "refused": False,
    }


def api_server(kubeconfig: str | None = None, context: str | None = None) -> str | None:
    """The server URL of ``context`` in ``kubeconfig`` (or where kubernetes.core looks: K8S_AUTH_HOST,
    K8S_AUTH_KUBECONFIG, KUBECONFIG, ~/.kube/config); None when it cannot tell."""
    if os.environ.get("K8S_AUTH_HOST") and not kubeconfig:
        return os.environ["K8S_AUTH_HOST"]
    path = kubeconfig or os.environ.get("K8S_AUTH_KUBECONFIG") or os.environ.get("KUBECONFIG") or "~/.kube/config"
    try:
        with open(os.path.expanduser(path.split(os.pathsep)[0]), encoding="utf-8") as handle:
            config = yaml.safe_load(handle) or {}
        name = context or os.environ.get("K8S_AUTH_CONTEXT") or config.get("current-context")
        cluster = next(c["context"]["cluster"] for c in config.get("contexts") or [] if c.get("name") == name)
        return next(c["cluster"]["server"] for c in config.get("clusters") or [] if c.get("name") == cluster)
    except (OSError, ValueError, KeyError, TypeError, StopIteration, yaml.YAMLError):
        return None


def _live_selector(want: Mapping[str, Any], by_key: Mapping[tuple[str, str, str], Mapping[str, Any]]) -> Any:
    return (by_key[_key(want)].get("spec") or {}).get("selector")


class FilterModule:
    """llmops.vllm.vllm_apply_failure"""

    def filters(self):
        return {"vllm_apply_failure": apply_failure}
