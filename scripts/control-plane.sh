#!/usr/bin/env bash
# A real Kubernetes control plane on loopback, for tests and for developers.
#
#   scripts/control-plane.sh build   build kube-apiserver, kube-controller-manager, kube-scheduler,
#                                    etcd, helm and kube-score if missing
#   scripts/control-plane.sh start   start etcd + kube-apiserver, write a kubeconfig; with
#                                    SSEGATE_CP_CONTROLLERS=1 also kube-controller-manager and
#                                    kube-scheduler, and the ServiceAccount admission plugin;
#                                    with SSEGATE_CP_NODE=1 also those and a node of real
#                                    components (scripts/node.sh: containerd, runc, CNI, kubelet,
#                                    kube-proxy, CoreDNS), the apiserver then on the pod bridge
#   scripts/control-plane.sh build-node  build what the node runs (kubelet, kube-proxy,
#                                    containerd, CNI plugins, CoreDNS, crictl) if missing
#   scripts/control-plane.sh stop    stop them and remove their state
#   scripts/control-plane.sh env     print the export lines for KUBECONFIG and PATH (helm)
#   scripts/control-plane.sh stop-apiserver    stop only kube-apiserver (etcd keeps the data)
#   scripts/control-plane.sh start-apiserver   start it again (does nothing if it runs)
#   scripts/control-plane.sh start-controllers start kube-controller-manager + kube-scheduler
#                                              on the running control plane (if not running)
#   scripts/control-plane.sh stop-controllers  stop only those two
#
# Binaries are built from Go modules and cached outside the checkout, in
# ${SSEGATE_BIN:-${XDG_CACHE_HOME:-~/.cache}/ssegate/bin}, so CI runs on the same
# machine reuse them. State lives in ${SSEGATE_CP_DIR:-/tmp/ssegate-cp}. ETCD_PORT,
# ETCD_PEER_PORT, API_PORT, KCM_PORT and SCHEDULER_PORT move the listeners (all on
# 127.0.0.1); SSEGATE_CP_OWNER=PID stops everything when that process exits (the
# tests use it).
set -euo pipefail

# shellcheck source=scripts/versions.sh
. "$(dirname "$0")/versions.sh"
STATE=${SSEGATE_CP_DIR:-/tmp/ssegate-cp}
ETCD_PORT=${ETCD_PORT:-23790}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-23800}
API_PORT=${API_PORT:-16443}
# Where the apiserver listens: loopback, or with a node the pod bridge's
# gateway address (scripts/node.sh), so that pods reach it through the
# kubernetes Service as in any cluster.
API_HOST=127.0.0.1
if [ "${SSEGATE_CP_NODE:-0}" = 1 ] || [ -f "$STATE/with-node" ]; then SSEGATE_CP_CONTROLLERS=1; API_HOST=10.244.0.1; fi
# The secure (health, metrics) ports of kube-controller-manager and kube-scheduler.
KCM_PORT=${KCM_PORT:-20257}
SCHEDULER_PORT=${SCHEDULER_PORT:-20259}

NODE_SH=$(dirname "$0")/node.sh
say() { printf 'control-plane: %s\n' "$*" >&2; }
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
fail() { say "FAILED: $*"; exit 1; }

# --- build -----------------------------------------------------------------

# k8s_wrapper_module DIR: make DIR a Go module that requires k8s.io/kubernetes at
# $K8S_VERSION and can build its commands. k8s.io/kubernetes points its staging
# modules at ./staging/src; a consumer must replace each with the published
# v0.X.Y of the same patch.
k8s_wrapper_module() {
  local dir=$1
  (
    cd "$dir"
    go mod init ssegate.dev/control-plane >/dev/null 2>&1
    go mod edit -require="k8s.io/kubernetes@$K8S_VERSION"
    go mod download -json "k8s.io/kubernetes@$K8S_VERSION" > dl.json \
      || fail "go mod download k8s.io/kubernetes@$K8S_VERSION (is the Go module proxy reachable?)"
    local gomod; gomod=$(python3 -c 'import json,sys; print(json.load(open("dl.json"))["GoMod"])')
    local staging="v0.${K8S_VERSION#v1.}"
    grep -E '=> \./staging/src/' "$gomod" | awk '{print $1}' | sort -u | while read -r mod; do
      go mod edit -replace="$mod=$mod@$staging"
    done
  ) || exit 1
}

