#!/usr/bin/env bash
# The add-ons of the local control plane, from their Go modules through the module proxy, cached by version:
#   crds/   the upstream CustomResourceDefinitions of every optional object the collection renders
#           (LeaderWorkerSet; Karpenter NodePool, NodeClaim, EC2NodeClass; ServiceMonitor; ScaledObject; Route)
#   bin/lws-manager   the LeaderWorkerSet controller, built from sigs.k8s.io/lws (cmd/)
# Later runs find them and return at once.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=tests/cluster/versions.env
source "$here/versions.env"
dir="$(addons_cache_dir)"
cached() { [[ -x "$dir/bin/lws-manager" && -f "$dir/crds/.complete" ]] && echo "add-ons cached in $dir"; }
cached && exit 0
# One fetch at a time into a cache (as build.sh): the second waits for the first, then finds what it fetched.
mkdir -p "$dir/bin" "$dir/crds" "$dir/src"
exec 9>"$dir/.build.lock"
flock -n 9 || { echo "waiting for the add-ons build running into $dir" >&2; flock 9; }
cached && exit 0
command -v go >/dev/null || { echo "error: the Go toolchain is required to fetch the add-ons" >&2; exit 1; }
module_dir() { # module@version -> its directory in the module cache
  (cd "$dir/src" && go mod download -json "$1" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')
}
crd() { # module@version path-in-module
  local d; d="$(module_dir "$1")"
  [[ -n "$d" && -f "$d/$2" ]] || { echo "error: $2 not found in $1" >&2; exit 1; }
  install -m 0644 "$d/$2" "$dir/crds/$(basename "$2")"
}
echo "add-ons: CRDs from their modules"
crd "sigs.k8s.io/lws@$LWS_VERSION" config/crd/bases/leaderworkerset.x-k8s.io_leaderworkersets.yaml
for f in karpenter.sh_nodepools karpenter.sh_nodeclaims karpenter.k8s.aws_ec2nodeclasses; do
  crd "github.com/aws/karpenter-provider-aws@$KARPENTER_AWS_VERSION" "pkg/apis/crds/$f.yaml"
done
crd "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" \
    example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml
crd "github.com/kedacore/keda/v2@$KEDA_VERSION" config/crd/bases/keda.sh_scaledobjects.yaml
crd "github.com/openshift/api@$OPENSHIFT_API_VERSION" route/v1/zz_generated.crd-manifests/routes.crd.yaml
touch "$dir/crds/.complete"
if [[ ! -x "$dir/bin/lws-manager" ]]; then
  echo "add-ons: building the LeaderWorkerSet controller $LWS_VERSION (a few minutes the first time)"
  # The module cache is read-only: build from a copy (go install @version asks the proxy's list, refused here).
  rm -rf "$dir/src/lws" && cp -r "$(module_dir "sigs.k8s.io/lws@$LWS_VERSION")" "$dir/src/lws" && chmod -R u+w "$dir/src/lws"
  (cd "$dir/src/lws" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$dir/bin/lws-manager.tmp" ./cmd) \
    && mv "$dir/bin/lws-manager.tmp" "$dir/bin/lws-manager"
  rm -rf "$dir/src/lws"
fi
echo "add-ons cached in $dir"
