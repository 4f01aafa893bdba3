#!/usr/bin/env bash
# End-to-end test of the DPDK packet layer as a bump in the wire, with real Linux TCP peers,
# a real pgwarden-cp and a real PostgreSQL:
#
#   netns agent-S (198.18.0.10, .11) ──veth── netns gw-S [pgwarden-dp --dpdk ... --config: the
#   packet layer on af_packet (both veths) + TAP "pgwtap" = 198.18.0.1, and the session engine
#   listening on 198.18.0.1:6432 in the same process; pgwarden-cp] ──veth── netns db-S
#   (198.18.0.20, .21, PostgreSQL 15)
#
# Shows: (1) an allowed query from the agent goes through the wire and reaches PostgreSQL;
# (2) a deny-rule statement on a direct plaintext connection is reset on the wire and never
# reaches PostgreSQL, and its wire_deny audit event lands in pgwarden-cp's audit log; (3) a
# connection from a source that is not allowed (agent's .11, routed to the db's .21) is dropped;
# (4) escalation: psql to the gateway's own address with a service key as password reaches the
# session engine through the TAP exception port, which authenticates via cp and connects
# upstream to PostgreSQL from the gateway host (out through the TAP, forwarded by the packet
# layer to the database side only); a permitted SELECT returns rows, a policy-denied statement
# gets SQLSTATE 42501; (4d) `pgwardenctl dataplane --json` shows the ports' link state and lcore
# counters through cp's admin API, and SIGHUP to the combined process reloads the wire rules
# (generation 2, audited in cp); (5) with cp stopped, a wire deny falls back to the JSONL file (counted
# cp_unreachable); (6) SIGTERM stops the process cleanly. The packet layer runs two worker
# lcores on af_packet qpairs=2 (the kernel's symmetric fanout hash spreads flows; both
# directions of each flow must meet on one worker, or its packets would be dropped as
# midstream) and a two-queue TAP; (1b) checks that both workers own flows; (0) two lcores on
# single-queue af_packet ports are refused with a message naming qpairs=2.
#
# With WORKERS = 1 (fourth argument; default 2) the layer runs one lcore on single-queue ports
# instead, and (1b) checks that it reports single_worker. Either way (1c) every worker reports
# idle_wait "interrupt": idle, it blocks on its af_packet and TAP queues until a frame arrives.
#
# usage: packet_netns.sh PATH/TO/pgwarden-dp PATH/TO/pgwarden-cp PATH/TO/pgwardenctl [WORKERS]
# Exits 0 on success, 1 on a failed check, 77 (skipped, with the reason) when network
# namespaces, root or PostgreSQL are not available. Removes everything it created, always.
set -uo pipefail

DP=${1:?usage: packet_netns.sh PATH/TO/pgwarden-dp PATH/TO/pgwarden-cp}
CP=${2:?usage: packet_netns.sh PATH/TO/pgwarden-dp PATH/TO/pgwarden-cp PATH/TO/pgwardenctl}
CTL=${3:?usage: packet_netns.sh PATH/TO/pgwarden-dp PATH/TO/pgwarden-cp PATH/TO/pgwardenctl}
W=${4:-2}
case $W in 1) LCORES=0 SPREAD=single_worker ;; 2) LCORES=0-1 SPREAD=af_packet_fanout ;; *) echo "WORKERS: 1 or 2"; exit 1 ;; esac
RULES=$(cd "$(dirname "$0")/../../rules/sets" && pwd)
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
S=$(printf '%05x' $(( (RANDOM << 8 ^ $$) & 0xfffff )))
NS_AGENT=pgw-agent-$S NS_GW=pgw-gw-$S NS_DB=pgw-db-$S
WORK=$(mktemp -d /tmp/pgw-e2e.XXXXXX)
DP_PID="" CP_PID=""
failures=0

skip() { echo "SKIP: $*"; exit 77; }
T0=$(date +%s%N)
log() { echo "[e2e $S +$(( ($(date +%s%N) - T0) / 1000000 )) ms] $*"; }
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
die() { fail "$*"; exit 1; }

