"""Security checks a reviewer would make, as tests: secrets never leak, containers cannot escalate, the model
volume is read-only wherever it is only read.

The Hugging Face token is given as a value (``model_download_hf_token``, which the model_download role writes
into its Secret) and the vLLM API key as a Secret the user created (``vllm_server_api_key_secret``); both are
unique sentinels, searched for in ``-vvv`` output, in rendered files and in every object but their Secrets.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from pathlib import Path

import pytest
import yaml
from cluster_helpers import Kubectl, run_playbook

ROOT = Path(__file__).resolve().parents[2]
TOKEN = f"hf_llmopsSentinel{uuid.uuid4().hex}"
API_KEY = f"sk-llmops-sentinel-{uuid.uuid4().hex}"
SECRET_NAMES = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)

pytestmark = pytest.mark.skipif(
    not (ROOT / "playbooks" / "render.yml").exists(), reason="playbooks/render.yml is not written yet"
)


def secure_vars(ns: str) -> dict:
    return {
        "vllm_namespace": ns,
        # PersistentVolumes are cluster-scoped: one per test namespace.
        "storage_pv_name": f"fsx-{ns}",
        "model_download_hf_token": TOKEN,
        "vllm_server_api_key_secret": {"name": "vllm-api-key", "key": "api-key"},
    }


def leaked(text: str) -> list[str]:
    return [name for name, value in (("HF token", TOKEN), ("API key", API_KEY)) if value in text]


def pod_templates(objects: list[dict]) -> list[tuple[str, dict]]:
    found = []
    for obj in objects:
        spec = obj.get("spec", {})
        template = spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get("spec", {}).get(
            "template", {}
        ).get("spec")
        if obj.get("kind") == "Pod":
            template = spec
        if template:
            found.append((f"{obj['kind']}/{obj['metadata']['name']}", template))
    return found


def containers(template: dict) -> list[dict]:
    return list(template.get("initContainers") or []) + list(template.get("containers") or [])


def assert_secrets_only_referenced(objects: list[dict]) -> None:
    """Every credential-like env var is a secretKeyRef; no argument carries a key; the API key is wired."""
    wired = False
    for where, template in pod_templates(objects):
        for container in containers(template):
            for env in container.get("env") or []:
                if SECRET_NAMES.search(env["name"]):
                    assert "value" not in env, f"{where} {container['name']}: {env['name']} is a literal"
                    assert env.get("valueFrom", {}).get("secretKeyRef"), f"{where}: {env['name']} is not a Secret ref"
                if env["name"] == "VLLM_API_KEY":
                    ref = env["valueFrom"]["secretKeyRef"]
                    assert (ref["name"], ref["key"]) == ("vllm-api-key", "api-key"), ref
                    wired = True
            args = " ".join(str(a) for a in (container.get("args") or []) + (container.get("command") or []))
            assert not re.search(r"--api-key[= ]\S", args), f"{where} {container['name']} passes --api-key literally"
    assert wired, "the server does not read VLLM_API_KEY from the API key Secret"


def assert_hardened(objects: list[dict]) -> None:
    templates = pod_templates(objects)
    assert templates, "no pod templates to check"
    for where, template in templates:
        for container in containers(template):
            ctx = container.get("securityContext") or {}
            name = f"{where} container {container['name']}"
            assert ctx.get("allowPrivilegeEscalation") is False, f"{name} may escalate privileges"
            assert "ALL" in (ctx.get("capabilities") or {}).get("drop", []), f"{name} keeps its capabilities"
            assert not ctx.get("privileged"), f"{name} is privileged"


def assert_model_volume_read_only(objects: list[dict]) -> None:
    """Servers and their init containers only read the model volume; only the download Job writes it."""
    for where, template in pod_templates(objects):
        claims = {
            v["name"]: v["persistentVolumeClaim"] for v in template.get("volumes") or [] if "persistentVolumeClaim" in v
        }
        for container in containers(template):
            for mount in container.get("volumeMounts") or []:
                if mount["name"] not in claims:
                    continue
                if where.startswith("Job/"):
                    continue  # the download writes the model
                assert mount.get("readOnly") is True, f"{where} {container['name']} mounts the model volume writable"
        if where.startswith("Deployment/"):
            for name, claim in claims.items():
                assert claim.get("readOnly") is True, f"{where} volume {name} is not a read-only claim"
            for container in template.get("containers") or []:
                for mount in container.get("volumeMounts") or []:
                    if mount["name"] == "ram-models":
                        assert mount.get("readOnly") is True, f"{where}: vLLM may write into the RAM copy"


def rendered(render_dir: Path) -> list[dict]:
    objects = []
    for path in sorted(render_dir.glob("*.y*ml")):
        objects.extend(o for o in yaml.safe_load_all(path.read_text()) if o)
    return objects


# --------------------------------------------------------------------------------------------- render


@pytest.fixture(scope="module")
def render(tmp_path_factory, kubeconfig) -> tuple[Path, str]:
    """render.yml at -vvv with both secrets configured: the files and everything ansible printed."""
    out = tmp_path_factory.mktemp("render")
    proc = run_playbook("render.yml", kubeconfig, {**secure_vars("sec-render"), "render_dir": str(out)}, "-vvv")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return out, proc.stdout + proc.stderr


def test_render_output_and_files_hold_no_secret(render):
    out, printed = render
    assert not leaked(printed), "render.yml -vvv printed a secret"
    files = sorted(out.iterdir())
    assert files, "render.yml wrote nothing"
    for path in files:
        assert not leaked(path.read_text()), f"{path.name} contains a secret"
    assert "Secret" not in {o["kind"] for o in rendered(out)}, "a Secret was rendered (it would land in Git)"


def test_rendered_pods_reference_secrets_only(render):
    assert_secrets_only_referenced(rendered(render[0]))


def test_rendered_containers_cannot_escalate(render):
    assert_hardened(rendered(render[0]))


def test_rendered_model_volume_is_read_only_where_only_read(render):
    objects = rendered(render[0])
    assert any(o["kind"] == "Deployment" for o in objects) and any(o["kind"] == "Job" for o in objects)
    assert_model_volume_read_only(objects)


# --------------------------------------------------------------------------------------------- deploy


@pytest.fixture(scope="module")
def deployed(kubectl: Kubectl, kubeconfig: str):
    """deploy.yml at -vvv with both secrets, into a namespace of its own; what it printed."""
    if not (ROOT / "playbooks" / "deploy.yml").exists():
        pytest.skip("playbooks/deploy.yml is not written yet")
    ns = f"sec-{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "namespace", ns)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "vllm-api-key", "namespace": ns},
        "data": {"api-key": base64.b64encode(API_KEY.encode()).decode()},
    }
    kubectl.run("apply", "-f", "-", input=json.dumps(secret))
    try:
        proc = run_playbook("deploy.yml", kubeconfig, secure_vars(ns), "-vvv")
        assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
        yield ns, proc.stdout + proc.stderr
    finally:
        run_playbook("teardown.yml", kubeconfig, {**secure_vars(ns), "purge": True})
        kubectl.run("delete", "namespace", ns, "--wait=false", check=False)
        kubectl.run("delete", "pv", f"fsx-{ns}", "--wait=false", check=False)


def live_objects(kubectl: Kubectl, ns: str) -> list[dict]:
    kinds = "deployments,replicasets,jobs,pods,services,configmaps,events"
    return kubectl.json("-n", ns, "get", kinds)["items"]


def test_deploy_at_vvv_never_prints_a_secret(deployed):
    _unused, printed = deployed
    assert not leaked(printed), "deploy.yml -vvv printed a secret"


def test_secrets_live_only_in_their_secrets(kubectl, deployed):
    ns, _unused = deployed
    objects = live_objects(kubectl, ns)
    assert not leaked(json.dumps(objects)), "a secret value sits in a non-Secret object"
    token = kubectl.json("-n", ns, "get", "secret", "hf-token")["data"]["token"]
    assert base64.b64decode(token).decode() == TOKEN, "the token did not reach its Secret"
    assert_secrets_only_referenced([o for o in objects if o["kind"] in ("Deployment", "Job")])


def test_running_containers_cannot_escalate(kubectl, deployed):
    ns, _unused = deployed
    objects = live_objects(kubectl, ns)
    assert_hardened([o for o in objects if o["kind"] in ("Deployment", "Job", "Pod")])


def test_running_model_volume_is_read_only_where_only_read(kubectl, deployed):
    ns, _unused = deployed
    objects = [o for o in live_objects(kubectl, ns) if o["kind"] in ("Deployment", "Job")]
    assert_model_volume_read_only(objects)
