# common.sh — what the benchmark scripts share; sourced by them, not run.
#
#   bench_start NAME TOOL...   checks (root, 2 cores, tools, our binaries), a temp dir $TMP, the exit trap and a
#                              watchdog that stops the script after $LIMIT seconds
#   bench_netns NS...          network namespaces, deleted on exit
#   bench_veth NS_A IP_A NS_B IP_B BITS
#                              a veth pair "veth0" between two of them, addressed, links up
#   stop_pid PID               SIGTERM, up to 5 s, then SIGKILL; only a process the script started
#
# On exit: the script's own `bench_stop` (if it defines one: stop its servers), the namespaces, the watchdog, and
# $TMP unless KEEP=1. The script sets ROOT before sourcing this and LIMIT before bench_start.

# The binaries under test (override with RINGLEASE_BIN / LOADGEN_BIN).
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
RINGLEASE_BIN=${RINGLEASE_BIN:-$TARGET/release/ringlease}
LOADGEN_BIN=${LOADGEN_BIN:-$TARGET/release/ringlease-loadgen}

BENCH_NETNS=()
BENCH_WATCHDOG=

die() { echo "${BENCH_NAME:-bench}: $*" >&2; exit 1; }

bench_start() {
    BENCH_NAME=$1; shift
    [ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
    local t
    for t in ip taskset timeout jq "$@"; do command -v "$t" >/dev/null || die "missing $t${BENCH_PACKAGES:+ (packages: $BENCH_PACKAGES)}"; done
    [ -x "$RINGLEASE_BIN" ] || die "no $RINGLEASE_BIN (cargo build --release -p ringlease)"
    [ -x "$LOADGEN_BIN" ] || die "no $LOADGEN_BIN (cargo build --release -p ringlease-loadgen)"
    [ "$(nproc)" -ge 2 ] || die "needs 2 cores"
    TMP=$(mktemp -d "/tmp/ringlease-$BENCH_NAME.XXXXXX")
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    # Bounded as a whole: past LIMIT seconds the script stops itself (the EXIT trap cleans up).
    ( for _ in $(seq "$LIMIT"); do sleep 1; done; echo "$BENCH_NAME: over ${LIMIT}s, stopping" >&2; kill -TERM $$ ) \
        2>/dev/null &
    BENCH_WATCHDOG=$!
}

bench_cleanup() {
    set +eu
    [ -n "$BENCH_WATCHDOG" ] && kill "$BENCH_WATCHDOG" 2>/dev/null
    declare -F bench_stop >/dev/null && bench_stop
    local ns
    for ns in "${BENCH_NETNS[@]}"; do ip netns del "$ns" 2>/dev/null; done
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}

bench_netns() {
    local ns
    for ns in "$@"; do
        ip netns add "$ns"
        BENCH_NETNS+=("$ns")
        ip -n "$ns" link set lo up
    done
}

bench_veth() {
    local ns_a=$1 ip_a=$2 ns_b=$3 ip_b=$4 bits=$5
    ip link add name veth0 netns "$ns_a" type veth peer name veth0 netns "$ns_b"
    ip -n "$ns_a" link set veth0 up
    ip -n "$ns_b" link set veth0 up
    ip -n "$ns_a" addr add "$ip_a/$bits" dev veth0
    ip -n "$ns_b" addr add "$ip_b/$bits" dev veth0
}

stop_pid() {
    [ -n "${1:-}" ] || return 0
    kill -TERM "$1" 2>/dev/null || true
    local _
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$1" 2>/dev/null && kill -KILL "$1" 2>/dev/null
    wait "$1" 2>/dev/null || true
}
