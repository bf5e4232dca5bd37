# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# PRIVATE to the collection (controller side), behind the filter llmops.vllm.vllm_model_specs.

"""Model resolution: each vllm_models entry with the role defaults, as the server objects are rendered from."""

from __future__ import annotations

import functools
import shlex
from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError
from ansible_collections.llmops.vllm.plugins.module_utils import names
from ansible_collections.llmops.vllm.plugins.module_utils.quantity import parse_quantity
from ansible_collections.llmops.vllm.plugins.module_utils.stage_engine import engine_command, engine_sha256
from ansible_collections.llmops.vllm.plugins.plugin_utils._drain import (
    ROLLING_UPDATE,
    drain_plan,
    drain_warning,
    server_command,
)
from ansible_collections.llmops.vllm.plugins.plugin_utils._engine_arg_check import PARALLEL_FLAGS, check_env
from ansible_collections.llmops.vllm.plugins.plugin_utils._engine_args import (
    engine_arg_list,
    flag_key,
    merge_engine_args,
)
from ansible_collections.llmops.vllm.plugins.plugin_utils._vllm_release import (
    ReleaseView,
    adapt_defaults,
    image_release,
    release_view,
)

LOAD_STRATEGIES = ("ram_copy", "direct", "runai_streamer")
# LeaderWorkerSet's pod label for a pod's place in its group; the leader is 0 (sigs.k8s.io/lws v0.8.0
# api/leaderworkerset/v1/leaderworkerset_types.go WorkerIndexLabelKey).
LWS_WORKER_INDEX = "leaderworkerset.sigs.k8s.io/worker-index"
RAY_PORT = 6379
LWS_SUFFIX = "-lws"
# Keys merged key by key instead of replaced.
MERGED_KEYS = ("engine_args", "env")
GPU_RESOURCE = "nvidia.com/gpu"


@functools.lru_cache(maxsize=1)
def _engine_sha256() -> str:
    return engine_sha256()


def _quantity_or_none(value: Any) -> float | None:
    try:
        return parse_quantity(value)
    except (TypeError, ValueError):
        return None


def _merge_env(base: Any, override: Any) -> dict[str, Any]:
    merged = dict(base or {})
    merged.update(override or {})
    return merged


