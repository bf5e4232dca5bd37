"""Engine arguments checked against the model's vLLM release: the specs and the preflight, without a cluster.

The defaults are the vllm_server role's own (roles/vllm_server/defaults/main.yml), so these tests follow what a
user gets; the releases' flags come from the committed catalogues.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ansible_collections.llmops.vllm.plugins.filter.vllm_model_specs import model_specs
from ansible_collections.llmops.vllm.plugins.filter.vllm_preflight import preflight
from ansible_collections.llmops.vllm.plugins.plugin_utils import _vllm_release
from ansible_collections.llmops.vllm.plugins.plugin_utils._engine_arg_check import derived_max_len, human_readable_int
from ansible_collections.llmops.vllm.plugins.plugin_utils._vllm_release import image_release, release_view
from ansible_collections.llmops.vllm.plugins.plugin_utils._vllm_releases import RELEASES, catalogue

ROLE_DEFAULTS = Path(__file__).resolve().parents[4] / "roles" / "vllm_server" / "defaults" / "main.yml"
NEWEST = RELEASES[-1]


def role_defaults() -> dict:
    """The role's per-model defaults as prepare.yml hands them to the specs filter."""
    raw = yaml.safe_load(ROLE_DEFAULTS.read_text())
    args = dict(raw["vllm_server_engine_args"])
    args["trust-remote-code"] = True  # "{{ vllm_server_trust_remote_code | bool }}"
    keys = (
        "model_dir",
        "hf_repo",
        "hf_revision",
        "hf_files",
        "download",
        "model_size",
        "load_strategy",
        "model_uri",
        "image",
        "vllm_version",
        "image_pull_policy",
        "replicas",
        "strategy",
        "prestop_seconds",
        "shutdown_timeout",
        "termination_grace_seconds",
        "port",
        "env",
        "resources",
        "gpus",
        "ram_size_limit",
        "shm_size_limit",
        "working_memory",
    )
    defaults = {k: raw[f"vllm_server_{k}"] for k in keys}
    defaults["engine_args"] = args
    return defaults


def specs(image: str | None = None, **entry) -> list[dict]:
    defaults = role_defaults()
    if image:
        defaults["image"] = image
    return model_specs([{"name": "mistral", **entry}], defaults)


def problems(image: str | None = None, **entry) -> list[str]:
    return preflight(specs(image, **entry))


@pytest.mark.parametrize(
    "image, version",
    [
        ("public.ecr.aws/deep-learning-containers/vllm:0.9.0-gpu-py312-ec2", "0.9.0"),
        ("763104351884.dkr.ecr.us-east-1.amazonaws.com/vllm:0.10.2-gpu-py312-cu128-ubuntu22.04-ec2", "0.10.2"),
        ("vllm/vllm-openai:v0.33.0", "0.33.0"),
        ("docker.io/vllm/vllm-openai:v0.10.1.1@sha256:" + "a" * 64, "0.10.1"),
        ("vllm/vllm-openai:latest", None),
        ("vllm/vllm-openai@sha256:" + "a" * 64, None),
        ("registry.example/inference:0.9.0", None),
        ("localhost:5000/vllm", None),
    ],
)
def test_the_release_comes_from_the_image_tag(image, version):
    assert image_release(image) == version


def test_the_defaults_are_the_seed_and_pass_on_the_seed_image():
    (spec,) = specs()
    assert spec["vllm_version"] == "0.9.0"
    assert "--swap-space=16" in spec["args"]
    # 0.9.0 has no drain: the one warning says what the preStop does instead (tests/unit/.../test_drain.py).
    assert [w.split(":")[1].strip() for w in spec["warnings"]] == ["vLLM 0.9.0 has no --shutdown-timeout (from 0.18.0)"]
    assert {"name": "VLLM_ATTENTION_BACKEND", "value": "FLASHINFER"} in spec["env_list"]
    assert preflight([spec]) == []


@pytest.mark.parametrize("release", RELEASES)
def test_the_defaults_pass_on_every_catalogued_release(release):
    (spec,) = specs(f"vllm/vllm-openai:v{release}")
    assert preflight([spec]) == [], spec["args"]
    flags = catalogue(release)["flags"]
    drains = "shutdown-timeout" in flags
    assert ("--shutdown-timeout=30" in spec["args"]) == drains
    assert [w for w in spec["warnings"] if drains or "has no --shutdown-timeout" not in w] == []
    assert [a for a in spec["args"] if a[2:].split("=")[0].replace("_", "-") not in flags] == []


