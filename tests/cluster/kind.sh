#!/usr/bin/env bash
# The kind path, for machines with a Docker engine: a kind cluster whose GPU nodes are simulated by a
# kwok process on the host (kind's own nodes carry no GPUs), the same nodes.yaml as the local control plane.
# Usage: kind.sh up|down|env
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=tests/cluster/versions.env
source "$here/versions.env"
bin="$(cluster_bin_dir)"
state="${LLMOPS_VLLM_CLUSTER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/llmops-vllm/kind}"
kubeconfig="$state/kubeconfig"
name="${LLMOPS_VLLM_KIND_NAME:-llmops-vllm}"
KIND_VERSION="${KIND_VERSION:-v0.30.0}"

die() { echo "kind: error: $*" >&2; exit 1; }

up() {
  docker info >/dev/null 2>&1 || die "no Docker engine answers; use tests/cluster/cluster.sh (the local control plane)"
  mkdir -p "$state" "$bin"
  [[ -x "$bin/kind" ]] || GOBIN="$bin" go install "sigs.k8s.io/kind@${KIND_VERSION}"
  "$here/build.sh" kwok kubectl
  if ! "$bin/kind" get clusters 2>/dev/null | grep -qx "$name"; then
    "$bin/kind" create cluster --name "$name" --kubeconfig "$kubeconfig" --wait 120s
  fi
  if ! { [[ -f "$state/kwok.pid" ]] && kill -0 "$(cat "$state/kwok.pid")" 2>/dev/null; }; then
    setsid "$bin/kwok" --kubeconfig "$kubeconfig" --config "$here/kwok.yaml" --manage-all-nodes=false \
        --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake >"$state/kwok.log" 2>&1 < /dev/null &
    echo $! > "$state/kwok.pid"
  fi
  "$bin/kubectl" --kubeconfig "$kubeconfig" apply --server-side --field-manager llmops-cluster -f "$here/nodes.yaml" >/dev/null
  "$bin/kubectl" --kubeconfig "$kubeconfig" wait --for=condition=Ready node -l type=kwok --timeout=120s >/dev/null
  echo "kind: up; export KUBECONFIG=$kubeconfig" >&2
}

down() {
  if [[ -f "$state/kwok.pid" ]]; then kill "$(cat "$state/kwok.pid")" 2>/dev/null || true; rm -f "$state/kwok.pid"; fi
  if [[ -x "$bin/kind" ]]; then "$bin/kind" delete cluster --name "$name" >/dev/null 2>&1 || true; fi
  rm -rf "$state"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) echo "export KUBECONFIG=$kubeconfig" ;;
  *) die "usage: $0 up|down|env" ;;
esac
