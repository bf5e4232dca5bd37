# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this plugin util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Engine arguments and environment checked against what the model's vLLM release accepts.

Each problem is one line naming the model, the flag, the release and the fix; vLLM itself would only say
"unrecognized arguments" from a crash-looping pod after the image pull. Pure functions over plain data.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ansible_collections.llmops.vllm.plugins.plugin_utils._engine_args import flag_key
from ansible_collections.llmops.vllm.plugins.plugin_utils._vllm_release import (
    DROPPED_FLAGS,
    ENV_TO_FLAG,
    ReleaseView,
    parse_version,
)

__all__ = ["check_flags", "check_env", "check_mistral_files", "check_shape", "check_gpus", "check_model_len"]

FLAG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
# Files vLLM's Mistral formats read (vllm/transformers_utils/config.py, tokenizers/mistral.py).
MISTRAL_CONFIG = "params.json"
MISTRAL_TOKENIZER = re.compile(r"^(tokenizer\.(mm\.)?model\.v.*|tekken\.json)$")
# Parallelism flags whose product is the GPUs one server process uses.
PARALLEL_FLAGS = ("tensor-parallel-size", "pipeline-parallel-size", "data-parallel-size")


def _suggest(key: str, view: ReleaseView) -> str:
    match = difflib.get_close_matches(key, list(view.flags), n=1, cutoff=0.6)
    return f"; did you mean --{match[0]}?" if match else ""


def _as_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _value_problem(key: str, value: Any, prop: Mapping[str, Any], view: ReleaseView) -> str | None:
    """What is wrong with one flag's value for its kind, type and choices; None when nothing."""
    kind = prop.get("kind", "value")
    if kind in ("flag", "bool"):
        if not isinstance(value, bool) and value is not None:
            return f"takes no value (it is a switch): write true or false, not {value!r}"
        return None
    if value is None or value is False:
        return None
    if value is True and kind != "optional":
        return "needs a value; true would render a bare flag that vLLM refuses"
    if isinstance(value, (list, tuple)) and kind != "list":
        return f"takes one value, not a list ({len(value)} items)"
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    kind_type = prop.get("type")
    for item in items:
        if isinstance(item, Mapping):
            if kind_type not in ("json", None, "other"):
                return f"takes a {kind_type}, not a mapping"
            continue
        text = _as_text(item)
        if kind_type == "int" and not re.fullmatch(r"-?\d+", text):
            return f"needs a whole number, not {item!r}"
        if kind_type == "float":
            try:
                float(text)
            except ValueError:
                return f"needs a number, not {item!r}"
        choices = prop.get("choices")
        if choices and text not in {_as_text(c) for c in choices}:
            return f"does not take {item!r}; {view.label} takes one of {', '.join(_as_text(c) for c in choices)}"
    return None


def _open_choice_problem(
    key: str, value: Any, prop: Mapping[str, Any], engine_keys: set[str], view: ReleaseView
) -> str | None:
    """A name the release does not ship (a tool-call parser, a reasoning parser) and no plugin flag to add it."""
    known = prop.get("open_choices")
    opener = prop.get("opened_by")
    if not known or value in (None, False, True) or (opener and opener in engine_keys):
        return None
    # Compared without case: vLLM upper-cases attention backend names before looking them up.
    if _as_text(value).lower() in {_as_text(c).lower() for c in known}:
        return None
    extra = f", or load your own with --{opener}" if opener else ""
    return f"names {value!r}, which {view.label} does not ship; use one of {', '.join(sorted(map(str, known)))}{extra}"


