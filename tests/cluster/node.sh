#!/usr/bin/env bash
# The real node of the local control plane: containerd + kubelet + kube-proxy on this machine, beside the kwok
# nodes, so that pods which must really run (staging, probes, Services, rollouts) run.
# Usage: node.sh setup|up|down|status|available   (cluster.sh calls up and down; `setup` installs the packages)
#
# Shaped like one GPU node of the reference EKS setup for the scheduler: the GPU label, the nvidia.com/gpu:NoSchedule
# taint and nvidia.com/gpu capacity (a status patch, as the Kubernetes docs' "Advertise Extended Resources for a
# Node" does: nothing here has a GPU, and the collection only needs the scheduler to count them). It carries one
# taint of its own, llmops.test/real-node=true:NoSchedule, and the label llmops.test/node=real, so that only pods
# that ask for it (the demo's vars, the real-node tests) land here and the kwok tests stay on kwok.
#
# The settings that decide it on a 2-core Debian machine with cgroup v1 and no systemd (each found by trying):
# containerd with restrict_oom_score_adj (else runc cannot give the pause container oom_score_adj -998), cgroupfs,
# overlayfs; kubelet with failCgroupV1: false (1.35 refuses cgroup v1 by default) and failSwapOn: false.
# Network: a bridge llmops0 (10.245.0.1/24, the node's IP), host-local IPAM, kube-proxy in iptables mode; the
# Service range is routed onto the bridge, so a ClusterIP without rules never leaves the machine; pods have a route to
# the Service range and to each other, and none beyond (no default route: nothing else is reachable from a pod). Pods resolve no
# names (their resolv.conf points at their own loopback). Nothing listens beyond the bridge and 127.0.0.1.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=tests/cluster/versions.env
source "$here/versions.env"
bin="$(cluster_bin_dir)"
addons="$(addons_cache_dir)"
state="$(cluster_state_dir)"
node_dir="$state/node"
kubeconfig="$state/kubeconfig"
offset="${LLMOPS_VLLM_PORT_OFFSET:-0}"
who=node run_dir="$node_dir"
# shellcheck source=tests/cluster/lib.sh
source "$here/lib.sh"

NODE_NAME=llmops-node-0
BRIDGE=llmops0
NODE_IP=10.245.0.1
POD_CIDR=10.245.0.0/24
SERVICE_CIDR=10.96.0.0/16 # cluster.sh's --service-cluster-ip-range
GPUS=2
kubelet_port=$((16280 + offset)) kubelet_healthz=$((16281 + offset))
proxy_healthz=$((16282 + offset)) proxy_metrics=$((16283 + offset))
sock="$node_dir/containerd/containerd.sock"
components=(containerd kubelet kube-proxy)
# Debian's packages the node runs on (apt-get names).
PACKAGES=(containerd runc containernetworking-plugins iptables conntrack)
CNI_BIN=/usr/lib/cni

