"""Write docs/roles.md from every role's meta/argument_specs.yml (the roles' contract), so that the variable
reference is generated, never hand-copied.

    python docs/gen_role_docs.py            # rewrite docs/roles.md
    python docs/gen_role_docs.py --check    # exit 1, with a diff, when docs/roles.md is out of date

`make docs` runs the first; tests/docs/test_role_docs.py runs the second.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from _generated import write_or_check

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "roles.md"
# The story the collection tells (storage → download → serve); roles not named here follow alphabetically.
STORY_ORDER = ["storage", "model_download", "vllm_server", "gpu_nodepool"]
# Ansible doc markup (C(), V(), O(), I(), B(), U(), L(), M(), RV(), E(), P()) in Markdown.
_MARKUP = [
    (re.compile(r"L\(([^)]+?),\s*([^)]+?)\)"), r"[\1](\2)"),
    (re.compile(r"U\(([^)]+?)\)"), r"<\1>"),
    (re.compile(r"I\(([^)]+?)\)"), r"*\1*"),
    (re.compile(r"B\(([^)]+?)\)"), r"**\1**"),
    (re.compile(r"(?:C|V|O|M|RV|E|P)\(([^)]+?)\)"), r"`\1`"),
    (re.compile(r"HORIZONTALLINE"), r"<br>"),
]


def markup(text: Any) -> str:
    """One table-cell-safe line of Markdown from an Ansible description (a string or a list of paragraphs)."""
    if text is None:
        return ""
    paragraphs = text if isinstance(text, list) else [text]
    out = "<br>".join(" ".join(str(p).split()) for p in paragraphs)
    for pattern, replacement in _MARKUP:
        out = pattern.sub(replacement, out)
    return out.replace("|", "\\|")


def inline_value(value: Any) -> str:
    """A default or choice as inline code; empty strings and None shown explicitly."""
    if value is None:
        return ""
    text = json.dumps(value) if not isinstance(value, str) else (value if value else '""')
    return "`" + text.replace("|", "\\|") + "`"


def is_complex(value: Any) -> bool:
    return isinstance(value, (list, dict)) and bool(value)


def option_rows(options: dict[str, Any], defaults: dict[str, Any], prefix: str = "") -> tuple[list[str], list[tuple]]:
    """Table rows for options (nested ones as dotted names), and the complex defaults to print below it."""
    rows: list[str] = []
    blocks: list[tuple[str, Any]] = []
    for name in sorted(options):
        spec = options[name] or {}
        full = f"{prefix}{name}"
        kind = spec.get("type", "str")
        if kind == "list" and spec.get("elements"):
            kind = f"list of {spec['elements']}"
        default = spec["default"] if "default" in spec else defaults.get(name) if not prefix else None
        if is_complex(default):
            blocks.append((full, default))
            default_cell = "see below"
        else:
            default_cell = inline_value(default)
        choices = ", ".join(inline_value(c) for c in spec.get("choices", []) or [])
        required = "yes" if spec.get("required") else ""
        description = markup(spec.get("description"))
        if choices:
            description = f"{description}<br>Choices: {choices}" if description else f"Choices: {choices}"
        rows.append(f"| `{full}` | {kind} | {required} | {default_cell} | {description} |")
        if spec.get("options"):
            nested_prefix = f"{full}[]." if spec.get("type") == "list" else f"{full}."
            nested_rows, nested_blocks = option_rows(spec["options"], {}, nested_prefix)
            rows += nested_rows
            blocks += nested_blocks
    return rows, blocks


def role_section(role: Path) -> list[str]:
    """The Markdown of one role: each entry point, its description, its variables."""
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text()) or {}
    defaults_file = role / "defaults" / "main.yml"
    defaults = (yaml.safe_load(defaults_file.read_text()) or {}) if defaults_file.is_file() else {}
    entry_points = specs.get("argument_specs", {})
    lines = [f"## `{role.name}`", ""]
    for entry in sorted(entry_points, key=lambda e: (e != "main", e)):
        spec = entry_points[entry] or {}
        if entry != "main":
            lines += [f"### Entry point `{entry}`", ""]
        if spec.get("short_description"):
            lines += [markup(spec["short_description"]), ""]
        if spec.get("description"):
            paragraphs = spec["description"] if isinstance(spec["description"], list) else [spec["description"]]
            lines += [p for para in paragraphs for p in (markup(para), "")]
        options = spec.get("options") or {}
        if not options:
            lines += ["No variables.", ""]
            continue
        if entry != "main" and options == (entry_points.get("main") or {}).get("options"):
            lines += ["Same variables as `main`.", ""]
            continue
        rows, blocks = option_rows(options, defaults if entry == "main" else {})
        lines += ["| Variable | Type | Required | Default | Description |", "| --- | --- | --- | --- | --- |"]
        lines += rows + [""]
        for name, value in blocks:
            dumped = yaml.safe_dump({name: value}, sort_keys=False, default_flow_style=False, width=100)
            lines += [f"Default of `{name}`:", "", "```yaml", dumped.rstrip(), "```", ""]
    return lines


def render(roles_dir: Path) -> str:
    """docs/roles.md for every role under roles_dir that has meta/argument_specs.yml."""
    roles = [p.parent.parent for p in roles_dir.glob("*/meta/argument_specs.yml")]
    roles.sort(key=lambda r: (STORY_ORDER.index(r.name) if r.name in STORY_ORDER else len(STORY_ORDER), r.name))
    lines = [
        "# Role variables",
        "",
        "<!-- Generated by docs/gen_role_docs.py from roles/*/meta/argument_specs.yml; edit the specs and run"
        " `make docs`. -->",
        "",
        "Each role checks its variables against these specifications before it runs (`meta/argument_specs.yml`);"
        " defaults come from the specification or, where it names none, from the role's `defaults/main.yml`.",
        "",
    ]
    if not roles:
        lines += ["No role has a `meta/argument_specs.yml` yet.", ""]
    else:
        lines += [f"- [`{r.name}`](#{r.name})" for r in roles] + [""]
    for role in roles:
        lines += role_section(role)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the output file is out of date")
    parser.add_argument("--roles", type=Path, default=ROOT / "roles")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    remedy = f"{args.output} is out of date with the roles' argument_specs; run `make docs`"
    return write_or_check({args.output: render(args.roles)}, args.check, remedy)


if __name__ == "__main__":
    sys.exit(main())
