#!/usr/bin/env bash
# benches/vs_kea.sh — side-by-side DORA throughput of ringlease and Kea 2.2.
#
# Usage (as root, from the repository root, after `cargo build --release`):
#
#   sudo benches/vs_kea.sh
#
# Environment knobs (all optional):
#   RINGLEASE_BIN   server binary            (default: target/release/ringlease)
#   SERVERS         which servers, in order   (default: "ringlease kea")
#   STEP_SECS       seconds per rate step     (default: 3)
#   RATES           rate ladder, DORA/s       (default: "1000 2000 4000 6000 8000 12000 16000 24000 32000 48000 64000")
#   BISECT          extra steps between the last good and first bad rate (default: 2)
#   SERVER_BUDGET   max seconds of load per server (default: 110)
#   KEEP=1          keep the temp dir (configs, logs, perfdhcp outputs)
#
# What it does: creates two network namespaces joined by a veth pair
# (server 10.16.0.1/12 <-> perfdhcp 10.16.0.2/12; nothing touches the root
# namespace, everything is removed by the EXIT trap), then for each server:
#   * starts it pinned to core 0 (`taskset -c 0`; ringlease also gets
#     `cores = [0]`, one worker; Kea 2.2 runs single-threaded, memfile lease
#     backend with `persist: true` to a CSV in the temp dir). Same subnet, pool,
#     lease time for both; both listen on a UDP socket on 10.16.0.1:67;
#   * drives it with perfdhcp pinned to core 1 (`taskset -c 1`, `-g single`)
#     acting as a relay agent (giaddr 10.16.0.2), at increasing `-r` rates for
#     STEP_SECS each, every step with fresh clients (new base MAC, `-R` large);
#   * a step passes when perfdhcp really offered the load (>= 97% of rate*secs
#     DISCOVERs sent) and < 1% of the exchanges started were not completed
#     (DISCOVERs sent minus ACKs received); the ladder stops at the first
#     failure, then BISECT steps narrow the gap;
#   * records perfdhcp's CPU use (bash `time`: user+sys / wall) and the
#     server's (from /proc/PID/stat) for every step: perfdhcp near 100% means
#     the load generator, not the server, is the limit;
#   * latency: perfdhcp prints min/avg/max/std-dev per pair; with `-x t` it
#     also prints the timestamps of every exchange, from which p50/p99 of the
#     DISCOVER->OFFER and REQUEST->ACK delays are computed.
# Prints a Markdown table and the ringlease/Kea ratio. Bounded: every perfdhcp
# run is under `timeout`, the ladder per server under SERVER_BUDGET seconds;
# the whole run takes 1-4 minutes.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)
RINGLEASE_BIN=${RINGLEASE_BIN:-$REPO/target/release/ringlease}
SERVERS=${SERVERS:-ringlease kea}
STEP_SECS=${STEP_SECS:-3}
RATES=${RATES:-1000 2000 4000 6000 8000 12000 16000 24000 32000 48000 64000}
BISECT=${BISECT:-2}
SERVER_BUDGET=${SERVER_BUDGET:-110}
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

die() { echo "vs_kea: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root (creates network namespaces)"
need() { command -v "$1" >/dev/null 2>&1 || die "missing $1 (apt-get install $2)"; }
need perfdhcp kea-admin
need kea-dhcp4 kea-dhcp4-server
need ip iproute2
need taskset util-linux
[ "$(nproc)" -ge 2 ] || die "needs 2 cores (server on core 0, perfdhcp on core 1)"
case " $SERVERS " in *" ringlease "*)
    [ -x "$RINGLEASE_BIN" ] || die "no ringlease binary at $RINGLEASE_BIN (cargo build --release)";;
esac

SRV_IP=10.16.0.1
CLI_IP=10.16.0.2
PREFIX=10.16.0.0/12
POOL_FIRST=10.16.1.0
POOL_LAST=10.31.255.254 # ~1M addresses: every step uses fresh clients
LEASE_TIME=3600
NS_SRV=rlbench-srv-$$
NS_CLI=rlbench-cli-$$
TMP=$(mktemp -d /tmp/ringlease-vs-kea.XXXXXX)
SERVER_PID=
CLK_TCK=$(getconf CLK_TCK)

