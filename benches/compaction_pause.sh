#!/usr/bin/env bash
# compaction_pause.sh — does compacting the lease log pause the answers to clients?
#
#   ns "srv": ringlease, one worker on core 0   veth0 <==> veth0   ns "cli": ringlease-loadgen on core 1
#
# Four variants, run ROUNDS times each in alternation (the machine is shared and noisy, so only what is
# measured side by side counts): durability "async" and "sync", each with compaction (a low
# log_compact_bytes: the log is compacted every few seconds) and without (log_compact_bytes far above what
# the run writes). Each run: a fresh lease directory, the same open-loop mix (DORA for new clients,
# renewals, a few releases) at RATE/s for SECS s.
#
# What a pause would show as:
# - the server's own reply latency (receive to send, from `ringlease ctl status`): replies over 10 ms and
#   the maximum. With "async" no reply waits for the disk, so a slow reply there is the server itself
#   (compaction's table walk, locks, CPU); with "sync" a reply also waits for its group's fdatasync, which
#   on a shared virtual disk is slow now and then with or without compaction;
# - the lease log syncs over 10 ms (the disk's share);
# - the load generator's view (p99.9 and max of whole exchanges): includes time in the socket queues.
#
# Run as root:  cargo build --release -p ringlease -p ringlease-loadgen && sudo benches/compaction_pause.sh
# Knobs: RINGLEASE_BIN, LOADGEN_BIN, RATE (default 20000), SECS (20), ROUNDS (3), CLIENTS (200000),
# COMPACT_BYTES (8 MiB), LIMIT (s, watchdog), KEEP=1 (keep logs).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RATE=${RATE:-20000}
SECS=${SECS:-20}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-200000}
COMPACT_BYTES=${COMPACT_BYTES:-$((8 << 20))}
LIMIT=${LIMIT:-$((ROUNDS * 4 * (SECS + 15) + 60))}
SRV_CORE=0
LOAD_CORE=1

. "$ROOT/benches/common.sh"
bench_start compaction_pause

SRV_IP=10.20.0.1
CLI_IP=10.20.0.2
PREFIX=10.20.0.0/14
NS_SRV=rlcmp-srv-$$
NS_CLI=rlcmp-cli-$$
SERVER_PID=
bench_stop() { stop_server; }

bench_netns "$NS_SRV" "$NS_CLI"
bench_veth "$NS_SRV" "$SRV_IP" "$NS_CLI" "$CLI_IP" 14

# start_server DURABILITY COMPACT_BYTES
start_server() {
    local log=$TMP/server.log
    rm -rf "$TMP/leases"
    mkdir -p "$TMP/leases"
    cat > "$TMP/ringlease.toml" <<EOF
[server]
listen = ["$SRV_IP:67"]
server_id = "$SRV_IP"
cores = [$SRV_CORE]
lease_dir = "$TMP/leases"
durability = "$1"
log_segment_bytes = 1048576
log_compact_bytes = $2

[control]
socket = "$TMP/control.sock"

[[subnet]]
prefix = "$PREFIX"
pools = ["10.20.1.0-10.23.255.254"]
lease_time = 3600
routers = ["$SRV_IP"]
EOF
    "$RINGLEASE_BIN" check-config "$TMP/ringlease.toml" >/dev/null || die "bad config"
    : > "$log"
    NO_COLOR=1 RUST_LOG=warn,ringlease=info ip netns exec "$NS_SRV" taskset -c $SRV_CORE \
        "$RINGLEASE_BIN" serve --config "$TMP/ringlease.toml" > "$log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 300); do
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$log" >&2; die "server exited during startup"; }
        grep -qw ready "$log" && return 0
        sleep 0.1
    done
    die "server not ready within 30 s"
}

stop_server() {
    stop_pid "$SERVER_PID"
    SERVER_PID=
}