alive() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [ "${st:0:1}" != Z ]; }
stop_pid() {  # stop_pid PID (a child of this script): SIGTERM, up to 5 s, then SIGKILL; reaped
  if alive "$1"; then
    kill -TERM "$1"; for _ in $(seq 50); do alive "$1" || break; sleep 0.1; done
    alive "$1" && kill -KILL "$1"
  fi
  wait "$1" 2>/dev/null
}

cleanup() {
  set +e
  [ -n "$DP_PID" ] && stop_pid "$DP_PID"
  [ -n "$CP_PID" ] && stop_pid "$CP_PID"
  [ -n "${IDLE_PID:-}" ] && kill "$IDLE_PID" 2>/dev/null
  if [ -f "$WORK/pg/postmaster.pid" ]; then
    ip netns exec "$NS_DB" runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate \
      stop >/dev/null 2>&1
  fi
  for ns in "$NS_AGENT" "$NS_GW" "$NS_DB"; do ip netns del "$ns" 2>/dev/null; done
  ip link del "pgwa$S" 2>/dev/null; ip link del "pgwd$S" 2>/dev/null
  rm -rf "$WORK" "/var/run/dpdk/pgwe2e$S" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 1' INT TERM

[ "$(id -u)" -eq 0 ] || skip "needs root to create network namespaces"
ip netns add "$NS_AGENT" 2>/dev/null || skip "cannot create network namespaces here"
[ -x "$DP" ] || die "pgwarden-dp not built: $DP"
[ -x "$CP" ] || die "pgwarden-cp not built: $CP"
[ -x "$PGBIN/postgres" ] || die "PostgreSQL server binaries not found in $PGBIN"
command -v psql >/dev/null || die "psql not installed"
command -v jq >/dev/null || die "jq not installed (scripts/setup)"
id postgres >/dev/null 2>&1 || die "no postgres user"
ip netns add "$NS_GW" && ip netns add "$NS_DB" || die "netns creation"

in_agent() { ip netns exec "$NS_AGENT" "$@"; }
in_gw() { ip netns exec "$NS_GW" "$@"; }
in_db() { ip netns exec "$NS_DB" "$@"; }

log "topology"
ip link add "pgwa$S" type veth peer name "pgwga$S" &&
ip link add "pgwd$S" type veth peer name "pgwgd$S" &&
ip link set "pgwa$S" netns "$NS_AGENT" && ip -n "$NS_AGENT" link set "pgwa$S" name eth0 &&
ip link set "pgwga$S" netns "$NS_GW" && ip -n "$NS_GW" link set "pgwga$S" name ga &&
ip link set "pgwgd$S" netns "$NS_GW" && ip -n "$NS_GW" link set "pgwgd$S" name gd &&
ip link set "pgwd$S" netns "$NS_DB" && ip -n "$NS_DB" link set "pgwd$S" name eth0 ||
  die "veth setup"
for ns in "$NS_AGENT" "$NS_GW" "$NS_DB"; do ip -n "$ns" link set lo up; done
# The gateway's veths carry frames only for DPDK: no addresses, no IPv6 autoconfiguration.
in_gw sysctl -qw net.ipv6.conf.ga.disable_ipv6=1 net.ipv6.conf.gd.disable_ipv6=1
# Software checksums and MTU-sized frames: af_packet sees what a NIC would.
for spec in "$NS_AGENT eth0" "$NS_GW ga" "$NS_GW gd" "$NS_DB eth0"; do
  set -- $spec
  ip netns exec "$1" ethtool -K "$2" tx off rx off tso off gso off gro off >/dev/null 2>&1
  ip -n "$1" link set "$2" up
done
ip -n "$NS_AGENT" addr add 198.18.0.10/24 dev eth0
ip -n "$NS_AGENT" addr add 198.18.0.11/24 dev eth0
# Connections to the database's second address leave from the agent's second address,
# which the gateway does not allow: the bypass attempt.
ip -n "$NS_AGENT" route add 198.18.0.21/32 dev eth0 src 198.18.0.11
ip -n "$NS_DB" addr add 198.18.0.20/24 dev eth0
ip -n "$NS_DB" addr add 198.18.0.21/24 dev eth0
# The gateway's own address lives on a persistent multi-queue TAP created before pgwarden-dp,
# so the session engine can bind it at startup; DPDK's net_tap attaches to it by name.
ip -n "$NS_GW" tuntap add dev pgwtap mode tap multi_queue &&
ip -n "$NS_GW" addr add 198.18.0.1/24 dev pgwtap && in_gw sysctl -qw net.ipv6.conf.pgwtap.disable_ipv6=1 ||
  die "TAP setup"

log "PostgreSQL in $NS_DB"
mkdir -p "$WORK/pg" && chown postgres: "$WORK" "$WORK/pg" && chmod 700 "$WORK/pg"
in_db runuser -u postgres -- "$PGBIN/initdb" -N -D "$WORK/pg" -A trust -U postgres >/dev/null ||
  die "initdb"
cat >>"$WORK/pg/postgresql.conf" <<CONF
listen_addresses = '198.18.0.20,198.18.0.21'
port = 5432
unix_socket_directories = '$WORK'
log_statement = 'all'
log_connections = on
logging_collector = off
ssl = off
fsync = off
CONF
# The session engine's upstream role authenticates with SCRAM (its secret is the vault file
# named in the gateway config); direct agents are trusted.
echo "host demo app_e2e 198.18.0.1/32 scram-sha-256" >>"$WORK/pg/pg_hba.conf"
echo "host all all 198.18.0.0/15 trust" >>"$WORK/pg/pg_hba.conf"
in_db runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w start >/dev/null ||
  { cat "$WORK/pg.log"; die "PostgreSQL start"; }
UPSTREAM_SECRET=$(openssl rand -hex 16)
in_db runuser -u postgres -- psql -h "$WORK" -U postgres -qAtc "CREATE DATABASE demo" >/dev/null &&
in_db runuser -u postgres -- psql -h "$WORK" -U postgres -d demo -qAt >/dev/null <<SQL || die "seed database"
CREATE TABLE e2e_victim(id int); INSERT INTO e2e_victim VALUES (1), (2), (3);
CREATE ROLE app_e2e LOGIN PASSWORD '$UPSTREAM_SECRET'; GRANT SELECT ON e2e_victim TO app_e2e;
SQL

log "pgwarden-cp and pgwarden-dp (packet layer + session engine) in $NS_GW"
mkdir -p "$WORK/state" && chmod 700 "$WORK/state"
printf '%s' "$UPSTREAM_SECRET" >"$WORK/app_e2e.secret" && chmod 600 "$WORK/app_e2e.secret"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj "/CN=198.18.0.1" -addext "subjectAltName=IP:198.18.0.1" \
  -keyout "$WORK/gateway.key" -out "$WORK/gateway.crt" >/dev/null 2>&1 || die "TLS certificate"
{ read -r SERVICE_KEY; read -r KEY_SALT; read -r KEY_HASH; } < <("$CP" --new-service-key e2e-agent)
[ -n "${KEY_HASH:-}" ] || die "pgwarden-cp --new-service-key"
ADMIN_SECRET=$(openssl rand -hex 16)
printf '%s\n' "$ADMIN_SECRET" >"$WORK/admin.secret" && chmod 600 "$WORK/admin.secret"
ADMIN_HASH=$(printf '%s\n' "$ADMIN_SECRET" | "$CP" --hash-credential) || die "pgwarden-cp --hash-credential"
jq -n --arg work "$WORK" --arg salt "$KEY_SALT" --arg hash "$KEY_HASH" --arg admin "$ADMIN_HASH" '{
  listeners: {dataplane: {address: "198.18.0.1", port: 6432, loopback_only: false,
    worker_threads: 1, tls: {cert_file: ($work + "/gateway.crt"), key_file: ($work + "/gateway.key")}}},
  control_plane: {socket: ($work + "/cp.sock"), state_dir: ($work + "/state"),
    admin_socket: ($work + "/admin.sock"),
    admin_principals: [{name: "operator", credential_hash: $admin, groups: ["operators"]}]},
  identity: {service_keys: [{id: "e2e-agent", salt: $salt, hash: $hash,
                             identity: "svc:e2e-agent", groups: ["agents"]}]},
  targets: [{name: "demo", host: "198.18.0.20", port: 5432, database: "demo", role: "app_e2e",
             credential: {file: ($work + "/app_e2e.secret")}, tls: {mode: "disable"}}],
  policies: [{name: "e2e-agents", groups: ["agents"], targets: ["demo"],
              allowed_kinds: ["select", "transaction", "show"], allowed_relations: ["public.*"],
              rule_sets: ["deny", "approve"]}]}' >"$WORK/pgwarden.json" || die "config"
