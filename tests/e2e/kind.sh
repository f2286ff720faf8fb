#!/usr/bin/env bash
# The Kubernetes quick start, end to end, in a kind cluster (needs Docker,
# kind, kubectl, helm and curl). Every step but cluster creation is one the
# test command runs on its own cluster (scripts/node.sh: real kubelet,
# containerd, runc, kube-proxy, CoreDNS):
#   image      docker build .               (the Dockerfile scripts/image.sh builds with buildah)
#   install    helm install charts/ssegate  (tests/chart_life.rs, tests/packaging.rs)
#   demo       manifests/examples/demo.yaml (tests/chart_life.rs)
#   flip       kubectl patch route demo     (tests/chart_life.rs, tests/controller.rs)
# kind has no load-balancer implementation: the chart's default LoadBalancer
# Service would stay pending and `helm --wait` time out, so it is a NodePort here.
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER=${CLUSTER:-ssegate}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
step() { printf '\n== %s\n' "$*"; }

step "1. create a kind cluster"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 120s

step "2. build the image and load it"
docker build -t "ssegate:$VERSION" .
kind load docker-image "ssegate:$VERSION" --name "$CLUSTER"

step "3. helm install"
helm upgrade --install ssegate charts/ssegate -n ssegate-system --create-namespace \
  --set image.tag="$VERSION" --set replicaCount=1 --set service.type=NodePort --wait --timeout 120s

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
