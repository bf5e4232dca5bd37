"""The fake vLLM server started the way the real image starts vLLM: the entry point of the node's vLLM images.

``python3 -m vllm.entrypoints.openai.api_server ARGS`` (the AWS DLC image, vLLM 0.9.0's module) and
``vllm serve MODEL ARGS`` (``vllm/vllm-openai``) land here with the arguments the collection renders. The release is
the image's (``LLMOPS_FAKE_VLLM_RELEASE``, set by tests/cluster/images.py). What it copies from that release:

- **the parser**: every flag is looked up in the release's catalogue (plugins/plugin_utils/_vllm_releases, generated
  from the release's own ``arg_utils.py``/``cli_args.py``): ``--foo_bar`` is ``--foo-bar`` where the release's
  FlexibleArgumentParser says so, aliases and (where argparse allows them) unique prefixes are taken, and anything
  else exits 2 with argparse's ``error: unrecognized arguments: ...``; ``vllm serve`` takes the model as its
  positional ``model_tag`` and moves a ``--model`` there with a warning (from 0.11.1; ``_model_to_front``);
- **the model directory**: a local path without ``config.json`` or ``params.json`` fails the start (vLLM reads the
  model's config before anything listens), and the weights are read once, as loading does, before the port listens
  (0.9.0 ``entrypoints/openai/api_server.py`` ``run_server``: the socket is bound first and served only after
  ``build_async_engine_client``): connections are refused while loading;
- **SIGTERM**, as :func:`sigterm_mode` says per release and image (read in vLLM's wheels and the images' sources):
  ``strand`` before 0.18, ``abort`` or ``drain`` from 0.18 (behind the AWS DLC image's shell it never arrives).

Knobs a test needs that no vLLM argument carries come from the environment: ``LLMOPS_FAKE_VLLM_TOKEN_DELAY``
(seconds per streamed token), ``LLMOPS_FAKE_VLLM_LOAD_S`` (extra loading seconds), ``LLMOPS_FAKE_VLLM_EMPTY_CONTENT=1``
(answers with empty content: a server that is Ready and fails vllm_endpoint_probe's chat check).
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

from ansible_collections.llmops.vllm.plugins.plugin_utils._vllm_release import release_view
from ansible_collections.llmops.vllm.tests.vllm_fake_server import FakeVLLM, FakeVLLMConfig, release_key

# The values the fake acts on; everything else is only checked against the catalogue.
USED = (
    "host",
    "port",
    "model",
    "served-model-name",
    "api-key",
    "max-model-len",
    "enable-auto-tool-choice",
    "tool-call-parser",
    "shutdown-timeout",
)


class UsageError(Exception):
    """What argparse prints before exiting 2."""


def _model_to_front(argv: list[str], release: str) -> list[str]:
    """``vllm serve`` with ``--model``: from 0.11.1 FlexibleArgumentParser.parse_args moves it to the positional
    ``model_tag`` with a warning (0.11.1 / 0.23.0 ``vllm/utils/argparse_utils.py``: "Move <model> to the front");
    before, a ``--model`` token is a ValueError (0.9.0 ``vllm/utils.py`` parse_args)."""
    index = next((i for i, a in enumerate(argv) if re.match(r"^--model(=.+|$)", a)), None)
    if index is None:
        return argv
    if release_key(release) < (0, 11, 1):
        if argv[index] == "--model":
            raise SystemExit(
                "ValueError: With `vllm serve`, you should provide the model as a positional argument or in a "
                "config file instead of via the `--model` option."
            )
        return argv
    print(
        "WARNING With `vllm serve`, you should provide the model as a positional argument or in a config file "
        "instead of via the `--model` option. The `--model` option will be removed in a future version.",
        file=sys.stderr,
        flush=True,
    )
    if argv[index] == "--model":
        tag, after = (argv[index + 1] if index + 1 < len(argv) else ""), index + 2
    else:
        tag, after = argv[index].removeprefix("--model="), index + 1
    return ["serve", tag, *argv[1:index], *argv[after:]]


def parse(argv: list[str], release: str, entry: str) -> dict[str, object]:
    """The flags of ``argv`` as ``release``'s parser reads them (canonical name -> value, True for a bare flag)."""
    view = release_view(release)
    flags = dict(view.flags)
    if entry == "api_server":
        flags.setdefault("model", {})
    values: dict[str, object] = {}
    rest = list(argv)
    if entry == "vllm":
        if rest[:1] != ["serve"]:
            raise UsageError("the fake image runs only `vllm serve`")
        rest = _model_to_front(rest, release)[1:]
        if rest and not rest[0].startswith("-"):
            values["model"] = rest.pop(0)
    unknown: list[str] = []
    while rest:
        token = rest.pop(0)
        if not token.startswith("--"):
            unknown.append(token)
            continue
        name, eq, value = token[2:].partition("=")
        key = name.replace("_", "-") if view.underscores else name
        key = view.aliases.get(key, key)
        negated = key.startswith("no-") and flags.get(key[3:], {}).get("kind") == "bool"
        if negated:
            key = key[3:]
        if key not in flags:
            prefixed = [f for f in flags if f.startswith(key)] if _allow_abbrev(release) else []
            if len(prefixed) != 1:
                unknown.append(token)
                continue
            key = prefixed[0]
        if entry == "vllm" and key == "model":
            unknown.append(token)
            continue
        kind = flags[key].get("kind", "value")
        if kind in ("flag", "bool"):
            values[key] = not negated
        elif kind == "list":
            items = [value] if eq else []
            while rest and not rest[0].startswith("-"):
                items.append(rest.pop(0))
            values[key] = items
        elif eq:
            values[key] = value
        elif rest and (kind == "value" or not rest[0].startswith("-")):
            values[key] = rest.pop(0)
        elif kind != "optional":
            raise UsageError(f"argument --{key}: expected one argument")
    if unknown:
        raise UsageError(f"unrecognized arguments: {' '.join(unknown)}")
    return values


