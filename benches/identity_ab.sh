#!/usr/bin/env bash
# What directory sign-in costs the proxy once a user is signed in: throughput with every
# request carrying Proxy-Authorization: Basic for a directory account (the first on a
# connection answered from the sign-in cache, the rest from the connection's last
# sign-in) against the same
# proxy with subnet identity (no header), in the shared harness's style
# (../shared/bench/ab.sh): an nginx origin and a real slapd on CPU 1, both Gatehouse
# instances started at once and pinned to CPU 0, then ROUNDS rounds of short wrk runs in
# turn (direct, subnet allowed, directory allowed, subnet blocked, directory blocked, each
# pair's order swapped every other round), so the ratio is taken from runs seconds apart
# on a machine whose speed drifts.
#   usage: benches/identity_ab.sh [N_DOMAINS] [SECONDS_PER_RUN] [ROUNDS]
#   needs: cargo build --release; apt-get install -y nginx wrk slapd python3 curl
# Prints one RESULT line per run, then medians and the directory / subnet ratios.
set -u
N=${1:-1000000}; DUR=${2:-5}; ROUNDS=${3:-5}; CONNS=${CONNS:-64}
REPO=$(cd "$(dirname "$0")/.." && pwd)
HARNESS=${HARNESS:-$REPO/../shared/bench}
# Its own directory and ports, so it can run beside the shared harness's own runs.
W=${BENCH_DIR:-/tmp/gh-bench-identity}; mkdir -p "$W"
ORIGIN=127.0.0.1:18180; LDAP_PORT=13389; SUBNET_PORT=13228; DIR_PORT=13229
BIN=${BIN:-$REPO/target/release/gatehouse}
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; sleep 1
            for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT
for t in nginx wrk python3 curl /usr/sbin/slapd /usr/sbin/slapadd; do
  command -v $t >/dev/null || { echo "missing $t: apt-get install -y nginx wrk slapd curl"; exit 2; }; done
[ -x "$BIN" ] || { echo "build first: cargo build --release"; exit 2; }

[ -s "$W/lists/domains" ] && [ "$(wc -l <"$W/lists/domains")" -eq "$N" ] || python3 "$HARNESS/gen_lists.py" "$N" "$W/lists"
BLOCKED=$(cat "$W/lists/first_blocked")

mkdir -p "$W/www"; head -c 1024 /dev/zero | tr '\0' 'x' >"$W/www/small"
cat >"$W/nginx-id.conf" <<NG
worker_processes 1; daemon off; pid $W/nginx-id.pid; error_log $W/nginx-id.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen $ORIGIN; root $W/www; } }
NG
taskset -c 1 nginx -c "$W/nginx-id.conf" & PIDS+=($!)

# The directory: a pupil in Year 7, inside KS3 Pupils (a nested group, as in the tests).
L=$W/slapd-id; rm -rf "$L"; mkdir -p "$L/db"
cat >"$L/slapd.conf" <<SL
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile $L/slapd.pid
database mdb
maxsize 10485760
suffix "dc=school,dc=test"
rootdn "cn=admin,dc=school,dc=test"
rootpw admin-secret
directory $L/db
access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none
SL
cat >"$L/school.ldif" <<LD
dn: dc=school,dc=test
objectClass: dcObject
objectClass: organization
o: Bench Academy
dc: school

dn: cn=gatehouse,dc=school,dc=test
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: gatehouse
userPassword: service-secret

dn: uid=ann,dc=school,dc=test
objectClass: inetOrgPerson
uid: ann
cn: Ann Year7
sn: Year7
userPassword: ann-password

dn: cn=Year 7,dc=school,dc=test
objectClass: groupOfNames
cn: Year 7
member: uid=ann,dc=school,dc=test

