"""The vLLM release catalogues: the committed data, and the generator (tools/vllm_catalogue.py) that writes it.

No network: the generator runs on a small source tree written here in the shape of vLLM's own files; the test
that regenerates a committed release runs only where that release's sources are cached (or LLMOPS_VLLM_SRC
points at them).
"""

from __future__ import annotations

import ast
import importlib.util
import io
import os
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest
from ansible_collections.llmops.vllm.plugins.plugin_utils._vllm_releases import RELEASES, catalogue

ROOT = Path(__file__).resolve().parents[4]
DATA = ROOT / "plugins" / "plugin_utils" / "_vllm_releases"


def load_tool():
    """tools/vllm_catalogue.py, imported from its path (tools/ is no package)."""
    spec = importlib.util.spec_from_file_location("vllm_catalogue", ROOT / "tools" / "vllm_catalogue.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("vllm_catalogue", module)
    spec.loader.exec_module(module)
    return module


tool = load_tool()


# --- The committed catalogues ----------------------------------------------------------------------------------


def test_the_releases_are_listed_oldest_first_and_each_has_its_module():
    assert RELEASES == tuple(sorted(RELEASES, key=tool.version_key))
    assert {"0.9.0", "0.10.2", "0.15.1", "0.33.0"} <= set(RELEASES)
    assert sorted(p.name for p in DATA.glob("v*.py")) == sorted(f"v{r.replace('.', '_')}.py" for r in RELEASES)


@pytest.mark.parametrize("release", RELEASES)
def test_each_catalogue_loads_with_its_parts(release):
    cat = catalogue(release)
    assert cat["release"] == release
    assert isinstance(cat["env"], frozenset) and all(name.isupper() for name in cat["env"])
    assert cat["underscores"] is True and cat["allow_abbrev"] is True  # no release turns argparse's abbrev off
    assert set(cat["aliases"].values()) <= set(cat["flags"])
    kinds = {p.get("kind", "value") for p in cat["flags"].values()}
    assert kinds <= {"value", "flag", "bool", "list", "optional"}
    for flag, props in cat["flags"].items():
        assert flag == flag.lower() and not flag.startswith("-") and "_" not in flag, flag
        assert set(props) <= {"kind", "type", "choices", "open_choices", "opened_by", "deprecated"}, flag
        assert props.get("type", "str") in {"str", "int", "float", "json", "bool", "other"}, flag
        assert props.get("opened_by", "tensor-parallel-size") in cat["flags"], flag
    # what every release has, the same way
    assert cat["flags"]["enforce-eager"] == {"kind": "bool"}
    assert cat["flags"]["tensor-parallel-size"] == {"type": "int"} and cat["aliases"]["tp"] == "tensor-parallel-size"
    assert cat["flags"]["tool-call-parser"]["opened_by"] == "tool-parser-plugin"
    assert {"mistral", "hermes", "llama3_json"} <= set(cat["flags"]["tool-call-parser"]["open_choices"])
    assert cat["flags"]["dtype"]["choices"] == ("auto", "bfloat16", "float", "float16", "float32", "half")
    assert cat["flags"]["max-model-len"]["type"] == "other"  # human-readable: 32k
    assert cat["flags"]["served-model-name"]["kind"] == "list"
    assert "model" in cat["flags"] and "model-tag" not in cat["flags"]  # model_tag is positional
    assert "VLLM_USE_MODELSCOPE" in cat["env"]


def test_swap_space_is_gone_after_0_17_and_attention_backend_arrived_in_0_13():
    assert catalogue("0.9.0")["flags"]["swap-space"] == {"type": "float"}
    assert "swap-space" in catalogue("0.15.1")["flags"]
    assert "swap-space" not in catalogue("0.33.0")["flags"]
    assert "attention-backend" not in catalogue("0.9.0")["flags"]
    assert "attention-backend" not in catalogue("0.10.2")["flags"]
    for release in ("0.15.1", "0.33.0"):  # AttentionBackendEnum member names, looked up after parsing
        backend = catalogue(release)["flags"]["attention-backend"]
        assert {"FLASH_ATTN", "FLASHINFER", "TRITON_ATTN"} <= set(backend["open_choices"])
        assert "choices" not in backend and "opened_by" not in backend
    # only the newer validator takes "auto" (as automatic selection)
    assert "auto" not in catalogue("0.15.1")["flags"]["attention-backend"]["open_choices"]
    assert "auto" in catalogue("0.33.0")["flags"]["attention-backend"]["open_choices"]


def test_vllm_attention_backend_is_read_up_to_0_14_only():
    assert "VLLM_ATTENTION_BACKEND" in catalogue("0.9.0")["env"]
    assert "VLLM_ATTENTION_BACKEND" in catalogue("0.10.2")["env"]
    assert "VLLM_ATTENTION_BACKEND" not in catalogue("0.15.1")["env"]
    assert "VLLM_ATTENTION_BACKEND" not in catalogue("0.33.0")["env"]


def test_what_changed_between_the_oldest_and_the_newest():
    old, new = catalogue("0.9.0"), catalogue("0.33.0")
    assert old["flags"]["block-size"] == {"type": "int", "choices": (1, 8, 16, 32, 64, 128)}
    assert new["flags"]["block-size"] == {"type": "int"}
    assert old["flags"]["reasoning-parser"] == {"choices": ("deepseek_r1", "granite", "qwen3")}  # strict then
    assert new["flags"]["reasoning-parser"]["opened_by"] == "reasoning-parser-plugin"
    assert "qwen3" in new["flags"]["reasoning-parser"]["open_choices"]
    assert old["flags"]["quantization"]["choices"][:3] == ("aqlm", "auto-round", "awq")  # a runtime Literal
    assert "fp8" in new["flags"]["quantization"]["open_choices"]  # str at runtime, the Literal for type checkers
    assert old["aliases"]["O"] == "compilation-config" and new["aliases"]["O"] == "optimization-level"
    assert old["flags"]["enable-reasoning"] == {"kind": "bool", "deprecated": True}
    assert new["flags"]["model"] == {"deprecated": True}  # vllm serve warns and takes it as the positional
    assert new["flags"]["hf-token"] == {"kind": "optional"}
    assert new["flags"]["allowed-origins"] == {"type": "json"} and new["flags"]["api-key"] == {"kind": "list"}
    assert new["flags"]["optimization-level"]["open_choices"] == (0, 1, 2, 3)
    assert new["flags"]["allow-deprecated-quantization"] == {"kind": "bool"}  # not a deprecation notice


@pytest.mark.parametrize("release", RELEASES)
def test_the_data_modules_are_generated_and_formatted(release):
    path = DATA / f"v{release.replace('.', '_')}.py"
    text = path.read_text(encoding="utf-8")
    assert text.startswith(f"# Generated by tools/vllm_catalogue.py from vllm=={release} (")
    assert max(len(line) for line in text.splitlines()) <= 120
    ast.parse(text)


def test_an_uncatalogued_release_is_refused():
    with pytest.raises(ValueError, match="not catalogued"):
        catalogue("0.0.1")


# --- The generator on a small source tree -------------------------------------------------------------------

MINI_VLLM = {
    "vllm/__init__.py": "",
    "vllm/envs.py": """
        from typing import Any, Callable
        environment_variables: dict[str, Callable[[], Any]] = {
            "VLLM_HOST_IP": lambda: "",
            "VLLM_ATTENTION_BACKEND": lambda: None,
            "CUDA_VISIBLE_DEVICES": lambda: None,
        }
    """,
    "vllm/quant.py": """
        from typing import Literal
        QuantizationMethods = Literal["awq", "fp8"]
    """,
    "vllm/config.py": """
        import enum
        from dataclasses import dataclass, field
        from typing import TYPE_CHECKING, Literal, Optional, Union
        if TYPE_CHECKING:
            from vllm.quant import QuantizationMethods
        else:
            QuantizationMethods = str
        BlockSize = Literal[8, 16, 32]
        CacheDType = Literal["auto", "fp8"]

        class LoadFormat(str, enum.Enum):
            AUTO = "auto"
            SAFETENSORS = "safetensors"

        @dataclass
        class CompilationConfig:
            level: int = 0

        @dataclass
        class CacheConfig:
            block_size: Optional[BlockSize] = None
            '''Size of a cache block.'''
            cache_dtype: CacheDType = "auto"
            swap_space: float = 4
            '''CPU swap space. This parameter is deprecated and will be removed in v2.'''
            max_model_len: Optional[int] = None
            enforce_eager: bool = False
            quantization: Optional[QuantizationMethods] = None
            load_format: Union[str, LoadFormat] = "auto"
            limit_per_prompt: dict[str, int] = field(default_factory=dict)
            cuda_graph_sizes: list[int] = field(default_factory=list)
            compilation_config: Optional[CompilationConfig] = None
            served_model_name: Optional[Union[str, list[str]]] = None
    """,
    "vllm/utils.py": """
        from argparse import ArgumentParser

        class FlexibleArgumentParser(ArgumentParser):
            def parse_args(self, args=None, namespace=None):
                if args and args[0] == "serve":
                    if any(arg == "--model" for arg in args):
                        raise ValueError("give the model as the positional argument")
                args = [a.replace("_", "-") if a.startswith("--") else a for a in args]
                return super().parse_args(args, namespace)
    """,
    "vllm/engine/__init__.py": "",
    "vllm/engine/arg_utils.py": """
        import argparse
        import json
        import sys
        from dataclasses import fields, is_dataclass
        from typing import Literal, Union, get_args, get_origin
        from vllm.config import CacheConfig, LoadFormat
        from vllm.utils import FlexibleArgumentParser

        def optional_type(return_type):
            return return_type

        def contains_type(type_hints, type):
            return any(th is type or get_origin(th) is type for th in type_hints)

        def literal_to_kwargs(type_hints):
            choices = get_args(next(th for th in type_hints if get_origin(th) is Literal))
            return {"type": type(choices[0]), "choices": sorted(choices)}

        def get_kwargs(cls):
            kwargs = {}
            for field in fields(cls):
                type_hints = set(get_args(field.type)) if get_origin(field.type) is Union else {field.type}
                dataclass_cls = next((th for th in type_hints if is_dataclass(th)), None)
                name = field.name
                kwargs[name] = {"default": field.default, "help": ""}
                if dataclass_cls is not None:
                    kwargs[name]["type"] = json.loads
                elif contains_type(type_hints, bool):
                    kwargs[name]["action"] = argparse.BooleanOptionalAction
                elif contains_type(type_hints, Literal):
                    kwargs[name].update(literal_to_kwargs(type_hints))
                elif contains_type(type_hints, list):
                    kwargs[name]["type"] = get_args(next(th for th in type_hints if get_origin(th) is list))[0]
                    kwargs[name]["nargs"] = "+"
                elif contains_type(type_hints, int):
                    kwargs[name]["type"] = int
                    if name in {"max_model_len"}:
                        kwargs[name]["type"] = human_readable_int
                elif contains_type(type_hints, float):
                    kwargs[name]["type"] = float
                elif contains_type(type_hints, dict):
                    kwargs[name]["type"] = json.loads
                elif contains_type(type_hints, str) or any(th.__module__ != "builtins" for th in type_hints):
                    kwargs[name]["type"] = str
            return kwargs

        def human_readable_int(value):
            return int(value)

        class EngineArgs:
            @staticmethod
            def add_cli_args(parser: FlexibleArgumentParser) -> FlexibleArgumentParser:
                cache_kwargs = get_kwargs(CacheConfig)
                group = parser.add_argument_group(title="CacheConfig")
                if "serve" not in sys.argv[1:]:
                    group.add_argument("--model", type=str)
                for name in ("block_size", "cache_dtype", "swap_space", "max_model_len", "enforce_eager",
                             "quantization", "limit_per_prompt", "cuda_graph_sizes", "served_model_name"):
                    group.add_argument(f"--{name.replace('_', '-')}", **cache_kwargs[name])
                group.add_argument("--kv-cache-dtype", **cache_kwargs["cache_dtype"])
                formats = [f.value for f in LoadFormat]
                group.add_argument("--load-format", choices=formats, **cache_kwargs["load_format"])
                group.add_argument("--compilation-config", "-O", **cache_kwargs["compilation_config"])
                parser.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
                parser.add_argument("--use-v2-block-manager", action="store_true", deprecated=True)
                return parser

        class AsyncEngineArgs(EngineArgs):
            @staticmethod
            def add_cli_args(parser):
                parser = EngineArgs.add_cli_args(parser)
                parser.add_argument("--disable-log-requests", action="store_true")
                return parser
    """,
    "vllm/entrypoints/__init__.py": "",
    "vllm/entrypoints/openai/__init__.py": "",
    "vllm/entrypoints/openai/tool_parsers/__init__.py": """
        from .abstract_tool_parser import ToolParserManager
        from .mistral_tool_parser import MistralToolParser
    """,
    "vllm/entrypoints/openai/tool_parsers/abstract_tool_parser.py": """
        class ToolParserManager:
            tool_parsers = {}

            @classmethod
            def register_module(cls, name=None):
                return lambda module: module
    """,
    "vllm/entrypoints/openai/tool_parsers/mistral_tool_parser.py": """
        from .abstract_tool_parser import ToolParserManager

        @ToolParserManager.register_module("mistral")
        class MistralToolParser:
            pass

        @ToolParserManager.register_module(["hermes", "hermes2"])
        class HermesToolParser:
            pass
    """,
    "vllm/reasoning/__init__.py": """
        class ReasoningParserManager:
            reasoning_parsers = {}

        @ReasoningParserManager.register_module("qwen3")
        class Qwen3:
            pass
    """,
    "vllm/entrypoints/openai/cli_args.py": """
        import json
        from vllm.engine.arg_utils import AsyncEngineArgs, optional_type
        from vllm.entrypoints.openai.tool_parsers import ToolParserManager

        def make_arg_parser(parser):
            parser.add_argument("--host", type=optional_type(str), default=None)
            parser.add_argument("--port", type=int, default=8000)
            parser.add_argument("--allowed-origins", type=json.loads, default=["*"])
            parser.add_argument("--middleware", type=optional_type(str), action="append", default=[])
            valid_tool_parsers = ToolParserManager.tool_parsers.keys()
            parser.add_argument("--tool-call-parser", type=str, metavar="{" + ",".join(valid_tool_parsers) + "}")
            parser.add_argument("--tool-parser-plugin", type=str, default="")
            parser.add_argument("--hf-token", type=str, nargs="?", const=True)
            parser = AsyncEngineArgs.add_cli_args(parser)
            return parser
    """,
    "vllm/entrypoints/cli/__init__.py": "",
    "vllm/entrypoints/cli/serve.py": """
        from vllm.entrypoints.openai.cli_args import make_arg_parser

        class ServeSubcommand:
            name = "serve"

            def subparser_init(self, subparsers):
                serve_parser = subparsers.add_parser("serve", usage="vllm serve [model_tag] [options]")
                serve_parser.add_argument("model_tag", type=str, nargs="?")
                serve_parser.add_argument("--headless", action="store_true", default=False)
                return make_arg_parser(serve_parser)
    """,
}


@pytest.fixture
def mini_vllm(tmp_path: Path) -> Path:
    """A source tree in the shape of vLLM's, small enough to reason about."""
    for rel, text in MINI_VLLM.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return tmp_path


def test_the_generator_reads_flags_from_get_kwargs_and_add_argument(mini_vllm):
    cat = tool.build(tool.Tree(mini_vllm))
    assert cat["flags"] == {
        "allowed-origins": {"type": "json"},
        "block-size": {"type": "int", "choices": (8, 16, 32)},
        "cache-dtype": {"choices": ("auto", "fp8")},
        "compilation-config": {"type": "json"},
        "cuda-graph-sizes": {"kind": "list", "type": "int"},
        "disable-log-requests": {"kind": "flag"},
        "enforce-eager": {"kind": "bool"},
        "headless": {"kind": "flag"},
        "hf-token": {"kind": "optional"},
        "host": {},
        "kv-cache-dtype": {"choices": ("auto", "fp8")},
        "limit-per-prompt": {"type": "json"},
        "load-format": {"choices": ("auto", "safetensors")},
        "max-model-len": {"type": "other"},
        "middleware": {},
        "model": {},
        "port": {"type": "int"},
        "quantization": {"open_choices": ("awq", "fp8")},
        "served-model-name": {"kind": "list"},
        "swap-space": {"type": "float", "deprecated": True},
        "tensor-parallel-size": {"type": "int"},
        "tool-call-parser": {"open_choices": ("mistral", "hermes", "hermes2"), "opened_by": "tool-parser-plugin"},
        "tool-parser-plugin": {},
        "use-v2-block-manager": {"kind": "flag", "deprecated": True},
    }
    assert cat["aliases"] == {"O": "compilation-config", "tp": "tensor-parallel-size"}
    assert cat["positional"] == ["model_tag"]
    assert cat["only"] == {"vllm serve": ["headless"], "api_server": ["model"]}
    assert cat["env"] == ["CUDA_VISIBLE_DEVICES", "VLLM_ATTENTION_BACKEND", "VLLM_HOST_IP"]
    assert (cat["underscores"], cat["allow_abbrev"], cat["serve_model"]) == (True, True, "refused")


def test_the_generated_module_holds_what_was_read(mini_vllm, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    path = tool.generate("1.2.3", mini_vllm, out)
    assert path.name == "v1_2_3.py"
    text = path.read_text(encoding="utf-8")
    assert "vllm/config.py" in text.splitlines()[0] and "vllm/entrypoints/openai/tool_parsers/*.py" in text
    namespace: dict = {}
    exec(compile(text, str(path), "exec"), namespace)
    cat = tool.build(tool.Tree(mini_vllm))
    assert namespace["RELEASE"] == "1.2.3"
    # Written against the newest committed release: its changes applied to that one give what was read.
    base = tool.releases_package().catalogue(namespace["BASE"])
    assert namespace["BASE"] == RELEASES[-1]
    flags = {k: v for k, v in base["flags"].items() if k not in namespace["REMOVED"]}
    flags.update(namespace["FLAGS"])
    assert flags == dict(sorted(cat["flags"].items()))
    assert set(namespace["FLAGS"]) < set(cat["flags"]) or not namespace["REMOVED"]
    assert (base["env"] - namespace["ENV_REMOVED"]) | namespace["ENV_ADDED"] == frozenset(cat["env"])
    assert namespace["ALIASES"] == cat["aliases"]
    assert (namespace["UNDERSCORES"], namespace["ALLOW_ABBREV"]) == (True, True)
    assert max(len(line) for line in text.splitlines()) <= tool.WIDTH


def test_the_release_list_is_rewritten_in_version_order(tmp_path):
    (tmp_path / "__init__.py").write_text('"""x"""\n\nRELEASES: tuple[str, ...] = ("0.9.0",)\n\n\ndef f():\n    pass\n')
    for name in ("v0_9_0.py", "v0_10_2.py", "v0_33_0.py", "v0_9_1.py"):
        (tmp_path / name).write_text("")
    tool.update_releases(tmp_path)
    text = (tmp_path / "__init__.py").read_text()
    assert 'RELEASES: tuple[str, ...] = ("0.9.0", "0.9.1", "0.10.2", "0.33.0")\n' in text
    assert text.endswith("def f():\n    pass\n")


def test_an_unknown_get_kwargs_branch_stops_the_generator(mini_vllm):
    arg_utils = mini_vllm / "vllm" / "engine" / "arg_utils.py"
    text = arg_utils.read_text().replace("contains_type(type_hints, float)", "contains_type(type_hints, complex)")
    arg_utils.write_text(text)
    with pytest.raises(SystemExit, match="does not know"):
        tool.build(tool.Tree(mini_vllm))


def test_the_sources_come_from_a_wheel_or_an_sdist(tmp_path):
    wheel = tmp_path / "vllm-1.0.0-cp38-abi3-manylinux1_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("vllm/envs.py", "environment_variables = {}\n")
        zf.writestr("vllm/_C.abi3.so", b"\0")
        zf.writestr("vllm-1.0.0.dist-info/METADATA", "Name: vllm\n")
    tool.extract_py(wheel, tmp_path / "from-wheel")
    assert [p.relative_to(tmp_path / "from-wheel").as_posix() for p in (tmp_path / "from-wheel").rglob("*.*")] == [
        "vllm/envs.py"
    ]
    sdist = tmp_path / "vllm-1.0.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        for name, data in (("vllm-1.0.0/vllm/envs.py", b"x = 1\n"), ("vllm-1.0.0/setup.py", b"")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    tool.extract_py(sdist, tmp_path / "from-sdist")
    assert (tmp_path / "from-sdist" / "vllm" / "envs.py").read_text() == "x = 1\n"
    assert not (tmp_path / "from-sdist" / "setup.py").exists()


# --- Regenerating a committed release from its cached sources ---------------------------------------------------


def cached_source(release: str) -> Path | None:
    """The unpacked sources of ``release``: $LLMOPS_VLLM_SRC/<release> or the generator's cache."""
    base = Path(os.environ["LLMOPS_VLLM_SRC"]) if os.environ.get("LLMOPS_VLLM_SRC") else tool.CACHE
    return base / release if (base / release / "vllm" / "envs.py").is_file() else None


# The seed's release and the newest are always checked, downloading their wheels from PyPI once into the cache
# (a few seconds each); the others wherever their sources are cached.
ALWAYS = (RELEASES[0], RELEASES[-1])


@pytest.mark.parametrize("release", RELEASES)
def test_a_committed_release_regenerates_byte_for_byte(release, tmp_path):
    source = cached_source(release)
    if source is None and release in ALWAYS:
        source = tool.fetch_source(release)
    if source is None:
        pytest.skip(f"the sources of vLLM {release} are not cached (python tools/vllm_catalogue.py {release})")
    path = tool.generate(release, source, tmp_path)
    assert path.read_bytes() == (DATA / path.name).read_bytes()


def test_adding_a_release_between_two_rewrites_the_next_against_it(mini_vllm, tmp_path, monkeypatch):
    """make vllm-catalogue of a release older than a committed one: the committed one's changes are written again
    against the new release, and what it holds stays the same."""
    after = RELEASES[1]
    if cached_source(after) is None:
        after_source = tool.fetch_source(after)
    else:
        after_source = cached_source(after)
    package = tmp_path / "_vllm_releases"
    package.mkdir()
    for path in DATA.glob("*.py"):
        (package / path.name).write_bytes(path.read_bytes())
    monkeypatch.setattr(tool, "OUT_DIR", package)
    monkeypatch.setattr(tool, "fetch_source", lambda version, source=None: source or after_source)
    between = RELEASES[0].rsplit(".", 1)[0] + ".9"  # e.g. 0.9.9, after 0.9.0 and before 0.10.2
    tool.add(between, mini_vllm)
    loaded = tool.releases_package(package)
    assert between in loaded.RELEASES and loaded.RELEASES.index(between) == 1
    assert f'BASE = "{between}"' in (package / f"v{after.replace('.', '_')}.py").read_text()
    rebuilt = loaded.catalogue(after)
    assert (rebuilt["flags"], rebuilt["env"]) == (catalogue(after)["flags"], catalogue(after)["env"])
