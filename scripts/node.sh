#!/usr/bin/env bash
# One Kubernetes node of real components, beside the control plane of
# scripts/control-plane.sh (which calls this when SSEGATE_CP_NODE=1):
# containerd (its CRI plugin, runc from Debian), the CNI plugins bridge,
# host-local, loopback and portmap, the kubelet, kube-proxy (iptables), and
# CoreDNS as a Deployment. Images come from archives, never a registry.
#
#   scripts/node.sh network-up      the pod bridge and its gateway address (before the apiserver,
#                                   which listens there so pods reach it through the kubernetes Service)
#   scripts/node.sh start           containerd, kubelet, kube-proxy, the load-balancer stand-in,
#                                   CoreDNS; waits for the node to be Ready and DNS to answer
#   scripts/node.sh stop            remove every pod, stop them all, undo the network and mounts
#   scripts/node.sh import TAR      load a docker-archive or oci-archive into the node's containerd
#   scripts/node.sh image NAME BIN  make a FROM-scratch image of one static binary and load it
#   scripts/node.sh tag IMAGE NAME...  give a loaded image more names (no registry to pull them from)
#
# The network (fixed: one node per machine, as kube-proxy owns the host's
# iptables): pods in 10.244.0.0/24 on bridge sgcni0 (gateway and node address
# 10.244.0.1), Services in 10.96.0.0/16 (DNS 10.96.0.10), load-balancer
# addresses 10.244.0.200-.254, given by the stand-in in scripts/node/lb.py
# and routed by kube-proxy. Nothing listens beyond the bridge and loopback.
#
# Environment as scripts/control-plane.sh: SSEGATE_CP_DIR (state; the node's
# under node/), SSEGATE_BIN (binaries, built by `control-plane.sh build-node`),
# NODE_NAME (ssegate-node).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

# shellcheck source=scripts/versions.sh
. "$ROOT/scripts/versions.sh"
CP=${SSEGATE_CP_DIR:-/tmp/ssegate-cp}
STATE=$CP/node
NODE_NAME=${NODE_NAME:-ssegate-node}
BRIDGE=sgcni0
NODE_IP=10.244.0.1
POD_SUBNET=10.244.0.0/24
DNS_IP=10.96.0.10
# containerd's socket and state live under /run (its shims' sockets must be short paths).
RUN=/run/ssegate-node
SOCK=$RUN/containerd.sock
# Which control plane owns the node: one per machine.
OWNER_FILE=/run/ssegate-node.owner
PAUSE_IMAGE=localhost/ssegate/pause:1
COREDNS_IMAGE=localhost/ssegate/coredns:$COREDNS_VERSION
KUBELET_PORT=${KUBELET_PORT:-10250}

say() { printf 'node: %s\n' "$*" >&2; }
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
fail() { say "FAILED: $*"; exit 1; }
kc() { kubectl --kubeconfig "$CP/kubeconfig" "$@"; }
# The deprecation the warning is about (cgroup v1) is the machine's, said once in containerd.log.
ctr_() { CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS=1 "$BIN/ctr-$CONTAINERD_VERSION" --address "$SOCK" --namespace k8s.io "$@"; }
crictl_() { "$BIN/crictl-$CRICTL_VERSION" --runtime-endpoint "unix://$SOCK" --timeout 30s "$@"; }


running() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }


# --- network ---------------------------------------------------------------

cmd_network_up() {
  if [ -f "$OWNER_FILE" ] && [ "$(cat "$OWNER_FILE")" != "$CP" ] && [ -d "$(cat "$OWNER_FILE")" ]; then
    fail "a node of the control plane in $(cat "$OWNER_FILE") runs on this machine (one node per machine: kube-proxy owns the host's iptables)"
  fi
  echo "$CP" > "$OWNER_FILE"
  ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
  ip addr replace "$NODE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Bridged traffic through iptables (a pod reaching a Service whose endpoint
  # shares the bridge), and forwarding between pods and Service addresses.
  modprobe br_netfilter 2>/dev/null || [ -d /proc/sys/net/bridge ] || fail "no br_netfilter (apt-get install kmod)"
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.ipv4.ip_forward=1
}

# --- images ----------------------------------------------------------------

