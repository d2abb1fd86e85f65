#!/usr/bin/env bash
# List feed updates under load: wrk drives allowed requests through Gatehouse (absolute
# URLs to a local nginx origin, keep-alive) while `gatehouse lists update` asks the
# running proxy, again and again, to fetch a changed hosts feed over HTTPS (openssl
# s_server -WWW with a CA made here and given to Gatehouse as [inspection]
# extra_roots), import it, load it and swap it in. Every answer should be the origin's
# 200: the figure is how many requests failed (socket errors plus non-2xx/3xx) while the
# lists were swapped, beside how many swaps were made and how long each took.
# Proxy on CPU 0, wrk, the origin and the feed server on CPU 1, as in the shared harness.
#
#   cargo build --release
#   bash benches/list_swap.sh [SWAPS] [FEED_ENTRIES] [CONNECTIONS]
#
# Defaults: 10 swaps of a 100 000-entry feed, 64 connections. wrk runs until the last
# swap has been made, and a second beyond.
set -euo pipefail
swaps=${1:-10}; entries=${2:-100000}; conns=${3:-64}
here=$(cd "$(dirname "$0")/.." && pwd)
W=${BENCH_DIR:-/tmp/gh-list-swap}
PROXY_PORT=${PROXY_PORT:-13138}; ADMIN_PORT=${ADMIN_PORT:-19188}
ORIGIN_PORT=${ORIGIN_PORT:-18088}; FEED_PORT=${FEED_PORT:-18448}
gh="$here/target/release/gatehouse"
for t in wrk nginx openssl curl sha256sum taskset; do
    command -v $t >/dev/null || { echo "missing $t (apt-get install -y wrk nginx openssl curl)" >&2; exit 2; }
done
[ -x "$gh" ] || { echo "build first: cargo build --release" >&2; exit 2; }
for port in $PROXY_PORT $ADMIN_PORT $ORIGIN_PORT $FEED_PORT; do
    if (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
        echo "127.0.0.1:$port is in use; stop what holds it, or set the *_PORT variables" >&2; exit 2
    fi
done
rm -rf "$W"; mkdir -p "$W/www" "$W/feed" "$W/lists/gambling" "$W/log"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

# The feed server's certificate, for localhost, from a CA made here.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout "$W/ca.key" -out "$W/ca.pem" -subj "/CN=list swap bench CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$W/feed.key" -out "$W/feed.csr" -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$W/feed.ext"
openssl x509 -req -in "$W/feed.csr" -CA "$W/ca.pem" -CAkey "$W/ca.key" -CAcreateserial \
    -days 2 -extfile "$W/feed.ext" -out "$W/feed.crt" 2>/dev/null

# A feed version: $entries gambling names, a different half of them each time, so that
# every update changes the lists (shrink_guard = 1.0 lets it shrink).
feed_version() {
    awk -v n="$entries" -v v="$1" 'BEGIN { print "# list swap bench feed, version " v;
        for (i = 0; i < n; i++) printf "0.0.0.0 bet%d-v%d.bench.test\n", i, (i % 2 == v % 2) ? v : 0 }' \
        >"$W/feed/feed.tmp" && mv "$W/feed/feed.tmp" "$W/feed/feed.hosts"
}
feed_version 1
(cd "$W/feed" && exec taskset -c 1 openssl s_server -quiet -WWW -accept "$FEED_PORT" \
    -cert "$W/feed.crt" -key "$W/feed.key" </dev/null >/dev/null 2>&1) & pids+=($!)

echo ok >"$W/www/small"
cat >"$W/nginx.conf" <<NG
worker_processes 1; daemon off; pid $W/nginx.pid; error_log $W/nginx.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$ORIGIN_PORT; root $W/www; } }
NG
taskset -c 1 nginx -c "$W/nginx.conf" </dev/null >/dev/null 2>&1 & pids+=($!)

token=$(openssl rand -hex 32)
printf '%s\n' "$token" >"$W/token"
printf 'list-swap-bench.canary.gatehouse.invalid\n' >"$W/lists/gambling/domains"
cat >"$W/gatehouse.toml" <<TOML
[school]
name = "List swap bench"
[lists]
dir = "lists"
[[lists.sources]]
name = "feed"
url = "https://localhost:$FEED_PORT/feed.hosts"
format = "hosts"
category = "gambling"
shrink_guard = 1.0
[categories.gambling]
severity = "inappropriate"
[identity]
default_group = "pupils"
[groups.pupils]
mode = "blocklist"
block = ["gambling"]
[inspection]
extra_roots = ["ca.pem"]
[log]
dir = "log"
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
[[admin.tokens]]
name = "bench"
role = "technician"
sha256 = "$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)"
[server]
listen = "127.0.0.1:$PROXY_PORT"
allow_internal_destinations = ["127.0.0.1/32"]
[server.resolve]
"origin.test" = "127.0.0.1"
TOML
taskset -c 0 "$gh" run --config "$W/gatehouse.toml" 2>"$W/gatehouse.err" & pids+=($!)
for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$ADMIN_PORT/healthz" && break; sleep 0.1
done
target="http://origin.test:$ORIGIN_PORT/small"
code=$(curl -s -o /dev/null -w '%{http_code}' -x "http://127.0.0.1:$PROXY_PORT" "$target")
[ "$code" = 200 ] || { echo "the proxy does not forward ($code): see $W/gatehouse.err" >&2; exit 1; }

update() {
    "$gh" lists update --config "$W/gatehouse.toml" --admin "127.0.0.1:$ADMIN_PORT" \
        --token-file "$W/token" --source feed
}
# The first fetch, before the load, so that every timed swap replaces a full list.
update >/dev/null

cat >"$W/abs.lua" <<'LUA'
local target = os.getenv("TARGET")
wrk.path = target
wrk.headers["Host"] = target:match("^http://([^/]+)")
function done(summary, latency, requests)
  io.write(string.format("RESULT requests=%d rps=%.0f p99_us=%d socket_errors=%d non2xx3xx=%d\n",
    summary.requests, summary.requests / (summary.duration / 1e6), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
LUA
# wrk needs a duration: long enough for every swap (measured on the first), then it is
# stopped a second after the last.
t0=$(date +%s.%N); feed_version 2; update >/dev/null; t1=$(date +%s.%N)
per=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%d", (b - a) * 3 + 2 }')
echo "== $(nproc) cores; feed of $entries entries; $swaps swaps under wrk, $conns connections"
TARGET="$target" taskset -c 1 wrk -t1 -c"$conns" -d"$((per * swaps + 10))s" -s "$W/abs.lua" \
    "http://127.0.0.1:$PROXY_PORT" >"$W/wrk.out" 2>&1 & wrk_pid=$!
sleep 1
ok=0; total_ms=0
for v in $(seq 3 $((swaps + 2))); do
    feed_version "$v"
    s=$(date +%s%N)
    if update | grep -q "feed: updated"; then ok=$((ok + 1)); fi
    total_ms=$((total_ms + ($(date +%s%N) - s) / 1000000))
done
sleep 1
kill -INT "$wrk_pid" 2>/dev/null || true
wait "$wrk_pid" 2>/dev/null || true
echo "swaps: $ok of $swaps updated, $((total_ms / swaps)) ms each (fetch, read, load, swap)"
grep RESULT "$W/wrk.out" || { cat "$W/wrk.out"; exit 1; }
grep -o 'gatehouse_list_updates_total{[^}]*} [0-9]*' \
    <(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics") || true
