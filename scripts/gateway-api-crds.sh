#!/usr/bin/env bash
# Copies the pinned Gateway API CRDs (standard channel) into crds/gateway-api/, and the
# experimental channel's HTTPRoute CRD of the same release into crds/gateway-api/experimental/.
#
#   scripts/gateway-api-crds.sh          download the pinned module, write crds/gateway-api/
#   scripts/gateway-api-crds.sh --check  download it and fail if crds/gateway-api/ differs
#
# The YAML ships inside the Go module sigs.k8s.io/gateway-api (config/crd/standard/ and
# config/crd/experimental/), so the only network this needs is the Go module proxy; the
# module's h1: checksum is pinned below and checked. It also writes
# crds/gateway-api/SHA256SUMS and README.md; tests/gateway_api_types.rs checks the files
# against both offline. To move to a new patch release: change GATEWAY_API_VERSION, set
# GATEWAY_API_SUM to the "Sum" that `go mod download -json sigs.k8s.io/gateway-api@VERSION`
# prints, run this script, then scripts/gateway-api-types.sh.
#
# Why the experimental HTTPRoute too: the standard channel is what ssegate installs (the
# chart, `kubectl apply -f crds/gateway-api/`, the tests' control plane), but clusters
# often run the experimental channel, whose HTTPRoutes may carry fields and enum values
# the standard schema lacks (the ExternalAuth filter, GEP-1494). The HTTPRoute Rust type
# is generated from the experimental CRD (a superset of the standard one, same served
# and storage version), so that such a route is read and judged, not a watch error that
# stops every HTTPRoute from being read. The file sits in a subfolder so that
# `kubectl apply -f crds/gateway-api/` (not recursive) and the chart never install it.
set -euo pipefail
cd "$(dirname "$0")/.."

GATEWAY_API_VERSION=v1.6.3
GATEWAY_API_SUM='h1:lKpJa5bGlraC/QeACvCpsHLdmO6y0iKfzVl6gzaFEYc='
# What ssegate reads. The rest of the standard channel (GRPCRoute, TLSRoute, TCPRoute,
# UDPRoute, ListenerSet, BackendTLSPolicy, the safe-upgrades admission policy) is left out.
KINDS=(gatewayclasses gateways httproutes referencegrants)
# From the experimental channel, into $OUT/experimental/: read by the types only.
EXPERIMENTAL_KINDS=(httproutes)
OUT=crds/gateway-api

say() { printf 'gateway-api-crds: %s\n' "$*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

command -v go >/dev/null || fail "go is needed (it downloads the module from the Go module proxy)"
check=false
case "${1:-}" in
  --check) check=true ;;
  "") ;;
  *) sed -n '2,6p' "$0"; exit 2 ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Outside any module, so no go.mod around the checkout is consulted or changed.
(cd "$work" && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" > dl.json) \
  || fail "go mod download sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION (is the Go module proxy reachable?)"
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$work/dl.json" "$1"; }
sum=$(field Sum)
[ "$sum" = "$GATEWAY_API_SUM" ] || fail "module checksum $sum is not the pinned $GATEWAY_API_SUM"
src="$(field Dir)/config/crd/standard"
[ -d "$src" ] || fail "no config/crd/standard in the module"
src_x="$(field Dir)/config/crd/experimental"
[ -d "$src_x" ] || fail "no config/crd/experimental in the module"

# Build the complete output in a scratch folder, then compare or move it in place.
gen="$work/out"
mkdir -p "$gen"
for kind in "${KINDS[@]}"; do
  f="gateway.networking.k8s.io_$kind.yaml"
  [ -f "$src/$f" ] || fail "$f is not in the standard channel of $GATEWAY_API_VERSION"
  grep -q "gateway.networking.k8s.io/bundle-version: $GATEWAY_API_VERSION\$" "$src/$f" \
    || fail "$f does not carry bundle-version $GATEWAY_API_VERSION"
  install -m 0644 "$src/$f" "$gen/$f"
done
mkdir -p "$gen/experimental"
for kind in "${EXPERIMENTAL_KINDS[@]}"; do
  f="gateway.networking.k8s.io_$kind.yaml"
  [ -f "$src_x/$f" ] || fail "$f is not in the experimental channel of $GATEWAY_API_VERSION"
  grep -q "gateway.networking.k8s.io/bundle-version: $GATEWAY_API_VERSION\$" "$src_x/$f" \
    || fail "experimental/$f does not carry bundle-version $GATEWAY_API_VERSION"
  grep -q 'gateway.networking.k8s.io/channel: experimental$' "$src_x/$f" \
    || fail "experimental/$f is not of the experimental channel"
  install -m 0644 "$src_x/$f" "$gen/experimental/$f"
done
(cd "$gen" && sha256sum -- *.yaml experimental/*.yaml > SHA256SUMS)
cat > "$gen/README.md" <<EOR
# Gateway API CRDs $GATEWAY_API_VERSION (standard channel, and the experimental HTTPRoute)

Copied unchanged by \`scripts/gateway-api-crds.sh\` from the Go module
\`sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION\` (module checksum \`$GATEWAY_API_SUM\`),
folder \`config/crd/standard/\`: GatewayClass, Gateway, HTTPRoute and ReferenceGrant;
and, in \`experimental/\`, the experimental channel's HTTPRoute of the same release
(folder \`config/crd/experimental/\`).
\`SHA256SUMS\` lists the files; \`tests/gateway_api_types.rs\` checks them offline.

Install them with \`kubectl apply --server-side -f crds/gateway-api/\` (the standard
channel: \`experimental/\` is a subfolder, which \`-f\` without \`-R\` does not read).
The Rust types in \`src/api/gateway/\` are generated from these files by
\`scripts/gateway-api-types.sh\`: HTTPRoute from \`experimental/\`, a superset of the
standard schema, so that HTTPRoutes of clusters that run the experimental channel (the
\`ExternalAuth\` filter) are read too.
EOR

if $check; then
  diff -r "$gen" "$OUT" >&2 || fail "$OUT differs from sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION; run $0"
  say "$OUT matches sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION"
  exit 0
fi
rm -rf "$OUT"
mkdir -p "$OUT"
cp -r "$gen"/* "$OUT/"
# The chart's copy, installed when gatewayAPI.installCRDs is true.
CHART=charts/ssegate/gateway-api
rm -rf "$CHART"
mkdir -p "$CHART"
cp "$gen"/*.yaml "$CHART/"
say "wrote $OUT and $CHART from sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION ($src)"
