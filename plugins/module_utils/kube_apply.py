# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The collection's one apply path: a step's objects server-side applied in order, explained when refused.

- Server-side apply under one field manager (``names.FIELD_MANAGER``); check mode is the server's dry run,
  and objects of a namespace that does not exist yet are reported as to be created instead of dry-run.
- Each object is read first, so the result says created / configured / unchanged and the diff is the fields that
  changed (the noise the API server writes on its own left out).
- The documented replace path for immutable fields, decided before anything of the step is applied: a Job whose
  pod template changed (its ``TEMPLATE_HASH`` annotation differs) is deleted and created again, which never
  touches the model on the volume; a Deployment whose selector changed only with ``replace_immutable``.
  Volume objects are never replaced.
- A refusal is one line (:class:`Refused`): a conflict names the other field manager and the field.
Private to the collection: no stability promise.
"""

from __future__ import annotations

import json
import time
import typing as t

from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis import deployment_done, job_done
from ansible_collections.llmops.vllm.plugins.module_utils.kube_client import ApiError, ApiUnavailable, Kube
from ansible_collections.llmops.vllm.plugins.module_utils.names import TEMPLATE_HASH
from ansible_collections.llmops.vllm.plugins.module_utils.rollout import serving_recreate

# The annotation the download Jobs carry with a hash of their pod template (model_download.download_job).
# How long a replaced object may take to go away before the step gives up.
REPLACE_WAIT = 120.0


class Refused(Exception):
    """The step cannot go on; ``str()`` is the one line for the user, ``reason`` a word for programs."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def ref(obj: t.Mapping[str, t.Any]) -> str:
    """``Kind/name``, how results and messages name an object."""
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def _namespace(obj: t.Mapping[str, t.Any]) -> str | None:
    return (obj.get("metadata") or {}).get("namespace")


# Fields the API server changes on every write, or the controllers on their own: not the user's change.
_NOISE = {"status": None, "metadata": {"generation", "resourceVersion", "managedFields", "uid", "creationTimestamp"}}


def denoise(obj: t.Mapping[str, t.Any] | None) -> dict[str, t.Any]:
    out = {}
    for key, value in (obj or {}).items():
        drop = _NOISE.get(key, ())
        if key in _NOISE and drop is None:
            continue
        if drop and isinstance(value, t.Mapping):
            value = {k: v for k, v in value.items() if k not in drop}
        out[key] = value
    return out