def test_a_current_release_gets_attention_backend_as_a_flag_and_no_swap_space():
    (spec,) = specs(f"vllm/vllm-openai:v{NEWEST}")
    assert not any(a.startswith("--swap-space") for a in spec["args"])
    assert "--attention-backend=FLASHINFER" in spec["args"]
    assert all(e["name"] != "VLLM_ATTENTION_BACKEND" for e in spec["env_list"])


def test_vllm_version_overrides_the_tag_and_an_unknown_tag_warns_once():
    (spec,) = specs("registry.example/inference:prod", vllm_version=NEWEST)
    assert spec["vllm_version"] == NEWEST and not any(a.startswith("--swap-space") for a in spec["args"])
    (spec,) = specs("registry.example/inference:prod")
    assert spec["vllm_version"] == "" and len(spec["warnings"]) == 1
    assert "does not say which vLLM it runs" in spec["warnings"][0]
    assert preflight([spec]) == []  # nothing to check against: no guess


def test_a_release_newer_than_the_catalogue_is_checked_against_the_newest_with_a_warning():
    (spec,) = specs("vllm/vllm-openai:v9.1.0")
    assert "newer than the newest catalogued release" in spec["warnings"][0]
    assert release_view("9.1.0").catalogued == (NEWEST,)


def test_a_release_between_catalogues_accepts_what_either_neighbour_knows(monkeypatch):
    # Every minor from 0.9 to the newest is catalogued; a gap appears when a later one is added out of order.
    monkeypatch.setattr(_vllm_release, "RELEASES", ("0.9.0", NEWEST))
    seen = release_view("0.20.0")
    assert seen.catalogued == ("0.9.0", NEWEST) and seen.note == ""
    assert set(seen.flags) == set(catalogue("0.9.0")["flags"]) | set(catalogue(NEWEST)["flags"])
    assert "checked against 0.9.0 and" in seen.label