cmd_import() {
  local archive=$1
  ctr_ images import --no-unpack=false --snapshotter overlayfs "$archive" >/dev/null \
    || fail "import $archive"
}

# cmd_image NAME BINARY [USER]: a FROM-scratch image NAME holding one static binary as its
# entrypoint, at /<file name without a -vX.Y suffix>, run as USER (65532 by default).
cmd_image() {
  local name=$1 binary=$2 user=${3:-65532:65532}
  file -L "$binary" | grep -q 'statically linked' || fail "$binary is not static"
  local work; work=$(mktemp -d)
  local exe; exe=$(basename "$binary")
  exe=${exe%%-v[0-9]*}
  cp -L "$binary" "$work/$exe"
  chmod 755 "$work/$exe"
  local b=(buildah --storage-driver vfs)
  local c; c=$("${b[@]}" from scratch)
  "${b[@]}" copy "$c" "$work/$exe" "/$exe" >/dev/null
  "${b[@]}" config --entrypoint "[\"/$exe\"]" --user "$user" "$c"
  "${b[@]}" commit --rm -q "$c" "$name" >/dev/null
  rm -f "$work/image.tar"
  "${b[@]}" push -q "$name" "docker-archive:$work/image.tar:$name" >/dev/null
  cmd_import "$work/image.tar"
  rm -rf "$work"
}

# cmd_tag SOURCE NAME...: SOURCE (an image in the node) under other names too.
cmd_tag() {
  local source=$1; shift
  local name
  for name in "$@"; do
    ctr_ images tag --force "$source" "$name" >/dev/null || fail "tag $source as $name"
  done
}

# --- start -----------------------------------------------------------------

# node_kubeconfig NAME USER GROUP: a client certificate from the cluster CA and a kubeconfig.
node_kubeconfig() {
  local name=$1 user=$2 group=$3 pki=$CP/pki
  local subj="/CN=$user"
  [ -n "$group" ] && subj="/O=$group/CN=$user"
  openssl req -newkey rsa:2048 -nodes -subj "$subj" -keyout "$STATE/$name.key" -out "$STATE/$name.csr" \
    >/dev/null 2>&1 || fail "make $name key"
  printf 'subjectAltName=IP:%s,DNS:%s\nextendedKeyUsage=clientAuth,serverAuth\n' "$NODE_IP" "$NODE_NAME" > "$STATE/$name.ext"
  openssl x509 -req -in "$STATE/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 2 \
    -extfile "$STATE/$name.ext" -out "$STATE/$name.crt" >/dev/null 2>&1 || fail "sign $name certificate"
  local server; server=$(sed -n 's/^ *server: //p' "$CP/kubeconfig")
  cat > "$STATE/$name.kubeconfig" <<EOK
apiVersion: v1
kind: Config
clusters:
- name: ssegate-test
  cluster: {server: "$server", certificate-authority: $pki/ca.crt}
users:
- name: $user
  user: {client-certificate: $STATE/$name.crt, client-key: $STATE/$name.key}
contexts:
- name: ssegate-test
  context: {cluster: ssegate-test, user: $user}
current-context: ssegate-test
EOK
}

