#!/usr/bin/env bash
# The Kubernetes quick start, end to end, in a kind cluster (needs Docker,
# kind, kubectl, helm, buildah and curl). Every step but cluster creation is
# the one the test suite runs against its own control plane:
#   image      scripts/image.sh export      (tested by scripts/test.sh)
#   install    helm install charts/ssegate  (tests/packaging.rs)
#   demo       manifests/examples/demo.yaml (tests/packaging.rs)
#   flip       kubectl patch route demo     (tests/controller.rs)
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER=${CLUSTER:-ssegate}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
step() { printf '\n== %s\n' "$*"; }

step "1. create a kind cluster"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 120s

step "2. build the image and load it"
scripts/image.sh export
kind load image-archive target/image/ssegate.tar --name "$CLUSTER"

step "3. helm install"
helm upgrade --install ssegate charts/ssegate -n ssegate-system --create-namespace \
  --set image.tag="$VERSION" --set replicaCount=1 --wait --timeout 120s

step "4. apply the demo"
kubectl apply -f manifests/examples/demo.yaml
kubectl rollout status deployment/demo-backend --timeout 120s

step "5. stream through the cluster, then flip proxyBuffering while watching"
kubectl port-forward -n ssegate-system svc/ssegate 18080:80 >/dev/null &
forward=$!
trap 'kill $forward 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:18080/ && break; sleep 0.2; done

echo "-- Disabled: events arrive one by one"
curl -sN --max-time 4 'http://127.0.0.1:18080/.sse?interval=500ms' || true
kubectl patch route demo --type=merge -p '{"spec":{"proxyBuffering":"Enabled"}}'
sleep 1
echo "-- Enabled: a short stream arrives all at once, at its end"
time curl -sN --max-time 10 'http://127.0.0.1:18080/.sse?interval=500ms&count=4'
kubectl get sser
