#!/usr/bin/env bash
# End-to-end test of the DPDK packet layer as a bump in the wire, with real Linux TCP peers
# and a real PostgreSQL:
#
#   netns agent-S (198.18.0.10, .11) ──veth── netns gw-S [pgwarden-dp --dpdk: af_packet on both
#   veths, TAP "pgwtap" = 198.18.0.1] ──veth── netns db-S (198.18.0.20, .21, PostgreSQL 15)
#
# Shows: (1) an allowed query from the agent goes through and reaches PostgreSQL; (2) a
# deny-rule statement on a direct plaintext connection is reset on the wire and never reaches
# PostgreSQL (server log, database still there, audit event written to the JSONL file because
# the configured cp socket is not there, and counted as cp_unreachable); (3) a connection from a
# source that is not allowed (agent's .11, routed to the db's .21) is dropped; (4) the gateway's
# own address is served by the host stack through the TAP exception port (ARP + TCP).
#
# usage: packet_netns.sh PATH/TO/pgwarden-dp
# Exits 0 on success, 1 on a failed check, 77 (skipped, with the reason) when network
# namespaces, root or PostgreSQL are not available. Removes everything it created, always.
set -uo pipefail

DP=${1:?usage: packet_netns.sh PATH/TO/pgwarden-dp}
RULES=$(cd "$(dirname "$0")/../../rules/sets" && pwd)
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
S=$(printf '%05x' $(( (RANDOM << 8 ^ $$) & 0xfffff )))
NS_AGENT=pgw-agent-$S NS_GW=pgw-gw-$S NS_DB=pgw-db-$S
WORK=$(mktemp -d /tmp/pgw-e2e.XXXXXX)
DP_PID=""
failures=0

skip() { echo "SKIP: $*"; exit 77; }
log() { echo "[e2e $S] $*"; }
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

