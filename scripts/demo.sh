#!/usr/bin/env bash
# The pgtenant demo, in one command: throwaway PostgreSQL clusters (an app DB,
# a shared tenant DB holding two tenants, a dedicated tenant DB), a schema and
# data shaped after the seeds, tenants registered with encrypted credentials,
# pgtenant in front, and ready-to-paste psql commands. Ctrl-C stops and cleans up.
#
#   scripts/demo.sh            (PGTENANT_DEMO_PORT=6432 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
PORT=${PGTENANT_DEMO_PORT:-6432}

say() { printf '\033[1m%s\033[0m\n' "$*"; }

# ---- what the demo needs
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v psql >/dev/null || need+=(postgresql-client)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || need+=(libclang-dev clang)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing: ${need[*]} — run: sudo apt-get install ${need[*]}" >&2; exit 1
  fi
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }
say "building pgtenant (release)"
cargo build --release --quiet --bin pgtenant
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/pgtenant
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

# ---- throwaway clusters
WORK=$(mktemp -d /tmp/pgtenant-demo.XXXXXX)
AS_PG=()
if [ "$(id -u)" = 0 ]; then AS_PG=(runuser -u postgres --); chown postgres: "$WORK"; fi
PIDS=()
cleanup() {
  trap - EXIT INT TERM
  say "stopping"
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for c in app shared dedicated; do
    [ -d "$WORK/$c" ] && "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$WORK/$c" -m fast -w stop >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

SUPERPW=$(openssl rand -hex 12)
DATAPW=$(openssl rand -hex 12)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_cluster() { # name -> port
  local name=$1 port; port=$(free_port)
  printf '%s' "$SUPERPW" >"$WORK/pw"; [ ${#AS_PG[@]} -gt 0 ] && chown postgres: "$WORK/pw"
  "${AS_PG[@]}" "$PGBIN/initdb" -D "$WORK/$name" -U postgres --auth=scram-sha-256 --pwfile="$WORK/pw" -E UTF8 --locale=C >/dev/null
  "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$WORK/$name" -l "$WORK/$name.log" -w start \
    -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$WORK -c fsync=off" >/dev/null
  echo "$port"
}
say "starting PostgreSQL clusters in $WORK"
APP_PORT=$(start_cluster app)
SHARED_PORT=$(start_cluster shared)
DEDICATED_PORT=$(start_cluster dedicated)
export PGPASSWORD=$SUPERPW
psql_su() { local port=$1; shift; psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres "$@"; }

# ---- schema and data
psql_su "$APP_PORT" -d postgres -c "CREATE DATABASE app"
PGOPTIONS='-c client_min_messages=warning' psql_su "$APP_PORT" -d app -f deploy/sql/app_db.sql >/dev/null
psql_su "$APP_PORT" -d app -f deploy/sql/demo_app.sql >/dev/null
for c in "$SHARED_PORT shared" "$DEDICATED_PORT dedicated"; do
  set -- $c
  psql_su "$1" -d postgres -c "CREATE ROLE pgtenant_data LOGIN PASSWORD '$DATAPW'" -c "CREATE DATABASE $2"
  psql_su "$1" -d "$2" -v data_role=pgtenant_data -f deploy/sql/demo_tenant.sql >/dev/null
done
MAIN=tenant-demo-main
ACME=5f98f4c0-5254-4c61-8633-55ea049c7f18
psql_su "$SHARED_PORT" -d shared <<SQL
INSERT INTO accounts (tenant_id, name, industry) VALUES
  ('$MAIN', 'Northwind Events', 'hospitality'), ('$MAIN', 'Contoso Expo', 'trade shows'),
  ('$ACME', 'Acme Rockets', 'aerospace'), ('$ACME', 'Acme Anvils', 'manufacturing'), ('$ACME', 'Road Runner Inc', 'logistics');
INSERT INTO contacts (tenant_id, account_id, first_name, last_name, email)
  SELECT tenant_id, id, 'Pat', 'Lee', lower(replace(name, ' ', '.')) || '@example.com' FROM accounts;
INSERT INTO opportunities (tenant_id, account_id, name, stage, amount)
  SELECT tenant_id, id, name || ' renewal', 'proposal', 12000 FROM accounts;
INSERT INTO invoices (tenant_id, account_id, number, total) SELECT tenant_id, id, 'INV-' || id, 990 FROM accounts;
INSERT INTO tenant_settings VALUES ('$MAIN', '{"stages": ["lead","proposal","won"]}'), ('$ACME', '{"stages": ["new","quoted","closed"]}');
SQL
psql_su "$DEDICATED_PORT" -d dedicated <<SQL
INSERT INTO accounts (tenant_id, name, industry) VALUES ('initech', 'Initech', 'software'), ('initech', 'Initrode', 'software');
INSERT INTO tenant_settings VALUES ('initech', '{"stages": ["todo","doing","done"]}');
SQL

# ---- users (verifiers made by pgtenant passwd) and tenants (encrypted by the CLI)
SVC_PW=svc-demo-pw; ANN_PW=ann-demo-pw; ADMIN_PW=admin-demo-pw
v() { printf '%s' "$1" | "$BIN" passwd; }
psql_su "$APP_PORT" -d app <<SQL
INSERT INTO users (email, full_name, password_hash, is_service_account) VALUES
  ('svc@demo.test', 'Backend service', '$(v $SVC_PW)', true),
  ('ann@acme.test', 'Ann (Acme only)', '$(v $ANN_PW)', false),
  ('admin@demo.test', 'DBA', '$(v $ADMIN_PW)', true);
INSERT INTO tenant_users (user_id, tenant_id) SELECT id, '$ACME' FROM users WHERE email = 'ann@acme.test';
INSERT INTO audit_log (actor, action, details) VALUES ('demo', 'demo.started', '{}');
SQL
export ENCRYPTION_KEY=$(openssl rand -hex 32)
cat >"$WORK/pgtenant.toml" <<TOML
listen = "127.0.0.1:$PORT"
[app_db]
url = "postgres://postgres:$SUPERPW@127.0.0.1:$APP_PORT/app?sslmode=disable"
[auth]
admin_users = ["admin@demo.test"]
TOML
add() { "$BIN" tenant add --config "$WORK/pgtenant.toml" "$@" >/dev/null; }
add --id "$MAIN" --name "Demo Main" --subdomain demo --url "postgres://pgtenant_data:$DATAPW@127.0.0.1:$SHARED_PORT/shared?sslmode=disable"
add --id "$ACME" --name "Acme" --subdomain acme --url "postgres://pgtenant_data:$DATAPW@127.0.0.1:$SHARED_PORT/shared?sslmode=disable"
add --id initech --name "Initech" --subdomain initech --url "postgres://pgtenant_data:$DATAPW@127.0.0.1:$DEDICATED_PORT/dedicated?sslmode=disable" --pool-size 5
say "registered tenants (passwords stored encrypted):"
"$BIN" tenant list --config "$WORK/pgtenant.toml"
PGPASSWORD=$SUPERPW psql_su "$APP_PORT" -d app -At -c "SELECT id || ': ' || left(data_source_password, 24) || '…' FROM tenants ORDER BY id" | sed 's/^/  stored secret /'

# ---- pgtenant
"$BIN" serve --config "$WORK/pgtenant.toml" 2>"$WORK/pgtenant.log" &
PIDS+=($!)
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
sleep 0.5
unset PGPASSWORD
q() { # user password db sql
  PGPASSWORD=$2 psql -X -At -h 127.0.0.1 -p "$PORT" -U "$1" -d "$3" -c "$4" 2>&1 | sed 's/^/    /' || true
}
say ""
say "Where statements go (through pgtenant on port $PORT):"
echo "  service account, app table → app DB:";            q svc@demo.test $SVC_PW app "SELECT email FROM users ORDER BY id"
echo "  service account, tenant filter → shared DB:";      q svc@demo.test $SVC_PW app "SELECT name FROM accounts WHERE tenant_id = '$MAIN' ORDER BY id"
echo "  service account, dedicated tenant → its own DB:";  q svc@demo.test $SVC_PW app "SELECT name FROM accounts WHERE tenant_id = 'initech' ORDER BY id"
echo "  Ann (allowed only Acme), no filter → Acme's rows only (RLS + tenant setting):"; q ann@acme.test $ANN_PW app "SELECT name FROM accounts ORDER BY id"
echo "  Ann asking for another tenant → refused:";          q ann@acme.test $ANN_PW app "SELECT name FROM accounts WHERE tenant_id = '$MAIN'"
echo "  a join across databases → refused:";                q svc@demo.test $SVC_PW app "SELECT * FROM users u JOIN accounts a ON a.name = u.email"
echo "  database name = subdomain picks the tenant:";      q svc@demo.test $SVC_PW initech "SELECT count(*) FROM accounts"
echo "  pgtenant explain --user ann@acme.test:"
"$BIN" explain --config "$WORK/pgtenant.toml" --user ann@acme.test "SELECT o.name FROM opportunities o JOIN accounts a ON a.id = o.account_id" | sed 's/^/    /'

say ""
say "Try it yourself (passwords: svc $SVC_PW, ann $ANN_PW, admin $ADMIN_PW):"
echo "  psql \"host=127.0.0.1 port=$PORT user=svc@demo.test dbname=app\"        # service account: all tenants"
echo "  psql \"host=127.0.0.1 port=$PORT user=ann@acme.test dbname=app\"        # tenant-scoped user (Acme)"
echo "  psql \"host=127.0.0.1 port=$PORT user=admin@demo.test dbname=pgtenant\" # admin console: SHOW POOLS; SHOW TENANTS;"
echo "  then e.g.:  SET app.tenant_id = 'initech';  SELECT * FROM accounts;  \\d"
echo "  pgtenant log: $WORK/pgtenant.log"
say "Ctrl-C stops everything and removes $WORK."
if [ -n "${PGTENANT_DEMO_EXIT:-}" ]; then exit 0; fi
wait "${PIDS[0]}"
