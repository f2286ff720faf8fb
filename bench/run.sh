#!/usr/bin/env bash
# The one command for the benchmark: installs the peers, then runs the
# harness (benches/harness) and writes target/bench/results.{md,json}.
#   bench/run.sh                 full run (about 10 minutes on 2 cores)
#   bench/run.sh --quick         smaller and shorter
#   bench/run.sh --only ssegate,nginx
set -euo pipefail
cd "$(dirname "$0")/.."
bench/setup.sh
# 10,000 idle streams need ~20,000 descriptors in the proxy; the harness
# lowers the count when the hard limit cannot hold them, and says so.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec cargo bench --locked --bench harness -- "$@"