start_containerd() {
  # Binaries under the names containerd and the CRI plugin look for.
  mkdir -p "$STATE/bin" "$STATE/cni-bin" "$STATE/cni" "$RUN"
  ln -sf "$BIN/containerd-shim-runc-v2-$CONTAINERD_VERSION" "$STATE/bin/containerd-shim-runc-v2"
  local plugin
  for plugin in bridge loopback host-local portmap; do
    ln -sf "$BIN/cni-$plugin-$CNI_PLUGINS_VERSION" "$STATE/cni-bin/$plugin"
  done
  cat > "$STATE/cni/10-ssegate.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "ssegate",
  "plugins": [
    {
      "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$STATE/ipam",
        "ranges": [[{"subnet": "$POD_SUBNET", "rangeStart": "10.244.0.2", "rangeEnd": "10.244.0.199", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  cat > "$STATE/containerd.toml" <<EOF
version = 3
root = "$STATE/containerd"
state = "$RUN/state"
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$RUN/containerd.sock.ttrpc"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$PAUSE_IMAGE"
[plugins.'io.containerd.cri.v1.runtime']
  # This machine's root lacks CAP_SYS_RESOURCE, so no process may lower its
  # oom_score_adj; the kubelet asks -998 for a pod sandbox, which runc then
  # fails to set. Containers get at least containerd's own score (0) instead.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      BinaryName = "$(command -v runc)"
      SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$STATE/cni-bin"]
    conf_dir = "$STATE/cni"
[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
EOF
  PATH="$STATE/bin:$PATH" "$BIN/containerd-$CONTAINERD_VERSION" --config "$STATE/containerd.toml" \
    > "$STATE/containerd.log" 2>&1 &
  echo $! > "$STATE/containerd.pid"
  wait_for 30 "containerd is up" ctr_ version || fail "containerd did not start; see $STATE/containerd.log"
}

load_system_images() {
  local pause=$BIN/pause-v1
  if [ ! -x "$pause" ]; then
    musl-gcc -static -Os -s -o "$pause" "$ROOT/scripts/node/pause.c" || fail "build pause (apt-get install musl-tools)"
  fi
  cmd_image "$PAUSE_IMAGE" "$pause" 65535:65535
  cmd_image "$COREDNS_IMAGE" "$BIN/coredns-$COREDNS_VERSION"
}

start_kubelet() {
  node_kubeconfig kubelet "system:node:$NODE_NAME" system:nodes
  mkdir -p "$STATE/kubelet" "$STATE/manifests"
  # The kubelet cannot share pod cgroups with another kubelet: its own root.
  cat > "$STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine mounts cgroup v1 (hybrid mode); kubelet 1.35+ refuses it unless told.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$SOCK
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 0
tlsCertFile: $STATE/kubelet.crt
tlsPrivateKeyFile: $STATE/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $CP/pki/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
clusterDNS: [$DNS_IP]
resolvConf: $STATE/resolv.conf
staticPodPath: $STATE/manifests
failSwapOn: false
# Left at 0: lowering it needs CAP_SYS_RESOURCE, which this machine's root lacks.
oomScoreAdj: 0
# A shared test machine: never evict or collect images for disk pressure.
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
imageMinimumGCAge: 24h
serializeImagePulls: false
maxPods: 110
nodeStatusReportFrequency: 10s
syncFrequency: 10s
fileCheckFrequency: 5s
shutdownGracePeriod: 0s
EOF
  # Pods resolve cluster names only (nothing beyond this machine is reachable).
  printf 'nameserver %s\n' "$DNS_IP" > "$STATE/resolv.conf"
  "$BIN/kubelet-$K8S_VERSION" --config "$STATE/kubelet.yaml" --kubeconfig "$STATE/kubelet.kubeconfig" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --root-dir "$STATE/kubelet" \
    --cert-dir "$STATE/kubelet-pki" --v 1 > "$STATE/kubelet.log" 2>&1 &
  echo $! > "$STATE/kubelet.pid"
}

start_kube_proxy() {
  node_kubeconfig kube-proxy system:kube-proxy ""
  cat > "$STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $STATE/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_SUBNET
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
oomScoreAdj: 0
# Leave the host's conntrack table size alone.
conntrack: {maxPerCore: 0}
EOF
  "$BIN/kube-proxy-$K8S_VERSION" --config "$STATE/kube-proxy.yaml" > "$STATE/kube-proxy.log" 2>&1 &
  echo $! > "$STATE/kube-proxy.pid"
  wait_for 60 "kube-proxy is up" curl -sf http://127.0.0.1:10256/healthz \
    || fail "kube-proxy did not start; see $STATE/kube-proxy.log"
}

start_coredns() {
  sed -e "s|@DNS_IP@|$DNS_IP|g" -e "s|@IMAGE@|$COREDNS_IMAGE|g" "$ROOT/scripts/node/coredns.yaml" | kc apply -f - >/dev/null
}

cmd_start() {
  for b in "kubelet-$K8S_VERSION" "kube-proxy-$K8S_VERSION" "containerd-$CONTAINERD_VERSION" \
    "crictl-$CRICTL_VERSION" "coredns-$COREDNS_VERSION"; do
    [ -x "$BIN/$b" ] || { "$ROOT/scripts/control-plane.sh" build-node; break; }
  done
  command -v runc >/dev/null || fail "runc is missing: apt-get install runc"
  command -v conntrack >/dev/null || fail "conntrack is missing: apt-get install conntrack"
  mkdir -p "$STATE"
  local started=$SECONDS
  start_containerd
  load_system_images
  start_kubelet
  start_kube_proxy
  "$ROOT/scripts/node/lb.py" "$CP/kubeconfig" > "$STATE/lb.log" 2>&1 &
  echo $! > "$STATE/lb.pid"
  node_ready() {
    [ "$(kc get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" = True ]
  }
  wait_for 120 "node $NODE_NAME is Ready" node_ready || fail "node not Ready; see $STATE/kubelet.log"
  start_coredns
  wait_for 120 "CoreDNS is ready" kc -n kube-system rollout status deployment/coredns --timeout 2s \
    || fail "CoreDNS did not become ready; see $STATE/kubelet.log"
  # From the host through kube-proxy's rules, as a pod's query goes.
  wait_for 30 "cluster DNS answers" "$ROOT/scripts/node/dns_query.py" "$DNS_IP" kubernetes.default.svc.cluster.local 10.96.0.1 \
    || fail "the cluster DNS ($DNS_IP) does not resolve kubernetes.default"
  say "ready in $((SECONDS - started))s"
}

# --- stop ------------------------------------------------------------------

# Whether this control plane's node is the machine's one (or none claims it).
owns_node() { [ ! -f "$OWNER_FILE" ] || [ "$(cat "$OWNER_FILE")" = "$CP" ]; }

cmd_stop() {
  # Another control plane's node: its bridge, containerd and iptables are not ours to touch.
  if ! owns_node; then rm -rf "$STATE"; return 0; fi
  [ -d "$STATE" ] || { release_network; rm -rf "$RUN"; return 0; }
  # Stop the kubelet first, so it restarts nothing; then every pod sandbox goes
  # through the CRI (its containers stopped, its network torn down by CNI).
  stop_pid lb 10
  stop_pid kubelet 10
  if running containerd; then
    crictl_ rmp --all --force >/dev/null 2>&1 || true
  fi
  stop_pid kube-proxy 10
  stop_pid containerd 10
  # Whatever is still running from this node's shims.
  pkill -KILL -f "containerd-shim-runc-v2 .*-address $SOCK" 2>/dev/null || true
  # Projected volumes, overlay snapshots, pod network namespaces: unmount deepest first.
  { grep -E " ($STATE|$RUN)/" /proc/mounts || true; } | awk '{print $2}' | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  "$BIN/kube-proxy-$K8S_VERSION" --cleanup >/dev/null 2>&1 || true
  remove_kube_chains
  release_network
  rm -rf "$RUN" "$STATE"
}

# What kube-proxy's cleanup leaves: the kubelet's own chains (KUBE-FIREWALL,
# KUBE-KUBELET-CANARY, ...), which outlive it, and the rules jumping to them.
remove_kube_chains() {
  local cmd table rule chain
  for cmd in iptables ip6tables; do
    command -v "$cmd" >/dev/null || continue
    for table in filter nat mangle; do
      # No jump left is no failure (grep finds nothing; with pipefail that ended the whole stop,
      # leaving the bridge, the owner file and /run/ssegate-node behind).
      { "$cmd-save" -t "$table" 2>/dev/null || true; } | { grep -E '^-A [A-Z]+ .*-j KUBE-' || true; } \
        | sed 's/^-A //' | while read -r rule; do
        eval "$cmd -t $table -D $rule" 2>/dev/null || true
      done
      for chain in $("$cmd-save" -t "$table" 2>/dev/null | sed -n 's/^:\(KUBE-[^ ]*\) .*/\1/p'); do
        "$cmd" -t "$table" -F "$chain" 2>/dev/null || true
      done
      for chain in $("$cmd-save" -t "$table" 2>/dev/null | sed -n 's/^:\(KUBE-[^ ]*\) .*/\1/p'); do
        "$cmd" -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
}

release_network() {
  owns_node || return 0
  ip link del "$BRIDGE" 2>/dev/null || true
  rm -f "$OWNER_FILE"
}

case "${1:-}" in
  network-up) cmd_network_up ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  import) cmd_import "$2" ;;
  image) cmd_image "$2" "$3" "${4:-65532:65532}" ;;
  tag) shift; cmd_tag "$@" ;;
  *) sed -n '2,24p' "$0"; exit 2 ;;
esac
