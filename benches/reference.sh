#!/usr/bin/env bash
# For scale: how close does nginx itself, as a plain reverse proxy with no filtering and
# no log, come to the proxy figures of issue 3 in the anchor harness's layout (proxy on
# CPU 0; wrk and the origin on CPU 1; 64 keep-alive connections)? Rows alternate, so each
# round's figures share the machine's state.
#
#   cargo build --release
#   bash ../shared/bench/run.sh 1000000 10   # once, to create /tmp/gh-bench (list, origin)
#   bash benches/reference.sh [ROUNDS] [SECONDS]
set -euo pipefail
rounds=${1:-3}
secs=${2:-10}
here=$(cd "$(dirname "$0")/.." && pwd)
bench=/tmp/gh-bench
[ -f "$bench/nginx.conf" ] && [ -f "$bench/lists/first_blocked" ] && [ -f "$bench/abs.lua" ] || {
    echo "run ../shared/bench/run.sh first: it writes $bench" >&2
    exit 2
}
for port in 3128 3129 18080; do
    if (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
        echo "127.0.0.1:$port is in use; stop what holds it first" >&2
        exit 2
    fi
done
mkdir -p /tmp/gh-reference
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
taskset -c 1 nginx -c "$bench/nginx.conf" </dev/null >/dev/null 2>&1 & pids+=($!)
taskset -c 0 nginx -c "$here/benches/nginx-reference.conf" </dev/null >/dev/null 2>&1 & pids+=($!)
(cd "$here" && exec taskset -c 0 target/release/gatehouse run --config benches/proxy-bench.toml \
    >/tmp/gh-reference/gatehouse.log 2>&1) & pids+=($!)
for port in 3128 3129 18080; do
    for _ in $(seq 1 100); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done
sleep 1
blocked=$(cat "$bench/lists/first_blocked")
via() { TARGET=$2 taskset -c 1 wrk -t1 -c64 -d"${secs}s" -s "$bench/abs.lua" "http://127.0.0.1:$1" | grep RESULT; }
for r in $(seq 1 "$rounds"); do
    echo "round $r"
    echo "  direct to nginx:        $(taskset -c 1 wrk -t1 -c64 -d"${secs}s" --latency http://127.0.0.1:18080/small | grep -E 'Requests/sec|99%' | tr -s ' ' | tr '\n' ' ')"
    echo "  nginx proxy, allowed:   $(via 3129 http://127.0.0.1:18080/small)"
    echo "  gatehouse, allowed:     $(via 3128 http://127.0.0.1:18080/small)"
    echo "  nginx return 403:       $(via 3129 http://127.0.0.1:18080/blocked)"
    echo "  gatehouse, blocked:     $(via 3128 "http://$blocked/")"
done
