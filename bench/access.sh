#!/usr/bin/env bash
# What access control costs, side by side: requests per second and latency
# through ssegate, nginx and HAProxy for the same routes, each proxy on one
# worker thread, one wrk thread with 32 connections, keep-alive, a 2-byte
# upstream answer (an nginx server of its own):
#   open      no restriction
#   allow     a source range that admits the client (127.0.0.0/8)
#   basic     basic auth, bcrypt cost 10, the right password every time
#   basic-bad basic auth, a wrong password every time (a full bcrypt per request)
#   ext       external auth: a subrequest per request (auth-url / auth_request)
#   ext-cache external auth with an auth cache keyed on the Authorization header
# HAProxy has no external auth without Lua or SPOE, so its ext rows are "-".
#   bench/access.sh [SECONDS]     default 10 per row
# Writes bench/results/access-<date>.md, naming the commit. Needs wrk, nginx,
# haproxy (bench/setup.sh installs the last two; apt-get install wrk) and a
# release build of ssegate (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
for tool in wrk nginx haproxy python3; do
  command -v "$tool" >/dev/null || { echo "access bench: $tool is needed" >&2; exit 1; }
done
ssegate=${SSEGATE_BIN:-target/release/ssegate}
[ -x "$ssegate" ] || { echo "access bench: build $ssegate first (cargo build --release)" >&2; exit 1; }

work=$(mktemp -d)
# nginx's workers run as nobody when started as root: they read the
# password file and write the auth cache.
chmod 755 "$work"
mkdir -m 777 "$work/cache"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

UP=18601 SSE=18602 NGX=18603 HAP=18604 ADMIN=18605
# bcrypt cost 10 for "pw", made by Python's bcrypt-compatible crypt when
# available, else a fixed hash of "pw".
hash=$(python3 -W ignore - <<'EOF'
try:
    import crypt
    print(crypt.crypt("pw", crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 10)))
except Exception:
    print("$2b$10$Wv9b9j5y8Q1k0m9mQy0eUuN4dLNRmGv6b2.5c4t1s5ZqgH8x3CqIe")
EOF
)
printf 'user:%s\n' "$hash" > "$work/htpasswd"

# The upstream and the auth service: one nginx of their own.
cat > "$work/up.conf" <<EOF
daemon off; worker_processes 1; pid $work/up.pid; error_log $work/up.err;
events { worker_connections 4096; }
http { access_log off;
  server { listen 127.0.0.1:$UP;
    location /auth { add_header X-Auth-Request-User alice; return 200 "ok"; }
    location / { return 200 "ok"; } } }
EOF
nginx -c "$work/up.conf" -p "$work" & pids+=($!)

# ssegate: one Ingress per row.
mkdir -p "$work/sg"
cat > "$work/sg/objects.yaml" <<EOF
apiVersion: v1
kind: Service
metadata: {name: up}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: up-1, labels: {kubernetes.io/service-name: up}}
addressType: IPv4
ports: [{name: http, port: $UP}]
endpoints: [{addresses: ["127.0.0.1"]}]
---
apiVersion: v1
kind: Secret
metadata: {name: users}
stringData:
  auth: |
    user:$hash
EOF
ingress() { # name annotations...
  local name=$1; shift
  {
    printf -- '---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: %s\n  annotations:\n    x/bench: "1"\n' "$name"
    for a in "$@"; do printf '    nginx.ingress.kubernetes.io/%s\n' "$a"; done
    printf 'spec:\n  ingressClassName: ssegate\n  rules:\n  - host: %s.test\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: up, port: {number: 80}}}}\n' "$name"
  } >> "$work/sg/objects.yaml"
}
ingress open
ingress allow 'whitelist-source-range: "127.0.0.0/8"'
ingress basic 'auth-type: basic' 'auth-secret: users'
ingress ext "auth-url: \"http://127.0.0.1:$UP/auth\"" 'auth-keepalive: "32"'
# shellcheck disable=SC2016 # an nginx variable, not a shell one
ingress extcache "auth-url: \"http://127.0.0.1:$UP/auth\"" 'auth-keepalive: "32"' 'auth-cache-key: "$http_authorization"' 'auth-cache-duration: "200 1m"'
RUST_LOG=warn "$ssegate" standalone --dir "$work/sg" --workers 1 --listen "127.0.0.1:$SSE" --admin "127.0.0.1:$ADMIN" \
  > "$work/sg.log" 2>&1 & pids+=($!)

