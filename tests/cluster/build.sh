#!/usr/bin/env bash
# Build the local control plane (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
# etcd, kwok) and the real node's kubelet and kube-proxy from Go modules through the ordinary `go` client, cached by version outside the work tree.
# The first build takes tens of minutes on 2 cores; later runs find the binaries and return at once.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=tests/cluster/versions.env
source "$here/versions.env"
bin="$(cluster_bin_dir)"
# Components to build: all by default; `build.sh kwok kubectl` builds only those (the kind path needs no more).
want=("${@:-kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy etcd kwok}")
# shellcheck disable=SC2206
want=(${want[*]})

cached() {
  missing=()
  for b in "${want[@]}"; do [[ -x "$bin/$b" ]] || missing+=("$b"); done
  [[ ${#missing[@]} -eq 0 ]] && echo "control plane binaries cached in $bin"
}
cached && exit 0
# One build at a time into a cache (a second checkout's `make cluster-up` at the same moment): the second waits for
# the first, then finds what it built.
mkdir -p "$bin"
exec 9>"$bin/.build.lock"
flock -n 9 || { echo "waiting for the build running into $bin" >&2; flock 9; }
cached && exit 0

command -v go >/dev/null || { echo "error: the Go toolchain is required to build the local control plane" >&2; exit 1; }
src="$(cluster_cache_dir)/src"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath"
ldflags="-s -w"
start=$(date +%s)
step() { echo "[$(( $(date +%s) - start ))s] $*"; }

build_kubernetes() {
  local mod="$src/kubernetes"
  mkdir -p "$mod"
  step "preparing wrapper module for k8s.io/kubernetes $K8S_VERSION"
  local staging gomod
  # k8s.io/kubernetes replaces its staging modules with local paths; point each at its published twin,
  # reading the list from the go.mod the module proxy serves for this version.
  [[ -f "$mod/go.mod" ]] || (cd "$mod" && go mod init llmops.local/controlplane >/dev/null 2>&1)
  gomod=$(cd "$mod" && go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
  staging=$(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod")
  [[ -n "$staging" ]] || { echo "error: could not read the staging module list of k8s.io/kubernetes ${K8S_VERSION}" >&2; exit 1; }
  {
    echo "module llmops.local/controlplane"
    echo
    echo "go 1.25.0"
    echo
    echo "require k8s.io/kubernetes ${K8S_VERSION}"
    echo
    for m in $staging; do echo "replace $m => $m v0.${K8S_VERSION#v1.}"; done
  } > "$mod/go.mod"
  step "resolving dependencies (downloads a few hundred modules the first time)"
  local pkgs=() c
  for c in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/$c@${K8S_VERSION}"); done
  (cd "$mod" && go get "${pkgs[@]}" 2>&1 | tail -3)
  for c in "$@"; do
    [[ -x "$bin/$c" ]] && continue
    step "building $c (the slow part; the apiserver alone takes several minutes on 2 cores)"
    (cd "$mod" && go build -ldflags "$ldflags -X k8s.io/component-base/version.gitVersion=${K8S_VERSION} -X k8s.io/client-go/pkg/version.gitVersion=${K8S_VERSION}" \
        -o "$bin/$c.tmp" "k8s.io/kubernetes/cmd/$c") && mv "$bin/$c.tmp" "$bin/$c"
  done
}

build_etcd() {
  local mod="$src/etcd"
  mkdir -p "$mod"
  step "building etcd $ETCD_VERSION"
  cat > "$mod/main.go" <<'GO'
// Command etcd is etcd's own entry point, built from go.etcd.io/etcd/server/v3 as a module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  printf 'module llmops.local/etcd\n\ngo 1.25.0\n' > "$mod/go.mod"
  (cd "$mod" && go get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}" 2>&1 | tail -2 && go mod tidy 2>&1 | tail -2 \
     && go build -ldflags "$ldflags" -o "$bin/etcd.tmp" . ) && mv "$bin/etcd.tmp" "$bin/etcd"
}

build_kwok() {
  step "building kwok $KWOK_VERSION"
  GOBIN="$bin" go install -ldflags "$ldflags" "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}"
}

wants() { [[ " ${want[*]} " == *" $1 "* ]]; }
if wants etcd && [[ ! -x "$bin/etcd" ]]; then build_etcd; fi
if wants kwok && [[ ! -x "$bin/kwok" ]]; then build_kwok; fi
k8s=()
# One wrapper module and one build cache for all of them: the kubelet and kube-proxy share most of their packages
# with the control plane (built apart, under load, the kubelet alone took 29 min).
for c in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do wants "$c" && k8s+=("$c"); done
[[ ${#k8s[@]} -eq 0 ]] || build_kubernetes "${k8s[@]}"
step "done: binaries in $bin"
