#!/usr/bin/env bash
# The endpoint probe against `transformers serve` (an OpenAI-compatible server that is not vLLM), on the device
# machine: one call of the run tool, from the repository root, with the wheels of fetch_wheels.sh carried along:
#
#   bash tests/device/fetch_wheels.sh                     # here, once (PyPI); writes tests/device/wheelhouse
#   run(command="bash tests/device/run.sh", carry=["tests/device/wheelhouse"], timeout_s=600)
#
# 1. a venv over the device's Python (torch, transformers) plus fastapi, uvicorn, pydantic, openai from the
#    wheelhouse (no network there);
# 2. a tiny scripted Mistral model and tokenizer (make_tiny_model.py) in a fresh hub cache as llmops/tiny-mistral;
# 3. A: `transformers serve llmops/tiny-mistral` on the GPU, probed while it starts (the readiness wait) with
#    every check and the load mode: model discovered, then named with tool_choice auto, required and named;
#    then the raw answers on the paths the probe reads;
# 4. B: `transformers serve <local folder>` with an empty hub cache (as a server over a mounted model folder
#    runs), probed with the model discovered and named.
# $OUT gets the probe results (JSON), the logs of both servers and of the set-up, and the printed tables.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-tests/device/out}
mkdir -p "$OUT"
PY=${DEVICE_PYTHON:-/opt/torch/.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)
VENV=/tmp/serve-venv
WHEELS=tests/device/wheelhouse
REPO_ID=llmops/tiny-mistral
export HF_HOME=/tmp/hf HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_UPDATE_CHECK=1
export HF_HUB_DISABLE_TELEMETRY=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
T0=$(date +%s)
stamp() { echo "[$(($(date +%s) - T0)) s] $*"; }

stamp "set-up: $PY, $(nvidia-smi -L 2>/dev/null | head -1)"
{
    rm -rf "$VENV" "$HF_HOME"
    "$PY" -m venv --without-pip "$VENV" || exit 1
    # A venv does not see the packages of the venv it was made from: point a .pth file at them.
    "$PY" -c 'import sysconfig; p = sysconfig.get_paths(); print(p["purelib"]); print(p["platlib"])' | sort -u \
        >"$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/device-base.pth"
    # pip itself comes from the base venv (through the .pth); it installs into this one.
    if ! "$VENV/bin/python" -m pip install -q --no-index --find-links "$WHEELS" fastapi uvicorn pydantic openai; then
        echo "resolved install failed; installing every wheel without dependencies"
        "$VENV/bin/python" -m pip install -q --no-index --no-deps "$WHEELS"/*.whl || exit 1
    fi
    "$VENV/bin/python" - <<'EOF'
import importlib.metadata as m
def version(name):
    try:
        return m.version(name)
    except m.PackageNotFoundError:
        return None
print({n: version(n) for n in ("torch", "transformers", "tokenizers", "fastapi", "starlette", "uvicorn",
                               "pydantic", "openai", "huggingface_hub")})
from transformers.utils.import_utils import is_serve_available
print("serve available:", is_serve_available())
EOF
} >"$OUT/setup.log" 2>&1 || { cat "$OUT/setup.log"; stamp "set-up failed"; exit 1; }
cat "$OUT/setup.log"
PYV="$VENV/bin/python"

stamp "model"
mkdir -p "$HF_HOME/hub"
"$PYV" tests/device/make_tiny_model.py --cache "$HF_HOME/hub" --repo-id "$REPO_ID" 2>&1 | tee "$OUT/make_model.log"
[ "${PIPESTATUS[0]}" = 0 ] || { stamp "model failed"; exit 1; }

# alive PID: the process runs (a zombie, exited but not yet reaped, does not count).
alive() { [ -r "/proc/$1/stat" ] && ! grep -q '^[0-9]* (.*) Z' "/proc/$1/stat"; }
# probe_while SERVER_PID ARGS...: run the probe script; stop it if the server dies first.
probe_while() {
    local server=$1
    shift
    "$PYV" tests/device/probe_transformers_serve.py "$@" &
    local probe=$!
    while alive "$probe"; do
        if ! alive "$server"; then
            stamp "the server exited; stopping the probe"
            kill "$probe"
            break
        fi
        sleep 1
    done
    wait "$probe"
}
# stop PID: SIGTERM, then SIGKILL after 15 s.
stop() {
    kill "$1" 2>/dev/null || return 0
    for _ in $(seq 15); do
        alive "$1" || return 0
        sleep 1
    done
    kill -9 "$1" 2>/dev/null
}

stamp "A: transformers serve $REPO_ID"
"$PYV" -m transformers.cli.transformers serve "$REPO_ID" --host 127.0.0.1 --port 8000 --log-level info \
    >"$OUT/server_a.log" 2>&1 &
SERVER_A=$!
probe_while "$SERVER_A" --url http://127.0.0.1:8000 --model "$REPO_ID" --wait 180 \
    --requests 8 --concurrency 4 --json "$OUT/probe_a.json" 2>&1 | tee "$OUT/probe_a.txt"
stop "$SERVER_A"

stamp "B: transformers serve <folder>, empty hub cache"
SNAPSHOT=$(ls -d "$HF_HOME"/hub/models--*/snapshots/* | head -1)
LOCAL=/tmp/tiny-mistral
rm -rf "$LOCAL" && cp -rL "$SNAPSHOT" "$LOCAL"
HF_HUB_CACHE=/tmp/hf-empty/hub "$PYV" -m transformers.cli.transformers serve "$LOCAL" --host 127.0.0.1 \
    --port 8001 --log-level info >"$OUT/server_b.log" 2>&1 &
SERVER_B=$!
probe_while "$SERVER_B" --url http://127.0.0.1:8001 --model "$LOCAL" --wait 180 --runs discovered,auto \
    --requests 4 --concurrency 2 --json "$OUT/probe_b.json" 2>&1 | tee "$OUT/probe_b.txt"
stop "$SERVER_B"
stamp "done"
ls -la "$OUT"
