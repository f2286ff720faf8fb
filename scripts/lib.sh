# shellcheck shell=bash
# Process helpers shared by scripts/control-plane.sh and scripts/node.sh, which
# source this after setting STATE (where NAME.pid files live) and defining say.

# wait_for SECONDS WHAT CMD...: run CMD every 0.2 s until it succeeds (then say
# WHAT), or fail (return 1) once SECONDS have passed.
wait_for() {
  local limit=$1 what=$2; shift 2
  local until=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $until ]; then return 1; fi
    sleep 0.2
  done
  say "$what"
}

# stop_pid NAME [SECONDS]: stop the process in $STATE/NAME.pid: SIGTERM, then
# SIGKILL if it still runs after SECONDS (5 by default).
stop_pid() {
  local f=$STATE/$1.pid grace=${2:-5}
  [ -f "$f" ] || return 0
  local pid; pid=$(cat "$f")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq $((grace * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$f"
}
