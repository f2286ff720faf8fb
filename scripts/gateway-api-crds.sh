#!/usr/bin/env bash
# Copies the pinned Gateway API CRDs (standard channel) into crds/gateway-api/.
#
#   scripts/gateway-api-crds.sh          download the pinned module, write crds/gateway-api/
#   scripts/gateway-api-crds.sh --check  download it and fail if crds/gateway-api/ differs
#
# The YAML ships inside the Go module sigs.k8s.io/gateway-api (config/crd/standard/),
# so the only network this needs is the Go module proxy; the module's h1: checksum is
# pinned below and checked. It also writes crds/gateway-api/SHA256SUMS and README.md;
# tests/gateway_api_types.rs checks the files against both offline. To move to a new
# patch release: change GATEWAY_API_VERSION, set GATEWAY_API_SUM to the "Sum" that
# `go mod download -json sigs.k8s.io/gateway-api@VERSION` prints, run this script,
# then scripts/gateway-api-types.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

GATEWAY_API_VERSION=v1.6.3
GATEWAY_API_SUM='h1:lKpJa5bGlraC/QeACvCpsHLdmO6y0iKfzVl6gzaFEYc='
# What ssegate reads. The rest of the standard channel (GRPCRoute, TLSRoute, TCPRoute,
# UDPRoute, ListenerSet, BackendTLSPolicy, the safe-upgrades admission policy) is left out.
KINDS=(gatewayclasses gateways httproutes referencegrants)
OUT=crds/gateway-api

say() { printf 'gateway-api-crds: %s\n' "$*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

command -v go >/dev/null || fail "go is needed (it downloads the module from the Go module proxy)"
check=false
case "${1:-}" in
  --check) check=true ;;
  "") ;;
  *) sed -n '2,14p' "$0"; exit 2 ;;
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
(cd "$gen" && sha256sum -- *.yaml > SHA256SUMS)
cat > "$gen/README.md" <<EOR
# Gateway API CRDs $GATEWAY_API_VERSION (standard channel)

Copied unchanged by \`scripts/gateway-api-crds.sh\` from the Go module
\`sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION\` (module checksum \`$GATEWAY_API_SUM\`),
folder \`config/crd/standard/\`: GatewayClass, Gateway, HTTPRoute and ReferenceGrant.
\`SHA256SUMS\` lists the files; \`tests/gateway_api_types.rs\` checks them offline.

Install them with \`kubectl apply --server-side -f crds/gateway-api/\`.
The Rust types in \`src/api/gateway/\` are generated from these files by
\`scripts/gateway-api-types.sh\`.
EOR

if $check; then
  diff -r "$gen" "$OUT" >&2 || fail "$OUT differs from sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION; run $0"
  say "$OUT matches sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION"
  exit 0
fi
rm -rf "$OUT"
mkdir -p "$OUT"
cp "$gen"/* "$OUT/"
# The chart's copy, installed when gatewayAPI.installCRDs is true.
CHART=charts/ssegate/gateway-api
rm -rf "$CHART"
mkdir -p "$CHART"
cp "$gen"/*.yaml "$CHART/"
say "wrote $OUT and $CHART from sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION ($src)"