ip netns exec "$NS_GW" "$CP" --config "$WORK/pgwarden.json" >"$WORK/cp.log" 2>&1 &
CP_PID=$!
for _ in $(seq 200); do [ -S "$WORK/cp.sock" ] && break; alive $CP_PID || break; sleep 0.1; done
[ -S "$WORK/cp.sock" ] || { cat "$WORK/cp.log"; die "pgwarden-cp did not start"; }

log "0. two lcores on single-queue af_packet ports: refused with the fix in the message"
out=$(ip netns exec "$NS_GW" "$DP" --dpdk "-l 0-1 --no-huge -m 256 --no-pci --no-telemetry \
  --file-prefix=pgwe2e${S}q --vdev=net_af_packet0,iface=ga --vdev=net_af_packet1,iface=gd" \
  --agent-port net_af_packet0 --db-port net_af_packet1 --allow-direct-source 198.18.0.10 \
  --rule-file "$RULES/deny.rules" 2>&1); rc=$?
rm -rf "/var/run/dpdk/pgwe2e${S}q"
if [ $rc -eq 2 ] && grep -q "has 1 TX queue(s) but 2 workers need one each" <<<"$out" &&
   grep -q "qpairs=2" <<<"$out"; then
  pass "refused: $(grep -o 'agent port.*' <<<"$out" | head -1)"
