#!/usr/bin/env bash
# A real local Kubernetes control plane for tests and demos: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler built from Go modules, kwok simulating GPU and CPU nodes, the upstream
# CRDs of the optional objects and the LeaderWorkerSet controller (addons.sh).
# Usage: cluster.sh up|down|env|status
# Everything listens on 127.0.0.1; certificates and the kubeconfig are generated per cluster.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=tests/cluster/versions.env
source "$here/versions.env"
bin="$(cluster_bin_dir)"
addons="$(addons_cache_dir)"
state="$(cluster_state_dir)"
kubeconfig="$state/kubeconfig"
api_port="${LLMOPS_VLLM_API_PORT:-16443}"
etcd_port="${LLMOPS_VLLM_ETCD_PORT:-16379}"
# Ports of the components nobody connects to; an offset lets a second cluster run beside the first.
offset="${LLMOPS_VLLM_PORT_OFFSET:-0}"
kcm_port=$((16257 + offset)) scheduler_port=$((16259 + offset)) kwok_port=$((16250 + offset))
lws_webhook_port=$((16270 + offset)) lws_health_port=$((16271 + offset)) lws_metrics_port=$((16272 + offset))
components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok lws-manager)

who=cluster run_dir="$state"
# shellcheck source=tests/cluster/lib.sh
source "$here/lib.sh"
kctl() { "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }

external_cluster() { # a KUBECONFIG that is not ours and reaches a cluster
  [[ -n "${KUBECONFIG:-}" && "${KUBECONFIG}" != "$kubeconfig" && -f "${KUBECONFIG%%:*}" ]] || return 1
  local k=kubectl; command -v kubectl >/dev/null || k="$bin/kubectl"
  [[ -x "$(command -v "$k" || true)" ]] || return 1
  timeout 10 "$k" version --request-timeout=5s >/dev/null 2>&1
}

gen_certs() {
  local d="$state/pki"
  [[ -f "$d/admin.crt" ]] && return 0
  mkdir -p "$d"; chmod 700 "$d"
  log "generating certificates in $d"
  (
    cd "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=llmops-vllm-local-ca" 2>/dev/null
    cat > apiserver.ext <<EXT
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth
EXT
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 3650 -extfile apiserver.ext 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' > client.ext
    openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=llmops-admin" 2>/dev/null
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt -days 3650 -extfile client.ext 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    # The LeaderWorkerSet controller's webhook server, which the API server calls at 127.0.0.1.
    mkdir -p lws
    printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > lws.ext
    openssl req -newkey rsa:2048 -nodes -keyout lws/tls.key -out lws.csr -subj "/CN=lws-webhook" 2>/dev/null
    openssl x509 -req -in lws.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out lws/tls.crt -days 3650 -extfile lws.ext 2>/dev/null
    rm -f ./*.csr ./*.ext
  )
  "$bin/kubectl" config --kubeconfig "$kubeconfig" set-cluster llmops-local --server "https://127.0.0.1:$api_port" \
      --certificate-authority "$d/ca.crt" --embed-certs >/dev/null
  "$bin/kubectl" config --kubeconfig "$kubeconfig" set-credentials llmops-admin \
      --client-certificate "$d/admin.crt" --client-key "$d/admin.key" --embed-certs >/dev/null
  "$bin/kubectl" config --kubeconfig "$kubeconfig" set-context llmops-local --cluster llmops-local --user llmops-admin >/dev/null
  "$bin/kubectl" config --kubeconfig "$kubeconfig" use-context llmops-local >/dev/null
  chmod 600 "$kubeconfig"
}

real_node_up() { # beside the kwok nodes; the first cluster on a machine only (a kubelet uses fixed host paths)
  if [[ "$offset" == 0 ]]; then "$here/node.sh" up; else LLMOPS_VLLM_REAL_NODE=0 "$here/node.sh" up; fi
}

up() {
  if external_cluster; then
    log "KUBECONFIG=$KUBECONFIG already reaches a cluster; not starting a local one"
    return 0
  fi
  "$here/build.sh"
  "$here/addons.sh"
  mkdir -p "$state"
  if running kube-apiserver && kctl get --raw /readyz >/dev/null 2>&1; then
    log "already running (kubeconfig $kubeconfig)"
    real_node_up
    return 0
  fi
  gen_certs
  local pki="$state/pki" t0; t0=$(date +%s)
  start etcd --name llmops --data-dir "$state/etcd" \
      --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
      --listen-peer-urls "http://127.0.0.1:$((etcd_port + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
      --initial-cluster "llmops=http://127.0.0.1:$((etcd_port + 1))" \
      --quota-backend-bytes 2147483648 --unsafe-no-fsync --log-level warn
  wait_for etcd 30 curl -fsS "http://127.0.0.1:$etcd_port/health"
  start kube-apiserver --etcd-servers "http://127.0.0.1:$etcd_port" \
      --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
      --endpoint-reconciler-type none \
      --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
      --client-ca-file "$pki/ca.crt" \
      --service-account-issuer https://kubernetes.default.svc.cluster.local \
      --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
      --service-cluster-ip-range 10.96.0.0/16 --authorization-mode Node,RBAC --allow-privileged=true \
      --kubelet-client-certificate "$pki/admin.crt" --kubelet-client-key "$pki/admin.key" \
      --kubelet-preferred-address-types InternalIP,Hostname \
      --profiling=false
  wait_for kube-apiserver 60 kctl get --raw /readyz
  start kube-controller-manager --kubeconfig "$kubeconfig" --bind-address 127.0.0.1 --secure-port "$kcm_port" \
      --leader-elect=false --use-service-account-credentials=false \
      --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
      --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
      --controllers '*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-route' \
      --node-monitor-grace-period 60s --profiling=false
  start kube-scheduler --kubeconfig "$kubeconfig" --bind-address 127.0.0.1 --secure-port "$scheduler_port" \
      --leader-elect=false --profiling=false
  # kwok also serves the kubelet API (container logs) on the port the nodes advertise, with the API server's
  # certificate (valid for 127.0.0.1); it runs in tests/cluster because kwok.yaml names log files relative to it.
  (cd "$here" && start kwok --kubeconfig "$kubeconfig" --config "$here/kwok.yaml" \
      --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
      --server-address "127.0.0.1:$kwok_port" --node-port "$kwok_port" --node-ip 127.0.0.1 --cidr 10.244.0.0/16 \
      --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key")
  addons_up
  kctl apply --server-side --field-manager llmops-cluster -f "$here/nodes.yaml" >/dev/null
  wait_for "simulated nodes" 60 kctl wait --for=condition=Ready node --all --timeout=2s
  wait_for "default service account" 60 kctl -n default get serviceaccount default
  real_node_up
  log "up in $(( $(date +%s) - t0 ))s; $(kctl get nodes --no-headers | wc -l) nodes; export KUBECONFIG=$kubeconfig"
}

lws_webhooks() { # the LeaderWorkerSet controller's webhook configurations, pointing at its server on 127.0.0.1
  local ca url="https://127.0.0.1:$lws_webhook_port"
  ca=$(base64 -w0 < "$state/pki/ca.crt")
  local lws_rule='{apiGroups: [leaderworkerset.x-k8s.io], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [leaderworkersets]}'
  local lws_pods='objectSelector: {matchExpressions: [{key: leaderworkerset.sigs.k8s.io/name, operator: Exists}]}'
  cat <<YAML
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: lws-mutating-webhook-configuration}
webhooks:
  - {name: mleaderworkerset.kb.io, admissionReviewVersions: [v1], sideEffects: None, failurePolicy: Fail,
     clientConfig: {url: "$url/mutate-leaderworkerset-x-k8s-io-v1-leaderworkerset", caBundle: "$ca"}, rules: [$lws_rule]}
  - {name: mpod.kb.io, admissionReviewVersions: [v1], sideEffects: None, failurePolicy: Fail, $lws_pods,
     clientConfig: {url: "$url/mutate--v1-pod", caBundle: "$ca"},
     rules: [{apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [pods]}]}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: lws-validating-webhook-configuration}
webhooks:
  - {name: vleaderworkerset.kb.io, admissionReviewVersions: [v1], sideEffects: None, failurePolicy: Fail,
     clientConfig: {url: "$url/validate-leaderworkerset-x-k8s-io-v1-leaderworkerset", caBundle: "$ca"}, rules: [$lws_rule]}
  - {name: vpod.kb.io, admissionReviewVersions: [v1], sideEffects: None, failurePolicy: Fail, $lws_pods,
     clientConfig: {url: "$url/validate--v1-pod", caBundle: "$ca"},
     rules: [{apiGroups: [""], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [pods]}]}
YAML
}

addons_up() {
  # The upstream CRDs (server-side: the LeaderWorkerSet CRD is larger than the client-side apply annotation allows).
  kctl apply --server-side --field-manager llmops-cluster -f "$addons/crds/" >/dev/null
  wait_for "add-on CRDs" 60 kctl wait --for condition=Established crd --all --timeout=2s
  # The LeaderWorkerSet controller runs here, outside the cluster, with its webhooks (its pod webhook sets the
  # group labels and LWS_* variables; without it the controller cannot work), served with a certificate of our CA.
  cat > "$state/lws-config.yaml" <<YAML
apiVersion: config.lws.x-k8s.io/v1alpha1
kind: Configuration
leaderElection: {leaderElect: false}
internalCertManagement: {enable: false}
health: {healthProbeBindAddress: "127.0.0.1:$lws_health_port"}
metrics: {bindAddress: "127.0.0.1:$lws_metrics_port"}
webhook: {port: $lws_webhook_port, host: 127.0.0.1, certDir: "$state/pki/lws"}
YAML
  start lws-manager --config "$state/lws-config.yaml" --kubeconfig "$kubeconfig"
  wait_for "LeaderWorkerSet controller" 60 curl -fsS "http://127.0.0.1:$lws_health_port/readyz"
  wait_for "LeaderWorkerSet webhook server" 30 curl -sk -o /dev/null "https://127.0.0.1:$lws_webhook_port/"
  lws_webhooks | kctl apply --server-side --field-manager llmops-cluster -f - >/dev/null
}

down() {
  # The real node first: its pods, mounts and network rules go while the API server still answers.
  "$here/node.sh" down
  local i
  for (( i=${#components[@]}-1; i>=0; i-- )); do stop "${components[$i]}"; done
  # Data and certificates go with the cluster: the next `up` starts empty.
  [[ "${LLMOPS_VLLM_KEEP_STATE:-0}" == 1 ]] || rm -rf "$state"
}

status() {
  local rc=0
  for name in "${components[@]}"; do
    if running "$name"; then echo "$name: running ($(cat "$state/$name.pid"))"; else echo "$name: stopped"; rc=1; fi
  done
  return $rc
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) echo "export KUBECONFIG=$kubeconfig" ;;
  status) status ;;
  *) die "usage: $0 up|down|env|status" ;;
esac
