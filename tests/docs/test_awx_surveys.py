"""The AWX files under extensions/awx: survey specs generated from the playbooks' contracts and valid by AWX's own
rules, and credential types whose injectors feed variables the playbooks take as secrets.

The rules are AWX's (ansible/awx, awx/api/views/__init__.py JobTemplateSurveySpec._validate_spec_data and
awx/main/constants.py SURVEY_TYPE_MAPPING for surveys; awx/main/fields.py CredentialInputField and
CredentialTypeInjectorField for credential types), restated here because AWX cannot run on these machines.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
AWX = ROOT / "extensions" / "awx"
SURVEY_TYPES = {
    "text": str,
    "textarea": str,
    "password": str,
    "multiplechoice": str,
    "multiselect": str,
    "integer": int,
    "float": (float, int),
}
FIELD_KEYS = {
    "id",
    "label",
    "type",
    "format",
    "choices",
    "help_text",
    "multiline",
    "secret",
    "ask_at_runtime",
    "default",
}


def awx_survey_errors(survey: dict) -> list[str]:
    """What AWX's _validate_spec_data would refuse in ``survey`` (the checks that apply to a stored spec)."""
    errors = [f"missing {k}" for k in ("name", "description", "spec") if not isinstance(survey.get(k), (str, list))]
    seen: set[str] = set()
    for q in survey.get("spec") or []:
        for key in ("type", "question_name", "variable"):
            if not isinstance(q.get(key), str):
                errors.append(f"{q.get('variable')}: {key} is not a string")
        if not isinstance(q.get("required"), bool):
            errors.append(f"{q['variable']}: required is not a bool")
        if q["variable"] in seen:
            errors.append(f"{q['variable']}: used twice")
        seen.add(q["variable"])
        if q["type"] not in SURVEY_TYPES:
            errors.append(f"{q['variable']}: type {q['type']} unknown")
            continue
        default = q.get("default", "")
        if default != "" and not isinstance(default, SURVEY_TYPES[q["type"]]):
            errors.append(f"{q['variable']}: default {default!r} is not a {q['type']}")
        for bound in ("min", "max"):
            if bound in q and not (q[bound] is None or isinstance(q[bound], int)):
                errors.append(f"{q['variable']}: {bound} is not an integer")
        if q["type"] in ("multiplechoice", "multiselect"):
            choices = q.get("choices")
            if not choices:
                errors.append(f"{q['variable']}: choices are required")
                continue
            for value in (default.split("\n") if q["type"] == "multiselect" else [default]) if default else []:
                if value not in choices:
                    errors.append(f"{q['variable']}: default {value!r} is not a choice")
    return errors


def _surveys() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((AWX / "surveys").glob("*.json"))}


def _argument_options() -> dict[str, dict]:
    options: dict[str, dict] = {}
    for spec in (ROOT / "roles").glob("*/meta/argument_specs.yml"):
        options.update(yaml.safe_load(spec.read_text())["argument_specs"]["main"]["options"])
    return options


def test_committed_surveys_are_the_generated_ones() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "gen_awx_surveys.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr


@pytest.mark.parametrize("name", ["deploy", "probe"])
def test_surveys_pass_awx_validation(name: str) -> None:
    survey = _surveys()[name]
    assert survey["spec"], "an empty survey is refused"
    assert awx_survey_errors(survey) == []


def test_the_validation_refuses_what_awx_refuses() -> None:
    """The restated rules are not vacuous: each broken question is refused."""
    good = {"question_name": "n", "variable": "v", "required": False, "type": "integer", "default": 1}
    broken = [
        dict(good, type="boolean"),
        dict(good, default="1"),
        dict(good, type="multiselect", default="a\nz", choices=["a", "b"]),
        dict(good, type="multiplechoice", default="a"),
        dict(good, required="no"),
    ]
    for question in broken:
        assert awx_survey_errors({"name": "s", "description": "", "spec": [question]}), question
    assert awx_survey_errors({"name": "s", "description": "", "spec": [good, good]}) == ["v: used twice"]


def test_deploy_questions_are_role_variables_and_secrets_are_passwords() -> None:
    options = _argument_options()
    for q in _surveys()["deploy"]["spec"]:
        option = options[q["variable"]]
        assert (q["type"] == "password") == bool(option.get("no_log")), q["variable"]
        if option.get("choices"):
            assert q["choices"] == [str(c) for c in option["choices"]]


def test_probe_questions_are_probe_yml_variables_and_the_key_is_a_password() -> None:
    from ansible_collections.llmops.vllm.plugins.modules.vllm_endpoint_probe import argspec

    play_vars = yaml.safe_load((ROOT / "playbooks" / "probe.yml").read_text())[0]["vars"]
    questions = {q["variable"]: q for q in _surveys()["probe"]["spec"]}
    assert set(questions) <= set(play_vars)
    assert argspec()["api_key"].get("no_log") is True
    assert questions["probe_api_key"]["type"] == "password"
    assert [q for q, v in questions.items() if v["type"] == "password"] == ["probe_api_key"]


def _credential_types() -> dict[str, dict]:
    return {p.stem: yaml.safe_load(p.read_text()) for p in sorted((AWX / "credential_types").glob("*.yml"))}


@pytest.mark.parametrize("name", ["huggingface_token", "vllm_api_key"])
def test_credential_types_follow_awx_schema_and_feed_secret_variables(name: str) -> None:
    kind = _credential_types()[name]
    assert kind["kind"] == "cloud" and kind["name"]
    fields = kind["inputs"]["fields"]
    ids = [f["id"] for f in fields]
    for field in fields:
        assert set(field) <= FIELD_KEYS and {"id", "label"} <= set(field)
        assert re.fullmatch(r"[a-zA-Z_]+[a-zA-Z0-9_]*", field["id"]) and field["id"] != "tower"
        assert field.get("type", "string") == "string" and field.get("secret") is True
    assert set(kind["inputs"]["required"]) <= set(ids)
    # Secrets go in as extra vars (a file AWX passes with -e @file), never as environment variables, which
    # ansible-runner writes into artifacts/<job>/command.
    assert set(kind["injectors"]) == {"extra_vars"}
    rendered = {
        var: jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(tmpl).render({i: "x" for i in ids})
        for var, tmpl in kind["injectors"]["extra_vars"].items()
    }
    assert all(value == "x" for value in rendered.values())
    options = _argument_options()
    play_vars = yaml.safe_load((ROOT / "playbooks" / "probe.yml").read_text())[0]["vars"]
    for variable in rendered:
        assert options.get(variable, {}).get("no_log") or variable in play_vars, variable
