#!/usr/bin/env bash
# TLS tunnels through Gatehouse and through Squid (plain CONNECT, no ssl_bump), beside
# the same TLS origin reached directly: tunnels per second (a full handshake and one
# small request each) and bulk MB/s through one tunnel. Then TLS inspection: Gatehouse
# with inspect_tls (a second instance, port 3129) beside Squid with ssl_bump (Debian's
# squid-openssl, port 13129, its CA made with openssl and its certificate database with
# security_file_certgen): new inspected connections per second and requests per second
# on kept-alive inspected connections, and Gatehouse's leaf-certificate cache hit rate.
# Proxies pinned to CPU 0, the load tool and its origin to CPU 1, as in the shared
# harness; the rows of each round run one after another, so a round's ratios share the
# machine's state.
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
for t in squid python3 openssl curl; do command -v $t >/dev/null || { echo "missing $t: apt-get install -y squid" >&2; exit 2; }; done
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

# The origin's certificate (origin.test), so that both inspecting proxies can trust its
# CA before the load tool starts its origin with it.
C="$W/connect"
if [ ! -s "$C/origin.crt" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
        -keyout "$C/origin-ca.key" -out "$C/origin-ca.pem" -subj "/CN=connect bench origin CA" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$C/origin.key" -out "$C/origin.csr" -subj "/CN=origin.test" 2>/dev/null
    printf 'subjectAltName=DNS:origin.test\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$C/origin.ext"
    openssl x509 -req -in "$C/origin.csr" -CA "$C/origin-ca.pem" -CAkey "$C/origin-ca.key" \
        -CAcreateserial -days 30 -extfile "$C/origin.ext" -out "$C/origin.crt" 2>/dev/null
fi
# Gatehouse with inspect_tls: the same policy, its own port, admin port and log, the
# school CA made by `gatehouse ca init`, the origin's CA as an extra root.
sed -e 's/^listen = "127.0.0.1:3128"/listen = "127.0.0.1:3129"/' \
    -e "s#^dir = \"/tmp/gh-bench/gatehouse-log\"#dir = \"$C/gatehouse-inspect-log\"#" \
    -e 's/^block_ip_literals = false/block_ip_literals = false\ninspect_tls = true/' \
    "$C/gatehouse.toml" >"$C/gatehouse-inspect.toml"
cat >>"$C/gatehouse-inspect.toml" <<GI
[server.resolve]
"origin.test" = "127.0.0.1"
[admin]
listen = "127.0.0.1:9181"
[inspection]
ca_cert = "$C/school-ca.crt"
ca_key = "$C/school-ca.key"
extra_roots = ["$C/origin-ca.pem"]
GI
[ -s "$C/school-ca.crt" ] || "$here/target/release/gatehouse" ca init --config "$C/gatehouse-inspect.toml" >/dev/null
# Squid with ssl_bump: peek at the ClientHello, then bump; its CA from openssl; the
# origin verified against the origin's CA.
if [ ! -s "$C/squid-ca.pem" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
        -keyout "$C/squid-ca.key" -out "$C/squid-ca.pem" -subj "/CN=connect bench Squid CA" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
fi
rm -rf "$C/ssl_db"; /usr/lib/squid/security_file_certgen -c -s "$C/ssl_db" -M 16MB >/dev/null
chown -R proxy:proxy "$C/ssl_db" "$C"/squid-ca.* 2>/dev/null || true
echo "127.0.0.1 origin.test" >"$C/hosts"
cat >"$C/squid-bump.conf" <<SQ
http_port 127.0.0.1:13129 ssl-bump generate-host-certificates=on dynamic_cert_mem_cache_size=16MB tls-cert=$C/squid-ca.pem tls-key=$C/squid-ca.key
sslcrtd_program /usr/lib/squid/security_file_certgen -s $C/ssl_db -M 16MB
sslcrtd_children 8 startup=2 idle=1
acl step1 at_step SslBump1
ssl_bump peek step1
ssl_bump bump all
tls_outgoing_options cafile=$C/origin-ca.pem
hosts_file $C/hosts
pid_filename $C/squid-bump.pid
cache deny all
cache_mem 8 MB
access_log stdio:$C/access-bump.log squid
cache_log $C/cache-bump.log
coredump_dir $C
acl blocked dstdomain "$W/lists/squid.acl"
acl tls_port port $ORIGIN_PORT
acl CONNECT method CONNECT
http_access deny blocked
http_access deny CONNECT !tls_port
http_access allow all
shutdown_lifetime 1 seconds
SQ

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
taskset -c 0 squid -N -f "$W/connect/squid.conf" 2>>"$W/connect/squid.stderr" & pids+=($!); squid_plain=$!
taskset -c 0 "$here/target/release/gatehouse" run --config "$W/connect/gatehouse.toml" \
    >"$W/connect/gatehouse.log" 2>&1 & pids+=($!); gatehouse_plain=$!
taskset -c 0 squid -N -f "$C/squid-bump.conf" 2>>"$C/squid-bump.stderr" & pids+=($!); squid_bump=$!
taskset -c 0 "$here/target/release/gatehouse" run --config "$C/gatehouse-inspect.toml" \
    >"$C/gatehouse-inspect.log" 2>&1 & pids+=($!); gatehouse_inspect=$!
for port in 13128 3128 13129 3129; do
    for _ in $(seq 1 600); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.2; done
done
sleep 1
out="$W/connect/results.txt"; : >"$out"
for r in $(seq 1 "$rounds"); do
    echo "round $r"
    # Inspecting proxies first in odd rounds, Squid first in even ones.
    if [ $((r % 2)) = 1 ]; then
        inspect=(inspect:gatehouse-inspect=127.0.0.1:3129 inspect:squid-bump=127.0.0.1:13129)
    else
        inspect=(inspect:squid-bump=127.0.0.1:13129 inspect:gatehouse-inspect=127.0.0.1:3129)
    fi
    if [ "${SPLICE_ONLY:-}" = 1 ]; then inspect=()
    fi
    ORIGIN_PORT=$ORIGIN_PORT ORIGIN_CA="$C/origin-ca.pem" ORIGIN_CERT="$C/origin.crt" \
        ORIGIN_KEY="$C/origin.key" PROXY_CAS="$C/school-ca.crt:$C/squid-ca.pem" \
        PROXY_PIDS="gatehouse-inspect=$gatehouse_inspect,squid-bump=$squid_bump,gatehouse=$gatehouse_plain,squid=$squid_plain" \
        taskset -c 1 "$tool" "$secs" "$workers" "$bulk" \
        direct gatehouse=127.0.0.1:3128 squid=127.0.0.1:13128 "${inspect[@]}" | tee -a "$out"
done
curl -s http://127.0.0.1:9181/metrics | grep '^gatehouse_inspection_leaf_cache_total' | tee -a "$out" 
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
ins, leaf, cpu, ka = {}, {}, {}, []
for line in open(sys.argv[1]):
    m = re.match(r"INSPECT (\S+) new_conns_per_s=(\d+) errors=(\d+) keepalive_rps=(\d+) errors=(\d+) cpu_us_per_conn=(\d+) cpu_us_per_req=([\d.]+)", line)
    if m:
        ins.setdefault(m[1], []).append((int(m[2]), int(m[3]), int(m[4]), int(m[5])))
        cpu.setdefault(m[1], []).append((float(m[6]), float(m[7])))
    m = re.match(r"KEEPALIVE direct rps=(\d+)", line)
    if m:
        ka.append(int(m[1]))
    m = re.match(r'gatehouse_inspection_leaf_cache_total\{result="(\w+)"\} (\d+)', line)
    if m:
        leaf[m[1]] = int(m[2])
mi = {k: (statistics.median(v[0] for v in vs), sum(v[1] for v in vs), statistics.median(v[2] for v in vs), sum(v[3] for v in vs)) for k, vs in ins.items()}
for k, (c, ce, q, qe) in mi.items():
    print(f"median {k}: {c:.0f} new inspected connections/s ({ce} errors), {q:.0f} keep-alive requests/s ({qe} errors)")
g, s = mi.get("gatehouse-inspect"), mi.get("squid-bump")
if g and s and s[0] and s[2]:
    print(f"gatehouse inspect / squid ssl_bump: new connections {g[0]/s[0]:.2f}x (goal >= 2), keep-alive requests {g[2]/s[2]:.2f}x (goal >= 3)")
mc = {k: (statistics.median(v[0] for v in vs), statistics.median(v[1] for v in vs)) for k, vs in cpu.items()}
for k, (c, q) in mc.items():
    print(f"median {k}: proxy CPU {c:.0f} us per new inspected connection, {q:.1f} us per keep-alive request")
if ka:
    print(f"median direct keep-alive (the load tool's ceiling, no proxy): {statistics.median(ka):.0f} requests/s")
g, s = mc.get("gatehouse-inspect"), mc.get("squid-bump")
if g and s and g[0] and g[1]:
    print(f"squid ssl_bump CPU / gatehouse CPU: per new connection {s[0]/g[0]:.2f}x, per keep-alive request {s[1]/g[1]:.2f}x")
if leaf:
    hits, misses = leaf.get("hit", 0), leaf.get("miss", 0)
    print(f"gatehouse leaf cache: {hits} hits, {misses} misses, {leaf.get('error', 0)} errors: hit rate {hits / max(1, hits + misses):.4f}")
PY
