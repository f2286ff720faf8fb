#!/usr/bin/env bash
# h2spec, the HTTP/2 conformance tester (github.com/summerwind/h2spec), for
# tests/h2spec.rs, which runs it against the real ssegate binary over TLS and
# over cleartext HTTP/2 and counts the test cases passed.
#
#   scripts/h2spec.sh install   install the pinned h2spec into the tools cache unless it
#                               is there; print its path
#   scripts/h2spec.sh path      print its path; fail if it is not installed
#
# It is pinned (the test asserts how many of its cases pass, and a release that
# adds cases would move the figures) and lives outside the checkout, in
# ${SSEGATE_TOOLS:-${XDG_CACHE_HOME:-~/.cache}/ssegate/tools}/bin, next to kopium, where
# scripts/prereqs.sh installs it with `go install`. H2SPEC=PATH names another build
# of the same version. v2.2.1 (2018) is its last release and has no go.mod, so Go
# takes it as v2.2.1+incompatible and its dependencies (golang.org/x/net's framer
# and HPACK among them) at their newest.
set -euo pipefail

H2SPEC_VERSION=v2.2.1+incompatible
MODULE=github.com/summerwind/h2spec
TOOLS=${SSEGATE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/ssegate/tools}

say() { printf 'h2spec: %s\n' "$*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

# is_pinned BIN: BIN is an h2spec built from $MODULE at $H2SPEC_VERSION. Its
# own --version says 2.0.0 for every build without release ldflags, so the
# module version Go recorded in the binary is what is compared.
is_pinned() {
  [ -x "$1" ] || return 1
  go version -m "$1" 2>/dev/null | awk -v m="$MODULE" -v v="$H2SPEC_VERSION" \
    '$1 == "mod" && $2 == m && $3 == v { found = 1 } END { exit !found }'
}

find_h2spec() {
  local h
  for h in "${H2SPEC:-}" "$TOOLS/bin/h2spec" "$(command -v h2spec || true)"; do
    [ -n "$h" ] && is_pinned "$h" && { echo "$h"; return; }
  done
  return 1
}

install_h2spec() {
  command -v go >/dev/null || fail "Go is needed to build h2spec"
  say "installing h2spec $H2SPEC_VERSION into $TOOLS/bin (go install)"
  mkdir -p "$TOOLS/bin"
  # Built into a folder of its own next to the final place and renamed into
  # it: tests running at once may install at once, and none of them may run a
  # half-written binary.
  local gobin; gobin=$(mktemp -d "$TOOLS/bin/.h2spec.XXXXXX")
  GOBIN=$gobin go install "$MODULE/cmd/h2spec@$H2SPEC_VERSION" \
    || { rm -rf "$gobin"; fail "go install $MODULE/cmd/h2spec@$H2SPEC_VERSION (is the Go module proxy reachable?)"; }
  mv "$gobin/h2spec" "$TOOLS/bin/h2spec"
  rm -rf "$gobin"
}

case "${1:-}" in
  install)
    find_h2spec || { install_h2spec; find_h2spec; } || fail "h2spec $H2SPEC_VERSION still missing" ;;
  path)
    find_h2spec || fail "h2spec $H2SPEC_VERSION is not installed; install it with
  scripts/h2spec.sh install
or: GOBIN=$TOOLS/bin go install $MODULE/cmd/h2spec@$H2SPEC_VERSION" ;;
  *) sed -n '2,8p' "$0"; exit 2 ;;
esac
