#!/usr/bin/env bash
# A real Kubernetes control plane on loopback, for tests and for developers.
#
#   scripts/control-plane.sh build   build kube-apiserver, etcd and helm if missing
#   scripts/control-plane.sh start   start etcd + kube-apiserver, write a kubeconfig
#   scripts/control-plane.sh stop    stop them and remove their state
#   scripts/control-plane.sh env     print the export line for KUBECONFIG
#
# Binaries are built from Go modules and cached outside the checkout, in
# ${SSEGATE_BIN:-${XDG_CACHE_HOME:-~/.cache}/ssegate/bin}, so CI runs on the same
# machine reuse them. State lives in ${SSEGATE_CP_DIR:-/tmp/ssegate-cp}.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
HELM_VERSION=${HELM_VERSION:-v3.21.4}
BIN=${SSEGATE_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/ssegate/bin}
STATE=${SSEGATE_CP_DIR:-/tmp/ssegate-cp}
ETCD_PORT=${ETCD_PORT:-23790}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-23800}
API_PORT=${API_PORT:-16443}

say() { printf 'control-plane: %s\n' "$*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

# --- build -----------------------------------------------------------------

build_apiserver() {
  [ -x "$BIN/kube-apiserver-$K8S_VERSION" ] && return
  say "building kube-apiserver $K8S_VERSION (takes several minutes on 2 cores)"
  local work; work=$(mktemp -d)
  (
    cd "$work"
    go mod init ssegate.dev/control-plane >/dev/null 2>&1
    go mod edit -require="k8s.io/kubernetes@$K8S_VERSION"
    # k8s.io/kubernetes points its staging modules at ./staging/src; a
    # consumer must replace each with the published v0.X.Y of the same patch.
    go mod download -json "k8s.io/kubernetes@$K8S_VERSION" > dl.json \
      || fail "go mod download k8s.io/kubernetes@$K8S_VERSION (is the Go module proxy reachable?)"
    local gomod; gomod=$(python3 -c 'import json,sys; print(json.load(open("dl.json"))["GoMod"])')
    local staging="v0.${K8S_VERSION#v1.}"
    grep -E '=> \./staging/src/' "$gomod" | awk '{print $1}' | sort -u | while read -r mod; do
      go mod edit -replace="$mod=$mod@$staging"
    done
    GOFLAGS=-mod=mod go build -trimpath -ldflags='-s -w' -o "$BIN/kube-apiserver-$K8S_VERSION" k8s.io/kubernetes/cmd/kube-apiserver \
      || fail "go build kube-apiserver"
  ) || exit 1
  rm -rf "$work"
}

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

cmd_build() {
  command -v go >/dev/null || fail "go is not installed"
  mkdir -p "$BIN"
  local started=$SECONDS
  build_etcd
  build_helm
  build_apiserver
  ln -sf "kube-apiserver-$K8S_VERSION" "$BIN/kube-apiserver"
  ln -sf "etcd-$ETCD_VERSION" "$BIN/etcd"
  ln -sf "helm-$HELM_VERSION" "$BIN/helm"
  say "binaries ready in $BIN ($((SECONDS - started))s)"
}

case "${1:-}" in
  build) cmd_build ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