else
  fail "two lcores on qpairs=1: rc=$rc $(tail -2 <<<"$out")"
fi

EAL="-l $LCORES --no-huge -m 256 --no-pci --no-telemetry --file-prefix=pgwe2e$S"
EAL+=" --vdev=net_af_packet0,iface=ga,qpairs=$W --vdev=net_af_packet1,iface=gd,qpairs=$W"
EAL+=" --vdev=net_tap0,iface=pgwtap"
ip netns exec "$NS_GW" "$DP" --dpdk "$EAL" --agent-port net_af_packet0 --db-port net_af_packet1 \
  --exception-port net_tap0 --gateway-address 198.18.0.1 --allow-direct-source 198.18.0.10 \
  --rule-file "$RULES/deny.rules" --rule-file "$RULES/approve.rules" --idle-sleep-us 50 \
  --stats-file "$WORK/stats.json" --cp-socket "$WORK/cp.sock" --audit-log "$WORK/audit.jsonl" \
  --ready-file "$WORK/ready" --config "$WORK/pgwarden.json" --workers 1 --rules-dir "$RULES" \
  >"$WORK/dp.log" 2>&1 &
DP_PID=$!
for _ in $(seq 300); do
  [ -f "$WORK/ready" ] && grep -q "connected to the control plane" "$WORK/dp.log" && break
  alive $DP_PID || break; sleep 0.1
done
[ -f "$WORK/ready" ] && grep -q "connected to the control plane" "$WORK/dp.log" ||
  { cat "$WORK/dp.log"; die "pgwarden-dp did not start"; }
in_gw ip link set pgwtap up
# Let the bridge settle (first ARP) before measuring anything.
sleep 1