def _env_list(env: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Mapping to container env entries; a mapping value is used as ``valueFrom`` (e.g. a secretKeyRef)."""
    out = []
    for name, value in env.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            out.append({"name": str(name), "valueFrom": dict(value)})
        else:
            out.append({"name": str(name), "value": str(value)})
    return out


def _with_gpus(resources: Mapping[str, Any], gpus: Any) -> dict[str, Any]:
    """Resources with the GPU count set in requests and limits (when ``gpus`` is given)."""
    out = {k: dict(v or {}) for k, v in (resources or {}).items()}
    if gpus is not None:
        for section in ("requests", "limits"):
            out.setdefault(section, {})[GPU_RESOURCE] = gpus
    return out


def _requested_gpus(resources: Mapping[str, Any]) -> int:
    for section in ("limits", "requests"):
        value = (resources.get(section) or {}).get(GPU_RESOURCE)
        if value is not None:
            number = _quantity_or_none(value)
            return int(number) if number is not None else 0
    return 0


def _release(entry: Mapping[str, Any], defaults: Mapping[str, Any]) -> tuple[str, ReleaseView | None, list[str]]:
    """The vLLM version the model runs (``vllm_version``, else the image tag), what it accepts, and warnings."""
    name = entry.get("name")
    image = entry.get("image", defaults.get("image"))
    version = str(entry.get("vllm_version", defaults.get("vllm_version")) or "").strip() or image_release(image)
    if not version:
        return (
            "",
            None,
            [
                f"model {name}: image {image} does not say which vLLM it runs, so its engine arguments are not checked "
                "and the defaults are the ones for vLLM 0.9.0; set vllm_version"
            ],
        )
    try:
        view = release_view(version)
    except ValueError:
        return version, None, []  # the preflight refuses it
    return version, view, [f"model {name}: {view.note}"] if view.note else []


def resolve(entry: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """One complete model spec: ``entry`` over ``defaults``, plus what the templates derive from it."""
    version, view, warnings = _release(entry, defaults)
    default_args, default_env = defaults.get("engine_args") or {}, defaults.get("env") or {}
    if view is not None:
        # The defaults are the seed's (vLLM 0.9.0); what the user writes in the entry is checked, not adapted.
        default_args, default_env = adapt_defaults(default_args, default_env, view)
    spec: dict[str, Any] = {**defaults, "engine_args": default_args, "env": default_env}
    for key, value in entry.items():
        if key == "engine_args":
            spec[key] = merge_engine_args(default_args, value)
        elif key == "env":
            spec[key] = _merge_env(default_env, value)
        else:
            spec[key] = value
    name = str(spec["name"])
    spec["name"] = name
    spec["vllm_version"] = version
    for key in ("gpus", "stage_workers", "nodes"):
        # Unset: null, which older ansible-core versions may hand over as text.
        if spec.get(key) in ("", "None"):
            spec[key] = None
        elif isinstance(spec.get(key), str) and spec[key].isdigit():
            spec[key] = int(spec[key])
    for key in ("replicas", "port", "startup_timeout"):
        # Extra vars from a survey or the command line arrive as strings.
        if isinstance(spec.get(key), str) and spec[key].isdigit():
            spec[key] = int(spec[key])
    spec["labels"] = dict(spec.get("labels") or {"model": name})
    spec["selector"] = dict(spec["labels"])
    spec["metadata_labels"] = {**spec["labels"], **names.labels("vllm", name)}
    spec["instance_selector"] = {names.INSTANCE_LABEL: name, names.MANAGED_BY_LABEL: names.MANAGED_BY}
    strategy = spec.get("load_strategy") or "ram_copy"
    spec["load_strategy"] = strategy
    model_dir = str(spec.get("model_dir") or name).strip("/")
    spec["model_dir"] = model_dir
    spec["mounts"] = {"models": names.MODELS_MOUNT, "ram": names.RAM_MOUNT, "engine": names.ENGINE_MOUNT}
    spec["volume_path"] = f"{names.MODELS_MOUNT}/{model_dir}"
    model_uri = spec.get("model_uri") or ""
    spec["model_uri"] = model_uri
    if strategy == "ram_copy":
        spec["model_path"] = f"{names.RAM_MOUNT}/{model_dir}"
        workers = ["--workers", str(spec["stage_workers"])] if spec.get("stage_workers") else []
        spec["stage_command"] = engine_command(
            "stage", "--src", spec["volume_path"], "--dest", spec["model_path"], *workers
        )
        spec["pod_annotations"] = {names.ENGINE_SHA256_ANNOTATION: _engine_sha256()}
    elif strategy == "runai_streamer" and model_uri:
        spec["model_path"] = model_uri
    else:
        spec["model_path"] = spec["volume_path"]
    # The server needs the FSx volume unless it streams from object storage.
    spec["uses_volume"] = not (strategy == "runai_streamer" and str(model_uri).startswith("s3://"))
    spec["download"] = bool(spec.get("download", True)) and spec["uses_volume"]
    spec["user_engine_args"] = dict(entry.get("engine_args") or {})
    gpus = spec.get("gpus")
    spec["resources"] = _with_gpus(spec.get("resources") or {}, gpus)
    spec["gpus"] = _requested_gpus(spec["resources"])
    nodes = spec.get("nodes") if spec.get("nodes") not in (None, "") else 1
    spec["nodes"] = nodes
    head: dict[str, Any] = {"port": spec.get("port"), "model": spec["model_path"]}
    if strategy == "runai_streamer":
        head["load-format"] = "runai_streamer"
    engine_args = spec.get("engine_args") or {}
    if isinstance(nodes, int) and nodes > 1:
        # Tensor parallel over a node's GPUs, pipeline parallel over the nodes; what the entry says wins (the
        # preflight checks that tensor × pipeline is the group's GPUs).
        parallel = {"tensor-parallel-size": spec["gpus"], "pipeline-parallel-size": nodes}
        own = {k: v for k, v in spec["user_engine_args"].items() if flag_key(k) in PARALLEL_FLAGS}
        engine_args = merge_engine_args(merge_engine_args(engine_args, parallel), own)
    # How a pod ends without dropping what it serves (its engine flag goes after the user's arguments).
    spec["drain"] = drain_plan(spec, view.flags if view else None)
    engine_args = merge_engine_args(engine_args, spec["drain"]["engine_args"])
    spec["rolling_update"] = dict(ROLLING_UPDATE) if spec.get("strategy") == "RollingUpdate" else None
    # blue/green: the slot label in the selectors (module_utils/blue_green.py renames the slot when it switches).
    spec["upgrade"] = str(spec.get("upgrade") or "")
    if spec["upgrade"] == "blue_green":
        spec["selector"][names.SLOT_LABEL] = name
        spec["metadata_labels"][names.SLOT_LABEL] = name
        spec["deployment_annotations"] = {names.UPGRADE_ANNOTATION: "blue_green"}
    else:
        spec["deployment_annotations"] = {}
    spec["engine_args"] = merge_engine_args(head, engine_args)
    spec["args"] = engine_arg_list(spec["engine_args"], view.negatable() if view else frozenset())
    spec["command"] = server_command(spec.get("image"))
    spec["multi_node"] = _multi_node(spec, view) if isinstance(nodes, int) and nodes > 1 else {}
    # A group's Service reaches its leader only (the workers serve no HTTP).
    spec["service_selector"] = {**spec["selector"], LWS_WORKER_INDEX: "0"} if spec["multi_node"] else spec["selector"]
    env = dict(spec.get("env") or {})
    api_key = spec.get("api_key_secret") or {}
    if api_key:
        # vLLM reads VLLM_API_KEY when --api-key is not given: the key never appears in args or the spec.
        env["VLLM_API_KEY"] = {"secretKeyRef": {"name": api_key["name"], "key": api_key.get("key", "api-key")}}
    spec["env_list"] = _env_list(env)
    spec["warnings"] = (
        warnings + (check_env(name, env, view) if view else []) + list(filter(None, [drain_warning(spec)]))
    )
    spec["api_key_secret"] = dict(api_key) if api_key else {}
    spec["memory_limit"] = ((spec["resources"].get("limits") or {}).get("memory")) or None
    spec["model_size_bytes"] = _quantity_or_none(spec.get("model_size"))
    spec["ram_size_limit_bytes"] = _quantity_or_none(spec.get("ram_size_limit")) if strategy == "ram_copy" else 0.0
    spec["shm_size_limit_bytes"] = _quantity_or_none(spec.get("shm_size_limit") or 0)
    spec["working_memory_bytes"] = _quantity_or_none(spec.get("working_memory") or 0)
    spec["files"] = [str(f) for f in (spec.get("hf_files") or [])]
    return spec


def _multi_node(spec: Mapping[str, Any], view: ReleaseView | None) -> dict[str, Any]:
    """How the pods of a LeaderWorkerSet group start vLLM on this release.

    From the release that has ``--nnodes`` and ``--headless`` (0.11.2 in the catalogues), vLLM runs across nodes
    without Ray: every pod runs the same arguments with its ``--node-rank``, the workers ``--headless``, the
    leader's address as ``--master-addr`` (vllm 0.33.0 config/parallel.py: nnodes > 1 takes the mp backend;
    since 0.11.2 Ray is no longer chosen on its own (0.11.2 config/parallel.py:560-570), and since 0.18.0 it is not a
    dependency of the wheel).
    Before, the group is a Ray cluster (vLLM's LWS example: ``ray start --head`` on the leader, ``ray start
    --address=<leader>:6379 --block`` on the workers) and vLLM runs on the leader with the Ray backend, which
    waits up to 1800 s for the group's GPUs (vllm 0.9.0 executor/ray_utils.py PG_WAIT_TIMEOUT).
    LWS gives every container LWS_LEADER_ADDRESS and LWS_WORKER_INDEX (sigs.k8s.io/lws v0.8.0
    pkg/utils/pod/pod_utils.go); Kubernetes expands ``$(NAME)`` in args from them.
    """
    nodes, args = spec["nodes"], list(spec["args"])
    flags = view.flags if view else {}
    # What the cluster check counts: GPU nodes that can each hold one pod of the group.
    check = {"model": spec["name"], "nodes": nodes, "gpus": spec["gpus"]}
    # The LWS controller makes a headless Service named after the LeaderWorkerSet (sigs.k8s.io/lws v0.8.0
    # pkg/controllers/leaderworkerset_controller.go), so the set takes a name of its own and the model's Service
    # keeps the model's name.
    name = f"{spec['name']}{LWS_SUFFIX}"
    if "nnodes" in flags and "headless" in flags:
        group = [f"--nnodes={nodes}", "--master-addr=$(LWS_LEADER_ADDRESS)"]
        return {
            "name": name,
            "nodes": nodes,
            "group": check,
            "recipe": "multiprocessing",
            "leader": {"command": spec["command"], "args": args + group + ["--node-rank=0"]},
            "worker": {
                "command": spec["command"],
                "args": args + group + ["--node-rank=$(LWS_WORKER_INDEX)", "--headless"],
            },
        }
    serve = shlex.join(
        ["python3", "-m", "vllm.entrypoints.openai.api_server", *args, "--distributed-executor-backend=ray"]
    )
    return {
        "name": name,
        "nodes": nodes,
        "group": check,
        "recipe": "ray",
        "leader": {"command": ["/bin/sh", "-c"], "args": [f"ray start --head --port={RAY_PORT} && exec {serve}"]},
        "worker": {
            "command": ["/bin/sh", "-c"],
            "args": [f"exec ray start --address=$LWS_LEADER_ADDRESS:{RAY_PORT} --block"],
        },
    }


def model_specs(models: Any, defaults: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every entry of ``models`` resolved against ``defaults`` (see DOCUMENTATION)."""
    if not isinstance(models, list):
        raise AnsibleFilterError(f"vllm_models must be a list of model entries, got {type(models).__name__}")
    specs = []
    for index, entry in enumerate(models):
        if not isinstance(entry, Mapping) or not entry.get("name"):
            raise AnsibleFilterError(f"vllm_models[{index}] must be a mapping with at least a name")
        specs.append(resolve(entry, defaults))
    return specs
