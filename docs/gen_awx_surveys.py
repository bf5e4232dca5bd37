"""Write AWX survey specs for deploy.yml and probe.yml from the contracts they come from, so that a survey never
drifts from what the playbooks take: the roles' meta/argument_specs.yml and defaults (deploy), the probe module's
documented options and probe.yml's defaults (probe).

    python docs/gen_awx_surveys.py            # rewrite extensions/awx/surveys/*.json
    python docs/gen_awx_surveys.py --check    # exit 1, with a diff, when they are out of date

The format is what AWX validates (awx/api/views/__init__.py JobTemplateSurveySpec._validate_spec_data): name,
description, spec; each question type, question_name, variable, required, and a default of the type's Python type
(a multiselect default is a newline-separated string; choices a list). Secrets (no_log) are password questions.
tests/docs/test_awx_surveys.py runs --check and those rules.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from _generated import write_or_check

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "extensions" / "awx" / "surveys"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_role_docs import markup  # noqa: E402  (one Markdown-free rendering of Ansible doc markup)

# deploy.yml: the questions people change per run, by role; everything else stays in vars files.
DEPLOY = {
    "vllm_server": [
        "vllm_namespace",
        "vllm_server_image",
        "vllm_server_vllm_version",
        "vllm_server_hf_repo",
        "vllm_server_hf_revision",
        "vllm_server_model_dir",
        "vllm_server_model_size",
        "vllm_server_load_strategy",
        "vllm_server_replicas",
        "vllm_server_gpus",
        "vllm_server_nodes",
    ],
    "storage": ["storage_mode", "storage_capacity"],
    "model_download": ["model_download_hf_token"],
}
# probe.yml's variables and the vllm_endpoint_probe option each one feeds (all optional in probe.yml). The
# module's api_key is no_log in its argument spec (kubernetes.core's AUTH_ARG_SPEC), which its documentation does
# not carry: the test checks this list against the argument spec.
PROBE_SECRETS = {"probe_api_key"}
PROBE = {
    "probe_url": "url",
    "probe_api_key": "api_key",
    "probe_service": "service.name",
    "probe_namespace": "service.namespace",
    "probe_port": "service.port",
    "probe_model": "model",
    "probe_checks": "checks",
    "probe_timeout": "timeout",
    "probe_wait_timeout": "wait_timeout",
}
# Integers that a count cannot go below.
MINIMUM = {"vllm_server_replicas": 0, "vllm_server_gpus": 0, "vllm_server_nodes": 1}


def _plain(text: Any) -> str:
    return markup(text).replace("`", "").replace("<br>", " ").replace("\\|", "|")


def question(variable: str, option: dict[str, Any], default: Any) -> dict[str, Any]:
    """One AWX survey question for an argument-spec option and its default."""
    kind = option.get("type", "str")
    q: dict[str, Any] = {
        "question_name": variable,
        "question_description": _plain(option.get("description")),
        "variable": variable,
        "required": bool(option.get("required", False)),
    }
    if option.get("no_log"):
        q["type"] = "password"
    elif option.get("choices") and kind == "list":
        q["type"], q["choices"] = "multiselect", [str(c) for c in option["choices"]]
    elif option.get("choices"):
        q["type"], q["choices"] = "multiplechoice", [str(c) for c in option["choices"]]
    elif kind == "bool":
        q["type"], q["choices"] = "multiplechoice", ["true", "false"]
    elif kind == "int":
        q["type"] = "integer"
        if variable in MINIMUM:
            q["min"] = MINIMUM[variable]
    elif kind == "float":
        q["type"] = "float"
    else:
        q["type"] = "text"
    value = _default(q["type"], default)
    if value is not None:
        q["default"] = value
    return q


def _default(kind: str, value: Any) -> Any:
    """The default as AWX stores it, or None where there is none to give (templated, empty, secret)."""
    if value is None or kind == "password" or (isinstance(value, str) and ("{{" in value or value == "")):
        return None
    if kind == "multiselect":
        return "\n".join(str(v) for v in value)
    if kind == "multiplechoice":
        return str(value).lower() if isinstance(value, bool) else str(value)
    if kind in ("integer", "float"):
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return str(value)


def _options(role: str) -> dict[str, Any]:
    specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
    return specs["argument_specs"]["main"]["options"]


def _role_defaults(role: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text()) or {}


def deploy_survey() -> dict[str, Any]:
    spec = []
    for role, variables in DEPLOY.items():
        options, defaults = _options(role), _role_defaults(role)
        spec += [question(v, options[v], defaults.get(v)) for v in variables]
    return {
        "name": "Deploy vLLM endpoints",
        "description": "playbooks/deploy.yml: generated from the roles' argument specs by docs/gen_awx_surveys.py",
        "spec": spec,
    }


def _probe_option(options: dict[str, Any], path: str) -> dict[str, Any]:
    option = options[path.split(".")[0]]
    return option["suboptions"][path.split(".")[1]] if "." in path else option


def probe_survey() -> dict[str, Any]:
    import re

    text = (ROOT / "plugins" / "modules" / "vllm_endpoint_probe.py").read_text()
    docs = yaml.safe_load(re.search(r'DOCUMENTATION = r"""(.*?)"""', text, re.S).group(1))
    play_vars = yaml.safe_load((ROOT / "playbooks" / "probe.yml").read_text())[0]["vars"]
    spec = []
    for variable, path in PROBE.items():
        option = dict(_probe_option(docs["options"], path), required=False, no_log=variable in PROBE_SECRETS)
        if variable == "probe_port":
            option["type"] = "int"  # probe.yml's default is a number; the module also takes a port name
        spec.append(question(variable, option, play_vars.get(variable)))
    return {
        "name": "Probe vLLM endpoints",
        "description": "playbooks/probe.yml: generated from vllm_endpoint_probe's options by docs/gen_awx_surveys.py",
        "spec": spec,
    }


def rendered() -> dict[str, str]:
    surveys = {"deploy.json": deploy_survey(), "probe.json": probe_survey()}
    return {name: json.dumps(survey, indent=2) + "\n" for name, survey in surveys.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    files = {OUT / name: text for name, text in rendered().items()}
    return write_or_check(files, args.check, "run: python docs/gen_awx_surveys.py")


if __name__ == "__main__":
    sys.exit(main())
