"""Shared pytest set-up: make this checkout importable and runnable as the llmops.vllm collection."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLLECTIONS = ROOT / ".build" / "collections"


def _link_collection() -> None:
    # Ansible finds collections only under <path>/ansible_collections/<namespace>/<name>.
    link = COLLECTIONS / "ansible_collections" / "llmops" / "vllm"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(ROOT, target_is_directory=True)


_link_collection()
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))
# Subprocesses (ansible, ansible-playbook) see this checkout first, then the collections shipped
# with the `ansible` package (kubernetes.core).
os.environ["ANSIBLE_COLLECTIONS_PATH"] = os.pathsep.join(
    [str(COLLECTIONS)] + [p for p in os.environ.get("ANSIBLE_COLLECTIONS_PATH", "").split(os.pathsep) if p]
)
os.environ.setdefault("ANSIBLE_COLLECTIONS_SCAN_SYS_PATH", "true")
os.environ.setdefault("ANSIBLE_HOST_KEY_CHECKING", "false")
os.environ.setdefault("ANSIBLE_LOCALHOST_WARNING", "false")
os.environ.setdefault("ANSIBLE_INVENTORY_UNPARSED_WARNING", "false")
bindir = str(Path(sys.executable).parent)
if bindir not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