# build_k8s NAME: build k8s.io/kubernetes/cmd/NAME at $K8S_VERSION into
# $BIN/NAME-$K8S_VERSION unless it is there already.
build_k8s() {
  local name=$1
  [ -x "$BIN/$name-$K8S_VERSION" ] && return
  say "building $name $K8S_VERSION (takes several minutes on 2 cores)"
  local work; work=$(mktemp -d)
  local started=$SECONDS
  k8s_wrapper_module "$work"
  (
    cd "$work"
    GOFLAGS=-mod=mod go build -trimpath -ldflags='-s -w' -o "$BIN/$name-$K8S_VERSION" "k8s.io/kubernetes/cmd/$name" \
      || fail "go build $name"
  ) || exit 1
  rm -rf "$work"
  say "built $name in $((SECONDS - started))s"
}

build_apiserver() { build_k8s kube-apiserver; }

build_etcd() {
  [ -x "$BIN/etcd-$ETCD_VERSION" ] && return
  say "building etcd $ETCD_VERSION"
  local work; work=$(mktemp -d)
  (
    cd "$work"
    go mod init ssegate.dev/etcd >/dev/null 2>&1
    go mod edit -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    GOFLAGS=-mod=mod go build -trimpath -ldflags='-s -w' -o "$BIN/etcd-$ETCD_VERSION" go.etcd.io/etcd/server/v3 \
      || fail "go build etcd"
  ) || exit 1
  rm -rf "$work"
}

build_helm() {
  [ -x "$BIN/helm-$HELM_VERSION" ] && return
  say "building helm $HELM_VERSION"
  local gobin; gobin=$(mktemp -d)
  GOBIN=$gobin go install -trimpath -ldflags='-s -w' "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" || fail "go install helm"
  mv "$gobin/helm" "$BIN/helm-$HELM_VERSION"
  rm -rf "$gobin"
}

build_kube_score() {
  [ -x "$BIN/kube-score-$KUBE_SCORE_VERSION" ] && return
  say "building kube-score $KUBE_SCORE_VERSION"
  local gobin; gobin=$(mktemp -d)
  GOBIN=$gobin go install -trimpath -ldflags="-s -w -X main.version=$KUBE_SCORE_VERSION" \
    "github.com/zegl/kube-score/cmd/kube-score@$KUBE_SCORE_VERSION" || fail "go install kube-score"
  mv "$gobin/kube-score" "$BIN/kube-score-$KUBE_SCORE_VERSION"
  rm -rf "$gobin"
}

# go_install NAME MODULE VERSION PACKAGE [GO FLAGS...]: build PACKAGE (of MODULE at
# VERSION) into $BIN/NAME-VERSION unless it is there; a wrapper module, so that
# modules whose go.mod has replace directives build too.
go_install() {
  local name=$1 module=$2 version=$3 package=$4; shift 4
  [ -x "$BIN/$name-$version" ] && return
  say "building $name $version"
  local work; work=$(mktemp -d) started=$SECONDS
  (
    cd "$work"
    go mod init "ssegate.dev/$name" >/dev/null 2>&1
    go mod edit -require="$module@$version"
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags='-s -w' "$@" -o "$BIN/$name-$version" "$package" \
      || fail "go build $package@$version"
  ) || exit 1
  rm -rf "$work"
  say "built $name in $((SECONDS - started))s"
}

