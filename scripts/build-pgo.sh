#!/usr/bin/env bash
# Builds the release binary with profile-guided optimization (PGO): an
# instrumented build serves pgbench through a throwaway cluster, and the
# counts it records steer the final build's inlining and code layout.
#
#   scripts/build-pgo.sh          # prints the binary's path on its last line
#
# Why: the proxy's own code is a small share of its CPU per transaction (the
# kernel's socket work is most of it), but without a profile the compiler
# spreads the hot path over more cache lines than the instruction cache
# holds. Measured with callgrind on pgbench -S extended, 16 clients,
# pass-through: 121 instruction-cache misses and 6,530 instructions per
# transaction without a profile, 25 and 5,120 with this script's (bench/README.md
# has the CPU times).
#
# Output: $CARGO_TARGET_DIR/pgo/release/pgtenant (CARGO_TARGET_DIR defaults to
# <repo>/target). The instrumented build lives in $CARGO_TARGET_DIR/pgo-gen.
# Both are separate target directories: their RUSTFLAGS differ from a plain
# build's, and sharing one directory would rebuild everything each time. For
# the same reason the raw profiles and the merged profile keep fixed paths
# there. Cargo cannot see a profile's content, so a new profile rebuilds
# pgtenant itself (`cargo clean -p`) but not its dependencies, which keep the
# profile of their first build: their code does not change with pgtenant's.
#
# Needs: cargo, PostgreSQL server binaries (PG_BIN, default: the newest
# /usr/lib/postgresql/*/bin), pgbench, psql, openssl, and an llvm-profdata
# that reads the raw profiles of rustc's LLVM: rustup's llvm-tools component
# when installed (always the right version), else the newest Debian
# llvm-profdata-N that can merge them (installed with apt-get as root when
# none can: Debian 12 has LLVM 22, rustc 1.95's, and LLVM 19 reads its profiles too).
#
# Environment: PGO_SECONDS (seconds per training run, default 5), PG_BIN,
# CARGO_TARGET_DIR, RUSTFLAGS (kept, the PGO flags are appended).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_BASE=${CARGO_TARGET_DIR:-$REPO/target}
GEN_DIR=$TARGET_BASE/pgo-gen
USE_DIR=$TARGET_BASE/pgo
SECS=${PGO_SECONDS:-5}
BASE_RUSTFLAGS=${RUSTFLAGS:-}

