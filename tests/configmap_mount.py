"""A ConfigMap volume as the kubelet lays it out, for tests that run what pods run from one."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def mount_configmap(data: Mapping[str, str], where: Path) -> Path:
    """Write ``data`` as the kubelet mounts a ConfigMap at ``where``: a timestamped directory, ``..data`` pointing
    at it, and one symbolic link per key into ``..data`` (kubernetes v1.35.4 pkg/volume/util/atomic_writer.go:82
    ``..data``, 112-131 the layout: ``<dir>/<key> -> ..data/<key>``, ``..data -> ..<timestamp>/``)."""
    payload = where / "..2026_11_30_00_00_00.000000001"
    payload.mkdir(parents=True)
    for key, text in data.items():
        (payload / key).write_text(text)
        (where / key).symlink_to(Path("..data") / key)
    (where / "..data").symlink_to(payload.name)
    return where
