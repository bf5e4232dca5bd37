"""llmops.vllm as people get it: a Galaxy tarball, installed into a fresh path, used from there.

Builds the collection from a copy of this checkout (with the caches and bench output a working tree
accumulates planted in it), installs the tarball with ``ansible-galaxy collection install --no-deps`` (no
Galaxy server is reachable; kubernetes.core comes from the ``ansible`` package), then runs ``ansible-doc``,
a playbook and a module from the installed copy only, and writes the execution environment's build context
with ``ansible-builder create``. No cluster is needed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# What a developer's working tree accumulates and the tarball must not carry (galaxy.yml build_ignore).
PLANTED_JUNK = [
    ".pytest_cache/v/cache/lastfailed",
    ".ruff_cache/0.6.0/12345",
    ".build/collections/README",
    ".venv/pyvenv.cfg",
    ".cache/llmops-vllm/marker",
    "plugins/modules/__pycache__/vllm_model_stage.cpython-311.pyc",
    "tests/__pycache__/conftest.cpython-311-pytest-8.3.0.pyc",
    "bench/out/stage-ext4.json",
    "tests/output/junit/python3.11-units.xml",
    "tests/cluster/state/etcd/member",
    "llmops-vllm-0.0.1.tar.gz",
    # render.yml output left in the tree (its default render_dir, and one beside the playbooks).
    "render/30-vllm-server.yml",
    "playbooks/out/30-vllm-server.yml",
]


def run(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None, timeout: int = 300):
    """Run a command, return the CompletedProcess (text); the caller asserts on it."""
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout, check=False)


def show(done: subprocess.CompletedProcess) -> str:
    """The tail of a command's output, for assertion messages."""
    return f"rc={done.returncode}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("galaxy")


@pytest.fixture(scope="module")
def source(work: Path) -> Path:
    """This checkout's files as git lists them (tracked and not ignored), plus the planted junk."""
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT)
    assert listed.returncode == 0, show(listed)
    src = work / "src"
    for name in filter(None, listed.stdout.split("\0")):
        path = ROOT / name
        if path.is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / name)
    for name in PLANTED_JUNK:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text("junk\n")
    return src


@pytest.fixture(scope="module")
def tarball(source: Path, work: Path) -> Path:
    dist = work / "dist"
    done = run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(dist), str(source)])
    assert done.returncode == 0, show(done)
    built = list(dist.glob("llmops-vllm-*.tar.gz"))
    assert len(built) == 1, built
    return built[0]


@pytest.fixture(scope="module")
def env(work: Path) -> dict[str, str]:
    """Environment in which Ansible sees the fresh install path and the `ansible` package's collections, not
    this checkout (tests/conftest.py puts that on ANSIBLE_COLLECTIONS_PATH), and no cluster."""
    path = work / "collections"
    return dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(path),
        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="true",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        ANSIBLE_LOCALHOST_WARNING="false",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
        ANSIBLE_NOCOLOR="true",
        KUBECONFIG=str(work / "no-such-kubeconfig"),
        K8S_AUTH_KUBECONFIG=str(work / "no-such-kubeconfig"),
    )


@pytest.fixture(scope="module")
def installed(tarball: Path, env: dict[str, str]) -> Path:
    """The collections path the tarball was installed into (…/ansible_collections/llmops/vllm inside)."""
    path = Path(env["ANSIBLE_COLLECTIONS_PATH"])
    # --no-deps: kubernetes.core is already there (the `ansible` package); nothing may be fetched from Galaxy.
    done = run(
        [str(BIN / "ansible-galaxy"), "collection", "install", "--no-deps", "-p", str(path), str(tarball)], env=env
    )
    assert done.returncode == 0, show(done)
    assert (path / "ansible_collections" / "llmops" / "vllm" / "MANIFEST.json").is_file(), show(done)
    return path


def installed_modules(installed: Path) -> list[str]:
    modules = installed / "ansible_collections" / "llmops" / "vllm" / "plugins" / "modules"
    return sorted(p.stem for p in modules.glob("*.py") if p.stem != "__init__")


