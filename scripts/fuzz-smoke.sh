#!/usr/bin/env bash
# Builds every cargo-fuzz target with stable Rust (libFuzzer with
# SanitizerCoverage, no address sanitizer, which needs nightly) and runs
# each for a few seconds, so the targets cannot rot. For long runs with
# ASan use cargo-fuzz on nightly: cd fuzz && cargo +nightly fuzz run TARGET
#   scripts/fuzz-smoke.sh [SECONDS]   default 5 per target
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-5}
export CARGO_TARGET_DIR=${SSEGATE_FUZZ_TARGET:-${CARGO_TARGET_DIR:-../target}/fuzz}
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^ssegate-fuzz$')
# An explicit --target keeps RUSTFLAGS off build scripts and proc macros,
# which must not be instrumented (as cargo-fuzz does it).
triple=$(rustc -vV | sed -n 's/^host: //p')
cargo build --profile smoke --bins --target "$triple"
for t in $targets; do
  corpus=$(mktemp -d)
  log=$(mktemp)
  [ -d "corpus/$t" ] && cp -r "corpus/$t/." "$corpus/"
  echo "fuzz $t for ${seconds}s"
  if ! "$CARGO_TARGET_DIR/$triple/smoke/$t" -max_total_time="$seconds" -print_final_stats=1 "$corpus" >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "fuzz target $t found a failure" >&2
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$log" || true
  rm -rf "$corpus" "$log"
done