kctl() { "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }
ctr_() { ctr --address "$sock" -n k8s.io "$@"; }

# Why this machine cannot run the node ("" when it can). Checked before anything is changed.
unavailable_reason() {
  [[ "${LLMOPS_VLLM_REAL_NODE:-auto}" == 0 ]] && { echo "LLMOPS_VLLM_REAL_NODE=0"; return; }
  [[ "$(id -u)" == 0 ]] || { echo "not root (a kubelet needs root)"; return; }
  [[ -w /sys/fs/cgroup/memory || -w /sys/fs/cgroup/cgroup.subtree_control ]] || { echo "no writable cgroups"; return; }
  [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] || modprobe br_netfilter 2>/dev/null ||
    { echo "no bridge netfilter (br_netfilter)"; return; }
  grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || { echo "no overlay filesystem"; return; }
  [[ -x "$bin/kubelet" && -x "$bin/kube-proxy" ]] || { echo "kubelet/kube-proxy not built (make cluster-build)"; return; }
  echo ""
}

# Debian's containerd, runc, CNI plugins, iptables and conntrack; idempotent (nothing runs when all are there).
setup() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  [[ "$(id -u)" == 0 ]] || die "installing ${missing[*]} needs root"
  log "installing ${missing[*]} (Debian packages)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

node_certs() { # the kubelet's client certificate (its node identity) and serving certificate, from the cluster's CA
  local pki="$state/pki" d="$node_dir/pki"
  [[ -f "$d/kubelet.crt" ]] && return 0
  mkdir -p "$d"; chmod 700 "$d"
  (
    cd "$d"
    printf 'extendedKeyUsage=clientAuth\n' > client.ext
    openssl req -newkey rsa:2048 -nodes -keyout node.key -out node.csr -subj "/O=system:nodes/CN=system:node:$NODE_NAME" 2>/dev/null
    openssl x509 -req -in node.csr -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -out node.crt -days 3650 -extfile client.ext 2>/dev/null
    printf 'subjectAltName=IP:%s,DNS:%s\nextendedKeyUsage=serverAuth\n' "$NODE_IP" "$NODE_NAME" > server.ext
    openssl req -newkey rsa:2048 -nodes -keyout kubelet.key -out kubelet.csr -subj "/CN=$NODE_NAME" 2>/dev/null
    openssl x509 -req -in kubelet.csr -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -out kubelet.crt -days 3650 -extfile server.ext 2>/dev/null
    rm -f ./*.csr ./*.ext
  )
  local k="$node_dir/kubelet.kubeconfig"
  kctl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}' > "$node_dir/server"
  "$bin/kubectl" config --kubeconfig "$k" set-cluster local --server "$(cat "$node_dir/server")" \
      --certificate-authority "$pki/ca.crt" --embed-certs >/dev/null
  "$bin/kubectl" config --kubeconfig "$k" set-credentials node --client-certificate "$d/node.crt" \
      --client-key "$d/node.key" --embed-certs >/dev/null
  "$bin/kubectl" config --kubeconfig "$k" set-context node --cluster local --user node >/dev/null
  "$bin/kubectl" config --kubeconfig "$k" use-context node >/dev/null
}

# The images the rendered pods use, built from this checkout (images.py) and imported into containerd: seconds.
images_import() {
  local py="$here/../../.venv/bin/python" t0=$SECONDS
  [[ -x "$py" ]] || py=python3
  K8S_MODULE_DIR="$(go env GOMODCACHE)/k8s.io/kubernetes@$K8S_VERSION" \
    "$py" "$here/images.py" build "$node_dir/images.tar" "$bin" || die "building the node's images failed"
  ctr_ images import "$node_dir/images.tar" >/dev/null || die "importing the node's images failed"
  rm -f "$node_dir/images.tar"
  log "images built and imported in $((SECONDS - t0))s: $("$py" "$here/images.py" names | tr '\n' ' ')"
}

write_configs() {
  mkdir -p "$node_dir"/{containerd,cni,kubelet,ipam}
  cat > "$node_dir/containerd/config.toml" <<TOML
version = 2
root = "$node_dir/containerd/root"
state = "$node_dir/containerd/state"
[grpc]
  address = "$sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$node_dir/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # runc cannot set the pause container's oom_score_adj (-998) here: that needs a capability this machine lacks.
  restrict_oom_score_adj = true
  enable_unprivileged_ports = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$node_dir/cni"
    max_conf_num = 1
TOML
  cat > "$node_dir/cni/10-llmops.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "llmops", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$node_dir/ipam", "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
            "routes": [{"dst": "$SERVICE_CIDR"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}
]}
JSON
  # Pods resolve no names: a nameserver on their own loopback answers nothing, and no query leaves the machine.
  echo "nameserver 127.0.0.1" > "$node_dir/resolv.conf"
  cat > "$node_dir/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $kubelet_healthz
tlsCertFile: $node_dir/pki/kubelet.crt
tlsPrivateKeyFile: $node_dir/pki/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $state/pki/ca.crt}
# Only clients with a certificate of the cluster's CA get here (the API server's, the admin's).
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$sock
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
resolvConf: $node_dir/resolv.conf
clusterDomain: cluster.local
podCIDR: $POD_CIDR
maxPods: 30
serializeImagePulls: false
registerWithTaints:
  - {key: nvidia.com/gpu, effect: NoSchedule}
  - {key: llmops.test/real-node, value: "true", effect: NoSchedule}
# A test machine's disk and memory run low without that being the pods' fault: evict only near the end.
evictionHard: {memory.available: 200Mi, nodefs.available: 2%, imagefs.available: 2%, nodefs.inodesFree: 2%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
nodeStatusReportFrequency: 10s
YAML
  cat > "$node_dir/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:$proxy_healthz
metricsBindAddress: 127.0.0.1:$proxy_metrics
nodePortAddresses: [$NODE_IP/32]
conntrack: {maxPerCore: 0}
YAML
}

network_up() {
  mkdir -p "$node_dir"
  # The values before, put back by down.
  [[ -f "$node_dir/sysctl.saved" ]] || {
    echo "net.ipv4.ip_forward=$(sysctl -n net.ipv4.ip_forward)"
    echo "net.bridge.bridge-nf-call-iptables=$(sysctl -n net.bridge.bridge-nf-call-iptables)"
  } > "$node_dir/sysctl.saved"
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
  # The bridge exists before the kubelet starts: its address is the node's IP, which the kubelet checks.
  ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
  # (Not `ip addr show | grep -q`: under pipefail grep's early exit fails the pipe, and the address is added twice.)
  [[ "$(ip -4 -o addr show dev "$BRIDGE")" == *" $NODE_IP/"* ]] || ip addr add "$NODE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  ip route replace "$SERVICE_CIDR" dev "$BRIDGE" src "$NODE_IP"
}

# The host paths a kubelet and containerd use whatever their root (left by down): recorded if they were absent.
# /var/lib/llmops-vllm: the model volume of tests/cluster/local-vars.yml (storage_mode host_path).
FIXED_PATHS=(/run/containerd /run/netns /var/lib/cni /var/lib/kubelet /var/log/pods /var/log/containers /var/lib/llmops-vllm)

up() {
  local reason; reason="$(unavailable_reason)"
  if [[ -n "$reason" ]]; then
    [[ "${LLMOPS_VLLM_REAL_NODE:-auto}" == 1 ]] && die "the real node cannot run here: $reason"
    mkdir -p "$node_dir"; echo "$reason" > "$node_dir/unavailable"
    log "no real node: $reason (pods run on kwok nodes only; tests that need one are skipped)"
    return 0
  fi
  rm -f "$node_dir/unavailable"
  if running kubelet && running containerd && running kube-proxy; then
    log "node $NODE_NAME already up"
    images_import  # the fakes as they are now, for the pods started from here on
    return 0
  fi
  setup
  local t0; t0=$(date +%s.%N)
  mkdir -p "$node_dir"
  local p
  [[ -f "$node_dir/fixed-paths" ]] || for p in "${FIXED_PATHS[@]}"; do [[ -e "$p" ]] || echo "$p"; done > "$node_dir/fixed-paths"
  network_up
  node_certs
  write_configs
  start containerd --config "$node_dir/containerd/config.toml"
  wait_for containerd 30 ctr --address "$sock" version
  images_import
  start kubelet --config "$node_dir/kubelet.yaml" --kubeconfig "$node_dir/kubelet.kubeconfig" \
      --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --root-dir "$node_dir/kubelet" \
      --node-labels "kubernetes.io/os=linux,nvidia.com/gpu.present=true,llmops.test/node=real,type=real"
  start kube-proxy --config "$node_dir/kube-proxy.yaml"
  wait_for "node $NODE_NAME registered" 60 kctl get node "$NODE_NAME"
  # What a GPU node's device plugin would advertise, so that the scheduler counts GPUs here too.
  kctl patch node "$NODE_NAME" --subresource=status --type=merge \
      -p "{\"status\": {\"capacity\": {\"nvidia.com/gpu\": \"$GPUS\"}}}" >/dev/null
  wait_for "nvidia.com/gpu allocatable on $NODE_NAME" 60 \
      bash -c "[[ \$('$bin/kubectl' --kubeconfig '$kubeconfig' get node $NODE_NAME -o jsonpath='{.status.allocatable.nvidia\.com/gpu}') == $GPUS ]]"
  wait_for "node $NODE_NAME Ready" 60 kctl wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s
  wait_for "kube-proxy" 30 curl -fsS "http://127.0.0.1:$proxy_healthz/healthz"
  hub_up
  local secs; secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  echo "$secs" > "$node_dir/up-seconds"
  log "node $NODE_NAME Ready in ${secs}s (containerd, kubelet, kube-proxy; $GPUS nvidia.com/gpu advertised)"
}

# The fake Hub (tests/hub_fake_server.py) in a pod on this node, at the ClusterIP tests/cluster/local-vars.yml names:
# a generated Mistral-layout model under the workshop's repository id. Pods reach it through its Service.
HUB_IP=10.96.100.1 HUB_REPO=mistralai/Mistral-7B-Instruct-v0.3 HUB_MODEL_BYTES=$((32 * 1024 * 1024))
hub_up() {
  kctl apply --server-side --field-manager llmops-cluster -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: llmops-hub}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: hub, namespace: llmops-hub}
spec:
  selector: {matchLabels: {app: hub}}
  template:
    metadata: {labels: {app: hub}}
    spec:
      tolerations: [{key: llmops.test/real-node, operator: Exists}, {key: nvidia.com/gpu, operator: Exists}]
      nodeSelector: {llmops.test/node: real}
      containers:
        - name: hub
          image: python:3.11-slim
          imagePullPolicy: Never
          command: [python3, -m, ansible_collections.llmops.vllm.tests.hub_fake_server, --port, "8080",
                    --repo, $HUB_REPO, --mistral-bytes, "$HUB_MODEL_BYTES"]
          ports: [{containerPort: 8080, name: http}]
          readinessProbe: {tcpSocket: {port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: hub, namespace: llmops-hub}
spec:
  clusterIP: $HUB_IP
  selector: {app: hub}
  ports: [{port: 80, targetPort: http, name: http}]
YAML
  wait_for "the fake Hub" 60 curl -fsS -m 2 -o /dev/null "http://$HUB_IP/api/models/$HUB_REPO/revision/main?blobs=true"
}

# Every mount under the node's directories or in the fixed paths, deepest first.
our_mounts() {
  awk '{print $5}' /proc/self/mountinfo | sed 's/\\040/ /g' |
    { grep -E "^($node_dir|/run/netns/cni-|/run/containerd|/var/lib/kubelet)" || true; } | awk '{print length, $0}' | sort -rn | cut -d' ' -f2-
}

iptables_clean() { # the chains kube-proxy, the kubelet and the CNI plugins made, v4 and v6
  local ipt table chain rule
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for table in filter nat mangle; do
      { "$ipt" -t "$table" -S 2>/dev/null || true; } | { grep -E -- '-j (KUBE-|CNI-)' || true; } |
        { grep -E '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) ' || true; } | while read -r rule; do
          # shellcheck disable=SC2086
          "$ipt" -t "$table" ${rule/-A /-D } 2>/dev/null || true
        done
      for chain in $("$ipt" -t "$table" -S 2>/dev/null | awk '/^-N (KUBE-|CNI-)/ {print $2}'); do
        "$ipt" -t "$table" -F "$chain" 2>/dev/null || true
      done
      for chain in $("$ipt" -t "$table" -S 2>/dev/null | awk '/^-N (KUBE-|CNI-)/ {print $2}'); do
        "$ipt" -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
}

cgroups_clean() { # kubepods and the pods' cgroups under every v1 hierarchy, deepest first
  local d
  for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/*/kubepods.slice; do
    [[ -d "$d" ]] || continue
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}

down() {
  # Only a state whose up brought a node here cleans up (fixed-paths is written before anything else is touched):
  # a cluster without one (a second cluster, LLMOPS_VLLM_REAL_NODE=0) must not take the first one's node down.
  [[ -f "$node_dir/fixed-paths" ]] || { rm -rf "$node_dir"; return 0; }
  # Deleted pods: the kubelet stops their containers (their processes) before it goes.
  stop kube-proxy
  stop kubelet
  # Whatever runs in containers, then the shims and containerd.
  local pids
  pids=$(pgrep -f "containerd-shim-runc-v2 .*-address $sock" || true)
  if [[ -n "$pids" ]]; then
    local pid child
    for pid in $pids; do
      for child in $(pgrep -P "$pid" || true); do kill -9 "$child" 2>/dev/null || true; done
    done
    sleep 0.5
    kill -9 $pids 2>/dev/null || true
  fi
  stop containerd
  [[ -x "$bin/kube-proxy" ]] && "$bin/kube-proxy" --cleanup >/dev/null 2>&1 || true
  iptables_clean
  local m
  for _ in 1 2 3; do
    while read -r m; do [[ -n "$m" ]] && { umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; }; done < <(our_mounts)
    [[ -z "$(our_mounts)" ]] && break
    sleep 0.5
  done
  rm -f /run/netns/cni-* 2>/dev/null || true
  ip link del "$BRIDGE" 2>/dev/null || true
  ip route del "$SERVICE_CIDR" 2>/dev/null || true
  cgroups_clean
  if [[ -f "$node_dir/sysctl.saved" ]]; then
    sysctl -qw $(cat "$node_dir/sysctl.saved") 2>/dev/null || true
  fi
  # The kubelet's fixed paths are shared by no one else here: the ones that were absent before up go again.
  if [[ -f "$node_dir/fixed-paths" ]]; then
    while read -r m; do [[ -n "$m" ]] && rm -rf "$m"; done < "$node_dir/fixed-paths"
  fi
  rm -rf /var/lib/cni/results/llmops-* 2>/dev/null || true
  local left; left="$(our_mounts)"
  [[ -z "$left" ]] || die "mounts left behind: $left"
  rm -rf "$node_dir"
}

status() {
  local name rc=0
  if [[ -f "$node_dir/unavailable" ]]; then echo "real node: unavailable ($(cat "$node_dir/unavailable"))"; return 0; fi
  for name in "${components[@]}"; do
    if running "$name"; then echo "$name: running ($(cat "$run_dir/$name.pid"))"; else echo "$name: stopped"; rc=1; fi
  done
  return $rc
}

PAUSE_IMAGE="$(python3 "$here/images.py" pause-name)"
case "${1:-}" in
  setup) setup ;;
  up) up ;;
  down) down ;;
  status) status ;;
  available) r="$(unavailable_reason)"; [[ -z "$r" ]] || { echo "$r"; exit 1; } ;;
  *) die "usage: $0 setup|up|down|status|available" ;;
esac
