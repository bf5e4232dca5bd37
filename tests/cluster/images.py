"""Container images for the real node, built without a registry or a Docker engine, under the names the collection
renders, so that the rendered manifests run unchanged.

Every Python image is one layer: this machine's own Python (the interpreter, its standard library, the shared
libraries they link), the few pure-Python packages the fakes use (taken from the interpreter running this script:
the project's virtual environment), the fake vLLM server and the fake Hub, and a ``vllm`` entry point that starts
the fake the way the real image starts vLLM (its ENTRYPOINT). The staging engine is not in the images: pods get it
from the ConfigMap, as on EKS. The pause image is Kubernetes' own ``build/pause/linux/pause.c``, built static.

Written as one docker-archive (``manifest.json``, a config and a layer tar per image, shared layers once) and
imported with ``ctr -n k8s.io images import``. Usage: ``images.py build OUT.tar`` | ``images.py names``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.1"  # k8s.io/kubernetes v1.35 build/pause/Makefile TAG
PYTHON_PATH = "/opt/llmops/site"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Image -> (ENTRYPOINT, the fake's environment: the vLLM release it copies). The entry points are the real
# images': vllm/vllm-openai docker/Dockerfile `ENTRYPOINT ["vllm", "serve"]` from 0.11.1 (before, the api_server
# module); the AWS DLC image's is /usr/local/bin/dockerd_entrypoint.sh (aws/deep-learning-containers
# vllm/x86_64/gpu/Dockerfile:52), a bash script that runs `python3 -m vllm.entrypoints.openai.api_server "$@"`
# without exec, so bash stays PID 1 and vLLM its child: copied by DLC_ENTRYPOINT, a PID 1 that keeps SIGTERM's
# default action (which the kernel drops for a namespace's PID 1) and runs the server as its child.
VLLM_IMAGES = {
    "public.ecr.aws/deep-learning-containers/vllm:0.9.0-gpu-py312-ec2": (
        ["/usr/local/bin/dockerd_entrypoint.sh"],
        {"LLMOPS_FAKE_VLLM_RELEASE": "0.9.0"},
    ),
    "vllm/vllm-openai:v0.23.0": (["vllm", "serve"], {"LLMOPS_FAKE_VLLM_RELEASE": "0.23.0"}),
}
# The download Job's image (model_download_image): a Python and nothing else.
PLAIN_IMAGES = {"python:3.11-slim": ["python3"]}

# Pure-Python packages the fakes import (pytest_httpserver on werkzeug).
PACKAGES = ("werkzeug", "markupsafe", "pytest_httpserver")
# Project files the fakes need, as ansible_collections.llmops.vllm.<path>.
PROJECT_FILES = (
    "tests/vllm_fake_server.py",
    "tests/fake_vllm_cli.py",
    "tests/hub_fake_server.py",
    "tests/model_factory.py",
    "plugins/plugin_utils/_vllm_release.py",
    "plugins/plugin_utils/_engine_args.py",
)
PROJECT_DIRS = ("plugins/plugin_utils/_vllm_releases",)
STDLIB_SKIP = {
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "site-packages",
    "dist-packages",
    "__pycache__",
    "config-3.11-x86_64-linux-gnu",
}

SHIMS = {
    # `python3 -m vllm.entrypoints.openai.api_server ARGS` (vLLM 0.9.0's module, the DLC image's command).
    "vllm/entrypoints/openai/api_server.py": "from ansible_collections.llmops.vllm.tests.fake_vllm_cli import main\n"
    "main('api_server')\n",
    "vllm/__init__.py": "",
    "vllm/entrypoints/__init__.py": "",
    "vllm/entrypoints/openai/__init__.py": "",
}
VLLM_SCRIPT = "#!/usr/bin/python3\nfrom ansible_collections.llmops.vllm.tests.fake_vllm_cli import main\nmain('vllm')\n"
DLC_ENTRYPOINT = (
    "#!/usr/bin/python3\n"
    "# The DLC's dockerd_entrypoint.sh: the server as a child, no exec, no signal handler (bash's default).\n"
    "import subprocess, sys\n"
    "sys.exit(subprocess.call(['python3', '-m', 'vllm.entrypoints.openai.api_server', *sys.argv[1:]]))\n"
)


def _libs(paths: list[str]) -> set[str]:
    """The shared libraries ``paths`` link, by ldd, and the dynamic loader."""
    found: set[str] = set()
    for path in paths:
        out = subprocess.run(["ldd", path], capture_output=True, text=True, check=False).stdout
        found.update(re.findall(r"(/\S+\.so[.\d]*) \(0x", out))
    return found


def python_files() -> dict[str, Path]:
    """In-image path -> host path for the interpreter, its standard library and their libraries."""
    files: dict[str, Path] = {}
    exe = Path(os.path.realpath(sys._base_executable if hasattr(sys, "_base_executable") else sys.executable))
    files[str(exe)] = exe
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    dynload: list[str] = []
    for path in sorted(stdlib.rglob("*")):
        rel = path.relative_to(stdlib)
        if set(rel.parts) & STDLIB_SKIP or not path.is_file() or path.suffix == ".pyc":
            continue
        files[f"{stdlib}/{rel}"] = path
        if path.suffix == ".so":
            dynload.append(str(path))
    for lib in sorted(_libs([str(exe), *dynload])):
        files[lib] = Path(os.path.realpath(lib))
    return files


def package_files() -> dict[str, Path]:
    """The packages and their metadata (werkzeug reads its own version from it), and the project's files."""
    import importlib.metadata

    files: dict[str, Path] = {}
    owners = importlib.metadata.packages_distributions()
    roots: list[Path] = []
    for name in PACKAGES:
        roots.append(Path(__import__(name).__file__).parent)
        for dist in owners.get(name, []):
            info = importlib.metadata.distribution(dist)._path  # noqa: SLF001 - the .dist-info directory
            roots.append(Path(info))
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                files[f"{PYTHON_PATH}/{root.name}/{path.relative_to(root)}"] = path
    base = f"{PYTHON_PATH}/ansible_collections/llmops/vllm"
    for rel in PROJECT_FILES:
        files[f"{base}/{rel}"] = REPO / rel
    for rel in PROJECT_DIRS:
        for path in sorted((REPO / rel).glob("*.py")):
            files[f"{base}/{rel}/{path.name}"] = path
    return files