cleanup() {
  set +e
  if [ -n "$DP_PID" ] && kill -0 "$DP_PID" 2>/dev/null; then
    kill -TERM "$DP_PID"; for _ in $(seq 50); do kill -0 "$DP_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DP_PID" 2>/dev/null
  fi
  if [ -f "$WORK/pg/postmaster.pid" ]; then
    ip netns exec "$NS_DB" runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate \
      stop >/dev/null 2>&1
  fi
  for ns in "$NS_AGENT" "$NS_GW" "$NS_DB"; do ip netns del "$ns" 2>/dev/null; done
  ip link del "pgwa$S" 2>/dev/null; ip link del "pgwd$S" 2>/dev/null
  rm -rf "$WORK" "/var/run/dpdk/pgwe2e$S"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

[ "$(id -u)" -eq 0 ] || skip "needs root to create network namespaces"
[ -x "$DP" ] || skip "pgwarden-dp not built: $DP"
[ -x "$PGBIN/postgres" ] || skip "PostgreSQL server binaries not found in $PGBIN"
command -v psql >/dev/null || skip "psql not installed"
id postgres >/dev/null 2>&1 || skip "no postgres user"
ip netns add "$NS_AGENT" 2>/dev/null || skip "cannot create network namespaces here"
ip netns add "$NS_GW" && ip netns add "$NS_DB" || { fail "netns creation"; exit 1; }

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
  { fail "veth setup"; exit 1; }
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

log "PostgreSQL in $NS_DB"
mkdir -p "$WORK/pg" && chown postgres: "$WORK" "$WORK/pg" && chmod 700 "$WORK/pg"
in_db runuser -u postgres -- "$PGBIN/initdb" -D "$WORK/pg" -A trust -U postgres >/dev/null ||
  { fail "initdb"; exit 1; }
cat >>"$WORK/pg/postgresql.conf" <<CONF
listen_addresses = '198.18.0.20,198.18.0.21'
port = 5432
unix_socket_directories = '$WORK'
log_statement = 'all'
log_connections = on
logging_collector = off
ssl = off
CONF
echo "host all all 198.18.0.0/15 trust" >>"$WORK/pg/pg_hba.conf"
in_db runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w start >/dev/null ||
  { fail "PostgreSQL start"; cat "$WORK/pg.log"; exit 1; }
in_db runuser -u postgres -- psql -h "$WORK" -U postgres -qAtc "CREATE DATABASE demo" >/dev/null &&
in_db runuser -u postgres -- psql -h "$WORK" -U postgres -d demo -qAtc \
  "CREATE TABLE e2e_victim(id int); INSERT INTO e2e_victim VALUES (1);" >/dev/null ||
  { fail "seed database"; exit 1; }

log "pgwarden-dp in $NS_GW"
EAL="-l 0 --no-huge -m 256 --no-pci --no-telemetry --file-prefix=pgwe2e$S"
EAL+=" --vdev=net_af_packet0,iface=ga --vdev=net_af_packet1,iface=gd --vdev=net_tap0,iface=pgwtap"
ip netns exec "$NS_GW" "$DP" --dpdk "$EAL" --cp-socket "$WORK/no-cp.sock" --agent-port net_af_packet0 --db-port net_af_packet1 \
  --exception-port net_tap0 --gateway-address 198.18.0.1 --allow-direct-source 198.18.0.10 \
  --rule-file "$RULES/deny.rules" --rule-file "$RULES/approve.rules" --idle-sleep-us 50 --stats-file "$WORK/stats.json" \
  --audit-log "$WORK/audit.jsonl" --ready-file "$WORK/ready" >"$WORK/dp.log" 2>&1 &
DP_PID=$!
for _ in $(seq 100); do [ -f "$WORK/ready" ] && break; kill -0 $DP_PID 2>/dev/null || break; sleep 0.1; done
if [ ! -f "$WORK/ready" ]; then fail "pgwarden-dp did not start"; cat "$WORK/dp.log"; exit 1; fi
in_gw ip addr add 198.18.0.1/24 dev pgwtap && in_gw ip link set pgwtap up
# Let the bridge settle (DAD, first ARP) before measuring anything.
sleep 1

PSQL_BASE="user=postgres dbname=postgres connect_timeout=5"

log "1. allowed query through the bump in the wire"
out=$(in_agent psql "host=198.18.0.20 $PSQL_BASE" -XAtc "SELECT 'pgw-e2e-allowed-' || 21*2" 2>&1)
if [ "$out" = "pgw-e2e-allowed-42" ]; then pass "allowed query answered: $out"; else fail "allowed query: $out"; fi
if grep -q "pgw-e2e-allowed-" "$WORK/pg.log"; then pass "allowed query in server log"; else fail "allowed query not in server log"; fi

log "2. default deny-set statement on a direct plaintext connection"
# deny.drop_database from rules/sets/deny.rules, seen through the lexer (comment removed).
out=$(in_agent psql "host=198.18.0.20 $PSQL_BASE" -XAtc 'DROP /*pgw-e2e*/ DATABASE demo' 2>&1); rc=$?
if [ $rc -ne 0 ]; then pass "psql failed as the connection was reset (rc=$rc): $(echo "$out" | head -1)"; else fail "DROP DATABASE succeeded: $out"; fi
if grep -qiE "pgw-e2e\*/|drop database" "$WORK/pg.log"; then fail "DROP DATABASE reached PostgreSQL"; else pass "DROP DATABASE never reached PostgreSQL (server log)"; fi
still=$(in_db runuser -u postgres -- psql -h "$WORK" -U postgres -d demo -XAtc "SELECT count(*) FROM e2e_victim" 2>&1)
if [ "$still" = "1" ]; then pass "database demo and its table still exist"; else fail "database check: $still"; fi
for _ in $(seq 30); do grep -q wire_deny "$WORK/audit.jsonl" 2>/dev/null && break; sleep 0.1; done
if grep -q '"reason":"deny:deny.drop_database"' "$WORK/audit.jsonl" 2>/dev/null; then
  pass "audit event: $(head -1 "$WORK/audit.jsonl")"
else
  fail "no audit event"
fi

log "3. bypass from a source that is not allowed"
out=$(in_agent psql "host=198.18.0.21 user=postgres dbname=postgres connect_timeout=3" -XAtc "SELECT 'pgw-e2e-bypass'" 2>&1); rc=$?
if [ $rc -ne 0 ]; then pass "bypass connection failed: $(echo "$out" | head -1)"; else fail "bypass connection worked: $out"; fi
if grep -q "host=198.18.0.11" "$WORK/pg.log"; then fail "bypass connection reached PostgreSQL"; else pass "no connection from 198.18.0.11 in server log"; fi

log "4. the gateway's own address through the exception port"
# A TCP service of the gateway host (later: the session engine) on the TAP address; reaching it
# needs ARP answered by the host stack and TCP steered to the exception port, not the bridge.
in_gw python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("198.18.0.1", 6432)); s.listen(1); s.settimeout(20); open(sys.argv[1], "w").close()
c, _ = s.accept(); c.sendall(b"gateway-host-" + c.recv(16))' "$WORK/listening" &
LISTENER=$!
for _ in $(seq 100); do [ -f "$WORK/listening" ] && break; sleep 0.1; done
out=$(in_agent python3 -c '
import socket
c = socket.create_connection(("198.18.0.1", 6432), timeout=5); c.sendall(b"hello")
print(c.recv(64).decode())' 2>&1)
wait $LISTENER 2>/dev/null
if [ "$out" = "gateway-host-hello" ]; then pass "TCP to the gateway address answered by the host stack"; else fail "gateway address: $out"; fi

sleep 1.2  # one more stats interval
counters=$(python3 - "$WORK/stats.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
c = s["lcores"][0]["counters"]
links = ",".join(f'{p["role"]}={"up" if p["link_up"] else "down"}' for p in s["ports"])
print(" ".join(f"{k}={c[k]}" for k in ("flows_created", "flows_bypass_dropped", "prescreen_denied",
      "enforce_resets_sent", "tcp_forwarded", "exception_to_host", "exception_from_host",
      "l2_bridged", "tx_dropped", "parse_truncated", "parse_malformed")), "links:", links)
a = s["audit"]
print("audit:", " ".join(f"{k}={v}" for k, v in a.items()))
ok = (c["flows_bypass_dropped"] >= 1 and c["prescreen_denied"] == 1 and c["enforce_resets_sent"] == 2
      and a["written_to_file"] == 1 and a["cp_unreachable"] == 1 and a["sent_to_cp"] == 0)
sys.exit(0 if ok else 1)
PY
) && pass "counters: $counters" || fail "counters: $counters"

kill -TERM "$DP_PID"; wait "$DP_PID"; rc=$?; DP_PID=""
if [ $rc -eq 0 ]; then pass "pgwarden-dp stopped cleanly on SIGTERM"; else fail "exit code $rc on SIGTERM"; tail -5 "$WORK/dp.log"; fi

if [ $failures -ne 0 ]; then
  echo "--- pgwarden-dp log"; tail -20 "$WORK/dp.log"
  echo "--- PostgreSQL log"; tail -20 "$WORK/pg.log"
  echo "$failures check(s) failed"; exit 1
fi
echo "all checks passed"
