#!/usr/bin/env bash
# The official Gateway API conformance suite against ssegate, end to end.
#
#   scripts/conformance.sh                 build what is missing, run the GATEWAY-HTTP
#                                          profile, write conformance/report.yaml
#   scripts/conformance.sh --run-test=NAME [SUITE FLAGS...]
#                                          one test (or any other suite flags); the report
#                                          then goes to $WORK/report.yaml, not the repo
#   scripts/conformance.sh build           only build (and cache) the binaries and the image
#   scripts/conformance.sh build-suite     only build (and cache) the suite and echo-basic
#   scripts/conformance.sh check           the whole profile as the test command runs
#                                          it: the report goes to $WORK/report.yaml, and
#                                          it fails if any test fails other than the
#                                          ones KNOWN_FAILING lists (conformance/TRIAGE.md
#                                          says why each fails), or if one of those passes
#
# What it does: builds the suite's test binary (`go test -c` of
# sigs.k8s.io/gateway-api/conformance at $GATEWAY_API_VERSION, the release whose
# CRDs ssegate pins) and its echo backend (conformance/echo-basic, static), both
# cached in ${XDG_CACHE_HOME:-~/.cache}/ssegate/conformance-VERSION; builds the
# ssegate image from the Dockerfile (scripts/image.sh); starts a control plane
# with a node of real components (scripts/control-plane.sh with SSEGATE_CP_NODE=1,
# see scripts/node.sh; state in $WORK/cp); loads the ssegate image and a
# FROM-scratch image of echo-basic into the node's containerd, tagged as every
# image the suite's manifests name (echo-basic, echo-advanced, and the CoreDNS of
# the UDP tests, which only has to run here: its configuration forwards to public
# resolvers this machine must not reach); installs charts/ssegate with its
# defaults (a LoadBalancer Service, whose address ssegate publishes as every
# Gateway's) and the Gateway API CRDs, and a GatewayClass `ssegate`; runs the
# suite with the supported features it reads from that GatewayClass's status
# (what ssegate claims); tears everything down on exit. Needs root, go, kubectl,
# buildah.
# The report and what fails and why: conformance/report.yaml, conformance/TRIAGE.md.
#
# Time: conformance/times.md, written by a full run beside the report. The first run adds
# the suite's build (a few minutes), the image's, and, when missing,
# scripts/control-plane.sh's Kubernetes and node binaries.
#
# Environment: WORK (default /tmp/ssegate-conformance), SSEGATE_CONFORMANCE_KEEP=1
# leaves the cluster running after the suite (stop it with
# `SSEGATE_CP_DIR=$WORK/cp scripts/control-plane.sh stop`),
# ETCD_PORT/ETCD_PEER_PORT/API_PORT/KCM_PORT/SCHEDULER_PORT as for control-plane.sh
# (defaults here differ from its own). One node runs per machine (scripts/node.sh).
set -euo pipefail

GATEWAY_API_VERSION=${GATEWAY_API_VERSION:-v1.6.3}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/ssegate
BIN=${SSEGATE_BIN:-$CACHE/bin}
SUITE_DIR=$CACHE/conformance-$GATEWAY_API_VERSION

# Tests known to fail, each to be explained in conformance/TRIAGE.md and the
# README (space-separated names). None today: the profile's core and the
# claimed extended features all pass.
KNOWN_FAILING=""
WORK=${WORK:-/tmp/ssegate-conformance}
export ETCD_PORT=${ETCD_PORT:-23890} ETCD_PEER_PORT=${ETCD_PEER_PORT:-23900} API_PORT=${API_PORT:-16543}
export KCM_PORT=${KCM_PORT:-20357} SCHEDULER_PORT=${SCHEDULER_PORT:-20359}
export SSEGATE_CP_DIR=$WORK/cp

say() { printf 'conformance: %s\n' "$*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

# wait_for SECONDS WHAT CMD...: poll CMD every second until it succeeds.
wait_for() {
  local limit=$1 what=$2; shift 2
  local until=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $until ] || { say "$what: not within ${limit}s"; return 1; }
    sleep 1
  done
  say "$what"
}

# --- build -----------------------------------------------------------------

# The suite is its own Go module (sigs.k8s.io/gateway-api/conformance) whose
# go.mod replaces the API module with ../; a wrapper module requires both at
# the pinned version instead.
build_suite() {
  [ -x "$SUITE_DIR/conformance.test" ] && [ -x "$SUITE_DIR/echo-basic-static" ] && return
  command -v go >/dev/null || fail "go is not installed"
  mkdir -p "$SUITE_DIR"
  say "building the conformance suite $GATEWAY_API_VERSION (a few minutes)"
  local work; work=$(mktemp -d)
  (
    cd "$work"
    go mod init ssegate.dev/conformance-runner >/dev/null 2>&1
    go mod edit -require="sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" \
      -require="sigs.k8s.io/gateway-api/conformance@$GATEWAY_API_VERSION"
    export GOFLAGS=-mod=mod
    go test -c -trimpath -o "$SUITE_DIR/conformance.test" sigs.k8s.io/gateway-api/conformance \
      || fail "go test -c sigs.k8s.io/gateway-api/conformance"
    # Static: it runs alone in a FROM-scratch image.
    CGO_ENABLED=0 go build -trimpath -o "$SUITE_DIR/echo-basic-static" sigs.k8s.io/gateway-api/conformance/echo-basic \
      || fail "go build echo-basic"
    # The manifests the suite applies, for the image table.
    go list -m -f '{{.Dir}}' "sigs.k8s.io/gateway-api/conformance" > "$SUITE_DIR/module-dir"
  ) || exit 1
  rm -rf "$work"
}

