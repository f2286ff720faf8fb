#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit tests, and integration
# tests against real HTTP clients, real ssegate processes and a real
# kube-apiserver (built from Go modules on first use and cached; see
# scripts/control-plane.sh, which also builds kube-score: tests/packaging.rs
# lints the rendered chart with it). It first installs what is missing
# (scripts/prereqs.sh: Debian packages, kubectl, rustup components, kopium, and
# h2spec, which tests/h2spec.rs runs against the binary); it needs
# Go, a Rust toolchain, and root (apt-get, and network namespaces for the
# Kubernetes tests). The benchmark smoke installs its peers itself
# (bench/setup.sh: apt and PyPI) and skips, with the reason, any it cannot get.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== prerequisites"
scripts/prereqs.sh

echo "== control-plane binaries"
scripts/control-plane.sh build
echo "== shellcheck"
shellcheck scripts/*.sh tests/e2e/*.sh bench/*.sh .ci/run
echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== node agent (test support, its own crate: node-agent/)"
# Built into target/node-agent, where tests/common/node_agent.rs runs it from (the
# node_agent* tests also build it themselves, so `cargo test --test node_agent` alone works).
(cd node-agent && cargo fmt --check && CARGO_TARGET_DIR=../target/node-agent cargo clippy --locked --all-targets -- -D warnings \
  && CARGO_TARGET_DIR=../target/node-agent cargo test --locked && CARGO_TARGET_DIR=../target/node-agent cargo build --locked)
echo "== cargo test"
cargo test --locked
echo "== Gateway API conformance suite (GATEWAY-HTTP, against the chart's pods)"
scripts/conformance.sh check
echo "== fuzz targets (built with stable Rust, a few seconds each)"
scripts/fuzz-smoke.sh 5
echo "== container image (buildah)"
scripts/image.sh export
echo "== benchmark smoke (every scenario and peer, about a second each)"
bench/run.sh --smoke
