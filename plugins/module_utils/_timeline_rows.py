# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.

"""The shape of a start-up timeline row and how its times read: shared by startup_timeline.py (the pod's phases)
and load_steps.py (the steps of its model load)."""

from __future__ import annotations

import datetime as dt
import typing as t


def format_seconds(seconds: float | None) -> str:
    """``1m52s``, ``8.4s``, ``350ms``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return (f"{hours}h" if hours else "") + f"{minutes}m{rest:02d}s"


def iso(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def row(name: str, start=None, end=None, seconds=None, detail="", known=True, **extra) -> dict[str, t.Any]:
    """One row: ``phase``, ``start``/``end`` (UTC, to the second), ``seconds`` (from the span unless given),
    ``known``, ``detail`` and the extra keys."""
    if seconds is None and start and end:
        seconds = max(0.0, (end - start).total_seconds())
    made = {"phase": name, "start": iso(start), "end": iso(end), "seconds": seconds, "known": known}
    made.update(detail=detail, **extra)
    return made


def unknown(name: str, why: str, **extra) -> dict[str, t.Any]:
    return row(name, detail=why, known=False, **extra)
