#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit tests, and integration
# tests against real HTTP clients, real ssegate processes, a real
# kube-apiserver, and a node of real components (kubelet, containerd, runc,
# CNI, kube-proxy, CoreDNS: scripts/node.sh) running the chart's pods from the
# image the Dockerfile builds. It first installs what is missing
# (scripts/prereqs.sh: Debian packages, kubectl, rustup components, kopium,
# h2spec); the Kubernetes, node and conformance binaries are built from Go
# modules in the background while clippy runs, and cached by version
# (~/.cache/ssegate). It needs Go, a Rust toolchain, and root (apt-get,
# network namespaces, the node). The benchmark smoke installs its peers itself
# (bench/setup.sh: apt and PyPI) and skips, with the reason, any it cannot get.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step's heading says when it starts, so a run's log shows where the time went.
started=$SECONDS
step() { printf '== %s (at %dm%02ds)\n' "$*" $(((SECONDS - started) / 60)) $(((SECONDS - started) % 60)); }
trap 'step "done (exit $?)"' EXIT

step "prerequisites"
scripts/prereqs.sh

# Go builds (network and CPU) overlap the Rust ones; waited for before the
# tests that need them.
step "Go binaries (control plane, node, conformance suite; in the background)"
go_log=$(mktemp)
( scripts/control-plane.sh build && scripts/control-plane.sh build-node && scripts/conformance.sh build-suite ) \
  > "$go_log" 2>&1 &
go_builds=$!
wait_go_builds() {
  if ! wait "$go_builds"; then cat "$go_log"; echo "building the Go binaries failed"; exit 1; fi
  grep -E '^(control-plane|conformance): (built|binaries)' "$go_log" || true
}

step "shellcheck"
shellcheck scripts/*.sh tests/e2e/*.sh bench/*.sh .ci/run
step "cargo fmt --check"
cargo fmt --check
step "cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
step "container image (Dockerfile, buildah)"
scripts/image.sh export
wait_go_builds
step "cargo test"
cargo test --locked
step "Gateway API conformance suite (GATEWAY-HTTP, on the node, in containers from the image)"
scripts/conformance.sh check
step "fuzz targets (built with stable Rust, a few seconds each)"
scripts/fuzz-smoke.sh 5
step "benchmark smoke (every scenario and peer, about a second each)"
bench/run.sh --smoke