def layer(files: dict[str, Path], texts: dict[str, tuple[str, int]], links: dict[str, str] | None = None) -> bytes:
    """A reproducible layer tar: every parent directory, then the files, owned by root, mtime 0."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = dict(files)
        dirs = {"/tmp", "/root", "/usr/local/bin", "/etc"}
        for name in list(entries) + list(texts):
            parent = Path(name).parent
            while str(parent) != "/":
                dirs.add(str(parent))
                parent = parent.parent
        for d in sorted(dirs):
            info = tarfile.TarInfo(d.lstrip("/"))
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "/tmp" else 0o755
            tar.addfile(info)
        for name in sorted(entries):
            data = entries[name].read_bytes()
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size, info.mode = len(data), (0o755 if os.access(entries[name], os.X_OK) else 0o644)
            tar.addfile(info, io.BytesIO(data))
        for name, (text, mode) in sorted(texts.items()):
            data = text.encode()
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
        for link, target in sorted((links or {}).items()):
            info = tarfile.TarInfo(link.lstrip("/"))
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()


def python_layer() -> bytes:
    files = {**python_files(), **package_files()}
    texts = {f"{PYTHON_PATH}/{k}": (v, 0o644) for k, v in SHIMS.items()}
    texts["/usr/local/bin/vllm"] = (VLLM_SCRIPT, 0o755)
    texts["/usr/local/bin/dockerd_entrypoint.sh"] = (DLC_ENTRYPOINT, 0o755)
    texts["/etc/passwd"] = ("root:x:0:0:root:/root:/bin/false\nnobody:x:65534:65534:nobody:/:/bin/false\n", 0o644)
    texts["/etc/group"] = ("root:x:0:\nnogroup:x:65534:\n", 0o644)
    # The interpreter stays where it is installed (it finds its standard library from there); python3 points at it.
    exe = next(k for k in files if Path(k).name.startswith("python3") and files[k].parent.name == "bin")
    links = {f"/usr/bin/{n}": exe for n in ("python3", "python", Path(exe).name) if f"/usr/bin/{n}" != exe}
    return layer(files, texts, links)


def pause_layer(cache: Path) -> bytes:
    """Kubernetes' pause, built once per Kubernetes version from the module's build/pause/linux/pause.c."""
    exe = cache / "pause"
    if not exe.exists():
        src = Path(os.environ["K8S_MODULE_DIR"]) / "build/pause/linux/pause.c"
        subprocess.run(
            [
                "gcc",
                "-Os",
                "-Wall",
                "-Werror",
                "-static",
                f"-DVERSION=v{PAUSE_IMAGE.rsplit(':', 1)[1]}",
                "-o",
                f"{exe}.tmp",
                str(src),
            ],
            check=True,
        )
        os.replace(f"{exe}.tmp", exe)
    return layer({"/pause": exe}, {})


def config(diff_id: str, entrypoint: list[str], env: dict[str, str]) -> bytes:
    doc = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": entrypoint, "Env": [f"{k}={v}" for k, v in env.items()], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    return json.dumps(doc, sort_keys=True).encode()


def build(out: Path, cache: Path) -> None:
    layers = {"python": python_layer(), "pause": pause_layer(cache)}
    digests = {k: hashlib.sha256(v).hexdigest() for k, v in layers.items()}
    images: list[tuple[str, str, list[str], dict[str, str]]] = [("pause", PAUSE_IMAGE, ["/pause"], {})]
    base_env = {"PATH": PATH, "PYTHONPATH": PYTHON_PATH, "HOME": "/root", "PYTHONDONTWRITEBYTECODE": "1"}
    for name, (entrypoint, env) in VLLM_IMAGES.items():
        images.append(("python", name, entrypoint, {**base_env, **env}))
    for name, entrypoint in PLAIN_IMAGES.items():
        images.append(("python", name, entrypoint, base_env))
    manifest = []
    with tarfile.open(out.with_suffix(".tmp"), "w") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for key, data in layers.items():
            add(f"{digests[key]}/layer.tar", data)
        for key, name, entrypoint, env in images:
            cfg = config(f"sha256:{digests[key]}", entrypoint, env)
            cfg_name = f"{hashlib.sha256(cfg).hexdigest()}.json"
            add(cfg_name, cfg)
            manifest.append({"Config": cfg_name, "RepoTags": [name], "Layers": [f"{digests[key]}/layer.tar"]})
        add("manifest.json", json.dumps(manifest).encode())
    os.replace(out.with_suffix(".tmp"), out)


def names() -> list[str]:
    return [PAUSE_IMAGE, *VLLM_IMAGES, *PLAIN_IMAGES]


if __name__ == "__main__":
    if sys.argv[1:2] == ["build"]:
        build(Path(sys.argv[2]), Path(sys.argv[3]))
    elif sys.argv[1:2] == ["names"]:
        print("\n".join(names()))
    elif sys.argv[1:2] == ["pause-name"]:
        print(PAUSE_IMAGE)
    else:
        sys.exit(__doc__)
