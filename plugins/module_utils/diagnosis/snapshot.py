# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Lookups over one snapshot (plain dicts shaped like the API's JSON): fields, conditions, owners, label
selectors, times and quantities, the events about an object, and secrets masked in log lines."""

from __future__ import annotations

import re
import time
import typing as t
from datetime import datetime, timezone

from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.findings import Settings
from ansible_collections.llmops.vllm.plugins.module_utils.quantity import format_bytes, parse_quantity

# A token that slipped into a log line never reaches the playbook output.
_SECRET_LIKE = re.compile(r"\b(hf_[A-Za-z0-9]{16,}|Bearer\s+[A-Za-z0-9._\-]{16,})")


def _quantity(value: t.Any) -> float:
    """A quantity from the API in base units; an absent one (None) is 0."""
    return 0.0 if value is None else parse_quantity(value)


def _format_amount(resource: str, value: float) -> str:
    if resource in ("memory", "ephemeral-storage"):
        return format_bytes(value)
    if resource == "cpu" and value != int(value):
        return f"{value * 1000:.0f}m"
    return f"{value:g}"


def parse_time(value: t.Any) -> datetime | None:
    """An RFC 3339 time as the API server writes it (``2026-01-15T10:00:00Z``, micro- or nanoseconds too), in UTC;
    None for anything else."""
    if not value or not isinstance(value, str):
        return None
    # Python before 3.11 reads neither "Z" nor more than six fractional digits.
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip()).replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _ts(value: str | None) -> float | None:
    """RFC 3339 time from the API as epoch seconds."""
    parsed = parse_time(value)
    return None if parsed is None else parsed.timestamp()


def _one_line(text: str, limit: int = 240) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def redact(text: str) -> str:
    """Mask what looks like a Hugging Face token or bearer token."""
    return _SECRET_LIKE.sub("<redacted>", text)


def _get(obj: dict | None, *path: str, default: t.Any = None) -> t.Any:
    for key in path:
        if not isinstance(obj, dict):
            return default
        obj = obj.get(key)
    return default if obj is None else obj


def _name(obj: dict) -> str:
    return _get(obj, "metadata", "name", default="")


def condition(obj: t.Mapping[str, t.Any], kind: str) -> dict | None:
    """The condition of type ``kind`` in an object's status, or None."""
    for cond in _get(obj, "status", "conditions", default=[]):
        if cond.get("type") == kind:
            return cond
    return None


def _is_true(obj: dict, kind: str) -> bool:
    cond = condition(obj, kind)
    return bool(cond and cond.get("status") == "True")


def _owned_by(obj: dict, uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in _get(obj, "metadata", "ownerReferences", default=[]))


def _matches_selector(labels: dict[str, str], selector: dict | None) -> bool:
    """Whether labels satisfy a LabelSelector (matchLabels and matchExpressions)."""
    if not selector:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        if not _expression_holds(labels, expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []):
            return False
    return True


def _expression_holds(labels: dict[str, str], key: str, operator: str, values: list[str]) -> bool:
    present = key in labels
    value = labels.get(key)
    if operator == "In":
        return present and value in values
    if operator == "NotIn":
        return not present or value not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt") and present and values:
        try:
            left, right = int(value), int(values[0])
        except (TypeError, ValueError):
            return False
        return left > right if operator == "Gt" else left < right
    return False


class _Index:
    """Lookups over one snapshot."""

    def __init__(self, snap: dict[str, t.Any]):
        self.snap = snap
        self.now = float(snap.get("now") or time.time())
        self.started = float(snap.get("started") or self.now)
        self.namespace = snap.get("namespace", "")
        self.settings = Settings.from_dict(snap.get("settings"))
        self.pods = [p for p in snap.get("pods") or [] if not _get(p, "metadata", "deletionTimestamp")]
        self.events = snap.get("events") or []
        self.logs = snap.get("logs") or {}
        self.nodes = snap.get("nodes")
        self.node_pools = snap.get("node_pools")
        self.pvs = {_name(pv): pv for pv in snap.get("pvs") or []} if snap.get("pvs") is not None else None
        self.storage_classes = (
            {_name(sc): sc for sc in snap.get("storage_classes") or []}
            if snap.get("storage_classes") is not None
            else None
        )
        self.csi_drivers = (
            {_name(d) for d in snap.get("csi_drivers") or []} if snap.get("csi_drivers") is not None else None
        )
        self.pvcs = {_name(p): p for p in snap.get("pvcs") or []}

    def events_for(self, kind: str, name: str) -> list[dict]:
        """Events about one object, newest last."""
        found = [
            e
            for e in self.events
            if _get(e, "involvedObject", "kind") == kind and _get(e, "involvedObject", "name") == name
        ]
        return sorted(found, key=_event_time)

    def age(self, obj: dict) -> float:
        created = _ts(_get(obj, "metadata", "creationTimestamp"))
        return self.now - created if created else 0.0

    def log_text(self, pod: str, container: str) -> tuple[list[str], str | None]:
        entry = self.logs.get(f"{pod}/{container}")
        if not entry:
            return [], None
        return [redact(line) for line in entry.get("lines") or []], entry.get("error")


def _event_time(event: dict) -> float:
    for key in ("lastTimestamp", "eventTime", "firstTimestamp"):
        value = _ts(event.get(key)) if event.get(key) else None
        if value:
            return value
    return _ts(_get(event, "metadata", "creationTimestamp")) or 0.0


def _event_evidence(event: dict | None) -> dict | None:
    if not event:
        return None
    return {
        "type": event.get("type"),
        "reason": event.get("reason"),
        "message": _one_line(event.get("message", ""), 500),
        "count": event.get("count"),
        "source": _get(event, "source", "component") or event.get("reportingComponent"),
    }


def _last_warning(events: list[dict], *reasons: str) -> dict | None:
    for event in reversed(events):
        if event.get("type") == "Warning" and (not reasons or event.get("reason") in reasons):
            return event
    return None