def check_flags(model: str, engine_args: Mapping[str, Any], view: ReleaseView) -> list[str]:
    """Unknown, removed, misspelt and wrongly valued flags for ``view``'s release, one line each."""
    problems: list[str] = []
    engine_keys = {flag_key(k) for k, v in engine_args.items() if v not in (None, False)}
    for raw, value in engine_args.items():
        key = flag_key(raw)
        head = f"model {model}: --{str(raw).lstrip('-')}"
        if "_" in str(raw) and not view.underscores:
            problems.append(f"{head}: {view.label} does not read underscores in flag names; write --{key}")
            continue
        prop = view.flags.get(key)
        if prop is None and key.startswith("no-") and view.flags.get(key[3:], {}).get("kind") == "bool":
            prop = {"kind": "flag"}
        if prop is None:
            if key in view.aliases:
                problems.append(f"{head}: {view.label} spells it --{view.aliases[key]}; write that name in engine_args")
            elif key in view.removed:
                last, first = view.removed[key]
                why = f" because {DROPPED_FLAGS[key]}" if key in DROPPED_FLAGS else ""
                since = ".".join(first.split(".")[:2])
                problems.append(
                    f"{head} was removed in vLLM {since} (last in {last}){why}; "
                    f"{view.label} exits with 'unrecognized arguments': drop it from engine_args (set it to null)"
                )
            elif len(longer := [f for f in view.flags if f.startswith(key)]) == 1:
                problems.append(
                    f"{head} abbreviates --{longer[0]}; write the whole name (an abbreviation stops working when a "
                    "release adds a flag that starts the same)"
                )
            else:
                problems.append(
                    f"{head}: {view.label} has no such flag{_suggest(key, view)} (or set vllm_version to the release "
                    "the image runs)"
                )
            continue
        problem = _value_problem(key, value, prop, view) or _open_choice_problem(key, value, prop, engine_keys, view)
        if problem:
            problems.append(f"{head} {problem}")
    return problems


def check_env(model: str, env: Mapping[str, Any], view: ReleaseView) -> list[str]:
    """Warnings for ``VLLM_*`` variables the release does not read (vLLM logs and ignores them)."""
    warnings = []
    for name in env:
        if not str(name).startswith("VLLM_") or name in view.env:
            continue
        instead = f"; set engine_args {ENV_TO_FLAG[name]} instead" if ENV_TO_FLAG.get(name) in view.flags else ""
        warnings.append(
            f"model {model}: {view.label} does not read the environment variable {name}, so it has no effect{instead}"
        )
    return warnings


def check_shape(model: str, engine_args: Mapping[str, Any]) -> list[str]:
    """Flag names and values that would put more into the container's argument list than one flag."""
    problems = []
    for raw, value in engine_args.items():
        flag = "--" + str(raw).lstrip("-")
        if not FLAG_NAME.match(str(raw).lstrip("-")):
            problems.append(
                f"model {model}: engine_args key {str(raw)!r} is not a flag name (letters, digits, '-' and '_' only)"
            )
            continue
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if isinstance(value, (list, tuple)) and isinstance(item, (Mapping, list, tuple)):
                problems.append(f"model {model}: {flag} list items must be plain values, not {type(item).__name__}s")
            elif isinstance(value, (list, tuple)) and str(item).startswith("-"):
                problems.append(
                    f"model {model}: {flag} list item {str(item)!r} starts with '-', so vLLM would read "
                    "it as another flag; set that flag as its own engine_args key"
                )
            elif isinstance(item, str) and ("\n" in item or "\r" in item):
                problems.append(f"model {model}: {flag} value contains a line break")
    return problems


def check_mistral_files(
    model: str, engine_args: Mapping[str, Any], files: Sequence[str], version: str = ""
) -> list[str]:
    """Mistral formats asked for without the files vLLM reads for them (only when the file list is known).

    ``--config-format=mistral`` reads ``params.json`` (vllm/transformers_utils/config.py, every release);
    ``--tokenizer-mode=mistral`` needs ``tekken.json`` or ``tokenizer.model.v*`` (0.9.0-0.10.2 find_tokenizer_file);
    from 0.15 mistral_common also takes a plain ``tokenizer.model``. ``--tool-call-parser=mistral`` needs only the
    ``[TOOL_CALLS]`` token, which a Hugging Face tokenizer of a Mistral model has too, so it is not checked here.
    """
    if not files:
        return []
    values = {flag_key(k): _as_text(v) for k, v in engine_args.items() if v not in (None, False)}
    names = [str(f).rsplit("/", 1)[-1] for f in files]
    problems = []
    if values.get("config-format") == "mistral" and MISTRAL_CONFIG not in names:
        problems.append(
            f"model {model}: --config-format=mistral reads {MISTRAL_CONFIG}, which is not among hf_files; add it or "
            "use config-format auto"
        )
    plain_ok = bool(version) and parse_version(version) is not None and parse_version(version) >= (0, 15, 0)
    tokenizers = [n for n in names if MISTRAL_TOKENIZER.match(n) or (plain_ok and n == "tokenizer.model")]
    if values.get("tokenizer-mode") == "mistral" and not tokenizers:
        problems.append(
            f"model {model}: --tokenizer-mode=mistral needs the Mistral tokenizer (tekken.json or tokenizer.model.v*), "
            "which is not among hf_files; add it or use tokenizer-mode auto"
        )
    return problems


