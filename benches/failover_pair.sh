#!/usr/bin/env bash
# failover_pair.sh — what failover costs: the highest DORA rate of one ringlease server against the same server
# as the primary of a failover pair, and the pair's replication throughput and lag, measured in one run.
#
#   one namespace, loopback: primary 127.0.0.1 (worker on core 0, its failover thread on FAILOVER_CORE),
#   secondary 127.0.0.2 (on core 1, beside the load generator), relay agent (giaddr) 10.0.0.1
#
# Both servers use durability = "sync" (every ACK waits for its lease log sync). The primary's failover thread
# goes on core 1 by default, as tuning/lab-2core.toml places it (off the worker's core); FAILOVER_CORE=0 puts it
# beside the worker. The secondary and the load generator share core 1 as well: on a two-core machine there is
# nowhere else to put them, so the pair's figure is a lower bound. Every run is bounded (loadgen --duration, a watchdog of LIMIT seconds); namespace, servers and temp
# files are removed on exit. Run as root:
#
#   cargo build --release -p ringlease -p ringlease-loadgen && sudo benches/failover_pair.sh
#
# Knobs: RINGLEASE_BIN, LOADGEN_BIN, FIND_BUDGET (s), LOAD_SECS (s, the replication run), CLIENTS, LIMIT, KEEP=1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FIND_BUDGET=${FIND_BUDGET:-15}
LOAD_SECS=${LOAD_SECS:-10}
CLIENTS=${CLIENTS:-200000}
LIMIT=${LIMIT:-300}
FAILOVER_CORE=${FAILOVER_CORE:-1}

. "$ROOT/benches/common.sh"
bench_start failover_pair

NS=rlfo-$$
PIDS=()
bench_stop() { stop_servers; }

bench_netns "$NS"
ip -n "$NS" addr add 10.0.0.1/32 dev lo

# config NAME IP CORE [ROLE PEER FAILOVER_CORE]: a server config in $TMP/NAME.
config() {
    local name=$1 ip=$2 core=$3 role=${4:-} peer=${5:-} fo_core=${6:-$3}
    mkdir -p "$TMP/$name/leases"
    cat >"$TMP/$name/cfg.toml" <<EOF
[server]
listen = ["$ip:6767"]
server_id = "$ip"
cores = [$core]
lease_dir = "$TMP/$name/leases"
durability = "sync"

[[subnet]]
prefix = "10.0.0.0/12"
pools = ["10.0.1.0-10.15.255.254"]
lease_time = 3600

[control]
socket = "$TMP/$name/ctl.sock"
EOF
    if [ -n "$role" ]; then
        cat >>"$TMP/$name/cfg.toml" <<EOF

[failover]
name = "bench"
role = "$role"
local = "$ip:8647"
peer = "$peer:8647"
mclt = 3600
split = 255
core = $fo_core
startup_timer = 2
connect_retry = 1
EOF
    fi
}

start() {
    ip netns exec "$NS" "$RINGLEASE_BIN" serve --config "$TMP/$1/cfg.toml" >"$TMP/$1/log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do
        grep -q " ready" "$TMP/$1/log" && return 0
        sleep 0.1
    done
    die "$1 did not start: $(tail -5 "$TMP/$1/log")"
}

stop_servers() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    PIDS=()
}

status() { "$RINGLEASE_BIN" ctl --socket "$TMP/$1/ctl.sock" status --json; }
fo() { status "$1" | jq -r ".failover[0].$2"; }

loadgen() {
    ip netns exec "$NS" taskset -c 1 "$LOADGEN_BIN" --server 127.0.0.1:6767 --giaddr 10.0.0.1 --scenario dora \
        --clients "$CLIENTS" --subnet 10.0.0.0/12 "$@" >/dev/null
}

find_max() {
    loadgen --find-max --duration "$FIND_BUDGET" --seed "$1" --json "$TMP/find-$1.json"
    jq -r '.max_rate | floor' "$TMP/find-$1.json"
}

echo "single server: finding the max DORA rate (${FIND_BUDGET}s budget)…" >&2
config single 127.0.0.1 0
start single 0
SINGLE=$(find_max 1)
stop_servers

echo "failover pair: waiting for NORMAL…" >&2
config primary 127.0.0.1 0 primary 127.0.0.2 "$FAILOVER_CORE"
config secondary 127.0.0.2 1 secondary 127.0.0.1
start secondary 1
start primary 0
for _ in $(seq 100); do
    [ "$(fo primary state)" = NORMAL ] && [ "$(fo secondary state)" = NORMAL ] && break
    sleep 0.2
done
[ "$(fo primary state)" = NORMAL ] || die "the pair did not reach NORMAL: $(fo primary state)"
echo "failover pair: finding the max DORA rate…" >&2
PAIR=$(find_max 2)

echo "failover pair: ${LOAD_SECS}s at that rate, then waiting for the partner to catch up…" >&2
APPLIED0=$(fo secondary updates_applied)
T0=$(date +%s.%N)
loadgen --rate "$PAIR" --duration "$LOAD_SECS" --seed 3 --json "$TMP/load.json"
for _ in $(seq 600); do
    [ "$(fo primary queued)" = 0 ] && [ "$(fo primary outstanding_bndupd)" = 0 ] && break
    sleep 0.1
done
T1=$(date +%s.%N)
APPLIED1=$(fo secondary updates_applied)
ACHIEVED=$(jq -r '.rate | floor' "$TMP/load.json")
REPLICATED=$((APPLIED1 - APPLIED0))
PER_S=$(echo "$REPLICATED / ($T1 - $T0)" | bc)
LAG_P50=$(fo primary replication_lag_ms.p50)
LAG_P99=$(fo primary replication_lag_ms.p99)
BNDUPD=$(fo primary bndupd_sent)
UPDATES=$(fo primary updates_sent)
stop_servers

echo
echo "| | DORA/s (max, <1% drops) | ratio |"
echo "|---|---:|---:|"
echo "| one server | $SINGLE | 1.00 |"
echo "| primary of a failover pair | $PAIR | $(echo "scale=2; $PAIR / $SINGLE" | bc) |"
echo
echo "Replication at $ACHIEVED DORA/s for ${LOAD_SECS}s: $REPLICATED bindings reached the secondary, $PER_S bindings/s" \
    "until drained; lag (durable here → BNDACK) p50 ${LAG_P50} ms, p99 ${LAG_P99} ms; $UPDATES updates in $BNDUPD BNDUPDs" \
    "($(echo "scale=1; $UPDATES / $BNDUPD" | bc) per message)."