# What a node needs besides the kubelet: containerd (its CRI plugin runs runc,
# the Debian package), the CNI plugins the pod network uses, kube-proxy, and
# CoreDNS (run as a pod, from an image made of this binary).
build_node() {
  build_k8s kubelet
  build_k8s kube-proxy
  local tags=(-tags "no_btrfs,no_devmapper,no_zfs")
  go_install containerd github.com/containerd/containerd/v2 "$CONTAINERD_VERSION" \
    github.com/containerd/containerd/v2/cmd/containerd "${tags[@]}"
  go_install containerd-shim-runc-v2 github.com/containerd/containerd/v2 "$CONTAINERD_VERSION" \
    github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 "${tags[@]}"
  go_install ctr github.com/containerd/containerd/v2 "$CONTAINERD_VERSION" \
    github.com/containerd/containerd/v2/cmd/ctr "${tags[@]}"
  local plugin
  for plugin in main/bridge main/loopback ipam/host-local meta/portmap; do
    go_install "cni-${plugin#*/}" github.com/containernetworking/plugins "$CNI_PLUGINS_VERSION" \
      "github.com/containernetworking/plugins/plugins/$plugin"
  done
  go_install coredns github.com/coredns/coredns "$COREDNS_VERSION" github.com/coredns/coredns
  # What scripts/node.sh stop removes every pod sandbox with (through the CRI, so CNI tears down their network).
  go_install crictl sigs.k8s.io/cri-tools "$CRICTL_VERSION" sigs.k8s.io/cri-tools/cmd/crictl
}

cmd_build() {
  command -v go >/dev/null || fail "go is not installed"
  mkdir -p "$BIN"
  local started=$SECONDS
  build_etcd
  build_helm
  build_kube_score
  build_apiserver
  build_k8s kube-controller-manager
  build_k8s kube-scheduler
  ln -sf "kube-apiserver-$K8S_VERSION" "$BIN/kube-apiserver"
  ln -sf "kube-controller-manager-$K8S_VERSION" "$BIN/kube-controller-manager"
  ln -sf "kube-scheduler-$K8S_VERSION" "$BIN/kube-scheduler"
  ln -sf "etcd-$ETCD_VERSION" "$BIN/etcd"
  ln -sf "helm-$HELM_VERSION" "$BIN/helm"
  ln -sf "kube-score-$KUBE_SCORE_VERSION" "$BIN/kube-score"
  say "binaries ready in $BIN ($((SECONDS - started))s)"
}

# --- start / stop ----------------------------------------------------------


