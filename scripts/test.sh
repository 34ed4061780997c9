#!/usr/bin/env bash
# The test command: installs what the tests need (when run as root on
# Debian/Ubuntu), then runs formatting, lint and the whole test suite against
# real PostgreSQL clusters started by the tests themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v pg_config >/dev/null || need_pkgs+=(postgresql postgresql-contrib libpq-dev)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_pkgs+=(postgresql)
command -v psql >/dev/null || need_pkgs+=(postgresql-client)
command -v pgbench >/dev/null || need_pkgs+=(postgresql-contrib)
[ -e /usr/lib/llvm-14/lib/libclang.so ] || ls /usr/lib/llvm-*/lib/libclang*.so >/dev/null 2>&1 || need_pkgs+=(libclang-dev clang)
command -v openssl >/dev/null || need_pkgs+=(openssl)
command -v node >/dev/null || need_pkgs+=(nodejs npm)
# The admin tests run Debian's PgBouncer exporter against the console and read
# the deploy manifests with the system Python's PyYAML.
[ -x /usr/bin/prometheus-pgbouncer-exporter ] || need_pkgs+=(prometheus-pgbouncer-exporter)
/usr/bin/python3 -c 'import yaml' 2>/dev/null || need_pkgs+=(python3-yaml)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing: ${need_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "missing packages: ${need_pkgs[*]} — install them (apt-get install ${need_pkgs[*]}) and re-run" >&2
    exit 1
  fi
fi
# Driver tests (psycopg 3, node-postgres) install their clients on demand.
python3 -c 'import psycopg' 2>/dev/null || pip install -q 'psycopg[binary]>=3.1' || true
[ -d tests/node/node_modules/pg ] || (cd tests/node && npm install --silent --no-audit --no-fund) || true

cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --no-fail-fast -- --test-threads=2 2>&1
