# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""``upgrade: blue_green``: a changed server comes up as a second Deployment beside the serving one, is proven with
vllm_endpoint_probe through a Service of its own, and only then takes the model's Service; the old Deployment is
deleted and drains (its preStop and --shutdown-timeout). A copy that does not become Available, or fails the probe,
is removed and the traffic stays where it was.

The two Deployments are the model's name and ``<name>-next`` (the slots); each pod carries its slot in the label
``llmops.vllm/slot``, which the Deployment's selector and the Service's selector include. The slot serving now is
the one the live Service selects, so a deploy after a switch changes ``<name>-next`` back into ``<name>``.
"""

from __future__ import annotations

import copy
import typing as t

from ansible_collections.llmops.vllm.plugins.module_utils.kube_apply import Refused, Step
from ansible_collections.llmops.vllm.plugins.module_utils.kube_client import Kube
from ansible_collections.llmops.vllm.plugins.module_utils.names import NEXT_SUFFIX, SLOT_LABEL, UPGRADE_ANNOTATION

CANDIDATE_SUFFIX = "-candidate"
# The probe of the new copy: the same checks deploy.yml runs on every endpoint, waiting this long for it to answer.
PROBE_WAIT_S = 120.0

Wait = t.Callable[[Kube, t.Mapping[str, t.Any], dict], t.Optional[dict]]
Probe = t.Callable[[Kube, str, str, int], dict]


def is_blue_green(obj: t.Mapping[str, t.Any]) -> bool:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return obj.get("kind") == "Deployment" and annotations.get(UPGRADE_ANNOTATION) == "blue_green"


def split(objects: t.Sequence[t.Mapping[str, t.Any]]) -> tuple[list[dict], list[tuple[dict, dict]]]:
    """The objects applied as usual, and the (Deployment, Service) pairs of the blue/green models."""
    deployments = {(o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objects if is_blue_green(o)}
    pairs, rest = {}, []
    for obj in objects:
        key = (obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if key in deployments and obj.get("kind") in ("Deployment", "Service"):
            pairs.setdefault(key, {})[obj["kind"]] = dict(obj)
        else:
            rest.append(dict(obj))
    return rest, [(p["Deployment"], p["Service"]) for p in pairs.values() if "Service" in p]


def as_slot(deployment: t.Mapping[str, t.Any], slot: str) -> dict[str, t.Any]:
    """The rendered Deployment as the one of ``slot`` (its name, its selector's and its pods' slot label)."""
    obj = copy.deepcopy(dict(deployment))
    obj["metadata"]["name"] = slot
    obj["metadata"].setdefault("labels", {})[SLOT_LABEL] = slot
    obj["spec"]["selector"]["matchLabels"][SLOT_LABEL] = slot
    obj["spec"]["template"]["metadata"]["labels"][SLOT_LABEL] = slot
    return obj


def with_slot(service: t.Mapping[str, t.Any], slot: str, name: str | None = None) -> dict[str, t.Any]:
    """The rendered Service sending to ``slot``'s pods (as ``name``, for the candidate's own Service)."""
    obj = copy.deepcopy(dict(service))
    obj["spec"]["selector"][SLOT_LABEL] = slot
    if name:
        obj["metadata"]["name"] = name
    return obj


def slots(name: str) -> tuple[str, str]:
    return name, name + NEXT_SUFFIX


def absent(objects: t.Sequence[t.Mapping[str, t.Any]]) -> list[dict[str, t.Any]]:
    """What a teardown deletes: the objects, and for every Deployment the second slot and the candidate's Service
    too, whether the vars of this run say blue_green or not (a model may have switched under other vars)."""
    out = []
    for obj in objects:
        out.append(dict(obj))
        if obj.get("kind") == "Deployment" and not obj["metadata"]["name"].endswith(NEXT_SUFFIX):
            name = obj["metadata"]["name"]
            out.append(as_slot(obj, slots(name)[1]))
            service = {"apiVersion": "v1", "kind": "Service", "metadata": dict(obj["metadata"], annotations={})}
            service["metadata"]["name"] = name + CANDIDATE_SUFFIX
            out.append(service)
    return out


def upgrade(
    kube: Kube,
    what: str,
    pair: tuple[dict, dict],
    wait: t.Mapping[str, t.Any] | None,
    waiter: Wait,
    probe: Probe,
    check: bool = False,
    **apply_args: t.Any,
) -> dict[str, t.Any]:
    """One blue/green model (``pair``: its rendered Deployment and Service): converge in place when the pod template
    is unchanged, else start, prove and switch. The step's result (as Step.apply's) with ``serving``, the slot that
    serves afterwards, and when it switched ``switched`` ({from, to, probe}). Raises Refused when the new copy fails."""
    deployment, service = pair
    name = deployment["metadata"]["name"]
    live_service = kube.get(service)
    active = ((live_service or {}).get("spec") or {}).get("selector", {}).get(SLOT_LABEL) or name
    wanted = as_slot(deployment, active)
    live = kube.get(wanted)
    changed = False
    if live is not None:
        trial = kube.apply(wanted, dry_run=True)
        changed = (trial.get("spec") or {}).get("template") != (live.get("spec") or {}).get("template")
    if not changed:
        done = Step(kube, what, [wanted, with_slot(service, active)]).apply(check=check, **apply_args)
        return dict(done, serving=active)
    target = next(s for s in slots(name) if s != active)
    candidate = with_slot(service, target, name + CANDIDATE_SUFFIX)
    done = Step(kube, what, [as_slot(deployment, target), candidate]).apply(check=check, **apply_args)
    done["message"] = f"blue/green: Deployment {target} starts beside {active}, which serves until {target} passes"
    if check:
        return dict(done, serving=active)
    kinds = {"deployments": [target], "jobs": [], "pvcs": [], "leaderworkersets": []}
    defaults = {"timeout": 1800, "startup_budget": 1800, "poll_interval": 2.0}
    scope = {**(wait or defaults), "namespace": deployment["metadata"]["namespace"], **kinds}
    failed = waiter(kube, scope, done)
    proved: dict[str, t.Any] = {}
    if not failed:
        proved = probe(kube, candidate["metadata"]["namespace"], candidate["metadata"]["name"], _port(service))
    if failed or proved.get("failed"):
        Step(kube, what, [as_slot(deployment, target), candidate]).delete(wait=0)
        why = failed["msg"] if failed else f"{proved.get('failed_check')}: {proved.get('msg')}"
        raise Refused(
            f"blue/green: the new copy of {name} (Deployment {target}) "
            f"{'did not become Available' if failed else 'failed the probe'} ({why}); the traffic stays on "
            f"Deployment {active} and the new copy was removed",
            failed["reason"] if failed else "probe_failed",
        )
    switched = Step(kube, what, [with_slot(service, target)]).apply(**apply_args)
    gone = Step(kube, what, [as_slot(deployment, active), candidate]).delete(wait=0)
    done["objects"] += switched["objects"] + gone["objects"]
    done["diff"] += switched["diff"] + gone["diff"]
    done["message"] = (
        f"blue/green: Deployment {target} passed the probe and took Service {name}; Deployment {active} drains and goes"
    )
    return dict(done, changed=True, serving=target, switched={"from": active, "to": target, "probe": proved})


def _port(service: t.Mapping[str, t.Any]) -> int:
    return int(service["spec"]["ports"][0]["port"])
