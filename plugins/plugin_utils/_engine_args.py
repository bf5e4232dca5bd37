# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this plugin util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""vLLM engine arguments as data: spelling, merging, and the one place they become an argument list."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["flag_key", "merge_engine_args", "engine_arg_list"]


def flag_key(name: Any) -> str:
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


def engine_arg_list(engine_args: Mapping[str, Any], negatable: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """The argument list for a mapping of engine arguments.

    ``true`` gives a bare flag; ``false`` gives ``--no-<flag>`` for the flags in ``negatable`` (the release's
    ``--x/--no-x`` flags, by :func:`flag_key`) and nothing otherwise; ``null`` gives nothing; a mapping gives
    compact JSON; a list gives the flag followed by one argument per item; anything else ``--flag=value``.
    """
    if not isinstance(engine_args, Mapping):
        raise TypeError(f"engine arguments must be a mapping of flag to value, got {type(engine_args).__name__}")
    args: list[str] = []
    for key, value in engine_args.items():
        flag = "--" + str(key).lstrip("-")
        if value is None:
            continue
        if value is False:
            if flag_key(key) in negatable:
                args.append("--no-" + str(key).lstrip("-"))
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