PSQL_BASE="user=postgres dbname=postgres connect_timeout=5"
# The stats file's counters summed over the lcores and audit_* forwarder counters as one flat
# JSON object.
SUM_LCORES='reduce .lcores[].counters as $c ({}; reduce ($c | to_entries[]) as $e (.; .[$e.key] += $e.value))'
STATS_JQ="($SUM_LCORES) + (.audit | with_entries(.key = \"audit_\" + .key))"
stats() {  # stats NAME...: "name=value ..."
  jq -r "($STATS_JQ)"' as $c | [$ARGS.positional[] | "\(.)=\($c[.])"] | join(" ")' --args \
    "$@" <"$WORK/stats.json"
}
check_stats() {  # check_stats JQ-BOOLEAN: the expression holds for the flat counters
  jq -e "$STATS_JQ | $1" "$WORK/stats.json" >/dev/null
}
wait_stats() { sleep 1.2; }  # the stats file is rewritten every second

log "1. allowed query through the bump in the wire"
out=$(in_agent psql "host=198.18.0.20 $PSQL_BASE" -XAtc "SELECT 'pgw-e2e-allowed-' || 21*2" 2>&1)
if [ "$out" = "pgw-e2e-allowed-42" ]; then pass "allowed query answered: $out"; else fail "allowed query: $out"; fi
if grep -q "pgw-e2e-allowed-" "$WORK/pg.log"; then pass "allowed query in server log"; else fail "allowed query not in server log"; fi

log "1b. $W worker(s): flows spread over all, both directions of each flow on its worker"
wait_stats
if jq -e --arg spread "$SPREAD" --argjson w "$W" '.spread == $spread and (.lcores | length == $w)' \
    "$WORK/stats.json" >/dev/null; then
  pass "$W worker lcore(s), $SPREAD: $(jq -c '[.lcores[] | {lcore_id, rx_queues}]' "$WORK/stats.json")"
else
  fail "spread: $(jq -c '{spread, lcores: [.lcores[] | {lcore_id, rx_queues}]}' "$WORK/stats.json")"
fi
log "1c. idle workers wait on their queues' descriptors (interrupt mode)"
if jq -e 'all(.lcores[]; .idle_wait == "interrupt")' "$WORK/stats.json" >/dev/null; then
  pass "idle_wait: $(jq -c '[.lcores[].idle_wait]' "$WORK/stats.json")"
else
  fail "idle_wait: $(jq -c '[.lcores[] | {lcore_id, rx_queues, idle_wait}]' "$WORK/stats.json")"
fi
# Open short sessions until each worker owns at least one flow (the fanout hash decides; 24
# sessions all on one worker would happen with probability 2^-23).
for i in $(seq 24); do
  in_agent psql "host=198.18.0.20 $PSQL_BASE" -XAtc "SELECT 'pgw-e2e-spread-$i'" >/dev/null 2>&1 ||
    fail "session $i through the workers failed"
  [ $((i % 4)) -eq 0 ] || continue
  wait_stats
  jq -e 'all(.lcores[]; .counters.flows_created > 0)' "$WORK/stats.json" >/dev/null && break
done
per_lcore=$(jq -c '[.lcores[] | {lcore_id, flows: .counters.flows_created, tcp: .counters.tcp_forwarded, statements: .counters.prescreen_statements, midstream: .counters.flows_midstream_dropped}]' "$WORK/stats.json")
if jq -e 'all(.lcores[]; .counters.flows_created > 0 and .counters.prescreen_statements > 0)
      and ([.lcores[].counters.flows_midstream_dropped] | add) == 0' "$WORK/stats.json" >/dev/null; then
  pass "every worker owns flows, no packet met the wrong worker: $per_lcore"
else
  fail "flows per worker: $per_lcore"
fi