def _shown(obj: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """What a diff may show of an object: a Secret's values never."""
    shown = denoise(obj)
    if obj.get("kind") == "Secret":
        shown.update({k: "(hidden)" for k in ("data", "stringData") if k in shown})
    return shown


def _differing(before: t.Mapping[str, t.Any], after: t.Mapping[str, t.Any]) -> tuple[dict, dict]:
    """The top-level fields (and metadata's) that differ, as before and after."""
    old, new = {}, {}
    for key in sorted(set(before) | set(after)):
        if before.get(key) == after.get(key):
            continue
        if key == "metadata" and isinstance(before.get(key), dict) and isinstance(after.get(key), dict):
            sub_old, sub_new = _differing(before[key], after[key])
            old[key], new[key] = sub_old, sub_new
            continue
        if key in before:
            old[key] = before[key]
        if key in after:
            new[key] = after[key]
    return old, new


def settled(obj: t.Mapping[str, t.Any]) -> bool:
    """Whether a Job is Complete, a Deployment rolled out and Available, a LeaderWorkerSet's groups ready, a claim
    Bound (a claim that binds on first consumer is judged by the wait), from the object the apply returned."""
    # The wait's own rules (diagnosis), so that what needs no wait and what ends a wait are one judgement.
    kind, status = obj.get("kind"), obj.get("status") or {}
    if kind == "PersistentVolumeClaim":
        return status.get("phase") == "Bound"
    if kind == "Job":
        return job_done(dict(obj))
    if kind == "LeaderWorkerSet":
        return False  # its status cannot tell (diagnosis group_done): the wait looks at the group's pods
    if kind == "Deployment":
        return deployment_done(dict(obj))
    return True


def changed_immutable(want: t.Mapping[str, t.Any], have: t.Mapping[str, t.Any]) -> str | None:
    """The immutable field of ``want`` that differs from the live ``have``: what the replace path handles."""
    if want.get("kind") == "Deployment":
        selector = (want.get("spec") or {}).get("selector")
        return "spec.selector" if selector != (have.get("spec") or {}).get("selector") else None
    if want.get("kind") == "Job":
        wanted = ((want.get("metadata") or {}).get("annotations") or {}).get(TEMPLATE_HASH)
        live = ((have.get("metadata") or {}).get("annotations") or {}).get(TEMPLATE_HASH)
        return "spec.template" if wanted != live else None
    return None


def explain(error: ApiError, obj: t.Mapping[str, t.Any]) -> Refused:
    """One line for an apply the API server refused."""
    if error.status == 409 or error.reason == "Conflict":
        return Refused(
            f"{ref(obj)}: {error.message}: another field manager owns these fields; leave them to it, remove them "
            "from its configuration, or re-run with -e vllm_force_conflicts=true to take them over",
            "conflict",
        )
    if "field is immutable" in error.message:
        causes = ", ".join(str(c.get("field")) for c in error.details.get("causes") or [] if c.get("field"))
        return Refused(
            f"{obj.get('kind')} {(obj.get('metadata') or {}).get('name')} cannot be changed in place"
            f"{' (' + causes + ' is immutable)' if causes else ''}: {error.message}; llmops.vllm replaces only Jobs "
            "and (with vllm_replace_immutable=true) Deployments, never the model volume: keep the old value, or "
            "delete the object yourself (a Retain PersistentVolume keeps the data)",
            "immutable",
        )
    return Refused(f"{ref(obj)}: {error.message}", "invalid" if error.status in (400, 422) else "api_error")


class Step:
    """One step's objects through the engine; ``result`` is what the action returns for it."""

    def __init__(self, kube: Kube, what: str, objects: t.Sequence[t.Mapping[str, t.Any]]):
        self.kube, self.what, self.objects = kube, what, [dict(o) for o in objects]
        self.result: dict[str, t.Any] = {"what": what, "objects": [], "changed": False, "unsettled": [], "diff": []}
        self._namespaces: dict[str, bool] = {}

    def _namespace_exists(self, name: str) -> bool:
        if name not in self._namespaces:
            found = self.kube.request("GET", f"/api/v1/namespaces/{name}", missing_ok=True)
            self._namespaces[name] = found is not None and not (found.get("metadata") or {}).get("deletionTimestamp")
        return self._namespaces[name]

    def _record(self, obj: t.Mapping[str, t.Any], action: str, before: t.Any = None, after: t.Any = None) -> None:
        self.result["objects"].append({"object": ref(obj), "namespace": _namespace(obj), "action": action})
        if action == "unchanged":
            return
        self.result["changed"] = True
        entry: dict[str, t.Any] = {"object": ref(obj), "action": "create" if action == "created" else action}
        if action == "configured":
            entry["before"], entry["after"] = _differing(_shown(before), _shown(after))
        self.result["diff"].append(entry)

    def apply(self, force: bool = False, replace_immutable: bool = False, check: bool = False) -> dict[str, t.Any]:
        """Apply every object in order (after the replace path, when one is needed). Raises Refused."""
        absent = {id(o) for o in self.objects if _namespace(o) and check and not self._namespace_exists(_namespace(o))}
        live = {id(o): (None if id(o) in absent else self.kube.get(o)) for o in self.objects}
        fields = {id(o): changed_immutable(o, live[id(o)]) if live[id(o)] is not None else None for o in self.objects}
        replace = [(o, fields[id(o)]) for o in self.objects if fields[id(o)]]
        selectors = [(o, f) for o, f in replace if o.get("kind") == "Deployment"]
        if selectors and not replace_immutable:
            raise Refused(
                "; ".join(
                    f"Deployment {o['metadata']['name']}: spec.selector is immutable (live "
                    f"{json.dumps((live[id(o)].get('spec') or {}).get('selector'), sort_keys=True)}, wanted "
                    f"{json.dumps((o.get('spec') or {}).get('selector'), sort_keys=True)})"
                    for o, _f in selectors
                )
                + "; keep the old labels, or re-run with -e vllm_replace_immutable=true to replace it (delete and "
                "create again: the endpoint is down until the new pods are ready)",
                "immutable",
            )
        if replace:
            self.result["replaced"] = [ref(o) for o, _f in replace]
            self.result["message"] = "replacing " + ", ".join(
                f"{o['kind']} {o['metadata']['name']} ({f} changed)" for o, f in replace
            )
            if not check:
                self._replace([o for o, _f in replace])
                for obj, _f in replace:
                    live[id(obj)] = None
        replaced = {id(o) for o, _f in replace}
        for obj in self.objects:
            before = live[id(obj)]
            if id(obj) in absent or (check and id(obj) in replaced):
                # Nothing to dry-run against: a namespace still to be created, or an object still to be deleted.
                self._record(obj, "replaced" if id(obj) in replaced else "created")
                continue
            try:
                after = self.kube.apply(obj, force=force, dry_run=check)
            except ApiError as exc:
                raise explain(exc, obj) from None
            if id(obj) in replaced:
                self._record(obj, "replaced")
            elif before is None:
                self._record(obj, "created")
            elif denoise(before) == denoise(after):
                self._record(obj, "unchanged")
            else:
                self._record(obj, "configured", before, after)
            if serving_recreate(obj, before, after):
                # The endpoint goes down (or would, in check mode): the action says how long and the way around.
                self.result.setdefault("recreates", []).append(after)
            if not check and not settled(after):
                self.result["unsettled"].append(ref(obj))
        return self.result

    def _replace(self, objects: list[dict[str, t.Any]]) -> None:
        """Delete and wait until gone (a Job's pods with it, in the background)."""
        for obj in objects:
            self.kube.delete(obj)
        end = time.monotonic() + REPLACE_WAIT
        while any(self.kube.get(o) is not None for o in objects):
            if time.monotonic() > end:
                raise Refused(
                    f"{', '.join(ref(o) for o in objects)} still there {REPLACE_WAIT:g} s after deleting it for the "
                    "replace path (a finalizer?); look at it with kubectl and run again",
                    "replace_stuck",
                )
            time.sleep(0.5)

    def delete(self, check: bool = False, wait: float = 0.0) -> dict[str, t.Any]:
        """Delete every object, last first; with ``wait``, until each is gone (at most ``wait`` seconds)."""
        gone = []
        for obj in reversed(self.objects):
            if obj.get("kind") == "Namespace":
                # Never removed: it may hold what the user put there, and the next deploy reuses it.
                self.result["objects"].append({"object": ref(obj), "namespace": None, "action": "kept"})
                continue
            try:
                existed = self.kube.delete(obj, dry_run=check)
            except ApiError as exc:
                if exc.status == 404:  # the kind is not served (its CRD is gone): nothing of it to delete
                    existed = False
                else:
                    raise Refused(f"deleting {ref(obj)}: {exc.message}", "api_error") from None
            self.result["objects"].append(
                {"object": ref(obj), "namespace": _namespace(obj), "action": "deleted" if existed else "absent"}
            )
            if existed:
                self.result["changed"] = True
                self.result["diff"].append({"object": ref(obj), "action": "delete"})
                gone.append(obj)
        end = time.monotonic() + wait
        while wait and not check and gone:
            # The wait has its own limit (``wait``); each poll gets the API timeout anew, as the other waits do.
            self.kube.restart_deadline()
            gone = [o for o in gone if self.kube.get(o) is not None]
            if gone and time.monotonic() > end:
                raise Refused(
                    f"{', '.join(ref(o) for o in gone)} still there {wait:g} s after deleting it (a finalizer, or a "
                    "pod still using the claim); look at it with kubectl and run teardown again",
                    "delete_stuck",
                )
            if gone:
                time.sleep(0.5)
        return self.result


def unavailable(error: ApiUnavailable, what: str) -> str:
    """The one line for an API server that did not answer while doing ``what`` (the cause is in the result)."""
    at = f" {error.server}" if error.server else ""
    if error.timed_out:
        return (
            f"{what}: the Kubernetes API server{at} gave no answer within {error.timeout:g} s "
            "(vllm_api_timeout), so the step stopped; check the endpoint (a load balancer or proxy in front of it) "
            "and run again: what was applied stays, a rerun converges"
        )
    return (
        f"{what}: no answer from the Kubernetes API server{at} (unreachable, refused or too slow), so nothing of "
        "this step was applied; "
        "check that the cluster is up and that the kubeconfig and context point at it, then run again"
    )
