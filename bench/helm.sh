#!/usr/bin/env bash
# Print the path of a helm binary for the Helm columns of bench/deploy_bench.py, building it once from the Go
# module proxy through the ordinary `go` client (get.helm.sh is not needed), cached by version outside the
# work tree. The first build takes about 6 minutes on 2 cores; later runs print the cached path at once.
#   bench/helm.sh                       # prints ~/.cache/llmops-vllm/helm-v4.3.1/bin/helm
#   bench/helm.sh --cached              # the path only if already built, else exit 1 (never builds)
#   HELM_VERSION=v3.22.0 bench/helm.sh  # Helm 3 instead (module helm.sh/helm/v3)
# Progress goes to stderr so that `helm="$(bench/helm.sh)"` gets the path only.
set -euo pipefail
HELM_VERSION="${HELM_VERSION:-v4.3.1}"
major="${HELM_VERSION#v}"
major="${major%%.*}"
bin="${LLMOPS_VLLM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llmops-vllm}/helm-${HELM_VERSION}/bin"

if [[ -x "$bin/helm" ]]; then
  echo "$bin/helm"
  exit 0
fi
[[ "${1:-}" != "--cached" ]] || exit 1

command -v go >/dev/null || { echo "error: the Go toolchain is required to build helm" >&2; exit 1; }
mkdir -p "$bin"
start=$(date +%s)
echo "building helm ${HELM_VERSION} from helm.sh/helm/v${major} (once; cached in $bin)" >&2
# GOBIN is a temporary folder so that an interrupted build never leaves a half-written helm in the cache.
tmp="$(mktemp -d "$bin/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# Helm's source carries only the minor (v4.3); its release build stamps the full version with -X, as here.
GOBIN="$tmp" CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath" go install \
  -ldflags "-s -w -X helm.sh/helm/v${major}/internal/version.version=${HELM_VERSION}" \
  "helm.sh/helm/v${major}/cmd/helm@${HELM_VERSION}" >&2
mv "$tmp/helm" "$bin/helm"
echo "[$(( $(date +%s) - start ))s] done: $bin/helm" >&2
echo "$bin/helm"