cmd_start() {
  for b in kube-apiserver etcd; do
    [ -x "$BIN/$b" ] || cmd_build
  done
  command -v openssl >/dev/null || fail "openssl is needed to make certificates"
  if [ -f "$STATE/apiserver.pid" ] && kill -0 "$(cat "$STATE/apiserver.pid")" 2>/dev/null; then
    say "already running; KUBECONFIG=$STATE/kubeconfig"
    if [ "${SSEGATE_CP_CONTROLLERS:-0}" = 1 ]; then
      [ -f "$STATE/with-controllers" ] \
        || fail "it runs without controllers (and without the ServiceAccount admission plugin): stop it first"
      start_controllers
    fi
    if [ "${SSEGATE_CP_NODE:-0}" = 1 ] && [ ! -f "$STATE/with-node" ]; then
      fail "it runs without a node: stop it first"
    fi
    return
  fi
  rm -rf "$STATE"
  mkdir -p "$STATE/pki"
  # Remembered so that start-apiserver restarts it with the same admission plugins.
  if [ "${SSEGATE_CP_CONTROLLERS:-0}" = 1 ]; then touch "$STATE/with-controllers"; fi
  if [ "${SSEGATE_CP_NODE:-0}" = 1 ]; then
    touch "$STATE/with-node"
    SSEGATE_CP_DIR=$STATE "$NODE_SH" network-up
  fi
  local pki=$STATE/pki
  # A CA, a serving certificate for 127.0.0.1, and the service-account key pair.
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=ssegate-test-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" >/dev/null 2>&1 || fail "make CA"
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" \
    >/dev/null 2>&1 || fail "make apiserver key"
  printf 'subjectAltName=IP:127.0.0.1,IP:10.244.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n' > "$pki/san.ext"
  openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 2 \
    -extfile "$pki/san.ext" -out "$pki/apiserver.crt" >/dev/null 2>&1 || fail "sign apiserver certificate"
  openssl genrsa -out "$pki/sa.key" 2048 >/dev/null 2>&1 || fail "make service-account key"
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" >/dev/null 2>&1 || fail "make service-account public key"
  # The admin credential: a static token in system:masters.
  local token; token=$(openssl rand -hex 24)
  printf '%s,admin,admin,system:masters\n' "$token" > "$pki/tokens.csv"

  "$BIN/etcd" --name ssegate --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "ssegate=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync --log-level warn \
    > "$STATE/etcd.log" 2>&1 &
  echo $! > "$STATE/etcd.pid"
  wait_for 30 etcd curl -sf "http://127.0.0.1:$ETCD_PORT/health" || fail "etcd did not start; see $STATE/etcd.log"

  start_apiserver
  cat > "$STATE/kubeconfig" <<EOK
apiVersion: v1
kind: Config
clusters:
- name: ssegate-test
  cluster:
    server: https://$API_HOST:$API_PORT
    certificate-authority-data: $(base64 -w0 < "$pki/ca.crt")
users:
- name: admin
  user:
    token: $token
contexts:
- name: ssegate-test
  context: {cluster: ssegate-test, user: admin, namespace: default}
current-context: ssegate-test
EOK
  wait_for 90 kube-apiserver kubectl --kubeconfig "$STATE/kubeconfig" get --raw /readyz \
    || fail "kube-apiserver did not become ready; see $STATE/apiserver.log"
  wait_for 30 "namespace default" kubectl --kubeconfig "$STATE/kubeconfig" get namespace default \
    || fail "namespace default never appeared; see $STATE/apiserver.log"
  if [ -n "${SSEGATE_CP_OWNER:-}" ]; then
    # Tests pass their pid: stop everything once that process is gone.
    setsid nohup bash -c "while kill -0 $SSEGATE_CP_OWNER 2>/dev/null; do sleep 1; done; SSEGATE_CP_DIR='$STATE' '$0' stop" \
      >/dev/null 2>&1 < /dev/null &
  fi
  if [ -f "$STATE/with-controllers" ]; then start_controllers; fi
  if [ -f "$STATE/with-node" ]; then SSEGATE_CP_DIR=$STATE "$NODE_SH" start; fi
  say "ready. Use it with:"
  cmd_env
}

cmd_env() {
  echo "export KUBECONFIG=$STATE/kubeconfig"
  echo "export PATH=\"$BIN:\$PATH\"   # helm, etcd, kube-apiserver, kube-controller-manager, kube-scheduler"
}

apiserver_running() {
  [ -f "$STATE/apiserver.pid" ] && kill -0 "$(cat "$STATE/apiserver.pid")" 2>/dev/null
}

