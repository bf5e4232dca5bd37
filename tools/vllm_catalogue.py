# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Catalogue what one vLLM release's OpenAI-compatible server accepts: its flags and the environment it reads.

Usage: ``python tools/vllm_catalogue.py 0.33.0 [--source WHEEL|SDIST|DIR]``

The release's sources are read, never imported (no torch, no vLLM). ``pip download`` fetches the wheel (an
sdist would not do: pip builds its metadata, which needs torch, and some releases have none); its ``vllm/**.py``
files are kept in ``~/.cache/llmops-vllm/vllm-src/<version>/``. Then, with ``ast``:

* a small interpreter runs the release's ``subparser_init`` of ``vllm serve`` and its ``make_arg_parser``
  (``python -m vllm.entrypoints.openai.api_server``) over a stand-in parser that records each ``add_argument``;
  what it cannot evaluate is UNKNOWN and only makes the recorded flag less precise;
* ``get_kwargs(SomeConfig)`` is answered from the config dataclass's field annotations, taking the branches of
  that release's own ``get_kwargs`` in their order (a branch this file does not know stops it);
* tool-call and reasoning parser names come from their registries, environment variables from ``vllm/envs.py``.

It writes ``plugins/plugin_utils/_vllm_releases/v<major>_<minor>_<patch>.py`` and the RELEASES line of that
package's ``__init__.py``.
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib.util
import itertools
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import ItemsView
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "plugins" / "plugin_utils" / "_vllm_releases"
CACHE = Path.home() / ".cache" / "llmops-vllm" / "vllm-src"
WIDTH = 120  # the repository's line length (ruff)
# Flags whose names come from a parser registry: (packages holding the registry, flag that loads more names).
REGISTRIES = {
    "tool-call-parser": (("vllm.tool_parsers", "vllm.entrypoints.openai.tool_parsers"), "tool-parser-plugin"),
    "reasoning-parser": (("vllm.reasoning",), "reasoning-parser-plugin"),
}
# How help texts say that a flag is deprecated ("allow deprecated quantization methods" is no such text).
DEPRECATED = re.compile(
    r"[\[(]deprecated[\])]|\bdeprecated:|\bis deprecated\b|\bdeprecated\b.{0,40}\b(removed?|no effect|instead)\b",
    re.I | re.S,
)


# --- The sources --------------------------------------------------------------------------------------------


def fetch_source(version: str, source: Path | None = None) -> Path:
    """A directory holding the release's ``vllm/`` sources (.py files): ``source``, or the cache, filled by pip."""
    if source is not None and source.is_dir():
        return source
    dest = CACHE / version
    if source is None and (dest / "vllm" / "envs.py").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        if source is None:  # any x86_64 manylinux wheel: the .py files are the same on every platform
            platforms = ["manylinux1_x86_64", "manylinux2014_x86_64"] + [
                f"manylinux_2_{n}_x86_64" for n in range(17, 41)
            ]
            pip = [sys.executable, "-m", "pip", "download", f"vllm=={version}", "--no-deps", "--only-binary=:all:"]
            pip += ["--no-cache-dir", "--quiet", "--python-version", "3.12", "--implementation", "cp", "--dest", tmp]
            subprocess.run(pip + [arg for p in platforms for arg in ("--platform", p)], check=True)
            source = next(Path(tmp).glob("vllm-*"))
        extract_py(source, Path(tmp) / "src")
        shutil.rmtree(dest, ignore_errors=True)
        (Path(tmp) / "src").rename(dest)
    return dest


def extract_py(archive: Path, dest: Path) -> None:
    """Copy the ``vllm/**.py`` members of a wheel (zip) or of an sdist (tar with one top folder) into ``dest``."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            members = [(name, lambda name=name: zf.read(name)) for name in zf.namelist()]
            _write_py(members, dest)
    else:
        with tarfile.open(archive) as tf:
            members = [(m.name.split("/", 1)[-1], lambda m=m: tf.extractfile(m).read()) for m in tf if m.isfile()]
            _write_py(members, dest)


def _write_py(members: list, dest: Path) -> None:
    for name, read in members:
        if name.startswith("vllm/") and name.endswith(".py"):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(read())


class Module:
    """One parsed source file and its top-level names as the running program binds them (``TYPE_CHECKING``
    false), plus the definitions only type checkers see."""

    def __init__(self, tree: Tree, name: str, path: Path) -> None:
        self.tree, self.name, self.path = tree, name, path
        self.ast = ast.parse(path.read_text(encoding="utf-8"))
        self.defs: dict[str, ast.AST] = {}
        self.typing_defs: dict[str, ast.AST] = {}
        self.stars: list[ast.ImportFrom] = []  # from x import *
        self.values: dict[str, Any] = {}  # names the interpreter evaluated
        self._collect(self.ast.body, self.defs)

    def _collect(self, body: list[ast.stmt], into: dict[str, ast.AST]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                self._collect(node.body, self.typing_defs)
                self._collect(node.orelse, into)
            elif isinstance(node, (ast.If, ast.With, ast.Try)):
                self._collect(node.body, into)
            elif isinstance(node, ast.ImportFrom) and node.names[0].name == "*":
                self.stars.append(node)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                into.update((alias.asname or alias.name.split(".")[0], node) for alias in node.names)
            elif isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                into[node.name] = node
            elif isinstance(node, ast.Assign):
                into.update((t.id, node) for t in node.targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
                into[node.target.id] = node

    def package(self) -> str:
        return self.name if self.path.name == "__init__.py" else self.name.rpartition(".")[0]


class Tree:
    """The release's sources: modules by dotted name, and the files the catalogue was built from."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.modules: dict[str, Module | None] = {}
        self.used: set[str] = set()

    def module(self, name: str) -> Module | None:
        if name not in self.modules:
            base = self.root / name.replace(".", "/")
            path = base / "__init__.py" if (base / "__init__.py").is_file() else base.with_suffix(".py")
            self.modules[name] = Module(self, name, path) if name.startswith("vllm") and path.is_file() else None
        return self.modules[name]

    def use(self, module: Module) -> Module:
        self.used.add(module.path.relative_to(self.root).as_posix())
        return module


def import_target(module: Module, node: ast.Import | ast.ImportFrom, name: str) -> tuple[str, str | None]:
    """(module, attribute or None) that ``name``, bound by an import statement, refers to."""
    if isinstance(node, ast.Import):
        return next((a.name for a in node.names if a.asname == name), name), None
    base = node.module or ""
    if node.level:
        parts = module.package().split(".")
        base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
    return base, next(a.name for a in node.names if (a.asname or a.name) == name)


def resolve(module: Module, name: str, typing: bool = False) -> tuple[Module, ast.AST] | str | None:
    """Where a module-level name is defined: (module, node), a dotted module name, or None when unknown."""
    for _hop in range(30):
        node = (module.typing_defs.get(name) if typing else None) or module.defs.get(name)
        if node is None:
            sub = module.tree.module(f"{module.name}.{name}")
            if sub:
                return sub.name
            stars = [module.tree.module(import_target(module, star, "*")[0]) for star in module.stars]
            return next((found for m in stars if m and (found := resolve(m, name)) is not None), None)
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            return module, node
        target, attr = import_target(module, node, name)
        if module.tree.module(target) is None:
            return f"{target}.{attr}" if attr else target
        if attr is None:
            return target
        module, name, typing = module.tree.module(target), attr, False
    return None


# --- Type hints and get_kwargs ------------------------------------------------------------------------------

SCALARS = ("bool", "int", "float", "str", "dict", "list", "tuple", "set", "type", "bytes", "object")
GENERICS = {"List": "list", "Dict": "dict", "Tuple": "tuple", "Set": "set", "Type": "type"}


class Hint:
    """One type hint of a field as ``get_kwargs`` tests it: ``get_origin`` (origin), whether ``__module__`` is
    builtins, and what a class or alias is known to be."""

    def __init__(self, origin: str, args: tuple = (), builtin: bool = True, **info: Any) -> None:
        self.origin, self.args, self.builtin = origin, args, builtin
        self.dataclass: bool = info.get("dataclass", False)
        self.dict_subclass: bool = info.get("dict_subclass", False)
        self.enum: tuple = info.get("enum", ())  # (name, value) of an Enum class's members
        self.open: tuple = info.get("open", ())  # a Literal that only type checkers see in place of this hint

    def __repr__(self) -> str:
        return f"Hint({self.origin}, {self.args})"


OTHER = Hint("other", builtin=False)


def to_hint(module: Module, expr: ast.expr | None, depth: int = 0) -> Hint:
    """An annotation as a Hint, following type aliases through the release's modules."""
    if expr is None or depth > 30:
        return OTHER
    if isinstance(expr, ast.Constant):
        if isinstance(expr.value, str):  # a forward reference
            return to_hint(module, ast.parse(expr.value, mode="eval").body, depth + 1)
        return Hint("none") if expr.value is None else OTHER
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.BitOr):
        return Hint("union", (to_hint(module, expr.left, depth + 1), to_hint(module, expr.right, depth + 1)))
    if isinstance(expr, ast.Subscript):
        return subscript_hint(module, expr, depth)
    if isinstance(expr, ast.Attribute):  # module.Name
        found = resolve(module, ast.unparse(expr.value)) if isinstance(expr.value, ast.Name) else None
        target = module.tree.module(found) if isinstance(found, str) else None
        return to_hint(target, ast.Name(expr.attr), depth + 1) if target else Hint(expr.attr, builtin=False)
    name = getattr(expr, "id", "")
    if name in SCALARS or name == "None":
        return Hint("none" if name == "None" else name)
    found = resolve(module, name)
    if not isinstance(found, tuple):
        return OTHER
    where, node = found
    if isinstance(node, ast.ClassDef):
        return class_hint(where, node)
    if not isinstance(node, (ast.Assign, ast.AnnAssign)):
        return OTHER
    hint = to_hint(module.tree.use(where), node.value, depth + 1)
    typed = resolve(module, name, typing=True)  # a Literal that only type checkers see: names the release knows
    if hint.origin != "literal" and typed != found and isinstance(typed, tuple) and hasattr(typed[1], "value"):
        alt = to_hint(module.tree.use(typed[0]), typed[1].value, depth + 1)
        hint = Hint(hint.origin, hint.args, hint.builtin, open=alt.args) if alt.origin == "literal" else hint
    return hint


def subscript_hint(module: Module, expr: ast.Subscript, depth: int) -> Hint:
    """``X[...]``: Literal, Optional, Union, Annotated (pydantic's SkipValidation too) and generic collections."""
    head = ast.unparse(expr.value).rsplit(".", 1)[-1]
    items = expr.slice.elts if isinstance(expr.slice, ast.Tuple) else [expr.slice]
    if head == "Literal":  # nested Literals flatten, as typing does
        values: list = []
        for item in items:
            nested = to_hint(module, item, depth + 1) if not isinstance(item, ast.Constant) else None
            values += nested.args if nested and nested.origin == "literal" else [literal_value(module, item)]
        return Hint("literal", tuple(dict.fromkeys(values)), builtin=False)
    args = tuple(
        Hint("ellipsis") if isinstance(e, ast.Constant) and e.value is Ellipsis else to_hint(module, e, depth + 1)
        for e in items
    )
    if head in ("Optional", "Union"):
        return Hint("union", args + ((Hint("none"),) if head == "Optional" else ()))
    if head in ("Annotated", "SkipValidation"):  # SkipValidation[X] is Annotated[X, SkipValidation()]
        return Hint("annotated", args[:1] + (OTHER,), builtin=False)
    origin = head if head in SCALARS else GENERICS.get(head, head)
    return Hint(origin, args, builtin=head in SCALARS)


def flatten(hint: Hint, recursive: bool, top: bool = True) -> list[Hint]:
    """The set of hints ``get_kwargs`` tests: older releases take the arguments of a top-level Union or Annotated
    (typing flattens nested Unions itself); newer ones recurse through both (their ``get_type_hints``)."""
    if hint.origin == "annotated" and (top or recursive):
        return flatten(hint.args[0], True, False) if recursive else list(hint.args)
    if hint.origin == "union":
        return [h for arg in hint.args for h in flatten(arg, recursive, False)]
    return [hint]


def class_hint(module: Module, node: ast.ClassDef) -> Hint:
    bases = {ast.unparse(b.value if isinstance(b, ast.Subscript) else b).rsplit(".", 1)[-1] for b in node.bases}
    if bases & {"Enum", "IntEnum", "StrEnum"} or any("Enum" in ast.unparse(k.value) for k in node.keywords):
        members = [(t.id, constant(s.value)) for s in node.body if isinstance(s, ast.Assign) for t in s.targets]
        return Hint("other", builtin=False, enum=tuple(m for m in members if not m[0].startswith("_")))
    return Hint("other", builtin=False, dataclass=is_dataclass(node), dict_subclass=bool(bases & {"dict", "Dict"}))


def constant(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def literal_value(module: Module, expr: ast.expr) -> Any:
    """A ``Literal[...]`` member: a constant, or a name the interpreter can evaluate (an enum member's value)."""
    value = Interp(module.tree).eval(expr, Frame(module))
    return getattr(value, "value", value)


def is_dataclass(node: ast.ClassDef) -> bool:
    return any(re.search(r"\b(dataclass|config)\b", ast.unparse(d)) for d in node.decorator_list)


def dataclass_fields(module: Module, node: ast.ClassDef) -> dict[str, tuple[Module, ast.AnnAssign, str]]:
    """Field -> (module, annotated statement, docstring), base classes' first, as ``dataclasses.fields`` has them."""
    fields: dict[str, tuple[Module, ast.AnnAssign, str]] = {}
    for base in node.bases:
        found = resolve(module, base.id) if isinstance(base, ast.Name) else None
        if isinstance(found, tuple) and isinstance(found[1], ast.ClassDef) and is_dataclass(found[1]):
            fields.update(dataclass_fields(*found))
    module.tree.use(module)
    for stmt, after in zip(node.body, node.body[1:] + [None], strict=True):
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            if not re.match(r"^(typing\.)?(ClassVar|InitVar)\b", ast.unparse(stmt.annotation)):
                doc = constant(after.value) if isinstance(after, ast.Expr) else ""
                fields[stmt.target.id] = (module, stmt, doc if isinstance(doc, str) else "")
    return fields


def enum_names(node: ast.ClassDef, field: str, members: tuple) -> list:
    """What a field typed with an Enum takes: pydantic matches the members' values, unless the class has a
    "before" validator for the field that looks members up by name (``Enum[value.upper()]``), maybe "auto" too."""
    validator = next(
        (
            ast.unparse(f).replace("'", '"')
            for f in node.body
            if isinstance(f, ast.FunctionDef) and f'"{field}"' in ast.unparse(f.decorator_list).replace("'", '"')
        ),
        "",
    )
    if re.search(r"\w+Enum\[", validator):
        return [name for name, _value in members] + (["auto"] if '"auto"' in validator else [])
    return [value for _name, value in members if value is not None]


class KwargsRules:
    """How this release's ``get_kwargs`` turns a field's type hints into argparse keyword arguments: the order of
    its if/elif branches, which fields take human-readable integers, and its helpers' quirks."""

    KNOWN = ("dataclass", "bool_str", "bool", "Literal", "tuple", "list", "set", "int", "float", "dict_str", "dict")

    def __init__(self, arg_utils: Module) -> None:
        funcs = {n.name: n for n in arg_utils.ast.body if isinstance(n, ast.FunctionDef)}
        body = funcs.get("_compute_kwargs") or funcs["get_kwargs"]
        self.recursive = "get_type_hints" in funcs
        self.dict_subclass = "is_dict_subclass" in funcs
        self.metavar_if_str = '"metavar" if' in ast.unparse(funcs["literal_to_kwargs"]).replace("'", '"')
        self.branches: list[str] = []
        self.human_ints: set[str] = set()
        chain: ast.If | None = next(
            n for n in ast.walk(body) if isinstance(n, ast.If) and "dataclass_cls" in ast.unparse(n)
        )
        while chain is not None:
            self.branches.append(self._branch(ast.unparse(chain.test)))
            if self.branches[-1] == "int":  # field names compared with `name` take human-readable ints ("32k")
                nodes = [n for n in ast.walk(ast.Module(chain.body, [])) if isinstance(n, (ast.Set, ast.Compare))]
                self.human_ints = {
                    c.value for n in nodes for c in ast.walk(n) if isinstance(getattr(c, "value", 0), str)
                }
            orelse = chain.orelse
            chain = orelse[0] if len(orelse) == 1 and isinstance(orelse[0], ast.If) else None

    def _branch(self, test: str) -> str:
        named = re.findall(r"contains_type\(type_hints, (\w+)\)", test)
        if "dataclass_cls" in test:
            return "dataclass"
        if test.replace(" ", "") == "type_hints=={bool,str,type(None)}":
            return "bool_str"
        if named[:2] == ["dict", "str"] and "any(" in test:
            return "dict_str"
        if named == ["str"] and "any(" in test:
            return "str"
        if len(named) == 1 and named[0] in self.KNOWN and "==" not in test:
            return named[0]
        raise SystemExit(f"get_kwargs has a branch this generator does not know: {test}")

    def kwargs(self, module: Module, node: ast.ClassDef) -> dict[str, dict[str, Any]]:
        """What ``get_kwargs(cls)`` returns, argparse ``type`` values given as catalogue type names."""
        out = {}
        for name, (where, stmt, doc) in dataclass_fields(module, node).items():
            hints = flatten(to_hint(where, stmt.annotation), self.recursive)
            hints = [Hint("dict") if h.dict_subclass and self.dict_subclass else h for h in hints]
            kw: dict[str, Any] = {"default": UNKNOWN, "help": doc}
            self._apply(kw, name, hints)
            if "_literal" in kw:  # a collection of a Literal: choices from the element type
                literal = kw.pop("_literal")
                kw.update(type=self.scalar(literal[0]), choices=sorted(literal))
            opens = [v for h in hints for v in (enum_names(node, name, h.enum) if h.enum else h.open)]
            if opens and not kw.get("choices"):
                kw["_open"] = opens
            out[name] = kw
        return out

    def _apply(self, kw: dict[str, Any], name: str, hints: list[Hint]) -> None:
        has = {h.origin for h in hints}
        for branch in self.branches:
            if branch == "dataclass" and any(h.dataclass for h in hints):
                kw["type"] = "json"
            elif branch == "bool_str" and has == {"bool", "str", "none"} and len(hints) == 3:
                kw.update(type="str", nargs="?", const=True)
            elif branch == "bool" and "bool" in has:
                kw["action"] = "BooleanOptionalAction"
            elif branch in ("int", "float") and branch in has:
                kw["type"] = "other" if name in self.human_ints else branch
            elif branch == "Literal" and "literal" in has:
                values = next(h.args for h in hints if h.origin == "literal")
                kw.update({"type": self.scalar(values[0]), "choices": sorted(values)})
                if self.metavar_if_str and "str" in has:
                    kw["metavar"] = kw.pop("choices")
            elif branch in ("tuple", "list", "set") and branch in has:
                args = next(h for h in hints if h.origin == branch).args or (Hint("str"),)
                fixed = branch == "tuple" and all(a.origin != "ellipsis" for a in args)
                kw.update(nargs=len(args) if fixed else "+", type={"union": "str"}.get(args[0].origin, args[0].origin))
                if args[0].origin == "literal":
                    kw["_literal"] = args[0].args
            elif branch in ("dict_str", "dict") and "dict" in has:
                if branch == "dict" or "str" in has or any(not h.builtin for h in hints):
                    kw["type"] = "json"
                else:
                    continue
            elif branch == "str" and ("str" in has or any(not h.builtin for h in hints)):
                kw["type"] = "str"
            else:
                continue
            return
        raise SystemExit(f"get_kwargs cannot handle field {name}: {hints}")

    @staticmethod
    def scalar(value: Any) -> str:
        return {bool: "bool", int: "int", float: "float"}.get(type(value), "str")


# --- A small interpreter for the functions that build the parser --------------------------------------------


class Unknown:
    """A value the interpreter cannot know; ``Ext`` is one from outside vLLM, by its dotted name."""

    def __repr__(self) -> str:
        return "<unknown>"


class Ext(Unknown):
    def __init__(self, dotted: str) -> None:
        self.dotted = dotted


UNKNOWN = Unknown()
# Values from outside vLLM that matter; json.loads and friends as the catalogue's type names.
EXTERNAL = {"json.loads": "json", "argparse.BooleanOptionalAction": "BooleanOptionalAction", "ssl.CERT_NONE": 0}
BUILTINS = {f.__name__: f for f in (list, tuple, sorted, set, dict, len, any, all)}
BUILTINS |= {"str": "str", "int": "int", "float": "float", "bool": "bool", "True": True, "False": False, "None": None}
# vLLM's helpers for argparse types: they stand for what they wrap (None) or for a catalogue type name.
HELPERS = {"optional_type": None, "parse_type": None, "human_readable_int": "other", "union_dict_and_str": "json"}
HELPERS |= {"human_readable_int_or_auto": "other", "nullable_kvs": "json", "parse_reasoning_parser": "str"}


class Parser:
    """Stand-in for FlexibleArgumentParser, its argument groups and its subparsers: records ``add_argument``."""

    def __init__(self, actions: list | None = None) -> None:
        self.actions: list[tuple[list, dict]] = [] if actions is None else actions
        self.created: Parser | None = None

    def add_argument(self, *names: Any, **kwargs: Any) -> None:
        self.actions.append((list(names), kwargs))

    def add_argument_group(self, *args: Any, **kwargs: Any) -> Parser:
        return Parser(self.actions)

    def add_parser(self, *args: Any, **kwargs: Any) -> Parser:
        self.created = Parser()
        return self.created


class Ref:
    """A vLLM class, function (with what it is bound to), instance (kind "instance") or ``super()``."""

    def __init__(self, module: Module, node: Any, bound: Any = None, owner: Ref | None = None, kind: str = "") -> None:
        self.module, self.node, self.bound, self.owner, self.kind = module, node, bound, owner, kind

    def mro(self) -> list[Ref]:
        out = [self]
        for base in self.node.bases:
            found = resolve(self.module, base.id) if isinstance(base, ast.Name) else None
            if isinstance(found, tuple) and isinstance(found[1], ast.ClassDef):
                out += [r for r in Ref(*found).mro() if all(r.node is not o.node for o in out)]
        return out


class Frame:
    def __init__(self, module: Module, local: dict | None = None, func: Ref | None = None) -> None:
        self.module, self.local, self.func = module, local or {}, func


class Return(Exception):
    def __init__(self, value: Any) -> None:
        self.value = value


class Interp:
    """Runs vLLM functions that add arguments, as far as it can: what it cannot know is UNKNOWN, an ``if`` on an
    unknown test runs both branches, and calls into vLLM are followed only where a parser or kwargs go."""

    def __init__(self, tree: Tree, argv: list[str] | None = None, rules: KwargsRules | None = None) -> None:
        self.tree, self.argv, self.rules, self.depth = tree, argv or [], rules, 0

    def global_(self, module: Module, name: str) -> Any:
        if name not in module.values:
            module.values[name] = UNKNOWN  # while evaluating: no endless recursion
            found = resolve(module, name)
            if found is None:
                value = BUILTINS.get(name, UNKNOWN)
            elif isinstance(found, str):
                value = self.tree.module(found) or EXTERNAL.get(found, Ext(found))
            elif isinstance(found[1], (ast.ClassDef, ast.FunctionDef)):
                value = Ref(*found)
            else:
                value = self.eval(found[1].value, Frame(found[0]))
            module.values[name] = value
        return module.values[name]

    def attr(self, obj: Any, name: str) -> Any:
        if isinstance(obj, Module):
            return self.global_(obj, name)
        if isinstance(obj, Ext):
            dotted = f"{obj.dotted}.{name}"
            return list(self.argv) if dotted == "sys.argv" else EXTERNAL.get(dotted, Ext(dotted))
        if isinstance(obj, Ref) and obj.kind == "super":
            cls = obj.bound.owner if obj.bound.kind == "instance" else obj.bound
            return self.class_attr(cls, name, obj.bound, after=obj.owner)
        if isinstance(obj, Ref) and obj.kind == "instance":
            return self.class_attr(obj.owner, name, obj)
        if isinstance(obj, Ref) and isinstance(obj.node, ast.ClassDef):
            return self.class_attr(obj, name, obj)
        return getattr(obj, name, UNKNOWN) if isinstance(obj, (str, list, dict, Parser, SimpleNamespace)) else UNKNOWN

    def class_attr(self, cls: Ref, name: str, bound: Ref, after: Ref | None = None) -> Any:
        """A class attribute through the MRO (after ``after`` for ``super()``): a method bound as its decorators
        say, an enum member, a class variable; a parser registry's names."""
        if name in ("__name__", "__doc__"):
            return cls.node.name if name == "__name__" else ast.get_docstring(cls.node) or ""
        if name in ("tool_parsers", "reasoning_parsers", "list_registered"):
            names = registry(self.tree, cls.module.path.parent)
            return (lambda: names) if name == "list_registered" else dict.fromkeys(names)
        mro = cls.mro()
        for klass in mro[[r.node for r in mro].index(after.node) + 1 :] if after else mro:
            for stmt in klass.node.body:
                if isinstance(stmt, ast.FunctionDef) and stmt.name == name:
                    decorators = {ast.unparse(d) for d in stmt.decorator_list}
                    instance = bound if bound.kind == "instance" else None
                    this = None if "staticmethod" in decorators else cls if "classmethod" in decorators else instance
                    return Ref(klass.module, stmt, bound=this, owner=klass)
                targets = getattr(stmt, "targets", None) or [getattr(stmt, "target", None)]
                if any(getattr(t, "id", None) == name for t in targets) and getattr(stmt, "value", None):
                    value = self.eval(stmt.value, Frame(klass.module))
                    return (
                        SimpleNamespace(name=name, value=value) if class_hint(klass.module, klass.node).enum else value
                    )
        return UNKNOWN

    def call(self, func: Any, args: list, kwargs: dict) -> Any:
        if isinstance(getattr(func, "__self__", None), Parser):
            return func(*args, **kwargs)
        if isinstance(func, Ref) and isinstance(func.node, ast.ClassDef):
            return (
                Parser()
                if "ArgumentParser" in func.node.name
                else Ref(func.module, func.node, owner=func, kind="instance")
            )
        if isinstance(func, Ref) and isinstance(func.node, ast.FunctionDef):
            return self.call_function(func, args, kwargs)
        if any(isinstance(v, Unknown) for v in [*args, *kwargs.values()]):
            return UNKNOWN
        if func in ("int", "float", "str", "bool") and args:
            func = {"int": int, "float": float, "str": str, "bool": bool}[func]
        try:
            return func(*args, **kwargs) if callable(func) else UNKNOWN
        except Exception:  # whatever the call raises, its result is unknown
            return UNKNOWN

    def call_function(self, func: Ref, args: list, kwargs: dict) -> Any:
        node: ast.FunctionDef = func.node
        if node.name in HELPERS:
            return HELPERS[node.name] or (args[0] if args else UNKNOWN)
        if node.name == "get_kwargs" and self.rules and isinstance(args[0], Ref):
            self.tree.use(func.module)
            return copy.deepcopy(self.rules.kwargs(args[0].module, args[0].node))
        source = ast.unparse(node)
        builds = "add_argument" in source or "_kwargs[" in source or any(isinstance(a, Parser) for a in args)
        if not builds or "help" in node.name or self.depth > 12:
            return UNKNOWN
        self.tree.use(func.module)
        params = [p.arg for p in node.args.posonlyargs + node.args.args]
        frame = Frame(func.module, dict.fromkeys(params, UNKNOWN), func)
        defaults = node.args.defaults
        frame.local.update(
            zip(params[len(params) - len(defaults) :], [self.eval(d, frame) for d in defaults], strict=True)
        )
        frame.local.update(zip(params, ([func.bound] if func.bound is not None else []) + list(args), strict=False))
        frame.local.update((k, v) for k, v in kwargs.items() if k in frame.local)
        self.depth += 1
        try:
            self.run(node.body, frame)
        except Return as ret:
            return ret.value
        finally:
            self.depth -= 1
        return None

    def run(self, body: list[ast.stmt], frame: Frame) -> None:
        for stmt in body:
            self.stmt(stmt, frame)

    def stmt(self, node: ast.stmt, frame: Frame) -> None:
        if isinstance(node, ast.Return):
            raise Return(self.eval(node.value, frame))
        if isinstance(node, ast.Expr):
            self.eval(node.value, frame)
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and node.value is not None:
            value = self.eval(node.value, frame)
            if isinstance(node, ast.AugAssign):
                value = self.binop(node.op, self.eval(node.target, frame), value)
            for target in getattr(node, "targets", [getattr(node, "target", None)]):
                self.assign(target, value, frame)
        elif isinstance(node, ast.Delete):
            for target in node.targets:
                container, key = self.eval(target.value, frame), self.eval(target.slice, frame)
                if isinstance(container, dict):
                    container.pop(key, None)
        elif isinstance(node, ast.If):
            test = truth(self.eval(node.test, frame))
            self.run(node.body if test is not False else [], frame)
            self.run(node.orelse if test is not True else [], frame)
        elif isinstance(node, ast.For):
            items = self.eval(node.iter, frame)
            for item in items if isinstance(items, (list, tuple, dict, ItemsView)) else []:
                self.assign(node.target, item, frame)
                self.run(node.body, frame)
        elif isinstance(node, (ast.With, ast.Try)):
            self.run(node.body, frame)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                name = alias.asname or alias.name.split(".")[0]
                target, attr = import_target(frame.module, node, name)
                module = self.tree.module(target)
                frame.local[name] = (
                    (self.global_(module, attr) if attr else module)
                    if module
                    else EXTERNAL.get(f"{target}.{attr}", Ext(f"{target}.{attr}" if attr else target))
                )
        elif isinstance(node, ast.FunctionDef):
            frame.local[node.name] = Ref(frame.module, node)

    def assign(self, target: ast.expr, value: Any, frame: Frame) -> None:
        if isinstance(target, ast.Name):
            frame.local[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            values = list(value) if isinstance(value, (list, tuple)) else [UNKNOWN] * len(target.elts)
            for t, v in zip(target.elts, values, strict=False):
                self.assign(t, v, frame)
        elif isinstance(target, ast.Subscript):
            container, key = self.eval(target.value, frame), self.eval(target.slice, frame)
            if isinstance(container, dict) and not isinstance(key, Unknown):
                container[key] = value

    def eval(self, node: ast.expr | None, frame: Frame) -> Any:
        if node is None or isinstance(node, ast.Constant):
            return getattr(node, "value", None)
        if isinstance(node, ast.Name):
            if node.id in frame.local:
                return frame.local[node.id]
            return frame.module.name if node.id == "__name__" else self.global_(frame.module, node.id)
        if isinstance(node, ast.Attribute):
            return self.attr(self.eval(node.value, frame), node.attr)
        if isinstance(node, ast.Subscript):
            container, key = self.eval(node.value, frame), self.eval(node.slice, frame)
            try:
                return container[key] if isinstance(container, (dict, list, tuple, str)) else UNKNOWN
            except (KeyError, IndexError, TypeError):
                return UNKNOWN
        if isinstance(node, ast.Slice):
            return slice(self.eval(node.lower, frame), self.eval(node.upper, frame), self.eval(node.step, frame))
        if isinstance(node, ast.Call):
            return self.eval_call(node, frame)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            items = self.starred(node.elts, frame)
            return tuple(items) if isinstance(node, ast.Tuple) else items
        if isinstance(node, ast.Dict):
            out: dict = {}
            for key, value in zip(node.keys, node.values, strict=True):
                if key is not None:
                    out[self.eval(key, frame)] = self.eval(value, frame)
                elif isinstance(unpacked := self.eval(value, frame), dict):  # {**other}
                    out.update(unpacked)
            return out
        if isinstance(node, ast.JoinedStr):
            parts = [self.eval(v.value, frame) if isinstance(v, ast.FormattedValue) else v.value for v in node.values]
            return UNKNOWN if any(isinstance(p, Unknown) for p in parts) else "".join(map(str, parts))
        if isinstance(node, ast.BinOp):
            return self.binop(node.op, self.eval(node.left, frame), self.eval(node.right, frame))
        if isinstance(node, ast.BoolOp):
            return self.boolop(node, frame)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            test = truth(self.eval(node.operand, frame))
            return UNKNOWN if test is None else not test
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            return self.compare(node.ops[0], self.eval(node.left, frame), self.eval(node.comparators[0], frame))
        if isinstance(node, ast.IfExp):
            test = truth(self.eval(node.test, frame))
            return UNKNOWN if test is None else self.eval(node.body if test else node.orelse, frame)
        if isinstance(node, (ast.ListComp, ast.GeneratorExp)) and len(node.generators) == 1:
            return self.comprehension(node, frame)
        return "other" if isinstance(node, ast.Lambda) else UNKNOWN  # a lambda is only ever an argparse type here

    def eval_call(self, node: ast.Call, frame: Frame) -> Any:
        func_name = getattr(node.func, "id", None)
        if func_name == "super" and frame.func is not None:
            return Ref(frame.module, frame.func.node, bound=frame.func.bound, owner=frame.func.owner, kind="super")
        func = self.eval(node.func, frame)
        if isinstance(func, Ext) and func.dotted.endswith(".get_args"):  # of a Literal alias
            hint = to_hint(frame.module, node.args[0])
            return hint.args if hint.origin == "literal" else UNKNOWN
        kwargs: dict = {}
        for kw in node.keywords:
            value = self.eval(kw.value, frame)
            kwargs.update({kw.arg: value} if kw.arg else value if isinstance(value, dict) else {})
        if isinstance(func, Ext) and func.dotted.endswith(".permutations"):
            return list(itertools.permutations(*self.starred(node.args, frame), **kwargs))
        return self.call(func, self.starred(node.args, frame), kwargs)

    def starred(self, nodes: list[ast.expr], frame: Frame) -> list:
        out: list = []
        for node in nodes:
            value = self.eval(node.value if isinstance(node, ast.Starred) else node, frame)
            out += list(value) if isinstance(node, ast.Starred) and isinstance(value, (list, tuple)) else [value]
        return out

    def boolop(self, node: ast.BoolOp, frame: Frame) -> Any:
        """``and``/``or`` as Python has them, UNKNOWN when an unknown operand could decide."""
        value, unsure, stop = None, False, isinstance(node.op, ast.Or)
        for operand in node.values:
            value = self.eval(operand, frame)
            if truth(value) is stop:
                return value
            unsure = unsure or truth(value) is None
        return UNKNOWN if unsure else value

    @staticmethod
    def compare(op: ast.cmpop, left: Any, right: Any) -> Any:
        if isinstance(left, Unknown) or isinstance(right, Unknown):
            return UNKNOWN
        checks = {ast.In: lambda: left in right, ast.NotIn: lambda: left not in right, ast.Eq: lambda: left == right}
        checks |= {
            ast.NotEq: lambda: left != right,
            ast.Is: lambda: left is right,
            ast.IsNot: lambda: left is not right,
        }
        try:
            return checks[type(op)]()
        except (KeyError, TypeError):
            return UNKNOWN

    @staticmethod
    def binop(op: ast.operator, left: Any, right: Any) -> Any:
        try:
            return left + right if isinstance(op, ast.Add) and not isinstance(left, Unknown) else UNKNOWN
        except TypeError:
            return UNKNOWN

    def comprehension(self, node: ast.ListComp | ast.GeneratorExp, frame: Frame) -> Any:
        """``[f.value for f in SomeEnum]`` and the like."""
        gen = node.generators[0]
        items = self.eval(gen.iter, frame)
        if isinstance(items, Ref) and class_hint(items.module, items.node).enum:
            items = [self.class_attr(items, n, items) for n, _value in class_hint(items.module, items.node).enum]
        if not isinstance(items, (list, tuple, dict)):
            return UNKNOWN
        out = []
        for item in items:
            inner = Frame(frame.module, dict(frame.local), frame.func)
            self.assign(gen.target, item, inner)
            if all(truth(self.eval(test, inner)) for test in gen.ifs):
                out.append(self.eval(node.elt, inner))
        return out


def truth(value: Any) -> bool | None:
    """Python truth, None when the value is unknown."""
    return None if isinstance(value, Unknown) else bool(value)


def registry(tree: Tree, folder: Path) -> list[str]:
    """Names a parser registry (ToolParserManager, ReasoningParserManager) holds once its package is imported:
    ``@register_module("a")`` / ``(["a", "b"])`` decorators and ``register_lazy_module`` names, the latter often
    the keys of a module-level ``{name: (file, class)}`` dict, in the package's own files."""
    names: list = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in (
                "register_module",
                "register_lazy_module",
            ):
                first = node.args[0] if node.args else None
                names += [constant(e) for e in (first.elts if isinstance(first, ast.List) else [first]) if e]
            elif isinstance(node, ast.Assign) and "_TO_REGISTER" in ast.unparse(node.targets[0]):
                names += [constant(k) for k in getattr(node.value, "keys", [])]
    tree.used.add(f"{folder.relative_to(tree.root).as_posix()}/*.py")
    return list(dict.fromkeys(n for n in names if isinstance(n, str)))


# --- The catalogue ------------------------------------------------------------------------------------------


def entry_points(tree: Tree, rules: KwargsRules) -> dict[str, list[tuple[list, dict]]]:
    """The ``add_argument`` calls of ``vllm serve`` and of ``python -m vllm.entrypoints.openai.api_server``."""
    serve = tree.use(tree.module("vllm.entrypoints.cli.serve"))
    command = next(
        Ref(serve, n)
        for n in serve.ast.body
        if isinstance(n, ast.ClassDef) and any(getattr(s, "name", "") == "subparser_init" for s in n.body)
    )
    interp, subparsers = Interp(tree, ["vllm", "serve"], rules), Parser()
    interp.call(
        interp.attr(Ref(serve, command.node, owner=command, kind="instance"), "subparser_init"), [subparsers], {}
    )
    api, parser = Interp(tree, ["vllm/entrypoints/openai/api_server.py"], rules), Parser()
    api.call(api.global_(serve, "make_arg_parser"), [parser], {})
    return {"vllm serve": subparsers.created.actions if subparsers.created else [], "api_server": parser.actions}


def type_name(value: Any) -> str | None:
    """An argparse ``type=`` value as the catalogue names it (None: a string)."""
    if value in (None, "str"):
        return None
    if value in ("int", "float", "json", "bool", "other"):
        return value
    return HELPERS.get(getattr(value.node, "name", ""), "other") or "other" if isinstance(value, Ref) else "other"


def flag_properties(kwargs: dict) -> dict[str, Any]:
    """One ``add_argument``'s keyword arguments as the catalogue's properties of the flag."""
    action, nargs, props = kwargs.get("action"), kwargs.get("nargs"), {}
    if action in ("store_true", "store_false", "store_const", "count"):
        props["kind"] = "flag"
    elif action == "BooleanOptionalAction" or (
        isinstance(action, Ref) and "BooleanOptional" in ast.unparse(action.node)
    ):
        props["kind"] = "bool"
    elif nargs in ("+", "*") or (isinstance(nargs, int) and nargs > 1):
        props["kind"] = "list"
    elif nargs == "?":
        props["kind"] = "optional"
    raw = kwargs.get("choices")
    choices = [c for c in raw if c not in (None, "None")] if isinstance(raw, (list, tuple, dict)) else []
    if props.get("kind") not in ("flag", "bool"):
        kind_type = type_name(kwargs.get("type")) or (KwargsRules.scalar(choices[0]) if choices else None)
        props.update({"type": kind_type} if kind_type not in (None, "str") else {})
        props.update({"choices": tuple(dict.fromkeys(choices))} if choices else {})
        metavar = kwargs.get("metavar")
        opens = kwargs.get("_open") or (metavar if isinstance(metavar, list) else None)
        props.update({"open_choices": tuple(dict.fromkeys(opens))} if opens and not choices else {})
    if kwargs.get("deprecated") is True or DEPRECATED.search(str(kwargs.get("help") or "")):
        props["deprecated"] = True
    return props


def build(tree: Tree) -> dict[str, Any]:
    """The catalogue of the release in ``tree``."""
    flags: dict[str, dict] = {}
    aliases: dict[str, str] = {}
    seen: dict[str, set[str]] = {}
    positional: set[str] = set()
    for entry, actions in entry_points(tree, KwargsRules(tree.use(tree.module("vllm.engine.arg_utils")))).items():
        for names, kwargs in actions:
            if not names or not all(isinstance(n, str) for n in names) or kwargs.get("action") in ("help", "version"):
                continue
            if not names[0].startswith("-"):
                positional.add(names[0])
                continue
            canonical = next((n for n in names if n.startswith("--")), names[0]).lstrip("-")
            flags[canonical] = flag_properties(kwargs)
            seen.setdefault(canonical, set()).add(entry)
            aliases.update((n.lstrip("-"), canonical) for n in names if n.lstrip("-") != canonical)
    for flag, (packages, opener) in REGISTRIES.items():
        folder = next((tree.root / p.replace(".", "/") for p in packages if tree.module(p)), None)
        if flag in flags and folder and not flags[flag].get("choices"):
            flags[flag]["open_choices"] = tuple(registry(tree, folder))
            flags[flag].update({"opened_by": opener} if opener in flags else {})
    facts = parser_facts(tree)
    if facts["o_alias"] in flags and "O" not in aliases:  # parse_args rewrites -O3 and -O 3 into that flag
        aliases["O"] = facts["o_alias"]
    if facts["serve_model"] == "deprecated" and "model" in flags:
        flags["model"]["deprecated"] = True
    only = {
        entry: sorted(f for f, entries in seen.items() if entries == {entry}) for entry in ("vllm serve", "api_server")
    }
    return {"flags": flags, "aliases": aliases, "positional": sorted(positional), "only": only, **facts}


def parser_facts(tree: Tree) -> dict[str, Any]:
    """What the release's FlexibleArgumentParser does beyond argparse, read from its source; and the environment."""
    module, node = next(
        (m, n)
        for m in map(tree.module, ("vllm.utils.argparse_utils", "vllm.utils"))
        if m
        for n in m.ast.body
        if isinstance(n, ast.ClassDef) and n.name == "FlexibleArgumentParser"
    )
    tree.use(module)
    parse_args = next(f for f in node.body if getattr(f, "name", "") == "parse_args")
    branches = [ast.unparse(n).replace("'", '"') for n in ast.walk(parse_args) if isinstance(n, ast.If)]
    serve = next((b for b in branches if b.startswith('if args and args[0] == "serve"') and "--model" in b), "")
    o_flags = {
        f for b in branches if b.startswith('if arg.startswith("-O")') for f in re.findall(r'"--([a-z][\w-]*)"', b)
    }
    cli = [tree.module("vllm.entrypoints.cli.main"), tree.module("vllm.entrypoints.cli.serve")]
    texts = [ast.unparse(node)] + [m.path.read_text(encoding="utf-8") for m in cli if m]
    return {
        "underscores": 'replace("_", "-")' in ast.unparse(parse_args).replace("'", '"'),
        "allow_abbrev": not any(re.search(r"allow_abbrev\W+False", text) for text in texts),
        "o_alias": o_flags.pop() if len(o_flags) == 1 else None,
        "serve_model": "deprecated" if "warning" in serve else "refused" if "raise" in serve else None,
        "enable_disable": "EnableDisableAction" in ast.unparse(module.ast),
        "env": env_names(tree),
    }


def env_names(tree: Tree) -> list[str]:
    """The environment variables the release reads: the keys of ``environment_variables`` in ``vllm/envs.py``."""
    for node in tree.use(tree.module("vllm.envs")).ast.body:
        target = node.target if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [None])[0]
        if getattr(target, "id", "") == "environment_variables" and isinstance(node.value, ast.Dict):
            return sorted(constant(key) for key in node.value.keys)
    raise SystemExit("vllm/envs.py has no environment_variables table")


# --- Writing ------------------------------------------------------------------------------------------------

LEGEND = """\
# flag (canonical long name, dashes, without "--") -> properties. Keys present only when they apply:
#   "kind": "value" (default, omitted) | "flag" (store_true/store_const: takes no value)
#           | "bool" (BooleanOptionalAction: --x and --no-x, no value)
#           | "list" (nargs '+' or '*': one or more values as separate argv items) | "optional" (nargs '?')
#   "type": "int" | "float" | "json" | "bool" | "other" (e.g. human-readable numbers like 32k) - omitted for str
#   "choices": strict argparse choices, as the parser compares them
#   "open_choices": names the release knows that argparse does not enforce (a parser registry, a Literal that
#                   also takes any str, an enum pydantic checks later); "opened_by": the flag that adds names
#   "deprecated": True when the release marks it deprecated (help text or deprecated=True)""".splitlines()


def literal(value: Any, indent: int = 0, used: int = 0) -> list[str]:
    """``value`` as Python source lines the way ruff formats them: on one line when that fits the line length
    (``used`` characters of the first line are taken), else one item per line and a trailing comma."""
    flat = flat_literal(value)
    pad, end = " " * (indent + 4), " " * indent
    if isinstance(value, frozenset) and not value:
        return ["frozenset()"]
    if isinstance(value, frozenset):  # always one name per line
        return ["frozenset(", pad + "{", *(f"{pad}    {flat_literal(v)}," for v in sorted(value)), pad + "}", end + ")"]
    if len(flat) + used <= WIDTH or not isinstance(value, (dict, tuple)):
        return [flat]
    lines = ["{" if isinstance(value, dict) else "("]
    for key, item in value.items() if isinstance(value, dict) else ((None, v) for v in value):
        head = pad + (f"{flat_literal(key)}: " if key is not None else "")
        body = literal(item, indent + 4, len(head) + 1)
        lines += [head + body[0], *body[1:-1], body[-1] + ","] if len(body) > 1 else [head + body[0] + ","]
    return lines + [end + ("}" if isinstance(value, dict) else ")")]


def flat_literal(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{flat_literal(k)}: {flat_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, tuple):
        return "(" + ", ".join(map(flat_literal, value)) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


def comment(text: str) -> list[str]:
    """``text`` as comment lines within the line length."""
    lines = [""]
    for word in text.split():
        if lines[-1] and len(lines[-1]) + len(word) + 3 > WIDTH:
            lines.append("")
        lines[-1] += (" " if lines[-1] else "") + word
    return ["# " + line for line in lines]


def render(version: str, cat: dict[str, Any], files: list[str], base: dict[str, Any] | None = None) -> str:
    """The text of one release's data module: what changed since ``base`` (the whole catalogue of the catalogued
    release before it, as the package's ``catalogue()`` returns it), or everything when there is none."""
    order = ("kind", "type", "choices", "open_choices", "opened_by", "deprecated")
    flags = {k: {p: cat["flags"][k][p] for p in order if p in cat["flags"][k]} for k in sorted(cat["flags"])}
    old_flags = base["flags"] if base else {}
    changed = {k: v for k, v in flags.items() if k not in old_flags or flat_literal(old_flags[k]) != flat_literal(v)}
    removed = tuple(sorted(set(old_flags) - set(flags)))
    env, old_env = frozenset(cat["env"]), frozenset(base["env"]) if base else frozenset()
    notes = [f"Positional arguments, not flags: {', '.join(cat['positional']) or 'none'}."]
    notes += [
        f"Only `{entry}` has {', '.join('--' + n for n in names)}." for entry, names in cat["only"].items() if names
    ]
    if cat["serve_model"]:
        verb = "warns about" if cat["serve_model"] == "deprecated" else "refuses"
        notes.append(f"`vllm serve` {verb} --model: its model is the positional model_tag.")
    if cat["enable_disable"]:
        notes.append("A bool flag named enable-x (disable-x) also takes --disable-x (--enable-x) as its negation.")
    out = comment(f"Generated by tools/vllm_catalogue.py from vllm=={version} ({', '.join(files)}). Do not edit.")
    out += ["# SPDX-License-Identifier: GPL-3.0-or-later", "from __future__ import annotations", ""]
    out += [f'RELEASE = "{version}"']
    if base:
        out += ["# The catalogued release this one is written against: only what changed since then is below"]
        out += [f'BASE = "{base["release"]}"']
    out += ["# vLLM's parser turns --foo_bar into --foo-bar (FlexibleArgumentParser)"]
    out += [
        f"UNDERSCORES = {cat['underscores']}",
        "# argparse prefix matching (allow_abbrev) as the release's parser has it",
    ]
    # The legend once, in the oldest module (and in the package's docstring): the others refer to it.
    legend = LEGEND if not base else ["# FLAGS: new or changed flags, properties as in the oldest module's legend"]
    out += [f"ALLOW_ABBREV = {cat['allow_abbrev']}", *comment(" ".join(notes)), *legend]
    out += ["FLAGS = " + "\n".join(literal(changed, 0, 8))]
    out += ["# Flags of BASE this release no longer has", "REMOVED = " + "\n".join(literal(removed, 0, 10))]
    out += ["# Other option strings of a flag -> its canonical name"]
    out += ["ALIASES = " + "\n".join(literal(dict(sorted(cat["aliases"].items())), 0, 10))]
    out += ["# Environment variables (the keys of environment_variables in vllm/envs.py) new since BASE, and gone"]
    out += ["ENV_ADDED = " + "\n".join(literal(env - old_env))]
    out += ["ENV_REMOVED = " + "\n".join(literal(old_env - env))]
    return "\n".join(out) + "\n"


def releases_package(out_dir: Path | None = None) -> Any:
    """The package's loader (its ``__init__.py``), loaded from ``out_dir`` (the committed package by default)
    without importing the collection."""
    out_dir = out_dir or OUT_DIR
    spec = importlib.util.spec_from_file_location(f"_vllm_releases_{abs(hash(out_dir))}", out_dir / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def update_releases(out_dir: Path | None = None) -> None:
    """Rewrite the RELEASES line of the package's ``__init__.py`` from the data modules beside it."""
    out_dir = out_dir or OUT_DIR
    init = out_dir / "__init__.py"
    found = sorted((p.stem[1:].replace("_", ".") for p in out_dir.glob("v*_*_*.py")), key=version_key)
    head = "RELEASES: tuple[str, ...] = "
    line = head + "\n".join(literal(tuple(found), 0, len(head)))
    text = init.read_text(encoding="utf-8")
    new, count = re.subn(
        r"^RELEASES: tuple\[str, \.\.\.\] = \(.*?\)$", lambda _match: line, text, count=1, flags=re.M | re.S
    )
    if not count:
        raise SystemExit(f"{init} has no RELEASES line to rewrite")
    init.write_text(new, encoding="utf-8")


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def generate(version: str, source: Path | None = None, out_dir: Path | None = None) -> Path:
    """Fetch (or reuse) the sources of ``version`` and write its data module into ``out_dir``, against the
    committed release before it. Returns the module's path."""
    tree = Tree(fetch_source(version, source))
    cat = build(tree)
    committed = releases_package()
    older = [r for r in committed.RELEASES if version_key(r) < version_key(version)]
    base = committed.catalogue(older[-1]) if older else None
    path = (out_dir or OUT_DIR) / f"v{version.replace('.', '_')}.py"
    path.write_text(render(version, cat, sorted(tree.used), base), encoding="utf-8")
    return path


def add(version: str, source: Path | None = None) -> Path:
    """Catalogue ``version``: write its module, list it, and write the next committed release again against it
    (its changes were written against an older one)."""
    newer = [r for r in releases_package().RELEASES if version_key(r) > version_key(version)]
    path = generate(version, source)
    update_releases()
    if newer:
        generate(newer[0])
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version", help="a vLLM release, e.g. 0.33.0")
    parser.add_argument("--source", type=Path, help="a wheel, an sdist or an unpacked tree instead of pip download")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"\d+\.\d+\.\d+", args.version):
        parser.error("the version must be MAJOR.MINOR.PATCH")
    start = time.monotonic()
    path = add(args.version, args.source)
    print(f"wrote {path.relative_to(ROOT)} in {time.monotonic() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