cmd_build() {
  build_suite
  "$ROOT/scripts/image.sh" export || fail "scripts/image.sh export"
  "$ROOT/scripts/control-plane.sh" build
  "$ROOT/scripts/control-plane.sh" build-node
}

# --- cluster ---------------------------------------------------------------

SUITE_PID=
teardown() {
  local rc=$?
  if [ -n "$SUITE_PID" ]; then kill -TERM "$SUITE_PID" 2>/dev/null || true; fi
  if [ "${SSEGATE_CONFORMANCE_KEEP:-0}" = 1 ]; then
    say "kept running (SSEGATE_CONFORMANCE_KEEP=1): KUBECONFIG=$SSEGATE_CP_DIR/kubeconfig"
    return $rc
  fi
  say "tearing down"
  "$ROOT/scripts/control-plane.sh" stop >/dev/null 2>&1 || true
  return $rc
}

kc() { kubectl --kubeconfig "$SSEGATE_CP_DIR/kubeconfig" "$@"; }

# The images: ssegate's (the chart's default, `ssegate:<appVersion>`), and
# echo-basic under every name the suite's manifests use.
load_images() {
  "$ROOT/scripts/node.sh" import "$ROOT/target/image/ssegate.tar"
  local echo_image=localhost/ssegate/echo-basic:$GATEWAY_API_VERSION
  "$ROOT/scripts/node.sh" image "$echo_image" "$SUITE_DIR/echo-basic-static"
  local names
  names=$(grep -rhoE 'image: *[^ ]+' "$(cat "$SUITE_DIR/module-dir")" --include='*.yaml' | awk '{print $2}' | sort -u)
  # shellcheck disable=SC2086 # one argument per name
  "$ROOT/scripts/node.sh" tag "$echo_image" $names
}

start_cluster() {
  rm -rf "$WORK"
  mkdir -p "$WORK"
  trap teardown EXIT
  trap 'exit 143' TERM INT
  # The control plane stops with this script (even if it is killed), unless kept.
  local owner=$$
  if [ "${SSEGATE_CONFORMANCE_KEEP:-0}" = 1 ]; then owner=; fi
  local started=$SECONDS
  SSEGATE_CP_NODE=1 SSEGATE_CP_OWNER=$owner "$ROOT/scripts/control-plane.sh" start >/dev/null
  load_images
  CLUSTER_SECONDS=$((SECONDS - started))
}

install_ssegate() {
  local started=$SECONDS
  say "installing charts/ssegate (with the Gateway API CRDs)"
  # The chart's defaults (2 replicas, Service of type LoadBalancer): the node's
  # load-balancer stand-in gives the Service an address, which ssegate
  # publishes (--publish-service) as every Gateway's address, and kube-proxy
  # routes its ports 80 and 443 to the replicas' 8080 and 8443.
  "$BIN/helm" --kubeconfig "$SSEGATE_CP_DIR/kubeconfig" install sg "$ROOT/charts/ssegate" \
    -n ssegate-system --create-namespace --wait --timeout 180s \
    --set gatewayAPI.installCRDs=true \
    > "$WORK/helm.log" 2>&1 || fail "helm install; see $WORK/helm.log and $SSEGATE_CP_DIR/node/kubelet.log"
  lb_address() { [ -n "$(kc get service -n ssegate-system sg-ssegate -o 'jsonpath={.status.loadBalancer.ingress[0].ip}')" ]; }
  wait_for 60 "ssegate's Service has a load-balancer address" lb_address || fail "no load-balancer address"
  kc apply -f - >/dev/null <<'EOF'
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: ssegate}
spec: {controllerName: ssegate.dev/gateway-controller}
EOF
  class_accepted() {
    [ "$(kc get gatewayclass ssegate -o 'jsonpath={.status.conditions[?(@.type=="Accepted")].status}')" = True ] \
      && [ -n "$(kc get gatewayclass ssegate -o 'jsonpath={.status.supportedFeatures}')" ]
  }
  wait_for 60 "GatewayClass ssegate is Accepted" class_accepted || fail "GatewayClass ssegate not Accepted"
  say "supported features: $(kc get gatewayclass ssegate -o 'jsonpath={.status.supportedFeatures[*].name}')"
  INSTALL_SECONDS=$((SECONDS - started))
}

