#!/usr/bin/env bash
# Times the test command as CI runs it (.ci/run on a fresh clone of HEAD), cold
# and warm, and writes the results file the docs quote:
# bench/results/test-command-times-<date>.md.
#
#   scripts/time-test-command.sh cold --wipe-caches   wipe every cache the test command fills
#                                                    (below), then run it: a new machine but for
#                                                    Debian packages, Go, Rust and kubectl
#   scripts/time-test-command.sh warm                 run it with the caches as they are
#
# Wiped for a cold run: ${XDG_CACHE_HOME:-~/.cache}/ssegate (cargo target, Kubernetes, node and
# conformance binaries, kopium, h2spec, the benchmark venv), Go's build and module caches,
# cargo's registry, buildah's cache mounts and the local Rust build image.
# Each run appends a section: the commit, the total, and when each step started (from
# the "== step (at MmSSs)" headings scripts/test.sh prints). The run's log: /tmp/test-command-<mode>.log.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mode=${1:-}
case "$mode" in
  cold) [ "${2:-}" = --wipe-caches ] || { echo "cold wipes caches: pass --wipe-caches" >&2; exit 2; } ;;
  warm) ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac

say() { printf 'time-test-command: %s\n' "$*" >&2; }

if [ "$mode" = cold ]; then
  say "wiping caches"
  rm -rf "${XDG_CACHE_HOME:-$HOME/.cache}/ssegate" "$(go env GOCACHE)" "${CARGO_HOME:-$HOME/.cargo}/registry" \
    "${CARGO_HOME:-$HOME/.cargo}/git" /var/tmp/buildah-cache*
  go clean -modcache
  buildah --storage-driver vfs images --format '{{.Name}}:{{.Tag}}' \
    | grep '^localhost/ssegate-rust:' | xargs -r buildah --storage-driver vfs rmi >/dev/null || true
fi

clone=$(mktemp -d /tmp/ssegate-ci.XXXXXX)
git clone -q "$ROOT" "$clone"
commit=$(git -C "$clone" rev-parse --short HEAD)
log=/tmp/test-command-$mode.log
say "running .ci/run on a clone of $commit ($mode); log: $log"
started=$SECONDS
rc=0
"$clone/.ci/run" > "$log" 2>&1 || rc=$?
took=$((SECONDS - started))
rm -rf "$clone"

results=$ROOT/bench/results/test-command-times-$(date -u +%Y-%m-%d).md
if [ ! -f "$results" ]; then
  {
    echo "# Test command run times"
    echo
    echo "Written by scripts/time-test-command.sh: \`.ci/run\` on a fresh clone, on $(nproc) cores,"
    echo "$(free -g | awk '/^Mem:/ {print $2}') GiB, $(uname -r). Cold: every cache the test command fills wiped"
    echo "first (Debian packages, Go, Rust and kubectl stay installed). Warm: the caches of the run before."
  } > "$results"
fi
{
  echo
  echo "## $mode, commit $commit, $(date -u '+%Y-%m-%d %H:%M') UTC: $((took / 60))m$(printf %02d $((took % 60)))s, exit $rc"
  echo
  echo '| step started at | step |'
  echo '|---|---|'
  sed -n 's/^== \(.*\) (at \([0-9]*m[0-9]*s\))$/| \2 | \1 |/p' "$log"
} >> "$results"
say "$mode run took ${took}s (exit $rc); wrote $results"
exit $rc