# nginx: the same routes.
cat > "$work/ngx.conf" <<EOF
daemon off; worker_processes 1; pid $work/ngx.pid; error_log $work/ngx.err;
events { worker_connections 4096; }
http { access_log off;
  upstream up { server 127.0.0.1:$UP; keepalive 64; }
  proxy_http_version 1.1; proxy_set_header Connection "";
  proxy_cache_path $work/cache keys_zone=auth:1m;
  server { listen 127.0.0.1:$NGX; server_name open.test; location / { proxy_pass http://up; } }
  server { listen 127.0.0.1:$NGX; server_name allow.test; location / { allow 127.0.0.0/8; deny all; proxy_pass http://up; } }
  server { listen 127.0.0.1:$NGX; server_name basic.test; location / { auth_basic x; auth_basic_user_file $work/htpasswd; proxy_pass http://up; } }
  server { listen 127.0.0.1:$NGX; server_name ext.test;
    location = /_auth { internal; proxy_pass http://up/auth; proxy_pass_request_body off; proxy_set_header Content-Length ""; }
    location / { auth_request /_auth; proxy_pass http://up; } }
  server { listen 127.0.0.1:$NGX; server_name extcache.test;
    location = /_auth { internal; proxy_pass http://up/auth; proxy_pass_request_body off; proxy_set_header Content-Length "";
      proxy_cache auth; proxy_cache_key \$http_authorization; proxy_cache_valid 200 1m; }
    location / { auth_request /_auth; proxy_pass http://up; } } }
EOF
nginx -c "$work/ngx.conf" -p "$work" & pids+=($!)

# HAProxy: open, allow and basic.
cat > "$work/hap.cfg" <<EOF
global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
userlist users
  user user password $hash
frontend fe
  bind 127.0.0.1:$HAP
  acl is_allow hdr(host) -i allow.test
  acl is_basic hdr(host) -i basic.test
  http-request deny if is_allow !{ src 127.0.0.0/8 }
  http-request auth realm x if is_basic !{ http_auth(users) }
  default_backend up
backend up
  http-reuse always
  server up 127.0.0.1:$UP
EOF
haproxy -f "$work/hap.cfg" -db > "$work/hap.log" 2>&1 & pids+=($!)

wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
for p in $UP $SSE $NGX $HAP; do wait_port "$p"; done
sleep 0.5

good=$(printf 'user:pw' | base64)
bad=$(printf 'user:nope' | base64)
# Checks each row answers as expected before measuring it.
expect() { # port host status [auth]
  local got
  got=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $2.test" ${4:+-H "Authorization: Basic $4"} "http://127.0.0.1:$1/x")
  [ "$got" = "$3" ] || { echo "access bench: $2 on port $1 answered $got, not $3" >&2; exit 1; }
}
run() { # port host [auth] -> "rps p99"
  wrk -t1 -c32 -d"${seconds}s" --latency -H "Host: $2.test" ${3:+-H "Authorization: Basic $3"} "http://127.0.0.1:$1/x" \
    | awk '/Requests\/sec/ {rps=$2} /^ +99%/ {p99=$2} END {printf "%.0f %s", rps, p99}'
}
commit=$(git rev-parse --short HEAD)$(git diff --quiet || echo "+changes")
out=bench/results/access-$(date -u +%Y-%m-%d).md
mkdir -p bench/results
{
  echo "# Access control cost, $(date -u +'%Y-%m-%d %H:%M UTC'), commit $commit"
  echo
  echo "Written by bench/access.sh on $(nproc) cores: each proxy on one worker thread, wrk -t1 -c32 for ${seconds}s per row,"
  echo "keep-alive, a 2-byte upstream answer. Requests per second and p99 latency; '-' where the proxy cannot do it."
  echo
  echo "| route | ssegate req/s | ssegate p99 | nginx req/s | nginx p99 | haproxy req/s | haproxy p99 |"
  echo "|---|---|---|---|---|---|---|"
} > "$out"
for row in open allow basic basic-bad ext ext-cache; do
  host=$row auth="" status=200
  case $row in
    basic) auth=$good ;;
    basic-bad) host=basic auth=$bad status=401 ;;
    ext-cache) host=extcache auth=$good ;;
  esac
  line="| $row"
  for port in $SSE $NGX $HAP; do
    if [ "$port" = "$HAP" ] && [ "${row#ext}" != "$row" ]; then line="$line | - | -"; continue; fi
    expect "$port" "$host" "$status" "$auth"
    read -r rps p99 <<<"$(run "$port" "$host" "$auth")"
    line="$line | $rps | $p99"
  done
  echo "$line |" >> "$out"
  echo "$line |"
done
echo "wrote $out"