# run_suite REPORT [SUITE FLAGS...]
run_suite() {
  local report=$1; shift
  mkdir -p "$(dirname "$report")"
  local version
  version=$(sed -n 's/^version: *//p' "$ROOT/charts/ssegate/Chart.yaml")
  say "running the suite (log: $WORK/suite.log)"
  local started=$SECONDS rc=0
  # No --supported-features: the suite reads them from the GatewayClass status.
  # In the background, so that a signal runs the teardown (which stops it) at once.
  (cd "$WORK" && exec env KUBECONFIG="$SSEGATE_CP_DIR/kubeconfig" "$SUITE_DIR/conformance.test" \
      -test.run '^TestConformance$' -test.v -test.timeout 120m \
      --gateway-class=ssegate --conformance-profiles=GATEWAY-HTTP \
      --organization=ssegate --project=ssegate --url=https://github.com/ssegate/ssegate \
      --version="v$version" --contact=https://github.com/ssegate/ssegate/issues \
      --report-output="$report" "$@") > "$WORK/suite.log" 2>&1 &
  SUITE_PID=$!
  wait "$SUITE_PID" || rc=$?
  SUITE_PID=
  [ ! -f "$report" ] || chmod 644 "$report"
  SUITE_SECONDS=$((SECONDS - started))
  say "suite finished in ${SUITE_SECONDS}s with exit code $rc; report: $report"
  grep -E '^\s*--- (PASS|FAIL|SKIP): TestConformance/[^/ ]+ ' "$WORK/suite.log" \
    | awk '{print $2}' | sort | uniq -c >&2 || true
  grep -E '^\s*--- FAIL: TestConformance/[^/ ]+ ' "$WORK/suite.log" | awk '{print "  " $3}' >&2 || true
  return $rc
}

# The whole profile; fails on any failure outside KNOWN_FAILING, or when one
# of those passes (then it belongs out of the list, TRIAGE.md and the README).
cmd_check() {
  local rc=0
  run_suite "$WORK/report.yaml" || rc=$?
  local failed passed unexpected=
  # No failure is no match: grep's status 1 must not end the script (set -e, pipefail).
  failed=$({ grep -E '^\s*--- FAIL: TestConformance/[^/ ]+ ' "$WORK/suite.log" || true; } | awk '{print $3}' | sed 's|^TestConformance/||' | sort -u)
  passed=$(grep -cE '^\s*--- PASS: TestConformance/[^/ ]+ ' "$WORK/suite.log" || true)
  [ -f "$WORK/report.yaml" ] || fail "the suite wrote no report (exit $rc); see $WORK/suite.log"
  [ "$passed" -gt 0 ] || fail "no test passed; see $WORK/suite.log"
  local t
  for t in $failed; do
    case " $KNOWN_FAILING " in *" $t "*) ;; *) unexpected="$unexpected $t" ;; esac
  done
  [ -z "$unexpected" ] || { tail -n 200 "$WORK/suite.log" >&2; fail "unexpected failures:$unexpected"; }
  for t in $KNOWN_FAILING; do
    printf '%s\n' "$failed" | grep -qx "$t" || fail "$t passes now: take it out of KNOWN_FAILING, conformance/TRIAGE.md and the README"
  done
  [ "$rc" = 0 ] || [ -n "$failed" ] || fail "the suite exited $rc with no failed test; see $WORK/suite.log"
  if [ -z "$KNOWN_FAILING" ]; then
    # The report's own verdicts: core, then extended, both `success`.
    local results
    results=$({ grep -E '^    result: ' "$WORK/report.yaml" || true; } | awk '{print $2}' | paste -sd' ')
    [ "$results" = "success success" ] || fail "the report's core and extended results are \"$results\", not \"success success\"; see $WORK/report.yaml"
    say "check passed: $passed tests passed; core and extended results: success"
  else
    say "check passed: $passed tests passed; failing as documented: $KNOWN_FAILING"
  fi
}

# The run's times, for the docs: dated, naming the commit and the machine.
write_times() {
  printf '# Gateway API conformance run times\n\n'
  printf 'Written by scripts/conformance.sh on %s, commit %s%s, on %s cores (%s).\n\n' \
    "$(date -u +%Y-%m-%d)" "$(git -C "$ROOT" rev-parse --short HEAD)" \
    "$(git -C "$ROOT" diff --quiet HEAD -- src charts || echo ' with local changes')" "$(nproc)" "$(uname -r)"
  printf '| step | seconds |\n|---|---|\n'
  printf '| control plane and node up, images loaded | %s |\n' "$CLUSTER_SECONDS"
  printf '| chart installed, GatewayClass accepted | %s |\n' "$INSTALL_SECONDS"
  printf '| the suite (GATEWAY-HTTP) | %s |\n' "$SUITE_SECONDS"
}

case "${1:-}" in
  build) cmd_build ;;
  build-suite) build_suite ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | grep '^#' ;;
  check)
    cmd_build
    start_cluster
    install_ssegate
    cmd_check
    ;;
  *)
    cmd_build
    start_cluster
    install_ssegate
    if [ $# -gt 0 ]; then run_suite "$WORK/report.yaml" "$@"; else
      run_suite "$ROOT/conformance/report.yaml"
      write_times > "$ROOT/conformance/times.md"
    fi
    ;;
esac