cleanup() {
    set +e
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID"
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$SERVER_PID" 2>/dev/null && kill -KILL "$SERVER_PID"
    fi
    ip netns del "$NS_CLI" 2>/dev/null
    ip netns del "$NS_SRV" 2>/dev/null
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- topology ---------------------------------------------------------------
ip netns add "$NS_SRV"
ip netns add "$NS_CLI"
ip link add name veth0 netns "$NS_SRV" type veth peer name veth0 netns "$NS_CLI"
for ns in "$NS_SRV" "$NS_CLI"; do
    ip -n "$ns" link set lo up
    ip -n "$ns" link set veth0 up
done
ip -n "$NS_SRV" addr add "$SRV_IP/12" dev veth0
ip -n "$NS_CLI" addr add "$CLI_IP/12" dev veth0

# --- servers ------------------------------------------------------------------
write_ringlease_config() {
    mkdir -p "$TMP/ringlease-leases"
    cat > "$TMP/ringlease.toml" <<EOF
[server]
listen = ["$SRV_IP:67"]
server_id = "$SRV_IP"
cores = [0]
backend = "auto"
lease_dir = "$TMP/ringlease-leases"

[[subnet]]
prefix = "$PREFIX"
pools = ["$POOL_FIRST-$POOL_LAST"]
lease_time = $LEASE_TIME
routers = ["$SRV_IP"]
dns = ["$SRV_IP"]
EOF
}

write_kea_config() {
    cat > "$TMP/kea-dhcp4.json" <<EOF
{ "Dhcp4": {
  "interfaces-config": { "interfaces": [ "veth0" ], "dhcp-socket-type": "udp" },
  "lease-database": { "type": "memfile", "persist": true,
                      "name": "$TMP/kea-leases4.csv", "lfc-interval": 0 },
  "valid-lifetime": $LEASE_TIME,
  "subnet4": [ { "id": 1, "subnet": "$PREFIX",
                 "pools": [ { "pool": "$POOL_FIRST - $POOL_LAST" } ],
                 "option-data": [ { "name": "routers", "data": "$SRV_IP" },
                                  { "name": "domain-name-servers", "data": "$SRV_IP" } ] } ],
  "loggers": [
    { "name": "kea-dhcp4", "output_options": [ { "output": "stderr" } ], "severity": "WARN" },
    { "name": "kea-dhcp4.dhcp4", "output_options": [ { "output": "stderr" } ], "severity": "INFO" } ]
} }
EOF
}

# start_server NAME: starts it in the server namespace on core 0, waits for
# its ready line (bounded), sets SERVER_PID.
start_server() {
    local name=$1 log=$TMP/$1.log marker
    case $name in
    ringlease)
        write_ringlease_config
        "$RINGLEASE_BIN" check-config "$TMP/ringlease.toml" >/dev/null
        NO_COLOR=1 RUST_LOG=${RUST_LOG:-info} taskset -c 0 \
            ip netns exec "$NS_SRV" "$RINGLEASE_BIN" serve --config "$TMP/ringlease.toml" \
            > "$log" 2>&1 &
        marker='ready'
        ;;
    kea)
        write_kea_config
        KEA_LOCKFILE_DIR=$TMP KEA_PIDFILE_DIR=$TMP taskset -c 0 \
            ip netns exec "$NS_SRV" kea-dhcp4 -c "$TMP/kea-dhcp4.json" > "$log" 2>&1 &
        marker='DHCP4_STARTED'
        ;;
    *) die "unknown server $name" ;;
    esac
    SERVER_PID=$! # taskset and `ip netns exec` exec, so this is the server
    for _ in $(seq 200); do
        grep -qw "$marker" "$log" 2>/dev/null && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$log" >&2; die "$name exited during startup"; }
        sleep 0.1
    done
    cat "$log" >&2
    die "$name not ready within 20s"
}