# Separate so tests can stop and restart the apiserver alone (etcd keeps the data).
start_apiserver() {
  local pki=$STATE/pki
  # Without the service-account controller no namespace has its "default"
  # ServiceAccount, and the ServiceAccount admission plugin would refuse every
  # Pod; with the controllers it runs, as in a real cluster (it mounts the token).
  local admission=(--disable-admission-plugins=ServiceAccount)
  if [ -f "$STATE/with-controllers" ]; then admission=(); fi
  local listen=(--advertise-address=127.0.0.1 --bind-address=127.0.0.1 --endpoint-reconciler-type=none)
  local authorization=RBAC
  if [ -f "$STATE/with-node" ]; then
    # Kubelets are authorized as nodes (their own pods, secrets those mount);
    # the apiserver reaches the kubelet (logs, exec) with a client certificate.
    listen=(--advertise-address=10.244.0.1 --bind-address=10.244.0.1 --endpoint-reconciler-type=lease
      --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt"
      --kubelet-client-key="$pki/apiserver-kubelet-client.key"
      --kubelet-preferred-address-types=InternalIP)
    authorization=Node,RBAC
    admission+=(--enable-admission-plugins=NodeRestriction)
    apiserver_kubelet_client
  fi
  "$BIN/kube-apiserver" \
    "${listen[@]}" --secure-port="$API_PORT" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" --token-auth-file="$pki/tokens.csv" \
    --authorization-mode="$authorization" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 \
    "${admission[@]}" \
    --cert-dir="$STATE/certs" \
    > "$STATE/apiserver.log" 2>&1 &
  echo $! > "$STATE/apiserver.pid"
}

# The apiserver's client certificate towards kubelets (system:masters, as
# kubeadm's apiserver-kubelet-client is bound to kubelet API access).
apiserver_kubelet_client() {
  local pki=$STATE/pki
  [ -f "$pki/apiserver-kubelet-client.crt" ] && return
  openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" \
    -keyout "$pki/apiserver-kubelet-client.key" -out "$pki/apiserver-kubelet-client.csr" >/dev/null 2>&1 \
    || fail "make the apiserver's kubelet client key"
  printf 'extendedKeyUsage=clientAuth\n' > "$pki/apiserver-kubelet-client.ext"
  openssl x509 -req -in "$pki/apiserver-kubelet-client.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 2 -extfile "$pki/apiserver-kubelet-client.ext" -out "$pki/apiserver-kubelet-client.crt" >/dev/null 2>&1 \
    || fail "sign the apiserver's kubelet client certificate"
}

# kubeconfig_for NAME USER: a client certificate for USER signed by the
# cluster CA (the apiserver's --client-ca-file), also valid as NAME's serving
# certificate on 127.0.0.1, and a kubeconfig that uses it.
kubeconfig_for() {
  local name=$1 user=$2 pki=$STATE/pki
  [ -f "$STATE/$name.kubeconfig" ] && return
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$user" -keyout "$pki/$name.key" -out "$pki/$name.csr" \
    >/dev/null 2>&1 || fail "make $name key"
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' > "$pki/$name.ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 2 \
    -extfile "$pki/$name.ext" -out "$pki/$name.crt" >/dev/null 2>&1 || fail "sign $name certificate"
  cat > "$STATE/$name.kubeconfig" <<EOK
apiVersion: v1
kind: Config
clusters:
- name: ssegate-test
  cluster:
    server: https://$API_HOST:$API_PORT
    certificate-authority: $pki/ca.crt
users:
- name: $user
  user:
    client-certificate: $pki/$name.crt
    client-key: $pki/$name.key
contexts:
- name: ssegate-test
  context: {cluster: ssegate-test, user: $user}
current-context: ssegate-test
EOK
}

controllers_running() {
  [ -f "$STATE/controller-manager.pid" ] && kill -0 "$(cat "$STATE/controller-manager.pid")" 2>/dev/null \
    && [ -f "$STATE/scheduler.pid" ] && kill -0 "$(cat "$STATE/scheduler.pid")" 2>/dev/null
}