def test_tarball_leaves_out_caches_build_and_bench_output(tarball: Path, source: Path) -> None:
    with tarfile.open(tarball) as tar:
        members = {m.name.removeprefix("./") for m in tar.getmembers() if m.isfile()}
    junk_parts = {"__pycache__", ".pytest_cache", ".ruff_cache", ".build", ".venv", ".cache", ".git"}
    leaked = sorted(
        name
        for name in members
        if junk_parts & set(Path(name).parts)
        or name.startswith(("bench/out/", "tests/output/", "tests/cluster/state/", "render/", "playbooks/out/"))
        or name.endswith((".pyc", ".tar.gz"))
    )
    assert leaked == [], f"the tarball carries build or test leftovers: {leaked}"
    # ...and still carries what makes it a collection.
    wanted = {
        "MANIFEST.json",
        "FILES.json",
        "README.md",
        "LICENSE",
        "meta/runtime.yml",
        "requirements.txt",
        "meta/execution-environment.yml",
        "bindep.txt",
    }
    wanted |= {f"plugins/modules/{p.name}" for p in (source / "plugins" / "modules").glob("*.py")}
    wanted |= {str(p.relative_to(source)) for p in source.glob("roles/*/meta/argument_specs.yml")}
    wanted |= {str(p.relative_to(source)) for p in source.glob("playbooks/*.yml")}
    assert sorted(wanted - members) == []


def test_ansible_uses_the_installed_copy(installed: Path, env: dict[str, str]) -> None:
    done = run([str(BIN / "ansible-galaxy"), "collection", "list", "llmops.vllm", "--format", "json"], env=env)
    assert done.returncode == 0, show(done)
    listed = json.loads(done.stdout)
    assert list(listed) == [str(installed / "ansible_collections")], listed
    assert listed[str(installed / "ansible_collections")]["llmops.vllm"]["version"]


def module_options(fqcn: str, env: dict[str, str]) -> dict:
    done = run([str(BIN / "ansible-doc"), "--json", fqcn], env=env)
    assert done.returncode == 0, show(done)
    return json.loads(done.stdout)[fqcn]["doc"].get("options") or {}


def test_module_defaults_group_sets_the_cluster_once(installed: Path, env: dict[str, str], work: Path) -> None:
    """group/llmops.vllm.vllm holds exactly the modules that talk to the Kubernetes API (they take kubeconfig
    and context) and extends kubernetes.core's, so `module_defaults` set once reaches all of them and none
    fails on an option it does not know."""
    runtime = yaml.safe_load((installed / "ansible_collections/llmops/vllm/meta/runtime.yml").read_text())
    group = runtime["action_groups"]["vllm"]
    members = sorted(m for m in group if isinstance(m, str))
    extends = [m["metadata"]["extend_group"] for m in group if isinstance(m, dict) and "metadata" in m]
    assert extends == [["kubernetes.core.k8s"]]
    talks_to_kubernetes = sorted(
        m
        for m in installed_modules(installed)
        if {"kubeconfig", "context"} <= set(module_options(f"llmops.vllm.{m}", env))
    )
    assert members == talks_to_kubernetes, (
        f"group members {members}; modules taking kubeconfig and context {talks_to_kubernetes}"
    )
    # And the group reaches kubernetes.core's modules: its kubeconfig default is what k8s_info tries to read.
    playbook = work / "module_defaults.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "module_defaults through the collection's group",
                    "hosts": "localhost",
                    "gather_facts": False,
                    "module_defaults": {"group/llmops.vllm.vllm": {"kubeconfig": "/nonexistent/set-once"}},
                    "tasks": [{"name": "List namespaces", "kubernetes.core.k8s_info": {"kind": "Namespace"}}],
                }
            ]
        )
    )
    done = run([str(BIN / "ansible-playbook"), str(playbook)], env=env)
    assert done.returncode != 0 and "/nonexistent/set-once" in done.stdout + done.stderr, show(done)


def test_ansible_doc_documents_every_module(installed: Path, env: dict[str, str]) -> None:
    modules = installed_modules(installed)
    assert "vllm_model_stage" in modules, modules
    listed = run([str(BIN / "ansible-doc"), "-t", "module", "--list", "--json", "llmops.vllm"], env=env)
    assert listed.returncode == 0, show(listed)
    assert sorted(json.loads(listed.stdout)) == [f"llmops.vllm.{m}" for m in modules]
    for module in modules:
        fqcn = f"llmops.vllm.{module}"
        done = run([str(BIN / "ansible-doc"), "--json", fqcn], env=env)
        assert done.returncode == 0 and "[WARNING]" not in done.stderr, show(done)
        entry = json.loads(done.stdout)[fqcn]
        doc = entry["doc"]
        assert doc["filename"].startswith(str(installed)), doc["filename"]
        assert doc["short_description"] and doc["description"], fqcn
        assert doc.get("options"), f"{fqcn} documents no options"
        assert "check_mode" in doc.get("attributes", {}), f"{fqcn} does not say whether it supports check mode"
        assert entry["examples"] and fqcn in entry["examples"], f"{fqcn}: EXAMPLES missing or not using the FQCN"
        assert entry["return"], f"{fqcn} documents no return values"


