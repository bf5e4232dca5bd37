"""One vocabulary of failure reasons: every reason the code can produce is in the table (reasons.py), every entry
of the table is produced somewhere, and each module's RETURN lists exactly the reasons it can return."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml
from ansible_collections.llmops.vllm.plugins.module_utils.reasons import (
    LOG_ONLY_PRODUCERS,
    MODULE_PRODUCERS,
    REASONS,
    returned_by,
)

PLUGINS = Path(__file__).resolve().parents[4] / "plugins"
NAME = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)+$|^[a-z]+$")
# Calls whose argument at this position is a reason (a literal, or literals in a conditional expression).
REASON_ARGUMENT = {"Finding": 0, "ProbeError": 0, "fail": 0, "Refused": 1, "ModelStageError": 1, "InvalidModelError": 1}


def _literals(node: ast.AST) -> set[str]:
    """The strings an expression can be: a literal, either side of a conditional, an operand of ``or``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return _literals(node.body) | _literals(node.orelse)
    if isinstance(node, ast.BoolOp):
        return set().union(*(_literals(value) for value in node.values))
    return set()


def produced_reasons() -> dict[str, set[str]]:
    """Reason literals in the code, by file: the reason argument of the calls above, ``reason=`` keywords (not
    prose such as missing_required_lib's), ``"reason": ...`` entries and what a ``_reason`` function returns."""
    found: dict[str, set[str]] = {}
    for path in PLUGINS.rglob("*.py"):
        if "_vllm_releases" in path.parts:
            continue
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
                position = REASON_ARGUMENT.get(func)
                if position is not None and len(node.args) > position:
                    names |= _literals(node.args[position])
                for keyword in node.keywords:
                    if keyword.arg == "reason" and func != "missing_required_lib":
                        names |= _literals(keyword.value)
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if isinstance(key, ast.Constant) and key.value == "reason":
                        names |= _literals(value)
            elif isinstance(node, ast.FunctionDef) and node.name.endswith("_reason"):
                for ret in (n for n in ast.walk(node) if isinstance(n, ast.Return) and n.value is not None):
                    names |= _literals(ret.value)
        if names:
            found[str(path.relative_to(PLUGINS))] = names
    return found


def producer(path: str) -> str:
    """Who produces the reasons of a file, as the table's ``by`` names it."""
    parts = path.split("/")
    if parts[0] == "modules":
        return parts[1][: -len(".py")]
    if parts[0] == "action" or path in ("module_utils/kube_apply.py", "module_utils/blue_green.py"):
        return "vllm_apply"  # kube_apply's and blue_green's Refused reasons are vllm_apply's
    if path == "module_utils/model_download.py":
        return "vllm_model_stage"  # its cluster-side mode
    if path == "module_utils/model_stage/hub.py":
        return "hub"
    return parts[1]  # a package: diagnosis, model_stage, endpoint_probe


def test_every_reason_is_one_word() -> None:
    words = {path: sorted(n for n in names if not NAME.match(n)) for path, names in produced_reasons().items()}
    assert {path: bad for path, bad in words.items() if bad} == {}


def test_each_reason_is_tagged_with_who_produces_it() -> None:
    # The RETURN docs are checked against the tags, so a reason produced where its tags do not say is undocumented.
    untagged = {
        f"{path}: {name}"
        for path, names in produced_reasons().items()
        for name in names
        if name in REASONS and producer(path) not in REASONS[name].by
    }
    assert sorted(untagged) == []


def test_every_reason_the_code_produces_is_in_the_table() -> None:
    missing = {path: sorted(names - set(REASONS)) for path, names in produced_reasons().items() if names - set(REASONS)}
    assert missing == {}


def test_every_reason_in_the_table_is_produced_somewhere() -> None:
    produced = set().union(*produced_reasons().values())
    assert sorted(set(REASONS) - produced) == []


def test_the_scan_finds_the_reasons_it_should() -> None:
    # Not vacuous: known reasons of each kind of call are found where they are produced.
    produced = produced_reasons()
    assert "oom_killed" in produced["module_utils/diagnosis/memory.py"]
    assert "conflict" in produced["module_utils/kube_apply.py"]
    assert "api_timeout" in produced["action/vllm_apply.py"]
    assert "foreign_dest" in produced["module_utils/model_stage/stage.py"]
    assert "tls_error" in produced["module_utils/endpoint_probe/transport.py"]


def _documented(module: str) -> tuple[set[str], set[str]]:
    """The reasons a module's RETURN names (C(...) and V(...)), and the modules whose reasons it includes (M(...))."""
    text = (PLUGINS / "modules" / f"{module}.py").read_text()
    doc = yaml.safe_load(text.split('RETURN = r"""', 1)[1].split('"""', 1)[0])["reason"]["description"]
    doc = " ".join(doc) if isinstance(doc, list) else doc
    named = set(re.findall(r"[CV]\(([a-z0-9_]+)\)", doc))
    included = set(re.findall(r"M\(llmops\.vllm\.([a-z_]+)\)", doc))
    return named, included


@pytest.mark.parametrize("module", sorted(MODULE_PRODUCERS))
def test_each_module_documents_exactly_the_reasons_it_returns(module: str) -> None:
    named, included = _documented(module)
    for other in included:
        named |= set(returned_by(other))
    assert sorted(named - set(returned_by(module))) == [], "documented but never returned"
    assert sorted(set(returned_by(module)) - named) == [], "returned but not documented"


def test_every_reason_says_what_it_means_and_what_to_do() -> None:
    for name, reason in REASONS.items():
        assert reason.meaning and reason.action and reason.by, name
        known = {p for producers in MODULE_PRODUCERS.values() for p in producers} | set(LOG_ONLY_PRODUCERS)
        assert set(reason.by) <= known, name
