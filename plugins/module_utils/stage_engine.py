# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The staging engine (the ``model_stage`` package) as it travels to pods: one ConfigMap with a key per file,
mounted as the package directory :data:`names.ENGINE_MOUNT` and run as ``python3 <that directory> <command>``;
its files are read through the import system, so this works from the controller and from an AnsiballZ payload."""

from __future__ import annotations

import hashlib
import importlib
import typing as t

from ansible_collections.llmops.vllm.plugins.module_utils import model_stage
from ansible_collections.llmops.vllm.plugins.module_utils.model_stage import (  # noqa: F401
    __main__ as _entry_point,  # imported so that an AnsiballZ payload carries it: the ConfigMap needs every file
)
from ansible_collections.llmops.vllm.plugins.module_utils.names import ENGINE_MOUNT, labels

# Every file of the package (a test keeps this equal to the directory).
MODULES = (
    "__init__",
    "__main__",
    "cli",
    "common",
    "hub",
    "integrity",
    "layout",
    "manifest",
    "parallel_copy",
    "safetensors_header",
    "stage",
)


# Servers rendered before the engine became a package mount this ConfigMap at /opt/llmops and run
# `python3 /opt/llmops/model_stage.py`: this key runs the package from that same directory, so such a pod, started
# between an upgrade's download step (which updates the ConfigMap) and its servers step, still stages.
LEGACY_ENTRY = "model_stage.py"
LEGACY_SOURCE = """# The staging engine for servers rendered before it was a package: run it from this directory.
import os
import runpy

runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "__main__.py"), run_name="__main__")
"""


def engine_command(command: str, *args: str) -> list[str]:
    """A container command running the engine's ``command`` (stage, verify, download) with ``args``."""
    return ["python3", ENGINE_MOUNT, command, *args]


def _source(module: t.Any) -> str:
    loader = getattr(module, "__loader__", None)
    source = loader.get_source(module.__name__) if loader and hasattr(loader, "get_source") else None
    if source is None:
        with open(module.__file__, encoding="utf-8") as handle:
            source = handle.read()
    # Ansible's collection loader in the controller returns bytes; a zipimporter (AnsiballZ) returns text.
    return source.decode("utf-8") if isinstance(source, bytes) else source


def engine_files() -> dict[str, str]:
    """The engine's files, name → text, as the ConfigMap carries them."""
    package = model_stage.__name__
    return {
        f"{name}.py": _source(model_stage if name == "__init__" else importlib.import_module(f"{package}.{name}"))
        for name in MODULES
    }


def engine_sha256(files: t.Mapping[str, str] | None = None) -> str:
    """One digest of all the engine's files (names and texts)."""
    digest = hashlib.sha256()
    for name, text in sorted((files or engine_files()).items()):
        digest.update(name.encode() + b"\0" + text.encode("utf-8") + b"\0")
    return digest.hexdigest()


def stage_configmap(name: str, namespace: str, files: t.Mapping[str, str] | None = None) -> dict[str, t.Any]:
    """The ConfigMap that carries the engine into download and init containers (a key per file, and the entry
    point of servers rendered before the engine was a package)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels("model-stage")},
        "data": {**(files or engine_files()), LEGACY_ENTRY: LEGACY_SOURCE},
    }
