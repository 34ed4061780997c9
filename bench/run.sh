#!/usr/bin/env bash
# pgtenant benchmark: pgbench -S (select-only) through each path, in one run,
# against one throwaway PostgreSQL cluster.
#
#   bench/run.sh                      # 10 s per row
#   BENCH_SECONDS=30 bench/run.sh     # longer rows
#
# Rows: direct PostgreSQL, a plain TCP relay (bench/relay), pgtenant
# pass-through (routing disabled), pgtenant routed (routing enabled, pgbench
# tables are tenant tables of tenant "bench"), both again with `workers = 1`
# (every session on the main thread, like PgBouncer's one thread), PgBouncer
# (transaction mode, pool 20) when installed. Each in -M simple / extended /
# prepared. The pgtenant rows run the profile-guided build users get from the
# Dockerfile; one more row runs the plain release build (see BENCH_PGO).
# Prints a markdown table and writes it to bench/results.md.
#
# Environment:
#   BENCH_SECONDS     seconds per pgbench run (default 10)
#   BENCH_CLIENTS     pgbench -c (default 16); BENCH_THREADS: -j (default 2)
#   BENCH_SCALE       pgbench -i -s (default 10)
#   BENCH_MODES       pgbench -M modes to run (default "simple extended prepared")
#   BENCH_ROUNDS      rounds (default 3): every row runs once per round, rounds
#                     interleave the rows, and the table shows each row's median,
#                     so a burst of noise on the shared machine hits one sample
#   BENCH_PGO         1 (default): the pgtenant rows run the profile-guided build
#                     of scripts/build-pgo.sh (what the Dockerfile ships), and a
#                     row "no-PGO pass-through, 1 thread" runs the plain release
#                     build beside them; 0: the plain build only
#   BENCH_BASELINE    another pgtenant binary, e.g. a copy of target/release/pgtenant
#                     taken before a change: adds a row "baseline pass-through,
#                     1 thread" beside the current one, for an A/B within one run
#                     (use more rounds: a few percent is within one round's noise)
#   PG_BIN            PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
#   CARGO_TARGET_DIR  where cargo builds (default <repo>/target)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
SECS=${BENCH_SECONDS:-10}
CLIENTS=${BENCH_CLIENTS:-16}
THREADS=${BENCH_THREADS:-2}
SCALE=${BENCH_SCALE:-10}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
export CARGO_TARGET_DIR=$TARGET_DIR
read -r -a MODES <<<"${BENCH_MODES:-simple extended prepared}"
ROUNDS=${BENCH_ROUNDS:-3}

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Stray PGTENANT_* variables would override the generated configs.
while IFS= read -r v; do unset "$v"; done < <(compgen -e | grep '^PGTENANT_' || true)
unset PGHOST PGPORT PGUSER PGDATABASE PGOPTIONS PGSERVICE PGSSLMODE || true

# ---------------------------------------------------------------- build
log "building pgtenant (release, target dir $TARGET_DIR)"
# What is built, read now: the tree may change while the rows run.
BUILT_FROM="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet -- src 2>/dev/null || echo ' (+ uncommitted src changes)')"
(cd "$REPO" && cargo build --release --quiet --bin pgtenant) || die "cargo build of pgtenant failed"
log "building bench relay"
cargo build --release --quiet --manifest-path "$BENCH_DIR/relay/Cargo.toml" || die "cargo build of bench/relay failed"
PGTENANT=$TARGET_DIR/release/pgtenant
RELAY=$TARGET_DIR/release/bench-relay
[[ -x $PGTENANT && -x $RELAY ]] || die "binaries missing in $TARGET_DIR/release"
PLAIN_PGTENANT=""
if [[ ${BENCH_PGO:-1} != 0 ]]; then
    log "building pgtenant with profile-guided optimization (scripts/build-pgo.sh)"
    PLAIN_PGTENANT=$PGTENANT
    PGTENANT=$("$REPO/scripts/build-pgo.sh" | tail -1) || die "scripts/build-pgo.sh failed (BENCH_PGO=0 skips it)"
    [[ -x $PGTENANT ]] || die "scripts/build-pgo.sh printed no binary"
fi

# ---------------------------------------------------------------- helpers
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
CLK_TCK=$(getconf CLK_TCK)

# utime+stime of a process (all threads), in clock ticks.
cpu_ticks() {
    local rest
    rest=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null) || { echo ""; return; }
    awk '{print $12 + $13}' <<<"$rest"
}

