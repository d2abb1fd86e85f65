#!/usr/bin/env bash
# TLS tunnels through Gatehouse and through Squid (plain CONNECT, no ssl_bump), beside
# the same TLS origin reached directly: tunnels per second (a full handshake and one
# small request each) and bulk MB/s through one tunnel. Proxies pinned to CPU 0, the
# load tool and its origin to CPU 1, as in the shared harness; the rows of each round run
# one after another, so a round's ratios share the machine's state.
#
#   cargo build --release && cargo bench --no-run --bench connect_load
#   bash benches/connect.sh [ROUNDS] [SECONDS] [WORKERS] [BULK_MIB]
#
# Gatehouse runs benches/proxy-bench.toml (the 1M-domain list of the shared harness,
# every decision logged) with the origin's port added to tunnel_ports.
set -euo pipefail
rounds=${1:-3}; secs=${2:-5}; workers=${3:-32}; bulk=${4:-256}
here=$(cd "$(dirname "$0")/.." && pwd)
W=${BENCH_DIR:-/tmp/gh-bench}; mkdir -p "$W/connect"
ORIGIN_PORT=18443
for t in squid python3; do command -v $t >/dev/null || { echo "missing $t: apt-get install -y squid" >&2; exit 2; }; done
tool=$(ls -t "$here"/target/release/deps/connect_load-* 2>/dev/null | grep -v '\.d$' | head -1)
[ -x "$here/target/release/gatehouse" ] && [ -n "$tool" ] || {
    echo "build first: cargo build --release && cargo bench --no-run --bench connect_load" >&2; exit 2; }
[ -s "$W/lists/domains" ] || python3 "$here/../shared/bench/gen_lists.py" 1000000 "$W/lists"

sed "s/^\[server\]$/[server]\ntunnel_ports = [443, $ORIGIN_PORT]/" "$here/benches/proxy-bench.toml" \
    | sed "s#^dir = \"../blocklists\"#dir = \"$here/blocklists\"#" >"$W/connect/gatehouse.toml"
chown proxy:proxy "$W/connect" 2>/dev/null || true
cat >"$W/connect/squid.conf" <<SQ
http_port 127.0.0.1:13128
pid_filename $W/connect/squid.pid
cache deny all
cache_mem 8 MB
access_log stdio:$W/connect/access.log squid
cache_log $W/connect/cache.log
coredump_dir $W/connect
acl blocked dstdomain "$W/lists/squid.acl"
acl tls_port port $ORIGIN_PORT
acl CONNECT method CONNECT
http_access deny blocked
http_access deny CONNECT !tls_port
http_access allow all
shutdown_lifetime 1 seconds
SQ
[ -s "$W/lists/squid.acl" ] || python3 "$here/../shared/bench/gen_lists.py" 1000000 "$W/lists"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
taskset -c 0 squid -N -f "$W/connect/squid.conf" 2>>"$W/connect/squid.stderr" & pids+=($!)
taskset -c 0 "$here/target/release/gatehouse" run --config "$W/connect/gatehouse.toml" \
    >"$W/connect/gatehouse.log" 2>&1 & pids+=($!)
for port in 13128 3128; do
    for _ in $(seq 1 600); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.2; done
done
sleep 1
out="$W/connect/results.txt"; : >"$out"
for r in $(seq 1 "$rounds"); do
    echo "round $r"
    ORIGIN_PORT=$ORIGIN_PORT taskset -c 1 "$tool" "$secs" "$workers" "$bulk" \
        direct gatehouse=127.0.0.1:3128 squid=127.0.0.1:13128 | tee -a "$out"
done
python3 - "$out" <<'PY'
import sys, statistics, re
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"RESULT (\S+) tunnels_per_s=(\d+) errors=(\d+) bulk_MBps=(\d+)", line)
    if m:
        rows.setdefault(m[1], []).append((int(m[2]), int(m[3]), int(m[4])))
med = {k: (statistics.median(v[0] for v in vs), sum(v[1] for v in vs), statistics.median(v[2] for v in vs)) for k, vs in rows.items()}
for k, (t, e, b) in med.items():
    print(f"median {k}: {t:.0f} tunnels/s ({e} errors), {b:.0f} MB/s bulk")
d = med.get("direct")
for k in ("gatehouse", "squid"):
    if d and k in med:
        print(f"{k}: tunnels {med[k][0]/d[0]:.2f} of direct, bulk {med[k][2]/d[2]:.2f} of direct")
if "gatehouse" in med and "squid" in med:
    print(f"gatehouse / squid: tunnels {med['gatehouse'][0]/med['squid'][0]:.2f}x, bulk {med['gatehouse'][2]/med['squid'][2]:.2f}x")
PY