def _allow_abbrev(release: str) -> bool:
    from ansible_collections.llmops.vllm.plugins.plugin_utils._vllm_releases import catalogue

    view = release_view(release)
    return all(catalogue(r).get("allow_abbrev", True) for r in view.catalogued)


def load(model: str) -> int:
    """Read the model's files once, as loading does; the bytes read. A local path without a config fails."""
    root = Path(model)
    if not (root / "config.json").is_file() and not (root / "params.json").is_file():
        raise SystemExit(f"ValueError: no config.json or params.json in the model directory {model}")
    total = 0
    for path in sorted(root.iterdir()):
        if path.is_file():
            with path.open("rb") as f:
                while chunk := f.read(1 << 22):
                    total += len(chunk)
    return total


def main(entry: str, argv: list[str] | None = None) -> None:
    release = os.environ.get("LLMOPS_FAKE_VLLM_RELEASE", "0.9.0")
    prog = "vllm serve" if entry == "vllm" else "api_server.py"
    try:
        args = parse(sys.argv[1:] if argv is None else argv, release, entry)
    except UsageError as exc:
        print(f"usage: {prog} [options]\n{prog}: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    model = str(args.get("model") or "facebook/opt-125m")  # vLLM's default model
    print(f"INFO vLLM API server version {release}", flush=True)
    print(f"INFO args: {args}", flush=True)
    started = time.monotonic()
    size = load(model)
    time.sleep(float(os.environ.get("LLMOPS_FAKE_VLLM_LOAD_S", "0")))
    served = args.get("served-model-name") or [model]
    config = FakeVLLMConfig(
        models=list(served) if isinstance(served, list) else [str(served)],
        release=release,
        api_key=str(args["api-key"]) if args.get("api-key") else os.environ.get("VLLM_API_KEY") or None,
        max_model_len=int(str(args.get("max-model-len") or 2048)),
        auto_tool_choice=bool(args.get("enable-auto-tool-choice")),
        tool_parser=str(args["tool-call-parser"]) if args.get("tool-call-parser") else None,
        token_delay=float(os.environ.get("LLMOPS_FAKE_VLLM_TOKEN_DELAY", "0")),
        empty_content=os.environ.get("LLMOPS_FAKE_VLLM_EMPTY_CONTENT") == "1",
    )
    server = FakeVLLM(config, host=str(args.get("host") or "0.0.0.0"), port=int(str(args.get("port") or 8000)))  # noqa: S104
    print(f"INFO Loading weights took {time.monotonic() - started:.2f} seconds ({size} bytes)", flush=True)
    done = threading.Event()
    seconds = float(str(args.get("shutdown-timeout") or 0))
    mode = sigterm_mode(release, seconds)
    on_term = threading.Thread(target=_on_sigterm, args=(server, mode, seconds, done), daemon=True)
    signal.signal(signal.SIGTERM, lambda *_: on_term.start())
    server.start()
    print(f"INFO Starting vLLM API server on http://{server.host}:{server.port}", flush=True)
    print("INFO:     Application startup complete.", flush=True)
    done.wait()
    print("INFO:     Finished server process", flush=True)


def sigterm_mode(release: str, shutdown_timeout: float) -> str:
    """What a SIGTERM does to the server of ``release`` (when it reaches it: behind the AWS DLC image's entry point
    script, bash is PID 1 and the kernel drops the signal; the fake image copies that with a PID 1 of its own,
    tests/cluster/images.py ``DLC_ENTRYPOINT``, so nothing here needs to know):

    - ``strand`` (before 0.18, no ``--shutdown-timeout``): the engine is shut down (``v1/utils.py`` shutdown: terminate,
      "Allow 5 seconds for remaining procs to terminate", then kill) and the output handler cancelled, so requests in
      flight get no more tokens and no error (0.9.0 ``v1/engine/async_llm.py`` 195-202, 312-315, 407-409); the
      listener closes only in uvicorn's ``shutdown()`` after that (0.9.0 ``entrypoints/launcher.py`` 56-80), and the
      process waits for the stranded connections (the client giving up, or SIGKILL);
    - ``abort`` / ``drain`` (0.18 and later, ``--shutdown-timeout`` default 0): requests in flight end with
      ``finish_reason: "abort"``, or run to their end within the timeout; the listener closes at once (uvicorn's own
      handler fires too, 0.18-0.26; from 0.27 the socket stays open during a drain, not copied here), and 0.23 logs
      ``[shutdown] API server: stopping engine client mode=abort timeout=0s``.
    """
    if release_key(release) < (0, 18, 0):
        return "strand"
    return "drain" if shutdown_timeout > 0 else "abort"


# Before 0.18: the engine processes get this long to end before the listener closes (v1/utils.py shutdown).
ENGINE_STOP_S = 5.0


def _on_sigterm(server: FakeVLLM, mode: str, seconds: float, done: threading.Event) -> None:
    if mode == "strand":
        print("INFO:     Shutting down FastAPI HTTP server.", flush=True)
        server.strand()
        time.sleep(ENGINE_STOP_S)
        server.stop()
        while server.in_flight:  # uvicorn waits for the connections it still holds
            time.sleep(0.1)
    else:
        print(f"INFO [shutdown] API server: stopping engine client mode={mode} timeout={seconds:g}s", flush=True)
        server.shutdown(drain_seconds=seconds)
    done.set()