stop_server() {
    local name=$1 sig=TERM
    [ "$name" = ringlease ] && sig=INT # prints its latency percentiles
    kill -"$sig" "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "warning: $name did not stop within 10s; killing" >&2
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

proc_cpu_ticks() { # utime+stime of a process, all threads
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# value SECTION KEY FILE: a counter from perfdhcp's report
value() {
    awk -v sec="$1" -v key="$2" '
        /^\*\*\*/ { cur = $0; sub(/^\*\*\*(Statistics for: )?/, "", cur); sub(/\*\*\*$/, "", cur); next }
        cur == sec && index($0, key ": ") == 1 { v = substr($0, length(key) + 3); split(v, a, " "); print a[1]; exit }
    ' "$3"
}

# percentiles SECTION FILE: "p50 p99" in ms from perfdhcp -x t timestamps
percentiles() {
    awk -v sec="$1" '
        /^\*\*\*Timestamps for packets: / { cur = $0; sub(/^\*\*\*Timestamps for packets: /, "", cur); sub(/\*\*\*$/, "", cur); next }
        /^\*\*\*/ { cur = ""; next }
        cur == sec && /^sent \/ received:/ { printf "%.3f\n", ($6 - $4) * 1000 }
    ' "$2" | sort -n | awk '
        { a[NR] = $1 }
        END {
            if (NR == 0) { print "n/a n/a"; exit }
            i50 = int(NR * 0.50 + 0.5); if (i50 < 1) i50 = 1
            i99 = int(NR * 0.99 + 0.5); if (i99 < 1) i99 = 1
            print a[i50], a[i99]
        }'
}

STEP_NO=0
# run_step NAME RATE: one bounded perfdhcp run; sets STEP_OK (0/1),
# STEP_COMPLETED (DORA/s), STEP_DROP (%), STEP_PD_CPU, STEP_SRV_CPU,
# STEP_LIMITED (1 if perfdhcp could not offer the load), STEP_OUT (file)
run_step() {
    local name=$1 rate=$2
    STEP_NO=$((STEP_NO + 1))
    local out=$TMP/$name-step$STEP_NO-r$rate.out timef=$TMP/time.$STEP_NO
    local clients=$((rate * STEP_SECS * 2))
    local mac
    mac=$(printf '02:%02x:%02x:00:00:00' $((STEP_NO / 256 % 256)) $((STEP_NO % 256)))
    local t0 c0 t1 c1
    t0=$(date +%s.%N); c0=$(proc_cpu_ticks "$SERVER_PID")
    local TIMEFORMAT='%R %U %S'
    { time timeout -s INT $((STEP_SECS + 20)) \
        ip netns exec "$NS_CLI" taskset -c 1 perfdhcp -4 -g single -l "$CLI_IP" \
            -r "$rate" -p "$STEP_SECS" -R "$clients" -b "mac=$mac" -d 1 -W 1000000 -x t \
            "$SRV_IP" > "$out" 2>&1 || true; } 2> "$timef"
    t1=$(date +%s.%N); c1=$(proc_cpu_ticks "$SERVER_PID")
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -30 "$TMP/$name.log" >&2; die "$name died during the run at -r $rate"; }

    local do_sent ra_recv
    do_sent=$(value DISCOVER-OFFER "sent packets" "$out"); do_sent=${do_sent:-0}
    ra_recv=$(value REQUEST-ACK "received packets" "$out"); ra_recv=${ra_recv:-0}
    read -r real user sys < <(tail -1 "$timef")
    STEP_OUT=$out
    STEP_PD_CPU=$(awk -v r="$real" -v u="$user" -v s="$sys" 'BEGIN { printf "%.0f", (r > 0 ? (u + s) / r * 100 : 0) }')
    STEP_SRV_CPU=$(awk -v a="$c0" -v b="$c1" -v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" \
        'BEGIN { printf "%.0f", ((b - a) / hz) / (t1 - t0) * 100 }')
    STEP_COMPLETED=$(awk -v n="$ra_recv" -v s="$STEP_SECS" 'BEGIN { printf "%.0f", n / s }')
    STEP_DROP=$(awk -v s="$do_sent" -v r="$ra_recv" 'BEGIN { printf "%.2f", (s > 0 ? (s - r) / s * 100 : 100) }')
    STEP_LIMITED=$(awk -v s="$do_sent" -v r="$rate" -v t="$STEP_SECS" 'BEGIN { print (s < 0.97 * r * t) ? 1 : 0 }')
    STEP_OK=$(awk -v d="$STEP_DROP" -v l="$STEP_LIMITED" 'BEGIN { print (d < 1.0 && l == 0) ? 1 : 0 }')
    printf '  %-9s -r %-6s sent %-7s completed %-7s (%6s/s) not completed %6s%%  perfdhcp CPU %3s%%  server CPU %3s%%%s\n' \
        "$name" "$rate" "$do_sent" "$ra_recv" "$STEP_COMPLETED" "$STEP_DROP" "$STEP_PD_CPU" "$STEP_SRV_CPU" \
        "$([ "$STEP_LIMITED" = 1 ] && echo '  [perfdhcp could not offer this rate]')"
}

declare -A R_MAX R_RATE R_DROP R_DO R_RA R_PD R_SRV R_NOTE

bench_server() {
    local name=$1
    echo "== $name =="
    start_server "$name"
    local start=$SECONDS good=0 bad=0 best_out="" note=""
    local best_completed=0 best_drop="" best_pd="" best_srv=""
    local r
    for r in $RATES; do
        if [ $((SECONDS - start)) -ge "$SERVER_BUDGET" ]; then note="time budget reached"; break; fi
        run_step "$name" "$r"
        if [ "$STEP_OK" = 1 ]; then
            good=$r; best_out=$STEP_OUT; best_completed=$STEP_COMPLETED
            best_drop=$STEP_DROP; best_pd=$STEP_PD_CPU; best_srv=$STEP_SRV_CPU
        else
            bad=$r
            [ "$STEP_LIMITED" = 1 ] && note="perfdhcp-bound at -r $r"
            break
        fi
    done
    if [ "$bad" -gt 0 ] && [ "$good" -gt 0 ] && [ "$STEP_LIMITED" = 0 ]; then
        local i mid
        for ((i = 0; i < BISECT; i++)); do
            [ $((SECONDS - start)) -ge "$SERVER_BUDGET" ] && break
            mid=$(( (good + bad) / 2 / 250 * 250 ))
            [ "$mid" -le "$good" ] && break
            run_step "$name" "$mid"
            if [ "$STEP_OK" = 1 ]; then
                good=$mid; best_out=$STEP_OUT; best_completed=$STEP_COMPLETED
                best_drop=$STEP_DROP; best_pd=$STEP_PD_CPU; best_srv=$STEP_SRV_CPU
            else
                bad=$mid
            fi
        done
    fi
    [ "$bad" = 0 ] && [ -z "$note" ] && note="passed the whole ladder"
    stop_server "$name"
    if [ "$name" = ringlease ]; then
        echo "  ringlease's own summary on exit:"
        grep -v -e ' INFO ' -e ' WARN ' "$TMP/$name.log" | tail -12 | sed 's/^/    /'
    fi

    R_MAX[$name]=$best_completed
    R_RATE[$name]=$good
    R_DROP[$name]=${best_drop:-n/a}
    R_PD[$name]=${best_pd:-n/a}
    R_SRV[$name]=${best_srv:-n/a}
    R_NOTE[$name]=$note
    if [ -n "$best_out" ]; then
        local do_p ra_p
        do_p=$(percentiles DISCOVER-OFFER "$best_out")
        ra_p=$(percentiles REQUEST-ACK "$best_out")
        R_DO[$name]="$(value DISCOVER-OFFER "avg delay" "$best_out") / ${do_p% *} / ${do_p#* } / $(value DISCOVER-OFFER "max delay" "$best_out")"
        R_RA[$name]="$(value REQUEST-ACK "avg delay" "$best_out") / ${ra_p% *} / ${ra_p#* } / $(value REQUEST-ACK "max delay" "$best_out")"
    else
        R_DO[$name]="n/a"; R_RA[$name]="n/a"
    fi
}

echo "ringlease vs Kea: $(nproc) cores, server on core 0, perfdhcp on core 1, ${STEP_SECS}s per step"
echo "perfdhcp: $(perfdhcp -v 2>&1 | head -1)   kea-dhcp4: $(kea-dhcp4 -v 2>&1 | head -1)"
for s in $SERVERS; do bench_server "$s"; done

echo
echo "| server | max DORA/s with <1% not completed | at -r | not completed | DISCOVER→OFFER avg / p50 / p99 / max (ms) | REQUEST→ACK avg / p50 / p99 / max (ms) | perfdhcp CPU | server CPU | note |"
echo "|---|---:|---:|---:|---|---|---:|---:|---|"
for s in $SERVERS; do
    echo "| $s | ${R_MAX[$s]} | ${R_RATE[$s]} | ${R_DROP[$s]}% | ${R_DO[$s]} | ${R_RA[$s]} | ${R_PD[$s]}% | ${R_SRV[$s]}% | ${R_NOTE[$s]} |"
done
if [ -n "${R_MAX[ringlease]:-}" ] && [ -n "${R_MAX[kea]:-}" ] && [ "${R_MAX[kea]}" -gt 0 ]; then
    echo
    awk -v a="${R_MAX[ringlease]}" -v b="${R_MAX[kea]}" \
        'BEGIN { printf "ringlease/Kea max DORA/s ratio: %.2fx\n", a / b }'
fi