log "2. default deny-set statement on a direct plaintext connection; audit event to pgwarden-cp"
# deny.drop_database from rules/sets/deny.rules, seen through the lexer (comment removed).
out=$(in_agent psql "host=198.18.0.20 $PSQL_BASE" -XAtc 'DROP /*pgw-e2e*/ DATABASE demo' 2>&1); rc=$?
if [ $rc -ne 0 ]; then pass "psql failed as the connection was reset (rc=$rc): $(echo "$out" | head -1)"; else fail "DROP DATABASE succeeded: $out"; fi
if grep -qiE "pgw-e2e\*/|drop database" "$WORK/pg.log"; then fail "DROP DATABASE reached PostgreSQL"; else pass "DROP DATABASE never reached PostgreSQL (server log)"; fi
still=$(in_db runuser -u postgres -- psql -h "$WORK" -U postgres -d demo -XAtc "SELECT count(*) FROM e2e_victim" 2>&1)
if [ "$still" = "3" ]; then pass "database demo and its table still exist"; else fail "database check: $still"; fi
for _ in $(seq 30); do grep -q wire_deny "$WORK/state/audit.log" 2>/dev/null && break; sleep 0.1; done
if jq -e 'select(.event == "wire_deny") | .rule == "deny.drop_database" and .decision == "deny"
      and .server == "198.18.0.20:5432" and (.client | startswith("198.18.0.10:"))' \
    "$WORK/state/audit.log" >/dev/null 2>&1; then
  pass "wire_deny recorded in pgwarden-cp's audit log: $(grep wire_deny "$WORK/state/audit.log" | head -1)"
else
  fail "no wire_deny with rule and flow in cp's audit log: $(cat "$WORK/state/audit.log" 2>/dev/null | tail -3)"
fi
if [ ! -s "$WORK/audit.jsonl" ]; then pass "nothing in the JSONL fallback while cp is up"; else fail "fallback used: $(cat "$WORK/audit.jsonl")"; fi

log "3. bypass from a source that is not allowed"
out=$(in_agent psql "host=198.18.0.21 user=postgres dbname=postgres connect_timeout=2" -XAtc "SELECT 'pgw-e2e-bypass'" 2>&1); rc=$?
if [ $rc -ne 0 ]; then pass "bypass connection failed: $(echo "$out" | head -1)"; else fail "bypass connection worked: $out"; fi
if grep -q "host=198.18.0.11" "$WORK/pg.log"; then fail "bypass connection reached PostgreSQL"; else pass "no connection from 198.18.0.11 in server log"; fi

log "4. escalation: the session engine on the gateway's own address, through the TAP"
wait_stats
before=$(stats exception_to_host exception_from_host)
before_json=$(jq -c "$STATS_JQ" "$WORK/stats.json")
GW_CONN="host=198.18.0.1 port=6432 dbname=demo user=agent sslmode=require connect_timeout=10"
out=$(PGPASSWORD=$SERVICE_KEY in_agent psql "$GW_CONN" -XAt -v ON_ERROR_STOP=1 \
  -c "SELECT 'pgw-e2e-escalated-' || id FROM e2e_victim ORDER BY id" 2>&1)
if [ "$(echo $out)" = "pgw-e2e-escalated-1 pgw-e2e-escalated-2 pgw-e2e-escalated-3" ]; then
  pass "SELECT through the session engine returned rows: $(echo $out)"
else
  fail "SELECT through the session engine: $out"
fi
if grep -q "connection received: host=198.18.0.1 " "$WORK/pg.log" &&
   grep -q "connection authorized: user=app_e2e database=demo" "$WORK/pg.log"; then
  pass "upstream connection from the gateway host (198.18.0.1) as app_e2e, SCRAM-authenticated"
else
  fail "no upstream connection from 198.18.0.1 in the server log"
fi
log "4b. a statement the policy denies"
out=$(PGPASSWORD=$SERVICE_KEY in_agent psql "$GW_CONN" -XAt -v VERBOSITY=verbose \
  -c "CREATE TABLE public.pgw_e2e_denied(a int)" 2>&1); rc=$?
if [ $rc -ne 0 ] && grep -q "42501" <<<"$out"; then
  pass "policy-denied statement: SQLSTATE 42501: $(grep -m1 -o 'ERROR: .*' <<<"$out")"
else
  fail "policy-denied statement: rc=$rc $out"
