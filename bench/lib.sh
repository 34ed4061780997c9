# Shared by bench/run.sh and bench/instructions.sh (sourced, not run): the
# throwaway cluster, pgtenant's and PgBouncer's configs, ports.
#
# The caller sets REPO, PG_BIN, PGTENANT, TMP (a fresh directory) and
# defines log() and die() before sourcing.

AS_PG=()
if [[ $(id -u) == 0 ]]; then AS_PG=(runuser -u postgres --); fi

# Starts a server in a session of its own, as a daemon runs. Linux's
# autogroup scheduling (on by default) gives each session one CPU-share
# group: a proxy started straight from this script would share pgbench's
# group and be preempted by it on every response, while PgBouncer (-d
# daemonizes) and PostgreSQL (pg_ctl) each get a group of their own.
# Measured on a 2-core VM: the relay's involuntary context switches went
# from 0.5 to 0.25 per transaction and its CPU per transaction fell ~10%.
# `setsid` execs the server in place (a background job is no group
# leader), so `$!` is still the server's pid. An array, not a function: a
# function run with `&` would be a subshell, and `$!` its pid.
OWN_SESSION=(setsid)

USED_PORTS=" "
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        [[ $USED_PORTS == *" $p "* ]] && continue
        if ! ss -Htan "( sport = :$p or dport = :$p )" | grep -q .; then
            USED_PORTS+="$p "
            echo "$p"
            return
        fi
    done
}

# Waits up to WAIT_LISTEN_SECONDS (default 10) for a listener on the port.
wait_listen() { # port name pid-or-empty logfile
    local i tries=$((${WAIT_LISTEN_SECONDS:-10} * 10))
    for ((i = 0; i < tries; i++)); do
        ss -Htln "sport = :$1" | grep -q . && return 0
        if [[ -n $3 ]] && ! kill -0 "$3" 2>/dev/null; then
            log "$2 exited during startup; log:"; cat "$4" >&2 || true; return 1
        fi
        sleep 0.1
    done
    log "$2 did not listen on port $1 within ${WAIT_LISTEN_SECONDS:-10} s; log:"; cat "$4" >&2 || true
    return 1
}

