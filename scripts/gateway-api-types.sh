#!/usr/bin/env bash
# Generates the Rust types in src/api/gateway/ from the pinned Gateway API CRDs in
# crds/gateway-api/ (see scripts/gateway-api-crds.sh) with kopium.
#
#   scripts/gateway-api-types.sh              regenerate src/api/gateway/*.rs (not mod.rs)
#   scripts/gateway-api-types.sh --out DIR    write them to DIR instead (the drift test does)
#   scripts/gateway-api-types.sh --install    install the pinned kopium into the tools cache
#
# kopium is pinned (its output changes between releases) and lives outside the
# checkout, in ${SSEGATE_TOOLS:-${XDG_CACHE_HOME:-~/.cache}/ssegate/tools}/bin, where
# scripts/prereqs.sh installs it with `cargo install --locked`. Only the versions
# ssegate serves are generated: v1 of GatewayClass, Gateway and HTTPRoute, and v1beta1
# (the storage version) of ReferenceGrant. The output is formatted with the repo's
# rustfmt.toml, so `cargo fmt --check` and the drift test agree.
#
# HTTPRoute comes from the experimental channel's CRD (crds/gateway-api/experimental/,
# same release), the others from the standard channel's. The experimental schema is a
# superset of the standard one (every standard field, with the same type, and every
# standard enum value), so the type reads whatever either channel stores; without it an
# HTTPRoute using an experimental field value (`type: ExternalAuth`) would fail to
# deserialize, and with it the whole HTTPRoute watch. Fields ssegate does not implement
# are judged by the translation, which refuses what it cannot do.
set -euo pipefail
cd "$(dirname "$0")/.."

KOPIUM_VERSION=0.24.1
TOOLS=${SSEGATE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/ssegate/tools}
# file in src/api/gateway | CRD in crds/gateway-api | version
TYPES=(
  "gateway_class.rs gateway.networking.k8s.io_gatewayclasses.yaml v1"
  "gateway.rs gateway.networking.k8s.io_gateways.yaml v1"
  "http_route.rs experimental/gateway.networking.k8s.io_httproutes.yaml v1"
  "reference_grant.rs gateway.networking.k8s.io_referencegrants.yaml v1beta1"
)
# Every flag that shapes the output. No --docs: the CRDs' descriptions would make
# http_route.rs ten times larger; read them in crds/gateway-api/ or the Gateway API
# reference. No schema: the CRDs come from upstream, never from these types.
KOPIUM_FLAGS=(--schema=disabled --derive=Default --derive=PartialEq --smart-derive-elision)
# Two fix-ups of http_route.rs, both checked by tests/gateway_api_types.rs:
# 1. kopium turns the integer enum of RequestRedirect's statusCode
#    (301, 302, 303, 307, 308) into a Rust enum that serde reads and writes as the
#    strings "301"..., so `statusCode: 301` would not parse. It is elided and the
#    field becomes Option<i64>, as the Go type (*int) has it; the apiserver
#    enforces the values. Any other numeric enum fails the script.
# 2. Every enum gets a last variant `Unknown(String)`, `#[serde(untagged)]`: any value
#    the CRD does not list is read (and written back) as it is. Gateway API says of
#    filter types, redirect schemes and path modifier types that "values may be added
#    to this enum, implementations must ensure that unknown values will not cause a
#    crash" and must be refused with `Accepted=False, UnsupportedValue`; a closed serde
#    enum would instead fail the whole object, and a typed watch with it (one route of
#    a newer CRD would stop every HTTPRoute from being read). kopium has no option for
#    this. The translation refuses every Unknown value it meets.
STATUS_CODE_ENUMS=(HttpRouteRulesFiltersRequestRedirectStatusCode HttpRouteRulesBackendRefsFiltersRequestRedirectStatusCode)
# kopium matches --elide before it shortens HttpRouteSpecRules... to HttpRouteRules...
ELIDE=()
for e in "${STATUS_CODE_ENUMS[@]}"; do ELIDE+=(--elide "${e/HttpRoute/HttpRouteSpec}"); done