fi
if grep -q "pgw_e2e_denied" "$WORK/pg.log"; then fail "denied CREATE TABLE reached PostgreSQL"; else pass "denied CREATE TABLE never reached PostgreSQL"; fi
log "4c. a wrong token"
out=$(PGPASSWORD=not-a-service-key in_agent psql "$GW_CONN" -XAtc "SELECT 1" 2>&1); rc=$?
if [ $rc -ne 0 ]; then pass "a wrong token is refused: $(echo "$out" | tail -1)"; else fail "wrong token accepted: $out"; fi
wait_stats
after=$(stats exception_to_host exception_from_host)
# Two TLS sessions and a refused one, each with its upstream connection, both ways.
if check_stats "$before_json as \$b | .exception_to_host - \$b.exception_to_host >= 20 and
                .exception_from_host - \$b.exception_from_host >= 20"; then pass "exception counters moved both ways: before $before, after $after"; else fail "exception counters: before $before, after $after"; fi
counters=$(stats flows_created flows_bypass_dropped prescreen_denied enforce_resets_sent \
  tcp_forwarded exception_to_host exception_from_host exception_unknown_mac_dropped \
  l2_mac_move_refused l2_bridged tx_dropped parse_truncated parse_malformed audit_sent_to_cp \
  audit_written_to_file audit_cp_unreachable)
if check_stats '.flows_bypass_dropped >= 1 and .prescreen_denied == 1 and
    .enforce_resets_sent == 2 and .audit_sent_to_cp == 1 and .audit_written_to_file == 0 and
    .exception_unknown_mac_dropped == 0 and .l2_mac_move_refused == 0'; then pass "counters: $counters"; else fail "counters: $counters"; fi

log "4d. the admin API: pgwardenctl dataplane, SIGHUP wire rule reload"
# The packet layer's entries only (the combined process's session engine reports too).
dp_json() { in_gw "$CTL" dataplane --json --socket "$WORK/admin.sock" --principal operator \
  --credential-file "$WORK/admin.secret" 2>&1 \
  | jq '.dataplanes |= map(select(.snapshot.lcores != null))' 2>&1; }
for _ in $(seq 30); do dp_json | jq -e '.dataplanes[0].snapshot.lcores[0]' >/dev/null 2>&1 && break; sleep 0.2; done
if dp_json | jq -e --arg spread "$SPREAD" --argjson w "$W" '.dataplanes | length == 1 and (.[0] | .connected and (.stale | not) and
    (.snapshot.ports | length == 3 and all(.link_up)) and (.snapshot.lcores | length == $w) and
    .snapshot.spread == $spread and
    all(.snapshot.lcores[]; .rx_queues | length == 3) and
    ([.snapshot.lcores[].counters.prescreen_denied] | add) == 1 and .snapshot.rules.generation == 1)' \
    >/dev/null; then
  pass "pgwardenctl dataplane: $(dp_json | jq -c '.dataplanes[0] | {name, ports: [.snapshot.ports[] | {role, link_up, rx_packets}], lcores: [.snapshot.lcores[] | {lcore_id, flows: .counters.flows_created, prescreen_denied: .counters.prescreen_denied}], rules: .snapshot.rules.generation}')"
else
  fail "pgwardenctl dataplane: $(dp_json | head -c 600)"
fi
table=$(in_gw "$CTL" dataplane --socket "$WORK/admin.sock" --principal operator \
  --credential-file "$WORK/admin.secret" 2>&1)
if [ "$(grep -cE '^ *[01] +[01] ' <<<"$table")" -ge "$W" ] && grep -q "^spread: $SPREAD\$" <<<"$table" &&
   grep -q 'STEER_IN' <<<"$table"; then
  pass "pgwardenctl dataplane shows the spread and a counter row per lcore"
else
  fail "pgwardenctl dataplane table: $table"
fi
kill -HUP "$DP_PID"
for _ in $(seq 50); do dp_json | jq -e '.dataplanes[0].snapshot.rules.reloads_ok == 1' >/dev/null 2>&1 && break; sleep 0.2; done
if dp_json | jq -e '.dataplanes[0].snapshot.rules | .reloads_ok == 1 and .generation == 2' >/dev/null &&
   grep -q '"event":"wire_rules_reload"' "$WORK/state/audit.log" 2>/dev/null; then
  pass "SIGHUP to the combined process reloaded the wire rules (generation 2, audited in cp)"
