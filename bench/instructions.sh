#!/usr/bin/env bash
# Instructions and heap allocations per transaction, counted by valgrind
# (callgrind): exact and repeatable where bench/run.sh's CPU times swing with
# the machine's load. Same setup as run.sh, smaller: pgbench -S, 4 clients.
#
#   bench/instructions.sh                  # pgtenant (1 worker), PgBouncer, relay (1 thread)
#   BENCH_MODES=simple bench/instructions.sh
#   KEEP_PROFILES=/tmp/cg bench/instructions.sh   # keep the callgrind files
#
# Each path runs twice under callgrind, with TX1 and TX2 transactions per
# client; the difference divided by the extra transactions removes startup,
# authentication and warm-up, leaving the steady per-transaction cost of the
# whole process (proxy code, tokio or libevent, libc). Needs valgrind
# (installed with apt-get when run as root).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
export CARGO_TARGET_DIR=$TARGET_DIR
read -r -a MODES <<<"${BENCH_MODES:-simple extended prepared}"
TX1=${TX1:-300}
TX2=${TX2:-1800}
CLIENTS=4
# The revision measured, read before this script rewrites its own table.
REV=$(cd "$REPO" && git describe --always --dirty 2>/dev/null || echo '?')

log() { printf '[instructions %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

while IFS= read -r v; do unset "$v"; done < <(compgen -e | grep '^PGTENANT_' || true)
unset PGHOST PGPORT PGUSER PGDATABASE PGOPTIONS PGSERVICE PGSSLMODE || true

if ! command -v valgrind >/dev/null; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
    else
        die "valgrind is missing: apt-get install valgrind"
    fi
fi

log "building pgtenant and the relay (release)"
(cd "$REPO" && cargo build --release --quiet --bin pgtenant) || die "cargo build failed"
cargo build --release --quiet --manifest-path "$BENCH_DIR/relay/Cargo.toml" || die "relay build failed"
PGTENANT=$TARGET_DIR/release/pgtenant
RELAY=$TARGET_DIR/release/bench-relay

# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
# pgtenant starts slowly under valgrind.
WAIT_LISTEN_SECONDS=30

TMP=$(mktemp -d /tmp/pgtenant-instr.XXXXXX)
chmod 755 "$TMP"
PG_STARTED=0
cleanup() {
    local rc=$?
    set +e
    pkill -f "$TMP/" 2>/dev/null
    [[ $PG_STARTED == 1 ]] && "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$TMP/data" -m immediate -w stop >/dev/null 2>&1
    # KEEP_PROFILES=DIR keeps the callgrind files, to read with callgrind_annotate.
    [[ -n ${KEEP_PROFILES:-} ]] && mkdir -p "$KEEP_PROFILES" && cp "$TMP"/cg.* "$KEEP_PROFILES"/ 2>/dev/null
    rm -rf "$TMP"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_bench_cluster 1

export ENCRYPTION_KEY=$(openssl rand -hex 32)
PT_PORT=$(free_port); RT_PORT=$(free_port); RELAY_PORT=$(free_port); BOUNCER_PORT=$(free_port)
write_config "$TMP/passthrough.toml" "$PT_PORT" false 1
write_config "$TMP/routed.toml" "$RT_PORT" true 1
add_bench_tenant "$TMP/routed.toml"

find_pgbouncer
[[ -n $BOUNCER ]] && write_pgbouncer_ini "$BOUNCER_PORT"

# Runs one path under callgrind for $1 transactions per client; prints
# "instructions mallocs" for the whole run.
# Arguments: tx port user mode name command...
measure_once() {
    local tx=$1 port=$2 user=$3 mode=$4 name=$5
    shift 5
    local out="$TMP/cg.$name.$mode.$tx" pid
    "${AS_CG[@]}" valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >"$TMP/$name.out" 2>&1 &
    pid=$!
    wait_listen "$port" "$name under valgrind" "$pid" "$TMP/$name.out" || die "$name did not start under valgrind"
    local opts=""
    [[ $name == routed ]] && opts="options='-c app.tenant_id=bench'"
    pgbench -n -S -M "$mode" -c $CLIENTS -j 1 -t "$tx" \
        "host=127.0.0.1 port=$port user=$user dbname=bench sslmode=disable $opts" >"$TMP/pgbench.log" 2>&1 \
        || die "pgbench through $name failed: $(tail -3 "$TMP/pgbench.log")"
    # SIGTERM: pgtenant drains, PgBouncer and the relay exit; callgrind writes its file.
    pkill -TERM -f -- "--callgrind-out-file=$out" || true
    wait "$pid" 2>/dev/null || true
    local total mallocs
    total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1; exit}')
    mallocs=$(callgrind_annotate --tree=caller --auto=no "$out" 2>/dev/null \
        | awk '/^ *[0-9,]+ .*< /{buf[n++]=$0} /\* .*:malloc \[/{for(i=0;i<n;i++) print buf[i]; exit} /\*/{n=0}' \
        | grep -oP '\(\K[0-9,]+(?=x\))' | tr -d , | awk '{s+=$1} END{print s+0}')
    echo "$total $mallocs"
}

# Prints "instructions/tx mallocs/tx" for one path and mode.
measure() { # port user mode name command...
    local a b
    read -r -a a < <(measure_once "$TX1" "$@")
    read -r -a b < <(measure_once "$TX2" "$@")
    awk -v i1="${a[0]}" -v i2="${b[0]}" -v m1="${a[1]}" -v m2="${b[1]}" -v n=$((CLIENTS * (TX2 - TX1))) \
        'BEGIN{m = (m2 - m1) / n; printf "%d %.2f", (i2 - i1) / n, (m > 0 ? m : 0)}'
}

declare -A CELL
ROWS=("pgtenant pass-through, 1 thread" "pgtenant routed, 1 thread" "relay, 1 thread")
[[ -n $BOUNCER ]] && ROWS+=("pgbouncer")
for mode in "${MODES[@]}"; do
    log "mode $mode"
    AS_CG=()
    CELL["pgtenant pass-through, 1 thread|$mode"]=$(measure "$PT_PORT" bench@example.com "$mode" passthrough \
        "$PGTENANT" serve --config "$TMP/passthrough.toml")
    CELL["pgtenant routed, 1 thread|$mode"]=$(measure "$RT_PORT" bench@example.com "$mode" routed \
        "$PGTENANT" serve --config "$TMP/routed.toml")
    CELL["relay, 1 thread|$mode"]=$(measure "$RELAY_PORT" postgres "$mode" relay \
        "$RELAY" "127.0.0.1:$RELAY_PORT" "127.0.0.1:$PGPORT_" --one-thread)
    if [[ -n $BOUNCER ]]; then
        if [[ $mode == prepared && $BOUNCER_PREPARED == 0 ]]; then
            CELL["pgbouncer|$mode"]="n/a"
        else
            AS_CG=("${AS_PG[@]}")
            CELL["pgbouncer|$mode"]=$(measure "$BOUNCER_PORT" postgres "$mode" pgbouncer \
                "$BOUNCER" "$TMP/pgbouncer.ini")
        fi
    fi
done

table() {
    printf '# Instructions per transaction\n\n'
    printf 'bench/instructions.sh at %s: callgrind, pgbench -S -c %d, (%d - %d) transactions per client; ' \
        "$REV" "$CLIENTS" "$TX2" "$TX1"
    printf 'each cell is instructions, then heap allocations (malloc calls), per transaction, for the whole process.\n\n'
    printf '| path |'; for m in "${MODES[@]}"; do printf ' %s |' "$m"; done; printf '\n|---|'
    for _ in "${MODES[@]}"; do printf -- '---:|'; done; printf '\n'
    for r in "${ROWS[@]}"; do
        printf '| %s |' "$r"
        for m in "${MODES[@]}"; do
            c=${CELL["$r|$m"]}
            if [[ $c == n/a ]]; then printf ' n/a |'; else read -r i a <<<"$c"; printf ' %s, %s |' "$i" "$a"; fi
        done
        printf '\n'
    done
    [[ $BOUNCER_PREPARED == 0 && -n $BOUNCER ]] && printf '\nPgBouncer < 1.21 cannot run -M prepared in transaction mode.\n'
    return 0
}
table | tee "$BENCH_DIR/instructions.md"