dn: cn=KS3 Pupils,dc=school,dc=test
objectClass: groupOfNames
cn: KS3 Pupils
member: cn=Year 7,dc=school,dc=test
LD
/usr/sbin/slapadd -f "$L/slapd.conf" -l "$L/school.ldif" >/dev/null 2>&1 || { echo "slapadd failed"; exit 1; }
printf 'service-secret' >"$L/service.password"
taskset -c 1 /usr/sbin/slapd -d 0 -h "ldap://127.0.0.1:$LDAP_PORT/" -f "$L/slapd.conf" >/dev/null 2>&1 & PIDS+=($!)

# Two policies from benches/proxy-bench.toml: subnet identity as it is; and the same
# with the subnet requiring sign-in against the directory (plain LDAP: the directory is
# on this host, and cached sign-ins never reach it anyway).
policy() { # port log-dir (the compiled list cache beside the log)
  sed -e "s|^dir = \"../blocklists\"|dir = \"$REPO/blocklists\"|" \
      -e "s|^cache = \"/tmp/gh-bench/gatehouse-domains.idx\"|cache = \"$2.idx\"|" \
      -e "s|^list = \"/tmp/gh-bench/lists\"|list = \"$W/lists\"|" \
      -e "s|^listen = \"127.0.0.1:3128\"|listen = \"127.0.0.1:$1\"|" \
      -e "s|^dir = \"/tmp/gh-bench/gatehouse-log\"|dir = \"$2\"|" "$REPO/benches/proxy-bench.toml"
  printf '[admin]\nlisten = "127.0.0.1:0"\n'; }
rm -rf "$W/id-subnet-log" "$W/id-directory-log"
policy $SUBNET_PORT "$W/id-subnet-log" >"$W/id-subnet.toml"
{ policy $DIR_PORT "$W/id-directory-log" | sed 's/^group = "pupils"$/group = "pupils"\nauth = "required"/'
  cat <<DIR
[identity.directory]
url = "ldap://127.0.0.1:$LDAP_PORT"
allow_plaintext = true
bind_dn = "cn=gatehouse,dc=school,dc=test"
bind_password_file = "$L/service.password"
base_dn = "dc=school,dc=test"
user_filter = "(&(objectClass=inetOrgPerson)(uid={user}))"
[[identity.directory.groups]]
directory = "KS3 Pupils"
group = "pupils"
DIR
} >"$W/id-directory.toml"
taskset -c 0 "$BIN" run --config "$W/id-subnet.toml" >"$W/id-subnet.out" 2>&1 & PIDS+=($!); SUBNET_PID=$!
taskset -c 0 "$BIN" run --config "$W/id-directory.toml" >"$W/id-directory.out" 2>&1 & PIDS+=($!); DIR_PID=$!