log() { printf '[pgo %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ -z ${PG_BIN:-} ]]; then
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
fi
[[ -n $PG_BIN && -x $PG_BIN/initdb ]] || die "no PostgreSQL server binaries (set PG_BIN, or apt-get install postgresql)"

# The throwaway cluster, configs and ports, shared with bench/run.sh.
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"

while IFS= read -r v; do unset "$v"; done < <(compgen -e | grep '^PGTENANT_' || true)
unset PGHOST PGPORT PGUSER PGDATABASE PGOPTIONS PGSERVICE PGSSLMODE || true

# The raw profile's format changes with LLVM's version, so a merge tool is
# usable only if it actually merges one of these profiles: try each candidate.
profdata_candidates() {
    local sysroot host
    sysroot=$(rustc --print sysroot)
    host=$(rustc -vV | awk '/^host:/{print $2}')
    [[ -x $sysroot/lib/rustlib/$host/bin/llvm-profdata ]] && echo "$sysroot/lib/rustlib/$host/bin/llvm-profdata"
    compgen -c llvm-profdata- 2>/dev/null | grep -E '^llvm-profdata-[0-9]+$' | sort -t- -k3 -rn | uniq
    command -v llvm-profdata || true
}
merge_profile() { # raw-dir output
    local tool
    while IFS= read -r tool; do
        [[ -n $tool ]] || continue
        if "$tool" merge -o "$2" "$1"/*.profraw 2>"$TMP/merge.err"; then
            log "merged the profile with $tool"
            return 0
        fi
        log "$tool cannot read these profiles: $(head -1 "$TMP/merge.err")"
    done < <(profdata_candidates)
    return 1
}
install_profdata() {
    [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null || return 1
    local pkg
    pkg=$(apt-cache search --names-only '^llvm-[0-9]+$' 2>/dev/null | awk '{print $1}' | sort -t- -k2 -rn | head -1)
    [[ -n $pkg ]] || { apt-get update -qq && pkg=$(apt-cache search --names-only '^llvm-[0-9]+$' | awk '{print $1}' | sort -t- -k2 -rn | head -1); }
    [[ -n $pkg ]] || return 1
    log "installing $pkg for llvm-profdata"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
}

# ---------------------------------------------------------------- instrumented build
TMP=$(mktemp -d /tmp/pgtenant-pgo.XXXXXX)
chmod 755 "$TMP"
RAW=$GEN_DIR/profraw
PROFILE=$USE_DIR/pgtenant.profdata
mkdir -p "$USE_DIR"
PIDS=()
PG_STARTED=0
cleanup() {
    local rc=$?
    bench_teardown
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "instrumented build (target dir $GEN_DIR)"
# Same profile settings as the optimized build, debug info included: a
# function whose code differs from the instrumented one gets no profile, and
# a build instrumented without debug info gave no gain at all (measured).
(cd "$REPO" && CARGO_TARGET_DIR=$GEN_DIR RUSTFLAGS="$BASE_RUSTFLAGS -Cprofile-generate=$RAW" \
    cargo build --release --locked --quiet --bin pgtenant) || die "instrumented build failed"
PGTENANT=$GEN_DIR/release/pgtenant
# The build's own programs (build scripts, proc macros) are instrumented too
# and wrote profiles of their runs: only pgtenant's count.
rm -rf "$RAW"

# ---------------------------------------------------------------- training
# The workload bench/run.sh measures, on the same cluster setup: pgbench's
# select-only and read-write (TPC-B-like) scripts in each protocol mode,
# through pass-through and routed proxies, one with the default workers (an
# event loop per core) and one with `workers = 1`.
start_bench_cluster 1
export ENCRYPTION_KEY=$(openssl rand -hex 32)
PT_PORT=$(free_port); RT_PORT=$(free_port)
write_config "$TMP/passthrough.toml" "$PT_PORT" false
write_config "$TMP/routed1.toml" "$RT_PORT" true 1
add_bench_tenant "$TMP/routed1.toml"
"${OWN_SESSION[@]}" "$PGTENANT" serve --config "$TMP/passthrough.toml" >"$TMP/passthrough.log" 2>&1 &
PT_PID=$!; PIDS+=("$PT_PID")
"${OWN_SESSION[@]}" "$PGTENANT" serve --config "$TMP/routed1.toml" >"$TMP/routed1.log" 2>&1 &
RT_PID=$!; PIDS+=("$RT_PID")
wait_listen "$PT_PORT" "pgtenant pass-through" "$PT_PID" "$TMP/passthrough.log" || die "pass-through proxy did not start"
wait_listen "$RT_PORT" "pgtenant routed" "$RT_PID" "$TMP/routed1.log" || die "routed proxy did not start"

BASE="host=127.0.0.1 dbname=bench sslmode=disable user=bench@example.com"
for proxy in "pass-through|$BASE port=$PT_PORT" "routed|$BASE port=$RT_PORT options='-c app.tenant_id=bench'"; do
    IFS='|' read -r name conn <<<"$proxy"
    for script in "-S" ""; do
        for mode in simple extended prepared; do
            log "training: pgbench ${script:-(read-write)} -M $mode through the $name proxy"
            # shellcheck disable=SC2086 # $script is empty or one flag
            out=$(pgbench -n $script -M "$mode" -c 16 -j 2 -T "$SECS" "$conn" 2>&1) \
                || die "training run failed: $(tail -3 <<<"$out")"
            failed=$(awk '/number of failed transactions/{print $5 + 0}' <<<"$out")
            [[ ${failed:-0} == 0 ]] || die "training run had $failed failed transactions: $(tail -3 <<<"$out")"
        done
    done
done

# The profile is written when the process exits: stop the proxies cleanly.
for p in "${PIDS[@]}"; do kill -TERM "$p"; done
for p in "${PIDS[@]}"; do wait "$p" || die "a proxy exited with an error on SIGTERM (log in $TMP)"; done
PIDS=()
ls "$RAW"/*.profraw >/dev/null 2>&1 || die "the instrumented proxies wrote no profile in $RAW"

if ! merge_profile "$RAW" "$PROFILE"; then
    install_profdata || die "no llvm-profdata reads rustc's profiles (rustc: $(rustc -vV | awk '/^LLVM/{print $3}')): rustup component add llvm-tools, or apt-get install llvm-19"
    merge_profile "$RAW" "$PROFILE" || die "no llvm-profdata reads rustc's profiles (rustc's LLVM: $(rustc -vV | awk '/^LLVM/{print $3}'))"
fi

# ---------------------------------------------------------------- optimized build
log "optimized build (target dir $USE_DIR)"
(cd "$REPO" && CARGO_TARGET_DIR=$USE_DIR cargo clean --release --quiet -p pgtenant)
(cd "$REPO" && CARGO_TARGET_DIR=$USE_DIR RUSTFLAGS="$BASE_RUSTFLAGS -Cprofile-use=$PROFILE" \
    cargo build --release --locked --bin pgtenant) >"$TMP/build.log" 2>&1 \
    || { cat "$TMP/build.log" >&2; die "optimized build failed"; }
# LLVM warns about each function whose code no longer matches its profile
# (it then gets none): a profile of other code, the gain lost without error.
if grep -qi 'mismatch\|profile data may be out of date' "$TMP/build.log"; then
    grep -i 'mismatch\|out of date' "$TMP/build.log" | head -5 >&2
    die "the profile does not match the code it was built for (above)"
fi
log "done: $USE_DIR/release/pgtenant"
echo "$USE_DIR/release/pgtenant"
