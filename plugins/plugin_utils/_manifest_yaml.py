# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# PRIVATE to the collection (controller side), behind the filter llmops.vllm.vllm_manifest_yaml.

"""Objects as a YAML stream for render.yml: stable order, no empty documents."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml


class _ManifestDumper(yaml.SafeDumper):
    """SafeDumper that keeps mapping order, indents lists and writes multi-line strings as literal blocks."""

    def increase_indent(self, flow: bool = False, indentless: bool = False):
        return super().increase_indent(flow, False)


def _str(dumper: yaml.SafeDumper, data: str):
    # Literal blocks cannot carry trailing spaces on a line or some control characters; quote those instead.
    if "\n" in data and not any(line != line.rstrip() for line in data.splitlines()) and "\t" not in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


def _mapping(dumper: yaml.SafeDumper, data: dict):
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items())


_ManifestDumper.add_representer(str, _str)
_ManifestDumper.add_representer(dict, _mapping)


def _plain(value: Any) -> Any:
    """Builtin containers and scalars: Ansible hands filters its own (tagged, lazy) subclasses."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    for kind in (str, int, float):
        if isinstance(value, kind):
            return kind(value)
    return value


def manifest_yaml(objects: list[Any]) -> str:
    """``objects`` as a YAML stream (see DOCUMENTATION)."""
    return "".join(
        "---\n" + yaml.dump(_plain(obj), Dumper=_ManifestDumper, default_flow_style=False, sort_keys=False, width=120)
        for obj in objects
    )