def check_gpus(model: str, engine_args: Mapping[str, Any], gpus: int, nodes: int = 1) -> list[str]:
    """tensor x pipeline (x data) parallel sizes must use exactly the GPUs one replica requests (``gpus`` per pod,
    ``nodes`` pods of a LeaderWorkerSet group)."""
    sizes: dict[str, int] = {}
    for raw, value in engine_args.items():
        key = flag_key(raw)
        if key not in PARALLEL_FLAGS or value is None:
            continue
        number = int(str(value)) if re.fullmatch(r"\d+", str(value)) else 0
        if number < 1:
            return [f"model {model}: --{key} {value!r} is not a whole number of 1 or more"]
        sizes[key] = number
    used = math.prod(sizes.values())
    product = " x ".join(k for k in PARALLEL_FLAGS if k in sizes or k != "data-parallel-size")
    if nodes > 1:
        if gpus <= 0 or used == gpus * nodes:
            return []
        return [
            f"model {model}: {product} is {used} but the group has {nodes} nodes x {gpus} GPU(s) = {gpus * nodes}; "
            f"use tensor-parallel-size {gpus} and pipeline-parallel-size {nodes} (the defaults for nodes), or "
            "change gpus or nodes"
        ]
    if gpus <= 0 or used == gpus:
        return []
    if used > gpus:
        return [
            f"model {model}: {product} is {used} but only {gpus} GPU(s) are requested; set gpus: {used} or lower "
            "the parallelism"
        ]
    return [
        f"model {model}: {product} is {used} but {gpus} GPU(s) are requested, so {gpus - used} would sit idle; set "
        f"gpus: {used} or raise the parallelism to use them"
    ]


def human_readable_int(value: Any) -> int | None:
    """vLLM's ``human_readable_int`` (0.33.0 vllm/utils/argparse_utils.py): ``32k`` = 32000, ``32K`` = 32768;
    None for what it is not (``auto``, ``-1``)."""
    text = str(value).strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgGtT]?)", text)
    if not match:
        return None
    number, suffix = match.groups()
    if not suffix:
        return int(float(number))
    if suffix.islower():
        return int(float(number) * 10 ** (3 * "kmgt".index(suffix) + 3))
    return int(number) * 2 ** (10 * "KMGT".index(suffix) + 10) if number.isdigit() else None


def derived_max_len(facts: Mapping[str, Any]) -> int | None:
    """The longest context vLLM derives from the model's config, as far as the staging manifest's facts tell
    (0.9.0 vllm/config.py _get_and_verify_max_len): ``max_position_embeddings`` times the RoPE scaling factor,
    except for su, longrope and llama3 scaling (already counted) and Gemma 3. None when the facts do not say (no
    length, no word on RoPE scaling) or when releases disagree (YaRN: 0.33 no longer multiplies)."""
    length = facts.get("max_position_embeddings")
    if not isinstance(length, int) or "rope_scaling" not in facts:
        return None
    rope = facts.get("rope_scaling") or {}
    kind = rope.get("rope_type") or rope.get("type")
    if not rope or kind in ("su", "longrope", "llama3") or "gemma3" in str(facts.get("architecture") or "").lower():
        return length
    if kind == "yarn":
        return None
    factor = rope.get("factor", 1.0)
    return int(length * factor) if isinstance(factor, (int, float)) else None


def check_model_len(
    model: str, engine_args: Mapping[str, Any], env: Mapping[str, Any], facts: Mapping[str, Any]
) -> list[str]:
    """``--max-model-len`` above what the staged model supports, which vLLM refuses at start-up ("User-specified
    max_model_len ... is greater than the derived max_model_len") unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1."""
    wanted = next((v for k, v in engine_args.items() if flag_key(k) == "max-model-len" and v is not None), None)
    length = human_readable_int(wanted) if wanted is not None else None
    derived = derived_max_len(facts or {})
    if length is None or derived is None or length <= derived:
        return []
    if str(env.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "")).lower() in ("1", "true"):
        return []
    return [
        f"model {model}: --max-model-len={wanted} is above the {derived} tokens the model supports "
        f"(max_position_embeddings in its config), so vLLM refuses to start; lower it to {derived} or less, or set "
        "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 in env if you know the model extrapolates"
    ]