else
  fail "SIGHUP wire rule reload: $(dp_json | jq -c '.dataplanes[0].snapshot.rules' 2>&1 | head -c 400)"
fi

# A session left open through the session engine until the shutdown (step 6): its upstream
# connection must not outlive the gateway.
mkfifo "$WORK/idle.fifo"
exec 7<>"$WORK/idle.fifo"
PGPASSWORD=$SERVICE_KEY in_agent psql "$GW_CONN" -XAt -f "$WORK/idle.fifo" >"$WORK/idle.out" 2>&1 7>&- &
IDLE_PID=$!
echo "SELECT 'pgw-e2e-idle-open';" >&7
for _ in $(seq 100); do grep -q pgw-e2e-idle-open "$WORK/idle.out" && break; sleep 0.1; done
if grep -q pgw-e2e-idle-open "$WORK/idle.out"; then pass "a session stays open through the session engine"
else fail "session left open: $(cat "$WORK/idle.out")"; fi

log "5. cp stopped: a wire deny falls back to the JSONL file"
stop_pid "$CP_PID"; CP_PID=""
out=$(in_agent psql "host=198.18.0.20 $PSQL_BASE" -XAtc 'DROP DATABASE /*pgw-e2e-2*/ demo' 2>&1); rc=$?
if [ $rc -ne 0 ]; then pass "second DROP DATABASE reset (rc=$rc)"; else fail "second DROP DATABASE succeeded: $out"; fi
for _ in $(seq 40); do grep -q wire_deny "$WORK/audit.jsonl" 2>/dev/null && break; sleep 0.1; done
if grep -q '"reason":"deny:deny.drop_database"' "$WORK/audit.jsonl" 2>/dev/null; then
  pass "fallback audit event: $(head -1 "$WORK/audit.jsonl")"
else
  fail "no fallback audit event"
fi
wait_stats
a=$(stats audit_sent_to_cp audit_written_to_file audit_cp_unreachable audit_lost)
# Sent to cp: the first wire deny and the SIGHUP wire_rules_reload event (4d).
if [ "$a" = "audit_sent_to_cp=2 audit_written_to_file=1 audit_cp_unreachable=1 audit_lost=0" ]; then
  pass "audit forwarder: $a"; else fail "audit forwarder: $a"; fi

log "6. shutdown"
kill -TERM "$DP_PID"; wait "$DP_PID"; rc=$?; DP_PID=""
exec 7>&-; wait "$IDLE_PID" 2>/dev/null; IDLE_PID=""
if [ $rc -eq 0 ]; then pass "pgwarden-dp (packet layer + session engine) stopped cleanly on SIGTERM"; else fail "exit code $rc on SIGTERM"; tail -5 "$WORK/dp.log"; fi
# The engine's upstream connections (pooled ones included) were closed while the packet layer
# still forwarded their FINs: PostgreSQL has no backend of the gateway left.
for _ in $(seq 100); do
  left=$(in_db runuser -u postgres -- psql -h "$WORK" -U postgres -d demo -XAtc \
    "SELECT count(*) FROM pg_stat_activity WHERE client_addr = '198.18.0.1'" 2>&1)
  [ "$left" = 0 ] && break; sleep 0.1
done
if [ "$left" = 0 ]; then pass "no PostgreSQL backend of the gateway outlives it"
else fail "PostgreSQL backends of the gateway left after its exit: $left"; fi

if [ $failures -ne 0 ]; then
  echo "--- pgwarden-dp log"; tail -30 "$WORK/dp.log"
  echo "--- pgwarden-cp log"; tail -20 "$WORK/cp.log" 2>/dev/null
  echo "--- PostgreSQL log"; tail -20 "$WORK/pg.log"
  echo "$failures check(s) failed"; exit 1
fi
echo "all checks passed"