say() { printf 'gateway-api-types: %s\n' "$*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

install_kopium() {
  say "installing kopium $KOPIUM_VERSION into $TOOLS (cargo install --locked)"
  local build; build=$(mktemp -d)
  CARGO_TARGET_DIR=$build cargo install kopium --version "$KOPIUM_VERSION" --locked --root "$TOOLS" --quiet \
    || { rm -rf "$build"; fail "cargo install kopium $KOPIUM_VERSION (is crates.io reachable?)"; }
  rm -rf "$build"
}

find_kopium() {
  local k
  for k in "${KOPIUM:-}" "$TOOLS/bin/kopium" "$(command -v kopium || true)"; do
    [ -n "$k" ] && [ -x "$k" ] && [ "$("$k" --version 2>/dev/null)" = "kopium $KOPIUM_VERSION" ] && { echo "$k"; return; }
  done
  return 1
}

out=src/api/gateway
case "${1:-}" in
  --install) find_kopium >/dev/null || install_kopium; find_kopium >/dev/null || fail "kopium $KOPIUM_VERSION still missing"; exit 0 ;;
  --out) out=${2:?--out needs a folder} ;;
  "") ;;
  *) sed -n '2,14p' "$0"; exit 2 ;;
esac

kopium=$(find_kopium) || fail "kopium $KOPIUM_VERSION is not installed; install it with
  scripts/gateway-api-types.sh --install
or: cargo install kopium --version $KOPIUM_VERSION --locked --root $TOOLS"
command -v rustfmt >/dev/null || fail "rustfmt is needed (rustup component add rustfmt)"
version=$(sed -n 's/^GATEWAY_API_VERSION=//p' scripts/gateway-api-crds.sh)

mkdir -p "$out"
for t in "${TYPES[@]}"; do
  read -r file crd api_version <<< "$t"
  tmp="$out/$file.tmp"
  flags=("${KOPIUM_FLAGS[@]}")
  fixup=
  if [ "$file" = http_route.rs ]; then
    flags+=("${ELIDE[@]}")
    fixup=' and two fix-ups: RequestRedirect statusCode is Option<i64>, and every enum reads unknown values'
  fi
  channel=$(sed -n 's/^ *gateway.networking.k8s.io\/channel: //p' "crds/gateway-api/$crd")
  [ -n "$channel" ] || fail "$crd names no channel"
  {
    printf '//! Generated by scripts/gateway-api-types.sh from crds/gateway-api/%s\n' "$crd"
    printf '//! (Gateway API %s, %s channel), version %s, with kopium %s (command below)%s.\n' \
      "$version" "$channel" "$api_version" "$KOPIUM_VERSION" "$fixup"
    printf '//! Do not edit: regenerate. tests/gateway_api_types.rs fails when this file and the CRD drift apart.\n\n'
    "$kopium" "${flags[@]}" --api-version "$api_version" -f "crds/gateway-api/$crd"
  } > "$tmp" || { rm -f "$tmp"; fail "kopium $crd"; }
  for e in "${STATUS_CODE_ENUMS[@]}"; do sed -i "s/Option<$e>/Option<i64>/" "$tmp"; done
  if grep -nE 'r#_[0-9]|StatusCode>' "$tmp" >&2; then rm -f "$tmp"; fail "$file: a numeric enum kopium cannot serialize (see above)"; fi
  if [ "$file" = http_route.rs ]; then
    # Fix-up 2: before the closing brace of each `pub enum`, a catch-all variant.
    # kopium's enums here are unit variants only; anything else fails the script.
    awk '
      /^pub enum [A-Za-z0-9]+ \{$/ { inside = 1; enums++; print; next }
      inside && /^\}$/ {
        print "    /// A value this CRD does not list (added by scripts/gateway-api-types.sh),"
        print "    /// kept as it is; the translation refuses it."
        print "    #[serde(untagged)]"
        print "    Unknown(String),"
        inside = 0; print; next
      }
      inside && !/^    (#\[serde\(rename = "[^"]+"\)\]|[A-Z][A-Za-z0-9]*,)$/ { bad = 1 }
      { print }
      END { if (bad || enums == 0) exit 1 }
    ' "$tmp" > "$tmp.open" || { rm -f "$tmp" "$tmp.open"; fail "$file: an enum that is not unit variants only, or none at all"; }
    mv "$tmp.open" "$tmp"
  fi
  rustfmt --edition 2021 --config-path rustfmt.toml "$tmp" || { rm -f "$tmp"; fail "rustfmt $file"; }
  mv "$tmp" "$out/$file"
done
say "wrote ${TYPES[*]%% *} to $out"
