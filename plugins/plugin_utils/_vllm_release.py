# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this plugin util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Which vLLM release a model runs, what that release accepts, and the seed's defaults adapted to it.

The release comes from the model's ``vllm_version`` or else from the image tag (``vllm:0.9.0-gpu-py312-ec2``,
``vllm/vllm-openai:v0.33.0``). What it accepts comes from the catalogues in ``_vllm_releases`` (generated from
vLLM's released sources by ``tools/vllm_catalogue.py``): the catalogue of the same minor release, or for a
release between two catalogued ones both neighbours (a flag either knows is accepted, a flag neither knows is
not), or the nearest one with a warning when the release lies outside the catalogued range.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from ansible_collections.llmops.vllm.plugins.plugin_utils._engine_args import flag_key
from ansible_collections.llmops.vllm.plugins.plugin_utils._vllm_releases import RELEASES, catalogue

__all__ = ["ReleaseView", "image_release", "release_view", "adapt_defaults", "SEED_RELEASE"]

# The release the defaults are written for: the workshop's image.
SEED_RELEASE = "0.9.0"
# Flags of the seed's defaults that later releases dropped with nothing to replace them, and why.
DROPPED_FLAGS = {"swap-space": "the V1 engine never swaps KV blocks to CPU memory"}
# Environment variables of the seed's defaults that later releases replaced with an engine argument.
ENV_TO_FLAG = {"VLLM_ATTENTION_BACKEND": "attention-backend"}
_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?(?:\.(?:post)?(\d+)|\.?post(\d+))?(?:[-+_.].*)?$")


def parse_version(text: Any) -> tuple[int, ...] | None:
    """``(major, minor, patch)`` of a vLLM version or image tag (``v0.33.0``, ``0.9.0-gpu-py312-ec2``, ``0.11``);
    the patch is -1 when the text names only the minor release. None when the text is not a version."""
    match = _VERSION.match(str(text or "").strip())
    if not match:
        return None
    major, minor, patch = match.group(1), match.group(2), match.group(3)
    return (int(major), int(minor), int(patch) if patch is not None else -1)


def image_release(image: Any) -> str | None:
    """The vLLM version an image's tag names, when its repository is a vLLM one; None otherwise (a digest only,
    ``latest``, ``nightly``, a repository that does not say vllm)."""
    ref = str(image or "").split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last:
        return None
    repo, tag = last.split(":", 1)
    if "vllm" not in ref.rsplit(":", 1)[0].lower() and "vllm" not in repo.lower():
        return None
    version = parse_version(tag)
    if version is None:
        return None
    return ".".join(str(p) for p in version if p >= 0)


@dataclasses.dataclass(frozen=True)
class ReleaseView:
    """What one vLLM release accepts, as far as the catalogues tell."""

    version: str
    # The catalogued releases consulted: one, or the two neighbours of an uncatalogued release.
    catalogued: tuple[str, ...]
    flags: Mapping[str, Mapping[str, Any]]
    aliases: Mapping[str, str]
    env: frozenset[str]
    underscores: bool
    # Flag -> (last catalogued release that had it, first catalogued release without it).
    removed: Mapping[str, tuple[str, str]]
    # A warning to show with every model on this release (outside the catalogued range), or "".
    note: str = ""

    @property
    def label(self) -> str:
        """``vLLM 0.33.0`` (``vLLM 0.20.0 (checked against 0.15.1 and 0.33.0)`` between catalogues)."""
        if len(self.catalogued) == 1 and not self.note:
            return f"vLLM {self.version}"
        return f"vLLM {self.version} (checked against {' and '.join(self.catalogued)})"

    def negatable(self) -> frozenset[str]:
        """The ``--x/--no-x`` flags."""
        return frozenset(k for k, v in self.flags.items() if v.get("kind") == "bool")


def _key(release: str) -> tuple[int, ...]:
    return parse_version(release) or (0, 0, 0)


def _removed(upto: tuple[int, ...], flags: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """Flags an older catalogued release had and the next catalogued one (at or before ``upto``) lacked."""
    removed: dict[str, tuple[str, str]] = {}
    older = [r for r in RELEASES if _key(r) <= upto]
    for before, after in zip(older, older[1:], strict=False):
        gone = set(catalogue(before)["flags"]) - set(catalogue(after)["flags"])
        for flag in gone:
            if flag not in flags:
                removed[flag] = (before, after)
    return removed


def release_view(version: str) -> ReleaseView:
    """What ``version`` accepts (see the module docstring for how catalogues are chosen)."""
    wanted = parse_version(version)
    if wanted is None:
        raise ValueError(f"{version!r} is not a vLLM version")
    same_minor = [r for r in RELEASES if _key(r)[:2] == wanted[:2]]
    note = ""
    if same_minor:
        at_or_below = [r for r in same_minor if _key(r) <= wanted]
        chosen = (at_or_below or same_minor)[-1 if at_or_below else 0]
        used: tuple[str, ...] = (chosen,)
    elif wanted > _key(RELEASES[-1]):
        used = (RELEASES[-1],)
        note = (
            f"vLLM {version} is newer than the newest catalogued release {RELEASES[-1]}: its engine arguments are "
            f"checked against {RELEASES[-1]} (make vllm-catalogue VLLM={version} adds it)"
        )
    elif wanted < _key(RELEASES[0]):
        used = (RELEASES[0],)
        note = (
            f"vLLM {version} is older than the oldest catalogued release {RELEASES[0]}: its engine arguments are "
            f"checked against {RELEASES[0]}"
        )
    else:
        lower = [r for r in RELEASES if _key(r) < wanted][-1]
        upper = [r for r in RELEASES if _key(r) > wanted][0]
        used = (lower, upper)
    cats = [catalogue(r) for r in used]
    flags: dict[str, Mapping[str, Any]] = {}
    aliases: dict[str, str] = {}
    for cat in cats:  # the newer neighbour's description wins
        flags.update(cat["flags"])
        aliases.update(cat["aliases"])
    return ReleaseView(
        version=".".join(str(p) for p in wanted if p >= 0),
        catalogued=used,
        flags=flags,
        aliases=aliases,
        env=frozenset().union(*(frozenset(c["env"]) for c in cats)),
        underscores=all(c["underscores"] for c in cats),
        removed=_removed(max(_key(r) for r in used), flags),
        note=note,
    )


def adapt_defaults(
    engine_args: Mapping[str, Any], env: Mapping[str, Any], view: ReleaseView
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The seed's default engine arguments and environment as ``view``'s release takes them: flags it dropped
    (:data:`DROPPED_FLAGS`) left out, environment variables it replaced with a flag (:data:`ENV_TO_FLAG`)
    passed as that flag. Anything else is left for the preflight to judge."""
    args = {
        k: v for k, v in engine_args.items() if not (flag_key(k) in DROPPED_FLAGS and flag_key(k) not in view.flags)
    }
    new_env = dict(env)
    for name, flag in ENV_TO_FLAG.items():
        if name in new_env and name not in view.env and flag in view.flags and new_env[name] is not None:
            args[flag] = new_env.pop(name)
    return args, new_env