# Starts a cluster in $TMP/data with one database `bench`: pgbench tables
# at scale $1, plus pgtenant's app-DB objects (tenant registry, a `users`
# table whose bench user has a SCRAM verifier). The app DB and the tenant's
# data source are that same database, so every path reads the same tables.
# Sets PW, PGPORT_, PGPASSWORD, PSQL and PG_STARTED=1.
start_bench_cluster() { # scale
    PW=$(openssl rand -hex 12)
    PGPORT_=$(free_port)
    export PGPASSWORD=$PW
    printf '%s\n' "$PW" >"$TMP/pwfile"
    [[ ${#AS_PG[@]} -gt 0 ]] && chown postgres: "$TMP" "$TMP/pwfile"

    log "initdb in $TMP/data (port $PGPORT_)"
    "${AS_PG[@]}" "$PG_BIN/initdb" -D "$TMP/data" -U postgres --pwfile="$TMP/pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --no-locale >"$TMP/initdb.log" 2>&1 \
        || { cat "$TMP/initdb.log" >&2; die "initdb failed"; }
    "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$TMP/data" -l "$TMP/postgres.log" -w -t 60 start -o \
        "-p $PGPORT_ -c listen_addresses=127.0.0.1 -c unix_socket_directories=$TMP -c fsync=off \
         -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 \
         -c shared_buffers=256MB" >/dev/null || { cat "$TMP/postgres.log" >&2; die "pg_ctl start failed"; }
    PG_STARTED=1

    PSQL=(env PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGPORT_" -U postgres)
    "${PSQL[@]}" -d postgres -c "CREATE DATABASE bench"
    log "pgbench -i -s $1"
    pgbench -i -q -s "$1" -h 127.0.0.1 -p "$PGPORT_" -U postgres bench >"$TMP/init.log" 2>&1 \
        || { cat "$TMP/init.log" >&2; die "pgbench -i failed"; }
    "${PSQL[@]}" -d bench -f "$REPO/deploy/sql/app_db.sql" >/dev/null
    local verifier
    verifier=$(printf '%s' "$PW" | "$PGTENANT" passwd)
    "${PSQL[@]}" -d bench -v verifier="$verifier" <<'SQL'
CREATE TABLE users (email text PRIMARY KEY, password_hash text NOT NULL);
INSERT INTO users VALUES ('bench@example.com', :'verifier');
SQL
    "${PSQL[@]}" -d bench -c "VACUUM ANALYZE"
}

# The body of an EXIT trap: stops the servers in PIDS (and PgBouncer, by
# BOUNCER_PIDFILE when set), the cluster if PG_STARTED, and removes $TMP.
bench_teardown() {
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    if [[ -s ${BOUNCER_PIDFILE:-} ]]; then kill "$(cat "$BOUNCER_PIDFILE")" 2>/dev/null; fi
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    if [[ $PG_STARTED == 1 ]]; then
        "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$TMP/data" -m immediate -w stop >/dev/null 2>&1
    fi
    rm -rf "$TMP"
}

# A pgtenant config in front of the bench cluster.
write_config() { # file port routing-enabled [workers]
    cat >"$1" <<EOF
listen = "127.0.0.1:$2"
${4:+workers = $4}
[app_db]
url = "postgres://postgres:$PW@127.0.0.1:$PGPORT_/bench?sslmode=disable"
[auth]
query = "SELECT password_hash AS password, NULL::text[] AS tenants FROM users WHERE email = \$1"
[pool]
size = 20
[routing]
enabled = $3
EOF
}

# Registers tenant `bench` (the bench database itself) through `config`.
add_bench_tenant() { # config
    "$PGTENANT" tenant add --config "$1" --id bench --name Bench --subdomain bench \
        --url "postgres://postgres:$PW@127.0.0.1:$PGPORT_/bench?sslmode=disable" >"$TMP/tenant-add.log" 2>&1 \
        || { cat "$TMP/tenant-add.log" >&2; die "pgtenant tenant add failed"; }
}

# Sets BOUNCER (empty when PgBouncer is not installed), BOUNCER_VERSION and
# BOUNCER_PREPARED (1 from 1.21, which has max_prepared_statements).
find_pgbouncer() {
    BOUNCER=$(command -v pgbouncer || true)
    [[ -z $BOUNCER && -x /usr/sbin/pgbouncer ]] && BOUNCER=/usr/sbin/pgbouncer
    BOUNCER_VERSION=""
    BOUNCER_PREPARED=0
    [[ -n $BOUNCER ]] || return 0
    BOUNCER_VERSION=$("$BOUNCER" --version 2>/dev/null | awk 'NR==1{print $2}')
    if [[ $(printf '%s\n1.21.0\n' "$BOUNCER_VERSION" | sort -V | head -1) == 1.21.0 ]]; then
        BOUNCER_PREPARED=1
    fi
}

# $TMP/pgbouncer.ini: transaction mode, pool 20, in front of the bench cluster.
write_pgbouncer_ini() { # port [pidfile]
    printf '"postgres" "%s"\n' "$PW" >"$TMP/userlist.txt"
    cat >"$TMP/pgbouncer.ini" <<EOF
[databases]
bench = host=127.0.0.1 port=$PGPORT_ dbname=bench user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $1
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $TMP/userlist.txt
pool_mode = transaction
default_pool_size = 20
max_client_conn = 200
logfile = $TMP/pgbouncer.log
log_connections = 0
log_disconnections = 0
EOF
    [[ -n ${2:-} ]] && echo "pidfile = $2" >>"$TMP/pgbouncer.ini"
    [[ $BOUNCER_PREPARED == 1 ]] && echo "max_prepared_statements = 100" >>"$TMP/pgbouncer.ini"
    [[ ${#AS_PG[@]} -gt 0 ]] && chown postgres: "$TMP/userlist.txt" "$TMP/pgbouncer.ini"
    return 0
}