def test_render_playbook_runs_from_the_installed_copy(work: Path, env: dict[str, str]) -> None:
    render_dir = work / "render"
    done = run([str(BIN / "ansible-playbook"), "llmops.vllm.render", "-e", f"render_dir={render_dir}"], env=env)
    assert done.returncode == 0, show(done)
    objects = [
        obj for path in sorted(render_dir.rglob("*.y*ml")) for obj in yaml.safe_load_all(path.read_text()) if obj
    ]
    by_kind_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    # The reference deployment, from the roles' defaults.
    for key in [
        ("PersistentVolumeClaim", "fsx-models"),
        ("Job", "model-download"),
        ("Deployment", "mistral"),
        ("Service", "mistral"),
    ]:
        assert key in by_kind_name, f"render.yml wrote {sorted(by_kind_name)}; {key} missing"
    assert [p["port"] for p in by_kind_name["Service", "mistral"]["spec"]["ports"]] == [8080]


def test_module_runs_from_the_installed_copy(work: Path, env: dict[str, str]) -> None:
    from ansible_collections.llmops.vllm.tests import model_factory as mf

    model = mf.make_mistral_model(work / "fsx" / "mistral-7b-v0-3")
    dest = work / "ram" / "mistral-7b-v0-3"
    done = run(
        [
            str(BIN / "ansible"),
            "localhost",
            "-c",
            "local",
            "-m",
            "llmops.vllm.vllm_model_stage",
            "-a",
            json.dumps({"src": str(model["path"]), "dest": str(dest)}),
        ],
        env=dict(env, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_LOAD_CALLBACK_PLUGINS="true"),
    )
    assert done.returncode == 0, show(done)
    result = json.loads(done.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert result["changed"] is True and result["copied_files"] == model["files"], result
    for name in model["files"]:
        assert (dest / name).read_bytes() == (model["path"] / name).read_bytes()


def test_execution_environment_build_context(tarball: Path, installed: Path, work: Path) -> None:
    ee = work / "ee"
    # The definition names the tarball `make ee-create` puts in .build/ee; give it this test's tarball there.
    (ee / ".build" / "ee").mkdir(parents=True)
    shutil.copy2(ROOT / "execution-environment.yml", ee / "execution-environment.yml")
    shutil.copy2(tarball, ee / ".build" / "ee" / "llmops-vllm.tar.gz")
    context = ee / "context"
    done = run(
        [
            str(BIN / "ansible-builder"),
            "create",
            "-f",
            str(ee / "execution-environment.yml"),
            "-c",
            str(context),
            "--output-filename",
            "Containerfile",
        ]
    )
    assert done.returncode == 0, show(done)
    containerfile = (context / "Containerfile").read_text()
    assert "ansible-galaxy collection install" in containerfile and "introspect" in containerfile
    assert (context / "_build" / "collections" / "llmops-vllm.tar.gz").read_bytes() == tarball.read_bytes()
    requirements = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    names = [c["name"] for c in requirements["collections"]]
    assert "kubernetes.core" in names and "/build/collections/llmops-vllm.tar.gz" in names, names
    # What the builder stage will find in the installed collection (meta/execution-environment.yml).
    found = run([str(BIN / "ansible-builder"), "introspect", str(installed)])
    assert found.returncode == 0, show(found)
    deps = yaml.safe_load(found.stdout.split("---", 1)[1])
    ours = [line for line in deps["python"] if line.endswith("# from collection llmops.vllm")]
    wanted = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    wanted = [w for w in wanted if w and not w.lower().startswith("pyyaml")]  # ansible-core brings PyYAML
    assert sorted(line.split("#")[0].strip() for line in ours) == sorted(wanted), deps
