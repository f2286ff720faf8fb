#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit tests, and integration
# tests against real HTTP clients, real ssegate processes and a real
# kube-apiserver (built from Go modules on first use and cached; see
# scripts/control-plane.sh). The Kubernetes tests need root for network
# namespaces, openssl, iproute2, kubectl and Go.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== control-plane binaries"
scripts/control-plane.sh build
echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
cargo test --locked