CASES = {
    "unknown flag, with a suggestion": (
        {"engine_args": {"max-model-length": 4096}},
        "model mistral: --max-model-length: vLLM 0.9.0 has no such flag; did you mean --max-model-len?",
    ),
    "a flag the release removed": (
        {"image": f"vllm/vllm-openai:v{NEWEST}", "engine_args": {"swap-space": 4}},
        "model mistral: --swap-space was removed in vLLM",
    ),
    "a value outside the choices": (
        {"engine_args": {"dtype": "fp32"}},
        "model mistral: --dtype does not take 'fp32'; vLLM 0.9.0 takes one of auto,",
    ),
    "a switch given a value": (
        {"engine_args": {"enforce-eager": "yes"}},
        "model mistral: --enforce-eager takes no value (it is a switch): write true or false, not 'yes'",
    ),
    "a number that is not one": (
        {"engine_args": {"max-num-seqs": "many"}},
        "model mistral: --max-num-seqs needs a whole number, not 'many'",
    ),
    "a tool parser the release does not ship": (
        {"engine_args": {"tool-call-parser": "mistrall"}},
        "model mistral: --tool-call-parser names 'mistrall', which vLLM 0.9.0 does not ship; use one of",
    ),
    "GPUs left idle": (
        {"gpus": 2},
        "model mistral: tensor-parallel-size x pipeline-parallel-size is 1 but 2 GPU(s) are requested, so 1 would "
        "sit idle",
    ),
    "mistral config without params.json": (
        {"hf_files": ["consolidated.safetensors", "tokenizer.model.v3", "config.json"]},
        "model mistral: --config-format=mistral reads params.json, which is not among hf_files",
    ),
    "mistral tokenizer mode without the mistral tokenizer": (
        {
            "hf_files": ["consolidated.safetensors", "params.json", "tokenizer.model"],
            "engine_args": {"tokenizer_mode": "mistral"},
        },
        "model mistral: --tokenizer-mode=mistral needs the Mistral tokenizer (tekken.json or tokenizer.model.v*)",
    ),
    "a version that is not one": (
        {"vllm_version": "latest"},
        "model mistral: vllm_version 'latest' is not a vLLM version",
    ),
    "a list item that is another flag": (
        {"engine_args": {"middleware": ["a.b", "--api-key", "x"]}},
        "model mistral: --middleware list item '--api-key' starts with '-'",
    ),
    "a flag name that is not one": (
        {"engine_args": {"max-model-len=1 --api-key": 1}},
        "model mistral: engine_args key 'max-model-len=1 --api-key' is not a flag name",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_bad_input_is_one_line_naming_model_flag_and_fix(case):
    entry, expected = dict(CASES[case][0]), CASES[case][1]
    found = problems(entry.pop("image", None), **entry)
    assert any(p.startswith(expected) for p in found), found
    assert all("\n" not in p for p in found)


def test_a_tool_parser_plugin_opens_the_parser_names():
    assert problems(engine_args={"tool-call-parser": "my_parser", "tool-parser-plugin": "/plugins/p.py"}) == []


def test_false_on_a_negatable_flag_renders_its_no_form():
    view = release_view(NEWEST)
    flag = sorted(view.negatable())[0]
    (spec,) = specs(f"vllm/vllm-openai:v{NEWEST}", engine_args={flag: False})
    assert f"--no-{flag}" in spec["args"]


# ------------------------------------------------------------------------------ max-model-len against the model

HF_FACTS = {"architecture": "LlamaForCausalLM", "max_position_embeddings": 4096, "rope_scaling": None}


@pytest.mark.parametrize(
    "text, value", [("8192", 8192), ("32k", 32000), ("32K", 32768), ("25.6k", 25600), ("auto", None), ("-1", None)]
)
def test_max_model_len_is_read_as_vllm_reads_it(text, value):
    assert human_readable_int(text) == value


@pytest.mark.parametrize(
    "rope, longest",
    [
        (None, 4096),
        ({"rope_type": "linear", "factor": 2.0}, 8192),
        ({"type": "dynamic", "factor": 4.0}, 16384),
        ({"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192}, 4096),
        ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096}, None),
    ],
)
def test_the_longest_context_follows_vllms_derivation(rope, longest):
    assert derived_max_len({**HF_FACTS, "rope_scaling": rope}) == longest


def test_max_model_len_above_the_model_is_refused_once_the_facts_are_known():
    (spec,) = specs(engine_args={"max-model-len": "8k"}, model_dir="llama")
    assert preflight([spec]) == []  # before the download: nothing known
    (problem,) = preflight([spec], facts={"llama": HF_FACTS})
    assert problem.startswith("model mistral: --max-model-len=8k is above the 4096 tokens the model supports")
    assert preflight([spec], facts={"llama": {**HF_FACTS, "max_position_embeddings": 8192}}) == []
    (spec,) = specs(engine_args={"max-model-len": "8k"}, model_dir="llama", env={"VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1"})
    assert preflight([spec], facts={"llama": HF_FACTS}) == []
    # A manifest without a word on RoPE scaling (older engine) or without a length: no guess.
    assert preflight([spec], facts={"llama": {"max_position_embeddings": 4096}}) == []


# --------------------------------------------------------------------------- what reaches the Hub and the API

BAD_NAMES = {
    "a repo id that climbs": (
        {"hf_repo": "../../api/whoami"},
        "hf_repo '../../api/whoami' is not a Hugging Face repo id",
    ),
    "a repo id with a double dash": ({"hf_repo": "org/a--b"}, "hf_repo 'org/a--b' is not a Hugging Face repo id"),
    "a file outside the repo": (
        {"hf_files": ["consolidated.safetensors", "../secrets.json"]},
        "hf_files entry '../secrets.json' must be a path inside the repository",
    ),
    "an absolute file": ({"hf_files": ["/etc/passwd"]}, "hf_files entry '/etc/passwd' must be a path inside"),
    "a Secret name that is not one": (
        {"api_key_secret": {"name": "My_Key", "key": "k"}},
        "api_key_secret name 'My_Key' is not a valid Secret name",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_NAMES))
def test_names_that_would_reach_the_hub_or_the_api_are_refused(case):
    entry, expected = BAD_NAMES[case]
    found = problems(**entry)
    assert any(expected in p for p in found), found


def test_two_model_dirs_that_give_one_job_name_are_refused():
    # The first directory's Job is model-download; the others add the directory, lower-cased, other characters '-'.
    defaults = role_defaults()
    models = [{"name": "first", "model_dir": "reference"}] + [
        {"name": n, "model_dir": d, "hf_files": ["config.json"], "engine_args": {"config-format": None}}
        for n, d in (("a", "foo_bar"), ("b", "foo-bar"))
    ]
    found = " ".join(preflight(model_specs(models, defaults)))
    assert "model_dir foo_bar and foo-bar give the same download Job name (model-download-foo-bar)" in found, found