# ---------------------------------------------------------------- cleanup
TMP=$(mktemp -d /tmp/pgtenant-bench.XXXXXX)
chmod 755 "$TMP"
PIDS=()
PG_STARTED=0
BOUNCER_PIDFILE=$TMP/pgbouncer.pid
cleanup() {
    local rc=$?
    bench_teardown
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- cluster
start_bench_cluster "$SCALE"

# ---------------------------------------------------------------- pgtenant
export ENCRYPTION_KEY=$(openssl rand -hex 32)
PT_PORT=$(free_port); RT_PORT=$(free_port); RELAY_PORT=$(free_port); BOUNCER_PORT=$(free_port)
PT1_PORT=$(free_port); RT1_PORT=$(free_port); RELAY1_PORT=$(free_port)
write_config "$TMP/passthrough.toml" "$PT_PORT" false
write_config "$TMP/routed.toml" "$RT_PORT" true
write_config "$TMP/passthrough1.toml" "$PT1_PORT" false 1
write_config "$TMP/routed1.toml" "$RT1_PORT" true 1

add_bench_tenant "$TMP/routed.toml"

"${OWN_SESSION[@]}" "$RELAY" "127.0.0.1:$RELAY_PORT" "127.0.0.1:$PGPORT_" >"$TMP/relay.log" 2>&1 &
RELAY_PID=$!; PIDS+=("$RELAY_PID")
"${OWN_SESSION[@]}" "$RELAY" "127.0.0.1:$RELAY1_PORT" "127.0.0.1:$PGPORT_" --one-thread >"$TMP/relay1.log" 2>&1 &
RELAY1_PID=$!; PIDS+=("$RELAY1_PID")
"${OWN_SESSION[@]}" "$PGTENANT" serve --config "$TMP/passthrough.toml" >"$TMP/pgtenant-passthrough.log" 2>&1 &
PT_PID=$!; PIDS+=("$PT_PID")
"${OWN_SESSION[@]}" "$PGTENANT" serve --config "$TMP/routed.toml" >"$TMP/pgtenant-routed.log" 2>&1 &
RT_PID=$!; PIDS+=("$RT_PID")
"${OWN_SESSION[@]}" "$PGTENANT" serve --config "$TMP/passthrough1.toml" >"$TMP/pgtenant-passthrough1.log" 2>&1 &
PT1_PID=$!; PIDS+=("$PT1_PID")
"${OWN_SESSION[@]}" "$PGTENANT" serve --config "$TMP/routed1.toml" >"$TMP/pgtenant-routed1.log" 2>&1 &
RT1_PID=$!; PIDS+=("$RT1_PID")
# Other pgtenant binaries, each as a one-thread pass-through row: name|binary.
OTHER_BUILDS=()
[[ -n $PLAIN_PGTENANT ]] && OTHER_BUILDS+=("no-PGO pass-through, 1 thread|$PLAIN_PGTENANT")
[[ -n ${BENCH_BASELINE:-} ]] && OTHER_BUILDS+=("baseline pass-through, 1 thread|$BENCH_BASELINE")
OTHER_TARGETS=()
OTHER_FAILED=""
for b in "${OTHER_BUILDS[@]}"; do
    IFS='|' read -r name bin <<<"$b"
    port=$(free_port) file=${name%%,*}; file=${file// /-}
    write_config "$TMP/$file.toml" "$port" false 1
    "${OWN_SESSION[@]}" "$bin" serve --config "$TMP/$file.toml" >"$TMP/pgtenant-$file.log" 2>&1 &
    pid=$!; PIDS+=("$pid")
    if wait_listen "$port" "$name" "$pid" "$TMP/pgtenant-$file.log"; then
        OTHER_TARGETS+=("$name|host=127.0.0.1 dbname=bench sslmode=disable port=$port user=bench@example.com|$pid")
    else
        OTHER_FAILED+="- $name ($bin) did not start (see the log above).\n"
    fi
done
wait_listen "$RELAY_PORT" relay "$RELAY_PID" "$TMP/relay.log" || die "relay did not start"
wait_listen "$RELAY1_PORT" "relay 1 thread" "$RELAY1_PID" "$TMP/relay1.log" || die "relay (1 thread) did not start"
PT_OK=1; RT_OK=1
wait_listen "$PT_PORT" "pgtenant pass-through" "$PT_PID" "$TMP/pgtenant-passthrough.log" || PT_OK=0
wait_listen "$RT_PORT" "pgtenant routed" "$RT_PID" "$TMP/pgtenant-routed.log" || RT_OK=0
wait_listen "$PT1_PORT" "pgtenant pass-through 1 thread" "$PT1_PID" "$TMP/pgtenant-passthrough1.log" || PT_OK=0
wait_listen "$RT1_PORT" "pgtenant routed 1 thread" "$RT1_PID" "$TMP/pgtenant-routed1.log" || RT_OK=0

# ---------------------------------------------------------------- pgbouncer
find_pgbouncer
BOUNCER_PID=""
if [[ -n $BOUNCER ]]; then
    write_pgbouncer_ini "$BOUNCER_PORT" "$BOUNCER_PIDFILE"
    if "${AS_PG[@]}" "$BOUNCER" -d "$TMP/pgbouncer.ini" >"$TMP/pgbouncer.start.log" 2>&1 \
        && wait_listen "$BOUNCER_PORT" pgbouncer "" "$TMP/pgbouncer.log"; then
        BOUNCER_PID=$(cat "$BOUNCER_PIDFILE")
    else
        log "pgbouncer failed to start:"; cat "$TMP/pgbouncer.start.log" "$TMP/pgbouncer.log" >&2 2>/dev/null || true
    fi
fi

# ---------------------------------------------------------------- targets
# name | conninfo | pid to measure (empty: none)
BASE="host=127.0.0.1 dbname=bench sslmode=disable"
TARGETS=(
    "direct|$BASE port=$PGPORT_ user=postgres|"
    "relay|$BASE port=$RELAY_PORT user=postgres|$RELAY_PID"
    "relay, 1 thread|$BASE port=$RELAY1_PORT user=postgres|$RELAY1_PID"
)
[[ $PT_OK == 1 ]] && TARGETS+=("pgtenant pass-through|$BASE port=$PT_PORT user=bench@example.com|$PT_PID")
[[ $RT_OK == 1 ]] && TARGETS+=("pgtenant routed|$BASE port=$RT_PORT user=bench@example.com options='-c app.tenant_id=bench'|$RT_PID")
[[ $PT_OK == 1 ]] && TARGETS+=("pgtenant pass-through, 1 thread|$BASE port=$PT1_PORT user=bench@example.com|$PT1_PID")
[[ $RT_OK == 1 ]] && TARGETS+=("pgtenant routed, 1 thread|$BASE port=$RT1_PORT user=bench@example.com options='-c app.tenant_id=bench'|$RT1_PID")
TARGETS+=("${OTHER_TARGETS[@]}")
[[ -n $BOUNCER_PID ]] && TARGETS+=("pgbouncer $BOUNCER_VERSION|$BASE port=$BOUNCER_PORT user=postgres|$BOUNCER_PID")

# Sanity check: one query through every path (errors show up here first).
for t in "${TARGETS[@]}"; do
    IFS='|' read -r name conn _ <<<"$t"
    if ! out=$(psql -X -At -c "SELECT count(*) FROM pgbench_branches" "$conn" 2>&1); then
        log "sanity query through '$name' failed: $out"
    fi
done

# Routing is really on. The tenant's subdomain is "bench", so dbname=bench
# alone also selects it; check through dbname=postgres instead: a pgbench
# table must be refused without a tenant and served with options=-c app.tenant_id.
if [[ $RT_OK == 1 ]]; then
    q="SELECT count(*) FROM pgbench_branches"
    rconn="host=127.0.0.1 dbname=postgres sslmode=disable port=$RT_PORT user=bench@example.com"
    if out=$(psql -X -At -c "$q" "$rconn" 2>&1); then
        log "WARNING: routed proxy answered a tenant-table query without a tenant ($out)"
    else
        log "routed check: without a tenant the proxy refuses: $(head -1 <<<"$out")"
    fi
    if out=$(psql -X -At -c "$q" "$rconn options='-c app.tenant_id=bench'" 2>&1); then
        log "routed check: with options=-c app.tenant_id=bench: ok ($out)"
    else
        log "WARNING: routed proxy refused the tenant-table query with the tenant set: $out"
    fi
fi

# Warm-up: pull the pgbench tables into shared buffers before the first row.
pgbench -n -S -c "$CLIENTS" -j "$THREADS" -T 2 "$BASE port=$PGPORT_ user=postgres" >/dev/null 2>&1 || true

# Context switches (voluntary + involuntary) of every thread of a process.
ctx_switches() {
    cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/{s += $2} END{print s + 0}'
}

median() { tr ' ' '\n' | { grep -v '^$' || true; } | sort -g | awk '{v[NR] = $1} END{if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f", (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

# Per row (mode|name): space-separated samples, one per round.
declare -A TPS_S CPU_S CSW_S TXNS FAILED ABORTED ERRS
run_one() { # mode name conninfo pid round
    local mode=$1 name=$2 conn=$3 pid=$4 key="$1|$2" out err c0="" c1="" x0="" x1="" tps txns cpu="" csw=""
    out=$TMP/pgbench.$mode.${name// /_}.$5.out; err=${out%.out}.err
    [[ -n $pid ]] && { c0=$(cpu_ticks "$pid"); x0=$(ctx_switches "$pid"); }
    pgbench -n -S -M "$mode" -c "$CLIENTS" -j "$THREADS" -T "$SECS" "$conn" >"$out" 2>"$err" || true
    [[ -n $pid ]] && { c1=$(cpu_ticks "$pid"); x1=$(ctx_switches "$pid"); }
    tps=$(awk '/^tps = /{print $3; exit}' "$out"); tps=${tps:-0}
    txns=$(awk -F': ' '/number of transactions actually processed/{split($2, a, "/"); print a[1]; exit}' "$out")
    txns=${txns:-0}
    TXNS[$key]=$(( ${TXNS[$key]:-0} + txns ))
    FAILED[$key]=$(( ${FAILED[$key]:-0} + $(awk '/number of failed transactions/{print $5 + 0; exit}' "$out") + 0 ))
    ABORTED[$key]=$(( ${ABORTED[$key]:-0} + $(grep -c 'aborted in command\|aborted while' "$err" || true) ))
    if [[ -n $c0 && -n $c1 && $txns -gt 0 ]]; then
        cpu=$(awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" -v n="$txns" 'BEGIN{printf "%.1f", d * 1e6 / hz / n}')
        csw=$(awk -v d=$((x1 - x0)) -v n="$txns" 'BEGIN{printf "%.2f", d / n}')
        CPU_S[$key]+=" $cpu"; CSW_S[$key]+=" $csw"
    fi
    TPS_S[$key]+=" $tps"
    if [[ -s $err ]]; then ERRS[$key]=$(sed -E 's/client [0-9]+/client N/g' "$err" | sort | uniq -c | sort -rn | head -5); fi
    log "$(printf 'round %s %-9s %-32s tps=%-10s txns=%-8s cpu_us/tx=%-5s ctxsw/tx=%s' \
        "$5" "$mode" "$name" "$tps" "$txns" "${cpu:--}" "${csw:--}")"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "running: pgbench -n -S -c $CLIENTS -j $THREADS -T $SECS, modes: ${MODES[*]}, $ROUNDS round(s)"
for ((round = 1; round <= ROUNDS; round++)); do
    for mode in "${MODES[@]}"; do
        for t in "${TARGETS[@]}"; do
            IFS='|' read -r name conn pid <<<"$t"
            run_one "$mode" "$name" "$conn" "$pid" "$round"
        done
    done
done
declare -A TPS CPU CSW
for k in "${!TPS_S[@]}"; do
    TPS[$k]=$(median <<<"${TPS_S[$k]}")
    CPU[$k]=$(median <<<"${CPU_S[$k]:-}")
    CSW[$k]=$(median <<<"${CSW_S[$k]:-}")
done

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b + 0 > 0) printf "%.2f", a / b; else print "-" }'; }
# "median (min–max), n of m below 1" of the per-round ratios of two
# sample lists (one sample per round, in round order).
paired() {
    awk -v a="$1" -v b="$2" 'BEGIN{
        n = split(a, x, " "); m = split(b, y, " ")
        if (n == 0 || n != m) { print "-"; exit }
        for (i = 1; i <= n; i++) { r[i] = (y[i] > 0) ? x[i] / y[i] : 0; if (r[i] < 1) below++ }
        for (i = 2; i <= n; i++) { v = r[i]; for (j = i - 1; j >= 1 && r[j] > v; j--) r[j + 1] = r[j]; r[j + 1] = v }
        med = (n % 2) ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2
        printf "%.2f (%.2f–%.2f), %d of %d rounds below 1", med, r[1], r[n], below, n
    }'
}
{
    echo "# pgtenant benchmark results"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $BUILT_FROM"
    if [[ -n $PLAIN_PGTENANT ]]; then
        echo "- pgtenant rows: the profile-guided build (scripts/build-pgo.sh); \"no-PGO\": the plain \`cargo build --release\`"
    else
        echo "- pgtenant rows: the plain \`cargo build --release\` (BENCH_PGO=0)"
    fi
    echo "- machine: $(nproc) CPUs ($(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)), shared with other work; load average before/after the runs: $LOAD_BEFORE / $LOAD_AFTER"
    echo "- $(pgbench --version), $("$PG_BIN/postgres" --version | sed 's/postgres (PostgreSQL) /PostgreSQL /')${BOUNCER_VERSION:+, PgBouncer $BOUNCER_VERSION}"
    echo "- \`pgbench -n -S -c $CLIENTS -j $THREADS -T $SECS\`, scale $SCALE, fsync=off, everything on 127.0.0.1"
    echo "- CPU µs/tx = proxy process utime+stime over the run / transactions (clock tick $((1000 / CLK_TCK)) ms); ctx sw/tx = the proxy's context switches (all threads) / transactions"
    echo "- $ROUNDS round(s), rows interleaved; every figure is the row's median over the rounds (tps samples: see the log)"
    echo
    echo "| mode | path | tps | vs direct | vs relay | proxy CPU µs/tx | ctx sw/tx | failed tx | aborted clients |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    for mode in "${MODES[@]}"; do
        for t in "${TARGETS[@]}"; do
            IFS='|' read -r name _ _ <<<"$t"
            k="$mode|$name"
            tps=$(printf '%.0f' "${TPS[$k]}") cpu=${CPU[$k]} csw=${CSW[$k]}
            vd=$(ratio "${TPS[$k]}" "${TPS["$mode|direct"]}") vr=$(ratio "${TPS[$k]}" "${TPS["$mode|relay"]}")
            if [[ ${ABORTED[$k]} != 0 || ${TXNS[$k]} == 0 ]]; then
                # pgbench's tps for an aborted run covers only the few transactions before the abort.
                tps="($tps, run aborted)" vd="-" vr="-" cpu="-" csw="-"
            fi
            printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$mode" "$name" "$tps" "$vd" "$vr" \
                "$cpu" "$csw" "${FAILED[$k]}" "${ABORTED[$k]}"
        done
    done
    # The target comparison, paired by round: a round's rows run minutes
    # apart at most, so their ratio cancels most of the machine's drift,
    # which moves every row's CPU figure together between rounds.
    bouncer_key="pgbouncer ${BOUNCER_VERSION:-}"
    if [[ -n $BOUNCER_PID ]]; then
        echo
        echo "Proxy CPU µs/tx of each one-thread pgtenant row ÷ PgBouncer's in the same round: median (min–max) of the per-round ratios:"
        echo
        for mode in "${MODES[@]}"; do
            [[ ${ABORTED["$mode|$bouncer_key"]:-0} == 0 ]] || continue
            for name in "pgtenant pass-through, 1 thread" "pgtenant routed, 1 thread" "no-PGO pass-through, 1 thread"; do
                [[ -n ${CPU_S["$mode|$name"]:-} ]] || continue
                echo "- $mode, $name: $(paired "${CPU_S["$mode|$name"]}" "${CPU_S["$mode|$bouncer_key"]:-}")"
            done
        done
    fi
    notes=""
    [[ $PT_OK == 0 ]] && notes+="- pgtenant pass-through did not start (see the log above).\n"
    [[ $RT_OK == 0 ]] && notes+="- pgtenant routed did not start (see the log above).\n"
    notes+=$OTHER_FAILED
    [[ -z $BOUNCER ]] && notes+="- PgBouncer not installed: no PgBouncer row.\n"
    [[ -n $BOUNCER && $BOUNCER_PREPARED == 0 ]] && notes+="- PgBouncer $BOUNCER_VERSION < 1.21 has no max_prepared_statements: -M prepared in transaction mode is expected to fail.\n"
    if [[ -n $notes || ${#ERRS[@]} -gt 0 ]]; then
        echo
        echo "## Notes"
        echo
        printf '%b' "$notes"
        for mode in "${MODES[@]}"; do
            for t in "${TARGETS[@]}"; do
                IFS='|' read -r name _ _ <<<"$t"
                k="$mode|$name"
                [[ -n ${ERRS[$k]:-} ]] || continue
                echo "- $mode / $name, pgbench stderr (count, line):"
                echo '  ```'
                sed 's/^/  /' <<<"${ERRS[$k]}"
                echo '  ```'
            done
        done
    fi
} >"$TMP/results.md"
cp "$TMP/results.md" "$BENCH_DIR/results.md"
echo
cat "$BENCH_DIR/results.md"

# Proxy logs: warnings and errors only, so failures are visible in the output.
for f in "$TMP"/pgtenant-*.log; do
    if grep -qiE 'warn|error' "$f"; then
        echo
        echo "---- $(basename "$f") (WARN/ERROR lines, first 20)"
        grep -iE 'warn|error' "$f" | head -20
    fi
done