AUTH="Basic $(printf 'ann:ann-password' | base64)"
cat >"$W/id.lua" <<'LUA'
local target = os.getenv("TARGET")
local host = target:match("^http://([^/]+)")
wrk.path = target
wrk.headers["Host"] = host
local auth = os.getenv("AUTH")
if auth and auth ~= "" then wrk.headers["Proxy-Authorization"] = auth end
function done(summary, latency, requests)
  io.write(string.format("RESULT rps=%.0f p50_us=%d p99_us=%d errors=%d non2xx3xx=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, summary.errors.status))
end
LUA
waitport() { for _ in $(seq 1 1500); do (echo >/dev/tcp/${1%:*}/${1#*:}) 2>/dev/null && return 0; sleep 0.2; done; return 1; }
for p in $ORIGIN 127.0.0.1:$LDAP_PORT 127.0.0.1:$SUBNET_PORT 127.0.0.1:$DIR_PORT; do waitport $p || { echo "$p did not start"; exit 1; }; done
sleep 1
echo "check subnet: allowed $(curl -s -o /dev/null -w '%{http_code}' -x http://127.0.0.1:$SUBNET_PORT http://$ORIGIN/small)," \
     "blocked $(curl -s -o /dev/null -w '%{http_code}' -x http://127.0.0.1:$SUBNET_PORT http://$BLOCKED/)"
echo "check directory: no sign-in $(curl -s -o /dev/null -w '%{http_code}' -x http://127.0.0.1:$DIR_PORT http://$ORIGIN/small)," \
     "allowed $(curl -s -o /dev/null -w '%{http_code}' -H "Proxy-Authorization: $AUTH" -x http://127.0.0.1:$DIR_PORT http://$ORIGIN/small)," \
     "blocked $(curl -s -o /dev/null -w '%{http_code}' -H "Proxy-Authorization: $AUTH" -x http://127.0.0.1:$DIR_PORT http://$BLOCKED/)"

# A process's CPU time so far (user + system), in clock ticks.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# The proxy's own CPU per request is printed beside the rate: on one core shared with
# nothing, wrk may be what limits the rate, and the CPU per request is the proxy's cost
# whatever the client manages.
one() { # label port target auth pid
  local t0 t1 out; t0=$(ticks "$5")
  out=$(TARGET="$3" AUTH="$4" taskset -c 1 wrk -t1 -c"$CONNS" -d"${DUR}s" -s "$W/id.lua" "http://127.0.0.1:$2" 2>&1 | grep RESULT)
  t1=$(ticks "$5")
  echo "$1 $out cpu_us_per_req=$(python3 -c "import sys; t=($t1-$t0)*1e6/$(getconf CLK_TCK); r=float('${out#*rps=}'.split()[0] or 0)*$DUR; print(f'{t/r:.2f}' if r else 0)")"; }
LOG="$W/identity-ab-results.txt"; : >"$LOG"
for r in $(seq 1 "$ROUNDS"); do
  echo "direct $(TARGET="http://$ORIGIN/small" taskset -c 1 wrk -t1 -c"$CONNS" -d"${DUR}s" -s "$W/id.lua" "http://$ORIGIN/small" 2>&1 | grep RESULT)" | tee -a "$LOG"
  # Which of a pair runs first alternates by round (ABBA), so a run's place after
  # another cannot favour one instance.
  for kind in allowed blocked; do
    target="http://$ORIGIN/small"; [ $kind = blocked ] && target="http://$BLOCKED/"
    if [ $((r % 2)) = 1 ]; then
      one subnet-$kind $SUBNET_PORT "$target" "" $SUBNET_PID | tee -a "$LOG"
      one directory-$kind $DIR_PORT "$target" "$AUTH" $DIR_PID | tee -a "$LOG"
    else
      one directory-$kind $DIR_PORT "$target" "$AUTH" $DIR_PID | tee -a "$LOG"
      one subnet-$kind $SUBNET_PORT "$target" "" $SUBNET_PID | tee -a "$LOG"
    fi
  done
done
python3 - "$LOG" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\S+) RESULT rps=(\d+) p50_us=(\d+) p99_us=(\d+) errors=(\d+) non2xx3xx=(\d+)(?: cpu_us_per_req=([\d.]+))?", line)
    if m: rows.setdefault(m.group(1), []).append((int(m.group(2)), int(m.group(4)), int(m.group(5)), int(m.group(6)), float(m.group(7) or 0)))
for k, v in rows.items():
    print(f"median {k}: {statistics.median(r for r, *_ in v):.0f} req/s, p99 {statistics.median(x[1] for x in v)/1000:.1f} ms, errors {sum(x[2] for x in v)}, non-2xx/3xx {sum(x[3] for x in v)}, proxy CPU {statistics.median(x[4] for x in v):.2f} us/request")
per = lambda a, b: statistics.median(x[0] / y[0] for x, y in zip(rows[a], rows[b]))
for kind in ("allowed", "blocked"):
    print(f"directory {kind} = {per('directory-'+kind, 'subnet-'+kind):.3f} x subnet (per-round median)")
    cpu = statistics.median(x[4] / y[4] for x, y in zip(rows['directory-'+kind], rows['subnet-'+kind]) if y[4])
    print(f"directory {kind} proxy CPU per request = {cpu:.3f} x subnet (per-round median)")
PY