# kube-controller-manager (its default controllers: Deployments, ReplicaSets,
# EndpointSlices, ServiceAccounts and their tokens, kube-root-ca.crt, garbage
# collection, namespaces, node lifecycle, ...) and kube-scheduler, each with a
# client certificate for the user the apiserver's RBAC bootstrap policy
# expects, on 127.0.0.1 only, without leader election.
start_controllers() {
  apiserver_running || fail "kube-apiserver does not run; start the control plane first"
  for b in kube-controller-manager kube-scheduler; do
    [ -x "$BIN/$b" ] || cmd_build
  done
  if controllers_running; then say "kube-controller-manager and kube-scheduler already run"; return; fi
  stop_controllers
  local pki=$STATE/pki
  kubeconfig_for kube-controller-manager system:kube-controller-manager
  kubeconfig_for kube-scheduler system:kube-scheduler
  local kcm=$STATE/kube-controller-manager.kubeconfig sched=$STATE/kube-scheduler.kubeconfig
  # Both take the client CA from --client-ca-file (--authentication-skip-lookup):
  # the apiserver has no front proxy, so the requestheader CA they would look up
  # in kube-system/extension-apiserver-authentication does not exist.
  # --service-account-private-key-file signs legacy token Secrets with the key the
  # apiserver verifies (--service-account-key-file); --root-ca-file is what
  # kube-root-ca.crt and token Secrets carry; the cluster CA signs CSRs.
  "$BIN/kube-controller-manager" \
    --kubeconfig="$kcm" --authentication-kubeconfig="$kcm" --authorization-kubeconfig="$kcm" \
    --authentication-skip-lookup \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" \
    --tls-cert-file="$pki/kube-controller-manager.crt" --tls-private-key-file="$pki/kube-controller-manager.key" \
    --client-ca-file="$pki/ca.crt" \
    --leader-elect=false \
    --controllers='*' \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$pki/sa.key" \
    --root-ca-file="$pki/ca.crt" \
    --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
    --cluster-name=ssegate-test \
    > "$STATE/controller-manager.log" 2>&1 &
  echo $! > "$STATE/controller-manager.pid"
  "$BIN/kube-scheduler" \
    --kubeconfig="$sched" --authentication-kubeconfig="$sched" --authorization-kubeconfig="$sched" \
    --authentication-skip-lookup \
    --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" \
    --tls-cert-file="$pki/kube-scheduler.crt" --tls-private-key-file="$pki/kube-scheduler.key" \
    --client-ca-file="$pki/ca.crt" \
    --leader-elect=false \
    > "$STATE/scheduler.log" 2>&1 &
  echo $! > "$STATE/scheduler.pid"
  wait_for 60 kube-controller-manager curl -sf --cacert "$pki/ca.crt" "https://127.0.0.1:$KCM_PORT/healthz" \
    || fail "kube-controller-manager did not become healthy; see $STATE/controller-manager.log"
  wait_for 60 kube-scheduler curl -sf --cacert "$pki/ca.crt" "https://127.0.0.1:$SCHEDULER_PORT/readyz" \
    || fail "kube-scheduler did not become ready; see $STATE/scheduler.log"
  # /healthz answers before the controllers run: wait for the work of one.
  wait_for 60 "controllers (kube-root-ca.crt published)" \
    kubectl --kubeconfig "$STATE/kubeconfig" get -n default configmap kube-root-ca.crt \
    || fail "kube-controller-manager published no kube-root-ca.crt; see $STATE/controller-manager.log"
}

stop_controllers() {
  stop_pid controller-manager
  stop_pid scheduler
}


cmd_stop() {
  if [ -f "$STATE/with-node" ]; then SSEGATE_CP_DIR=$STATE "$NODE_SH" stop || true; fi
  stop_controllers
  stop_pid apiserver
  stop_pid etcd
  rm -rf "$STATE"
  say "stopped"
}

case "${1:-}" in
  build) cmd_build ;;
  build-node) mkdir -p "$BIN"; build_node ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  stop-apiserver) stop_pid apiserver ;;
  start-apiserver)
    if apiserver_running; then say "kube-apiserver already runs"; exit 0; fi
    start_apiserver
    wait_for 90 kube-apiserver kubectl --kubeconfig "$STATE/kubeconfig" get --raw /readyz \
      || fail "kube-apiserver did not become ready; see $STATE/apiserver.log" ;;
  start-controllers) start_controllers ;;
  stop-controllers) stop_controllers ;;
  env) cmd_env ;;
  *) sed -n '2,22p' "$0"; exit 2 ;;
esac
