# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

# Ansible plugins put their documentation before the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
name: vllm_engine_args
short_description: Render the vLLM server's argument list from a mapping of engine arguments
version_added: 0.1.0
description:
  - The one place the collection turns engine arguments into C(vllm serve) / C(api_server) flags.
  - Each key is a flag name without the leading dashes, spelt as vLLM accepts it (C(max-model-len) or
    C(gpu_memory_utilization)); the spelling is kept, so the output matches a hand-written manifest.
  - V(true) gives a bare flag (C(--enforce-eager)); V(false) and V(null) leave the flag out; a mapping is
    passed as compact JSON (C(--model-loader-extra-config={"concurrency":16})); a list gives the flag followed
    by one argument per item (C(nargs='+') flags); anything else gives C(--flag=value).
  - Mapping order is kept. Write decimals as strings where the exact text matters (V("0.90"), not V(0.90)).
options:
  _input:
    description: Engine arguments, flag name to value.
    type: dict
    required: true
author:
  - llmops.vllm maintainers (@llmops-vllm)
"""

EXAMPLES = r"""
- name: The reference deployment's arguments
  ansible.builtin.debug:
    msg: "{{ {'port': 8080, 'model': '/ram-models/mistral-7b-v0-3', 'enforce-eager': true,
              'gpu_memory_utilization': '0.90'} | llmops.vllm.vllm_engine_args }}"
  # ['--port=8080', '--model=/ram-models/mistral-7b-v0-3', '--enforce-eager', '--gpu_memory_utilization=0.90']
"""

RETURN = r"""
_value:
  description: The arguments, in order.
  type: list
  elements: str
"""

import json
from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError


def flag_key(name: str) -> str:
    """How vLLM sees a flag name: dashes and underscores are the same (``max_model_len`` = ``max-model-len``)."""
    return str(name).lstrip("-").replace("_", "-")


def merge_engine_args(base: Mapping[str, Any] | None, override: Mapping[str, Any] | None) -> dict[str, Any]:
    """``override`` over ``base``, matching keys by :func:`flag_key`; an overridden flag keeps its position
    and takes the override's spelling; new flags are appended; ``None`` removes a flag from the output."""
    merged: dict[str, Any] = {}
    index: dict[str, str] = {}
    for key, value in (base or {}).items():
        merged[key] = value
        index[flag_key(key)] = key
    for key, value in (override or {}).items():
        existing = index.get(flag_key(key))
        if existing is None:
            merged[key] = value
            index[flag_key(key)] = key
            continue
        # Rebuild to keep the position under the override's spelling.
        merged = {(key if k == existing else k): (value if k == existing else v) for k, v in merged.items()}
        index[flag_key(key)] = key
    return merged


def engine_arg_list(engine_args: Mapping[str, Any]) -> list[str]:
    """The argument list for a mapping of engine arguments (see DOCUMENTATION for the rules)."""
    if not isinstance(engine_args, Mapping):
        raise AnsibleFilterError(
            f"vllm_engine_args expects a mapping of flag to value, got {type(engine_args).__name__}"
        )
    args: list[str] = []
    for key, value in engine_args.items():
        flag = "--" + str(key).lstrip("-")
        if value is None or value is False:
            continue
        if value is True:
            args.append(flag)
        elif isinstance(value, Mapping):
            args.append(f"{flag}={json.dumps(dict(value), separators=(',', ':'))}")
        elif isinstance(value, (list, tuple)):
            args.append(flag)
            args.extend(str(item) for item in value)
        else:
            args.append(f"{flag}={value}")
    return args


class FilterModule:
    """llmops.vllm.vllm_engine_args"""

    def filters(self):
        return {"vllm_engine_args": engine_arg_list}
