#!/usr/bin/env bash
# Renders manifests/install.yaml from the Helm chart with default values.
#   scripts/render-install.sh > manifests/install.yaml
# A test fails when the committed file differs from this output.
set -euo pipefail
cd "$(dirname "$0")/.."
HELM=${HELM:-${SSEGATE_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/ssegate/bin}/helm}
[ -x "$HELM" ] || HELM=$(command -v helm) || { echo "helm not found; run scripts/control-plane.sh build" >&2; exit 1; }

cat <<'EOT'
# ssegate: plain install manifest, rendered from charts/ssegate with default values
# by scripts/render-install.sh. Apply with:
#   kubectl apply --server-side -f manifests/install.yaml
---
apiVersion: v1
kind: Namespace
metadata:
  name: ssegate-system
  labels:
    pod-security.kubernetes.io/enforce: restricted
EOT
"$HELM" template ssegate charts/ssegate --namespace ssegate-system --include-crds