# over_10ms JSON PATH: replies (or syncs) in the buckets above 10 ms of a ctl status histogram.
over_10ms() { jq "[$2.buckets[] | select(.le_us == null or .le_us > 10000) | .count] | add // 0" "$1"; }

RESULTS=$TMP/results.tsv
: > "$RESULTS"
run() { # run DURABILITY COMPACTION(on|off) ROUND
    local bytes=$COMPACT_BYTES
    [ "$2" = off ] && bytes=$((64 << 30))
    start_server "$1" "$bytes"
    local lg=$TMP/loadgen.json
    rm -f "$lg"
    timeout -s INT $((SECS + 30)) ip netns exec "$NS_CLI" taskset -c $LOAD_CORE "$LOADGEN_BIN" \
        --server "$SRV_IP" --giaddr "$CLI_IP" --subnet "$PREFIX" --quiet --json "$lg" \
        --scenario mix --mix dora=30,renew=65,release=5 --clients "$CLIENTS" --seed "$3" \
        --rate "$RATE" --duration "$SECS" > "$TMP/loadgen.txt" 2>&1 || true
    [ -s "$lg" ] || { tail -20 "$TMP/loadgen.txt" >&2; die "loadgen wrote no result"; }
    local st=$TMP/status.json
    "$RINGLEASE_BIN" ctl --socket "$TMP/control.sock" status --json > "$st" || die "ctl status failed"
    local compactions ms
    compactions=$(grep -c "lease log compacted" "$TMP/server.log" || true)
    ms=$(sed -n '/lease log compacted/s/.*ms=\([0-9]*\).*/\1/p' "$TMP/server.log" | awk '{ s += $1 } END { print s + 0 }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" \
        "$(jq '.total.latency_us.count // 0' "$st")" "$(over_10ms "$st" .total.latency_us)" \
        "$(jq '.total.latency_us.max // 0' "$st")" \
        "$(over_10ms "$st" .total.lease_log_sync_us)" "$(jq '.total.lease_log_sync_us.max // 0' "$st")" \
        "$compactions" "$ms" \
        "$(jq '[.latency_us.exchanges[].p99_9] | max // empty' "$lg")" "$(jq '[.latency_us.exchanges[].max] | max // empty' "$lg")" \
        >> "$RESULTS"
    stop_server
}

echo "compaction_pause: $ROUNDS rounds × 4 variants × ${SECS}s at ${RATE}/s, $CLIENTS clients, compaction every $((COMPACT_BYTES >> 20)) MiB" >&2
for round in $(seq "$ROUNDS"); do
    for durability in ${DURABILITIES:-async sync}; do
        for compaction in on off; do
            echo "round $round: $durability, compaction $compaction" >&2
            run "$durability" "$compaction" "$round"
        done
    done
done

echo
echo "| durability | compaction | round | replies | replies > 10 ms | reply max (ms) | syncs > 10 ms | sync max (ms) | compactions | compacting (ms) | loadgen p99.9 (ms) | loadgen max (ms) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %.1f | %s | %.1f | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6 / 1000, $7, $8 / 1000, $9, $10, ($11 == "" ? "n/a" : sprintf("%.2f", $11 / 1000)), ($12 == "" ? "n/a" : sprintf("%.1f", $12 / 1000)) }' "$RESULTS"
echo
echo "Totals per variant:"
echo
echo "| durability | compaction | replies | replies > 10 ms | worst reply (ms) | syncs > 10 ms | compacting (s) |"
echo "|---|---|---|---|---|---|---|"
awk -F'\t' '{ k = $1 "|" $2; n[k] += $4; slow[k] += $5; if ($6 > mx[k]) mx[k] = $6; syncs[k] += $7; c[k] += $10 }
    END { for (k in n) { split(k, p, "|"); printf "| %s | %s | %d | %d | %.1f | %d | %.1f |\n", p[1], p[2], n[k], slow[k], mx[k] / 1000, syncs[k], c[k] / 1000 } }' "$RESULTS" | sort
