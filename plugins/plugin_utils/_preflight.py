# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# PRIVATE to the collection (controller side), behind the filter llmops.vllm.vllm_preflight.

"""The checks of the resolved models before anything touches a cluster: one line per problem."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ansible_collections.llmops.vllm.plugins.module_utils.model_download import is_hf_repo_id, is_repo_file
from ansible_collections.llmops.vllm.plugins.module_utils.quantity import ceil_gi, format_bytes, parse_quantity
from ansible_collections.llmops.vllm.plugins.plugin_utils._download_jobs import download_jobs
from ansible_collections.llmops.vllm.plugins.plugin_utils._drain import drain_problems
from ansible_collections.llmops.vllm.plugins.plugin_utils._engine_arg_check import (
    check_flags,
    check_gpus,
    check_mistral_files,
    check_model_len,
    check_shape,
)
from ansible_collections.llmops.vllm.plugins.plugin_utils._engine_args import flag_key
from ansible_collections.llmops.vllm.plugins.plugin_utils._model_specs import LOAD_STRATEGIES
from ansible_collections.llmops.vllm.plugins.plugin_utils._sizing import memory_budget, ram_volume_shortfall
from ansible_collections.llmops.vllm.plugins.plugin_utils._vllm_release import release_view

DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_1123_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_NAME = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
MODEL_DIR = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
OWNED_BY_SPEC = {
    "port": "port",
    "model": "model_dir or model_uri",
    "load-format": "load_strategy",
    "shutdown-timeout": "shutdown_timeout",
}
STREAM_SCHEMES = ("s3://", "gs://")
AUTOSCALERS = ("hpa", "keda")


def is_dns_label(name: Any) -> bool:
    """A DNS-1035 label: what a Service name must be."""
    return isinstance(name, str) and len(name) <= 63 and bool(DNS_1035_LABEL.match(name))


def _quantity(spec: Mapping[str, Any], key: str, problems: list[str]) -> float | None:
    value = spec.get(key)
    try:
        return parse_quantity(value)
    except (TypeError, ValueError):
        problems.append(f"model {spec['name']}: {key} {value!r} is not a size; write it like 20Gi or 14.5G")
        return None


def _size(text: Any, value: float) -> str:
    """A size as the user wrote it, with its binary-unit value when that reads differently (``14.5G = 13.5Gi``)."""
    shown = format_bytes(value)
    return str(text) if str(text) == shown else f"{text} = {shown}"


def _labels(spec: Mapping[str, Any], problems: list[str]) -> None:
    for key, value in (spec.get("labels") or {}).items():
        if not LABEL_NAME.match(str(key)) or len(str(key).rsplit("/", 1)[-1]) > 63:
            problems.append(f"model {spec['name']}: label key {key!r} is not a valid Kubernetes label name")
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            problems.append(
                f"model {spec['name']}: label {key}={value!r} is not a valid label value "
                "(a quoted string of at most 63 letters, digits, '-', '_' or '.')"
            )


def _sizes(spec: Mapping[str, Any], problems: list[str]) -> None:
    name = spec["name"]
    strategy = spec["load_strategy"]
    shm = _quantity(spec, "shm_size_limit", problems) if spec.get("shm_size_limit") else 0.0
    working = _quantity(spec, "working_memory", problems) if spec.get("working_memory") else 0.0
    ram = 0.0
    if strategy == "ram_copy":
        ram = _quantity(spec, "ram_size_limit", problems)
        model = _quantity(spec, "model_size", problems)
        if ram is not None and model is not None and ram_volume_shortfall(model, ram) > 0:
            problems.append(
                f"model {name}: RAM volume sizeLimit {_size(spec['ram_size_limit'], ram)} is smaller than the model "
                f"({_size(spec['model_size'], model)}); set ram_size_limit to at least {ceil_gi(model)} or use "
                "load_strategy direct"
            )
    limit = spec.get("memory_limit")
    if limit is None or None in (shm, working, ram):
        return
    try:
        budget = memory_budget(limit, ram, shm, working)
    except ValueError:
        problems.append(f"model {name}: resources.limits.memory {limit!r} is not a size; write it like 32Gi")
        return
    if not budget.fits:
        problems.append(
            f"model {name}: memory limit {limit} is smaller than the Memory volumes plus the server's working "
            f"memory, which all count against the pod's memory ({budget.explain()}); raise "
            f"resources.limits.memory to at least {ceil_gi(budget.required)}"
            + (", lower ram_size_limit, or use load_strategy direct" if ram else "")
        )


def _downloads(specs: list[Mapping[str, Any]], problems: list[str]) -> None:
    seen: dict[str, Mapping[str, Any]] = {}
    # The download Jobs as the model_download role names them: lossy (lower case, '-') and cut to 63 characters.
    jobs: dict[str, str] = {}
    for job in download_jobs(list(specs)):
        other = jobs.setdefault(job["name"], job["model_dir"])
        if other != job["model_dir"]:
            problems.append(
                f"model_dir {other} and {job['model_dir']} give the same download Job name ({job['name']}), so one "
                "download would replace the other; rename one of them"
            )
    for spec in specs:
        if not spec.get("download"):
            continue
        repo = spec.get("hf_repo")
        if not repo:
            problems.append(
                f"model {spec['name']}: download is on but hf_repo is empty; name the Hugging Face repository "
                "or set download: false when the weights are already on the volume"
            )
        elif not is_hf_repo_id(repo):
            problems.append(
                f"model {spec['name']}: hf_repo {repo!r} is not a Hugging Face repo id (owner/name: letters, digits, "
                "'-', '_', '.', without '..' or '--')"
            )
        for name in spec.get("files") or []:
            if not is_repo_file(name):
                problems.append(
                    f"model {spec['name']}: hf_files entry {name!r} must be a path inside the repository (no "
                    "leading '/', no '..', no ',')"
                )
        first = seen.setdefault(spec["model_dir"], spec)
        if first is not spec:
            for key in ("hf_repo", "hf_revision", "files"):
                if first.get(key) != spec.get(key):
                    problems.append(
                        f"models {first['name']} and {spec['name']} share model_dir {spec['model_dir']} but differ in "
                        f"{key}; give one of them its own model_dir"
                    )


def _extras(spec: Mapping[str, Any], problems: list[str]) -> None:
    name = spec["name"]
    scaling = spec.get("autoscaling") or {}
    if scaling and scaling.get("kind", "hpa") not in AUTOSCALERS:
        problems.append(
            f"model {name}: autoscaling.kind {scaling.get('kind')!r} is not one of {', '.join(AUTOSCALERS)}"
        )
    if scaling and int(scaling.get("max_replicas", 1)) < int(scaling.get("min_replicas", 1)):
        problems.append(f"model {name}: autoscaling.max_replicas is below min_replicas")
    api_key = spec.get("api_key_secret") or {}
    if api_key and not api_key.get("name"):
        problems.append(f"model {name}: api_key_secret needs the name of an existing Secret (and its key)")
    elif api_key and not DNS_1123_SUBDOMAIN.match(str(api_key["name"])):
        problems.append(
            f"model {name}: api_key_secret name {api_key['name']!r} is not a valid Secret name (lower-case letters, "
            "digits, '-' and '.', at most 253 characters)"
        )
    replicas = spec.get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        problems.append(f"model {name}: replicas {replicas!r} must be a whole number of 0 or more")
    _nodes(spec, problems)
    _ranges(spec, problems)
    problems.extend(drain_problems(spec))


def _whole(value: Any, low: int, high: int | None = None) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)


def _ranges(spec: Mapping[str, Any], problems: list[str]) -> None:
    """Values that go into Kubernetes fields, checked for their type and range before the API server sees them (it
    would refuse the Deployment after the namespace and the storage were applied; render.yml would write them)."""
    name = spec["name"]
    if not _whole(spec.get("port"), 1, 65535):
        problems.append(f"model {name}: port {spec.get('port')!r} must be a whole number from 1 to 65535")
    for key in ("startup_timeout", "stage_workers"):
        value = spec.get(key)
        if value is not None and not _whole(value, 1):
            problems.append(f"model {name}: {key} {value!r} must be a whole number of 1 or more")
    for section in ("resources", "stage_resources"):
        for kind, values in (spec.get(section) or {}).items():
            for resource, value in (values or {}).items():
                where = f"{section}.{kind}.{resource}"
                try:
                    amount = parse_quantity(value)
                except (TypeError, ValueError):
                    problems.append(f"model {name}: {where} {value!r} is not a quantity (like 4, 500m, 32Gi)")
                    continue
                if amount < 0:
                    problems.append(f"model {name}: {where} {value!r} must not be negative")
                elif resource == "nvidia.com/gpu" and amount != int(amount):
                    problems.append(f"model {name}: {where} {value!r} must be a whole number of GPUs")


def _nodes(spec: Mapping[str, Any], problems: list[str]) -> None:
    """A model across nodes: a LeaderWorkerSet group, one pod with its GPUs per node."""
    name, nodes = spec["name"], spec.get("nodes", 1)
    if not isinstance(nodes, int) or isinstance(nodes, bool) or nodes < 1:
        problems.append(f"model {name}: nodes {nodes!r} must be a whole number of 1 or more")
        return
    if nodes == 1:
        return
    if spec.get("gpus", 0) < 1:
        problems.append(f"model {name}: nodes {nodes} needs gpus (per node) of 1 or more")
    if len(str(name)) > 50:
        # Its pods are <name>-lws-<group>-<worker>, a DNS label of at most 63 characters.
        problems.append(f"model {name}: a model across nodes needs a name of at most 50 characters (its pods carry it)")
    if spec.get("autoscaling"):
        problems.append(
            f"model {name}: autoscaling a model across nodes (a LeaderWorkerSet) is not supported; set replicas instead"
        )


def _engine(spec: Mapping[str, Any], problems: list[str]) -> None:
    """Engine arguments against the model's vLLM release (when known), the GPUs and the model's files."""
    name, engine_args = spec["name"], spec.get("engine_args") or {}
    shape = check_shape(name, engine_args)
    problems.extend(shape)
    version = spec.get("vllm_version")
    if version and not shape:
        try:
            view = release_view(version)
        except ValueError:
            problems.append(
                f"model {name}: vllm_version {version!r} is not a vLLM version; write it like 0.9.0 or 0.33.0"
            )
        else:
            problems.extend(check_flags(name, engine_args, view))
    problems.extend(
        check_gpus(name, engine_args, spec["gpus"], spec["nodes"] if isinstance(spec.get("nodes"), int) else 1)
    )
    problems.extend(check_mistral_files(name, engine_args, spec.get("files") if spec.get("download") else [], version))


def preflight(specs: list[Mapping[str, Any]], facts: Mapping[str, Any] | None = None) -> list[str]:
    """Problems with the resolved specs, one line each (see DOCUMENTATION); with ``facts`` (model directory to the
    staging manifest's facts, once the downloads are done) also a ``max-model-len`` the model cannot take."""
    problems: list[str] = []
    for spec in specs:
        known = (facts or {}).get(spec["model_dir"])
        if known:
            problems.extend(check_model_len(spec["name"], spec.get("engine_args") or {}, spec.get("env") or {}, known))
    names: set[str] = set()
    for spec in specs:
        name = spec["name"]
        if not is_dns_label(name):
            problems.append(
                f"model name {name!r} is not a valid DNS label (it names the Deployment and the Service): "
                "lower-case letters, digits and '-', starting with a letter, at most 63 characters"
            )
        if name in names:
            problems.append(f"model name {name!r} is used twice; model names must be unique")
        names.add(name)
        strategy = spec["load_strategy"]
        if strategy not in LOAD_STRATEGIES:
            problems.append(
                f"model {name}: unknown load_strategy {strategy!r}; use one of {', '.join(LOAD_STRATEGIES)}"
            )
        if not MODEL_DIR.match(spec["model_dir"]) or ".." in spec["model_dir"].split("/"):
            problems.append(
                f"model {name}: model_dir {spec['model_dir']!r} must be a relative path on the volume "
                "(letters, digits, '.', '_', '-', '/')"
            )
        uri = spec.get("model_uri") or ""
        if uri and (strategy != "runai_streamer" or not str(uri).startswith(STREAM_SCHEMES)):
            problems.append(
                f"model {name}: model_uri {uri!r} is only used by load_strategy runai_streamer, with an "
                f"{' or '.join(STREAM_SCHEMES)} URI"
            )
        for key, instead in OWNED_BY_SPEC.items():
            if any(flag_key(k) == key for k in (spec.get("user_engine_args") or {})):
                problems.append(f"model {name}: engine_args sets {key}; set {instead} instead")
        _engine(spec, problems)
        _labels(spec, problems)
        _sizes(spec, problems)
        _extras(spec, problems)
    _downloads(specs, problems)
    selectors: dict[tuple, str] = {}
    for spec in specs:
        key = tuple(sorted((str(k), str(v)) for k, v in (spec.get("selector") or {}).items()))
        other = selectors.setdefault(key, spec["name"])
        if other != spec["name"]:
            problems.append(
                f"models {other} and {spec['name']} have the same labels {dict(key)}, so each Service would send "
                "requests to both; give them different labels"
            )
    return problems
