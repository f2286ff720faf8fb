#!/usr/bin/env bash
# Installs what the test command needs and the machine lacks, and says what
# it did. Needs root for apt-get; everything else goes to the user's caches.
#   Debian packages: openssl iproute2 curl buildah musl-tools shellcheck file python3-venv chromium,
#     and for the node of real components (scripts/node.sh): runc iptables conntrack kmod,
#     and debootstrap (scripts/image.sh makes its Rust build image with it when no registry answers)
#   kubectl (built from the Go module proxy), rustfmt and clippy, the musl target,
#   kopium (pinned, from crates.io, into ~/.cache/ssegate/tools: the Gateway API types' drift test),
#   h2spec (pinned, from the Go module proxy, into the same place: tests/h2spec.rs).
# Go and a Rust toolchain (rustup) must already be there.
set -euo pipefail

say() { printf 'prereqs: %s\n' "$*" >&2; }

command -v go >/dev/null || { say "Go is needed (to build kube-apiserver, etcd, helm, kubectl and h2spec)"; exit 1; }
command -v cargo >/dev/null || { say "a Rust toolchain (cargo) is needed"; exit 1; }

need_apt=()
command -v openssl >/dev/null || need_apt+=(openssl)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v curl >/dev/null || need_apt+=(curl)
command -v buildah >/dev/null || need_apt+=(buildah)
command -v musl-gcc >/dev/null || need_apt+=(musl-tools)
command -v shellcheck >/dev/null || need_apt+=(shellcheck)
command -v file >/dev/null || need_apt+=(file)
command -v runc >/dev/null || need_apt+=(runc)
command -v iptables >/dev/null || need_apt+=(iptables)
command -v conntrack >/dev/null || need_apt+=(conntrack)
command -v modprobe >/dev/null || need_apt+=(kmod)
command -v debootstrap >/dev/null || need_apt+=(debootstrap)
python3 -c 'import ensurepip' 2>/dev/null || need_apt+=(python3-venv)
# A real browser for tests/browser_access.rs (EventSource through external auth).
command -v chromium >/dev/null || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing ${need_apt[*]} (apt-get)"
  [ "$(id -u)" = 0 ] || { say "not root: install these yourself: ${need_apt[*]}"; exit 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if ! command -v kubectl >/dev/null; then
  say "building kubectl from the Go module proxy"
  GOBIN=/usr/local/bin go install k8s.io/kubectl/cmd/kubectl@latest 2>/dev/null \
    || { say "kubectl is missing and could not be built"; exit 1; }
fi
if command -v rustup >/dev/null; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || true
  # scripts/image.sh's local Rust build image copies this toolchain, musl target included.
  rustup target add x86_64-unknown-linux-musl >/dev/null 2>&1 || true
fi
# The Gateway API types' drift test regenerates them with this exact kopium.
"$(dirname "$0")/gateway-api-types.sh" --install || { say "kopium could not be installed"; exit 1; }
# The HTTP/2 conformance test (tests/h2spec.rs) runs this pinned h2spec. The test
# installs it itself when run alone; here it is installed up front, where a
# missing Go module proxy fails with this message instead of inside cargo test.
"$(dirname "$0")/h2spec.sh" install >/dev/null || { say "h2spec could not be installed"; exit 1; }
