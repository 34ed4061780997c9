//! Table-driven routing tests over the seed schema.

use std::collections::HashMap;
use std::sync::Arc;

use crate::router::{
    analyze, decide, explain, Analysis, ParseCache, ResolvedBy, RouteDecision, RouteError,
    RouterConfig, SessionEffect, SessionRouting, TableClass, TableRef, Target, TenantDirectory,
    TenantPlacement, TenantValue, TxnControl,
};

struct Dir(HashMap<&'static str, TenantPlacement>);

fn dir() -> Dir {
    let p = |ds: &str, shared: bool, active: bool| TenantPlacement {
        data_source: ds.into(),
        shared,
        active,
    };
    Dir(HashMap::from([
        ("acme", p("shared1", true, true)),
        ("globex", p("shared1", true, true)),
        ("initech", p("dedicated1", false, true)),
        ("hooli", p("dedicated2", false, false)),
        ("tenant-demo-main", p("dedicated3", false, true)),
        (
            "7d8c1b2e-4f6a-4c1e-9b7d-2a5e8f3c6d10",
            p("shared2", true, true),
        ),
    ]))
}

impl TenantDirectory for Dir {
    fn tenant(&self, id: &str) -> Option<TenantPlacement> {
        self.0.get(id).cloned()
    }
}

/// Session contexts used by the table.
#[derive(Clone, Copy, Debug)]
enum Ctx {
    Anon,
    Acme,
    Globex,
    Initech,
    Hooli,
    OnlyAcme,
    AcmeGlobexUser,
    AcmeSessionGlobexUser,
    StartupAcme,
    DbGlobex,
    /// A failed request left the session tenant unknown; acme is still the
    /// startup tenant, which must not stand in for it.
    UnknownStartupAcme,
    Params(&'static [(u16, &'static str)]),
}

fn session_of(ctx: Ctx, allowed: &[String]) -> SessionRouting<'_> {
    let mut s = SessionRouting::default();
    match ctx {
        Ctx::Anon | Ctx::Params(_) => {}
        Ctx::Acme => s.session_tenant = Some("acme"),
        Ctx::Globex => s.session_tenant = Some("globex"),
        Ctx::Initech => s.session_tenant = Some("initech"),
        Ctx::Hooli => s.session_tenant = Some("hooli"),
        Ctx::OnlyAcme | Ctx::AcmeGlobexUser => s.allowed_tenants = Some(allowed),
        Ctx::AcmeSessionGlobexUser => {
            s.session_tenant = Some("acme");
            s.allowed_tenants = Some(allowed);
        }
        Ctx::StartupAcme => s.startup_tenant = Some("acme"),
        Ctx::UnknownStartupAcme => {
            s.session_tenant_unknown = true;
            s.startup_tenant = Some("acme");
        }
        Ctx::DbGlobex => s.database_tenant = Some("globex"),
    }
    s
}

fn allowed_of(ctx: Ctx) -> Vec<String> {
    match ctx {
        Ctx::OnlyAcme => vec!["acme".into()],
        Ctx::AcmeGlobexUser => vec!["acme".into(), "globex".into()],
        Ctx::AcmeSessionGlobexUser => vec!["globex".into()],
        _ => vec![],
    }
}

fn route_with(analysis: &Analysis, ctx: Ctx) -> Result<RouteDecision, RouteError> {
    let allowed = allowed_of(ctx);
    let session = session_of(ctx, &allowed);
    let params: &[(u16, &str)] = match ctx {
        Ctx::Params(p) => p,
        _ => &[],
    };
    let lookup = |n: u16| {
        params
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.to_string())
    };
    decide(analysis, &session, &lookup, &dir())
}

fn outcome(r: Result<RouteDecision, RouteError>) -> String {
    match r {
        Err(e) => format!("err {}", e.sqlstate),
        Ok(d) => match (&d.target, &d.tenant) {
            (Target::App, None) => "app".into(),
            (Target::Tenant { tenant_id, .. }, Some((t, by))) => {
                assert_eq!(tenant_id, t);
                let by = match by {
                    ResolvedBy::Hint => "hint",
                    ResolvedBy::Statement => "stmt",
                    ResolvedBy::Session => "session",
                    ResolvedBy::StartupParameter => "startup",
                    ResolvedBy::DatabaseName => "db",
                    ResolvedBy::OnlyAllowedTenant => "only",
                };
                format!("{t}/{by}")
            }
            (Target::Current, None) => "current".into(),
            other => panic!("unexpected decision {other:?}"),
        },
    }
}

use Ctx::*;

const CASES: &[(&str, Ctx, &str)] = &[
    // Plain reads and table-less statements.
    ("SELECT * FROM accounts WHERE tenant_id = 'acme'", Anon, "acme/stmt"),
    ("SELECT * FROM accounts", Anon, "err 55000"),
    ("SELECT * FROM accounts", Acme, "acme/session"),
    ("SELECT * FROM users", Anon, "app"),
    ("SELECT * FROM users", Acme, "app"),
    ("SELECT 1", Anon, "app"),
    ("SELECT 1", Acme, "acme/session"),
    ("SELECT 1", Initech, "initech/session"),
    ("SHOW search_path", Anon, "app"),
    ("SHOW app.tenant_id", Acme, "acme/session"),
    ("SET search_path = public", Acme, "acme/session"),
    ("BEGIN", Anon, "app"),
    ("COMMIT", Acme, "acme/session"),
    ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE", Globex, "globex/session"),
    ("SAVEPOINT s1", Acme, "acme/session"),
    ("LISTEN events_channel", Anon, "app"),
    ("SELECT * FROM pg_class", Anon, "app"),
    ("SELECT * FROM pg_class", Acme, "acme/session"),
    ("SELECT * FROM pg_stat_activity", Initech, "initech/session"),
    ("SELECT * FROM information_schema.tables", Anon, "app"),
    ("SELECT * FROM pg_catalog.pg_tables t JOIN accounts a ON true", Acme, "acme/session"),
    ("SELECT * FROM users u JOIN pg_roles r ON true", Anon, "app"),
    ("SELECT * FROM generate_series(1, 3)", Anon, "app"),
    ("SELECT nextval('accounts_id_seq')", Anon, "app"),
    ("SELEC 1", Anon, "err 42601"),
    // Cross-database statements.
    ("SELECT * FROM accounts a JOIN users u ON u.id = a.owner_id", Acme, "err 0A000"),
    ("SELECT * FROM users WHERE id IN (SELECT owner_id FROM accounts)", Acme, "err 0A000"),
    ("SELECT * FROM \"Event Dates\" ed JOIN users u ON true", Acme, "err 0A000"),
    ("SELECT CASE WHEN x THEN (SELECT 1 FROM users) END FROM leads", Acme, "err 0A000"),
    // Names: views, ONLY, quoting, schemas.
    ("SELECT * FROM active_accounts_view WHERE tenant_id = 'acme'", Anon, "acme/stmt"),
    ("SELECT * FROM ONLY accounts WHERE tenant_id = 'acme'", Anon, "acme/stmt"),
    ("SELECT * FROM \"Event Dates\" WHERE tenant_id = 'globex'", Anon, "globex/stmt"),
    ("SELECT * FROM \"Users\"", Anon, "err 55000"),
    ("SELECT * FROM public.users", Anon, "app"),
    ("SELECT * FROM crm.users", Anon, "err 55000"),
    ("SELECT * FROM public.accounts WHERE tenant_id = 'acme'", Anon, "acme/stmt"),
    ("SELECT * FROM tenant_settings", Acme, "acme/session"),
    ("SELECT * FROM tenant_roles tr JOIN roles r ON r.id = tr.role_id", Anon, "app"),
    ("SELECT * FROM permissions, LATERAL (SELECT * FROM roles) r", Anon, "app"),
    // Subqueries.
    ("SELECT * FROM (SELECT * FROM accounts) s WHERE s.tenant_id = 'acme'", Anon, "acme/stmt"),
    ("SELECT * FROM accounts WHERE id IN (SELECT account_id FROM contacts WHERE tenant_id = 'acme')", Anon, "err 55000"),
    ("SELECT * FROM accounts WHERE id IN (SELECT account_id FROM contacts WHERE tenant_id = 'acme')", Acme, "acme/session"),
    ("SELECT * FROM accounts WHERE id IN (SELECT account_id FROM contacts WHERE tenant_id = 'acme')", Globex, "err 42501"),
    ("SELECT * FROM tenants WHERE id IN (SELECT tenant_id FROM tenant_users WHERE user_id = 1)", Anon, "app"),
    ("SELECT (SELECT count(*) FROM contacts) AS n", Acme, "acme/session"),
    ("SELECT EXISTS (SELECT 1 FROM audit_log)", Anon, "app"),
    ("SELECT * FROM notes n WHERE EXISTS (SELECT 1 FROM tasks t WHERE t.id = n.task_id)", Initech, "initech/session"),
    ("SELECT count(*) FILTER (WHERE id > 1) OVER (PARTITION BY x) FROM quotes", Initech, "initech/session"),
    ("SELECT * FROM accounts WHERE tenant_id = 'acme' AND id IN (SELECT account_id FROM contacts WHERE tenant_id = 'acme')", Anon, "acme/stmt"),
    ("SELECT * FROM accounts WHERE tenant_id = 'acme' AND id IN (SELECT account_id FROM contacts WHERE tenant_id = 'globex')", Anon, "err 0A000"),
    // CTEs.
    ("WITH a AS (SELECT * FROM accounts WHERE tenant_id = 'acme') SELECT * FROM a", Anon, "err 55000"),
    ("WITH a AS (SELECT * FROM accounts WHERE tenant_id = 'acme') SELECT * FROM a", Acme, "acme/session"),
    ("WITH users AS (SELECT * FROM accounts) SELECT * FROM users", Acme, "acme/session"),
    ("WITH accounts AS (SELECT * FROM accounts) SELECT * FROM accounts", Acme, "acme/session"),
    ("WITH accounts AS (SELECT * FROM accounts) SELECT * FROM accounts", Anon, "err 55000"),
    ("WITH users AS (SELECT * FROM users) SELECT * FROM users", Anon, "app"),
    ("WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 5) SELECT * FROM t", Anon, "app"),
    ("WITH a AS (SELECT 1), b AS (SELECT * FROM a) SELECT * FROM b", Anon, "app"),
    ("WITH b AS (SELECT * FROM a), a AS (SELECT 1) SELECT * FROM b", Acme, "acme/session"),
    ("WITH x AS (DELETE FROM accounts RETURNING *) INSERT INTO audit_log SELECT * FROM x", Acme, "err 0A000"),
    ("WITH x AS (DELETE FROM accounts WHERE tenant_id = 'acme' RETURNING *) INSERT INTO leads SELECT * FROM x", Acme, "acme/session"),
    ("WITH x AS (UPDATE users SET name = 'a' RETURNING id) SELECT * FROM x", Anon, "app"),
    ("SELECT * FROM (WITH q AS (SELECT * FROM quotes) SELECT * FROM q) s", Initech, "initech/session"),
    // COPY.
    ("COPY accounts FROM STDIN", Acme, "acme/session"),
    ("COPY accounts FROM STDIN", Anon, "err 55000"),
    ("COPY accounts (id, name) FROM STDIN WITH (FORMAT csv)", Initech, "initech/session"),
    ("COPY (SELECT * FROM contacts WHERE tenant_id = 'globex') TO STDOUT", Anon, "globex/stmt"),
    ("COPY users TO STDOUT", Anon, "app"),
    // INSERT.
    ("INSERT INTO accounts (tenant_id, name) VALUES ('acme', 'x') ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name", Anon, "acme/stmt"),
    ("INSERT INTO accounts (tenant_id, name) VALUES ('acme', 'x') ON CONFLICT DO NOTHING", Anon, "acme/stmt"),
    ("INSERT INTO accounts (tenant_id, name) VALUES ('acme', 'x'), ('acme', 'y')", Anon, "acme/stmt"),
    ("INSERT INTO accounts (tenant_id, name) VALUES ('acme', 'x'), ('globex', 'y')", Anon, "err 0A000"),
    ("INSERT INTO accounts (name) VALUES ('x')", Anon, "err 55000"),
    ("INSERT INTO accounts (name) VALUES ('x')", Acme, "acme/session"),
    ("INSERT INTO accounts (tenant_id, name) SELECT tenant_id, name FROM leads", Acme, "acme/session"),
    ("INSERT INTO accounts (tenant_id, name) SELECT tenant_id, name FROM leads", Anon, "err 55000"),
    ("INSERT INTO accounts (tenant_id, name) VALUES ($1, $2)", Params(&[(1, "acme"), (2, "x")]), "acme/stmt"),
    ("INSERT INTO accounts (tenant_id, name) VALUES (DEFAULT, 'x')", Acme, "acme/session"),
    ("INSERT INTO accounts (tenant_id, name) VALUES ('acme', 'x')", Globex, "err 42501"),
    ("INSERT INTO audit_log (tenant_id, action) VALUES ('acme', 'login')", Anon, "app"),
    ("INSERT INTO contact_accounts (tenant_id, contact_id, account_id) VALUES ('globex', 1, 2) RETURNING *", Anon, "globex/stmt"),
    ("INSERT INTO accounts VALUES ('acme', 'x')", Anon, "err 55000"),
    // Locking reads.
    ("SELECT * FROM tasks WHERE tenant_id = 'acme' FOR UPDATE SKIP LOCKED", Anon, "acme/stmt"),
    ("SELECT * FROM tasks t WHERE t.tenant_id = 'acme' ORDER BY id LIMIT 10 FOR UPDATE OF t SKIP LOCKED", Anon, "acme/stmt"),
    ("SELECT * FROM tasks FOR SHARE NOWAIT", Initech, "initech/session"),
    // DO blocks.
    ("DO $$ BEGIN UPDATE accounts SET name = 'x'; END $$", Acme, "acme/session"),
    ("DO $$ BEGIN UPDATE accounts SET name = 'x'; END $$", Anon, "err 55000"),
    ("DO $$ BEGIN INSERT INTO audit_log (action) VALUES ('x'); END $$", Anon, "app"),
    ("DO $$ BEGIN EXECUTE 'DELETE FROM accounts'; END $$", Anon, "err 55000"),
    ("DO $$ BEGIN EXECUTE 'DELETE FROM accounts'; END $$", Initech, "initech/session"),
    ("DO $$ BEGIN EXECUTE 'DELETE FROM accounts'; END $$", Acme, "err 42501"),
    ("/* tenant_id='acme' */ DO $$ BEGIN EXECUTE 'DELETE FROM accounts'; END $$", Anon, "acme/hint"),
    ("DO LANGUAGE plpython3u $$ pass $$", Initech, "initech/session"),
    ("DO LANGUAGE plpython3u $$ pass $$", Anon, "err 55000"),
    ("DO $$ BEGIN PERFORM 1; END $$", Anon, "app"),
    ("DO $$ DECLARE n int; BEGIN SELECT count(*) INTO n FROM accounts; UPDATE users SET x = n; END $$", Acme, "err 0A000"),
    ("DO $$ DECLARE n int; BEGIN n := (SELECT count(*) FROM leads); END $$", Initech, "initech/session"),
    ("DO $$ DECLARE r record; BEGIN FOR r IN SELECT * FROM users LOOP NULL; END LOOP; END $$", Anon, "app"),
    ("DO $$ BEGIN IF EXISTS (SELECT 1 FROM tenants) THEN RAISE NOTICE 'x'; END IF; END $$", Anon, "app"),
    ("DO $$ BEGIN PERFORM set_config('app.tenant_id', 'globex', false); END $$", Anon, "globex/session"),
    // DDL.
    ("CREATE TABLE accounts (id int, tenant_id text)", Initech, "initech/session"),
    ("CREATE TABLE accounts (id int, tenant_id text)", Anon, "err 55000"),
    ("ALTER TABLE users ADD COLUMN x int", Anon, "app"),
    ("ALTER TABLE accounts ADD COLUMN x int", Initech, "initech/session"),
    ("CREATE INDEX ON contacts (email)", Acme, "acme/session"),
    ("CREATE INDEX idx ON users (email)", Anon, "app"),
    ("CREATE UNIQUE INDEX CONCURRENTLY idx ON leads (email) WHERE deleted_at IS NULL", Initech, "initech/session"),
    ("DROP TABLE accounts", Initech, "initech/session"),
    ("DROP TABLE IF EXISTS users CASCADE", Anon, "app"),
    ("DROP TABLE users, accounts", Acme, "err 0A000"),
    ("DROP VIEW IF EXISTS public.audit_log", Anon, "app"),
    ("DROP INDEX idx_accounts_name", Initech, "initech/session"),
    ("DROP TRIGGER trg ON accounts", Initech, "initech/session"),
    ("TRUNCATE accounts, contacts", Initech, "initech/session"),
    ("TRUNCATE audit_log", Anon, "app"),
    ("TRUNCATE users, accounts", Initech, "err 0A000"),
    ("CREATE TABLE notes2 (id int REFERENCES users (id))", Acme, "err 0A000"),
    ("CREATE TABLE notes2 (id int, account_id int REFERENCES accounts (id))", Initech, "initech/session"),
    ("CREATE VIEW v AS SELECT * FROM accounts", Initech, "initech/session"),
    ("CREATE TABLE x AS SELECT * FROM quotes WHERE tenant_id = 'globex'", Anon, "globex/stmt"),
    ("SELECT * INTO quotes_copy FROM quotes WHERE tenant_id = 'globex'", Anon, "globex/stmt"),
    ("ALTER TABLE accounts RENAME TO accounts_old", Initech, "initech/session"),
    ("ALTER TABLE users RENAME COLUMN name TO full_name", Anon, "app"),
    ("COMMENT ON TABLE users IS 'x'", Anon, "app"),
    ("COMMENT ON COLUMN accounts.name IS 'x'", Initech, "initech/session"),
    ("GRANT SELECT ON accounts TO bob", Initech, "initech/session"),
    ("GRANT SELECT ON users TO bob", Anon, "app"),
    ("LOCK TABLE accounts IN SHARE MODE", Initech, "initech/session"),
    ("VACUUM accounts", Initech, "initech/session"),
    ("ANALYZE users", Anon, "app"),
    ("CREATE POLICY p ON accounts USING (tenant_id = current_setting('app.tenant_id'))", Initech, "initech/session"),
    ("ALTER TABLE accounts ENABLE ROW LEVEL SECURITY", Initech, "initech/session"),
    ("CREATE TRIGGER t BEFORE INSERT ON accounts FOR EACH ROW EXECUTE FUNCTION f()", Initech, "initech/session"),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", Anon, "app"),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", Acme, "acme/session"),
    ("CREATE TABLE accounts_2025 PARTITION OF accounts FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')", Initech, "initech/session"),
    ("CREATE SEQUENCE invoice_no_seq", Initech, "initech/session"),
    ("REFRESH MATERIALIZED VIEW sales_summary", Initech, "initech/session"),
    // PREPARE / EXPLAIN / EXECUTE / cursors.
    ("PREPARE p AS SELECT * FROM accounts WHERE tenant_id = $1", Anon, "err 55000"),
    ("PREPARE p AS SELECT * FROM accounts WHERE tenant_id = $1", Acme, "acme/session"),
    ("PREPARE p AS SELECT * FROM accounts WHERE tenant_id = 'acme'", Anon, "acme/stmt"),
    ("PREPARE q AS SELECT * FROM users", Anon, "app"),
    ("EXPLAIN SELECT * FROM accounts WHERE tenant_id = 'acme'", Anon, "acme/stmt"),
    ("EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM accounts", Initech, "initech/session"),
    ("EXPLAIN ANALYZE SELECT * FROM users", Anon, "app"),
    ("EXECUTE p", Anon, "app"),
    ("EXECUTE p", Acme, "acme/session"),
    ("EXECUTE p('acme')", Globex, "globex/session"),
    ("DEALLOCATE p", Anon, "app"),
    ("DECLARE c CURSOR FOR SELECT * FROM leads WHERE tenant_id = 'acme'", Anon, "acme/stmt"),
    ("FETCH 10 FROM c", Acme, "acme/session"),
    ("CALL do_things()", Acme, "acme/session"),
    // Session effects and multi-statement strings.
    ("SET app.tenant_id = 'acme'", Anon, "acme/session"),
    ("SET SESSION app.tenant_id = 'acme'", Anon, "acme/session"),
    ("SET app.tenant_id = 'acme'; SELECT * FROM accounts", Anon, "acme/session"),
    ("SET LOCAL app.tenant_id = 'globex'; SELECT * FROM accounts", Anon, "globex/session"),
    ("SELECT set_config('app.tenant_id', 'acme', false); SELECT * FROM contacts", Anon, "acme/session"),
    ("SELECT set_config('app.tenant_id', 'globex', true)", Anon, "globex/session"),
    ("SELECT set_config('search_path', 'x', false)", Anon, "app"),
    ("RESET app.tenant_id; SELECT * FROM accounts", Acme, "err 55000"),
    ("RESET app.tenant_id", Acme, "app"),
    ("RESET ALL", Acme, "app"),
    ("DISCARD ALL", Acme, "app"),
    ("SET app.tenant_id TO DEFAULT; SELECT 1", Acme, "app"),
    ("SET app.tenant_id = 'globex'", OnlyAcme, "err 42501"),
    ("SET app.tenant_id = 'globex'; SELECT * FROM users", OnlyAcme, "err 42501"),
    ("SET app.tenant_id = 'hooli'; SELECT 1", Anon, "err 08004"),
    ("SET app.tenant_id = 'nope'", Anon, "err 3D000"),
    ("SET app.tenant_id = 'acme'; SELECT * FROM users", Anon, "app"),
    ("SELECT * FROM users; SET app.tenant_id = 'acme'", Anon, "app"),
    ("SELECT * FROM accounts; SELECT * FROM users", Acme, "err 0A000"),
    ("SELECT * FROM users; SELECT * FROM tenants", Anon, "app"),
    ("SELECT * FROM accounts WHERE tenant_id = 'acme'; SELECT * FROM accounts WHERE tenant_id = 'globex'", Anon, "err 0A000"),
    ("SELECT * FROM accounts WHERE tenant_id = 'acme'; SELECT * FROM contacts WHERE tenant_id = 'acme'", Anon, "acme/stmt"),
    ("BEGIN; SET LOCAL app.tenant_id = 'acme'; UPDATE accounts SET name = 'x'; COMMIT", Anon, "acme/session"),
    ("BEGIN; SET LOCAL app.tenant_id = 'acme'; COMMIT; SELECT * FROM accounts", Anon, "err 55000"),
    ("SET app.tenant_id = 'acme'; SELECT * FROM accounts", DbGlobex, "acme/session"),
    ("SET app.tenant_id = 'globex'; SELECT * FROM accounts WHERE tenant_id = 'acme'", Anon, "err 42501"),
    // Comment hints.
    ("/* tenant_id='acme' */ SELECT * FROM accounts", Anon, "acme/hint"),
    ("SELECT * FROM accounts -- tenant_id=globex", Anon, "globex/hint"),
    ("/* tenant_id='acme' */ SELECT * FROM accounts", Globex, "err 42501"),
    ("/* tenant_id='acme' */ SELECT * FROM accounts WHERE tenant_id = 'globex'", Anon, "err 0A000"),
    ("/* tenant_id='acme' */ SELECT * FROM accounts WHERE tenant_id = 'acme'", Anon, "acme/hint"),
    ("/* app=web, tenant_id='initech' */ SELECT * FROM invoices", Anon, "initech/hint"),
    ("/*application:'crm',tenant_id='tenant-demo-main'*/ SELECT * FROM invoices", Anon, "tenant-demo-main/hint"),
    ("/* my_tenant_id='acme' */ SELECT * FROM accounts", Anon, "err 55000"),
    ("SELECT '/* tenant_id=''acme'' */' FROM accounts", Anon, "err 55000"),
    ("/* tenant_id='acme' */ SELECT 1", Anon, "acme/hint"),
    ("/* tenant_id='acme' */ /* tenant_id='globex' */ SELECT * FROM accounts", Anon, "err 0A000"),
    ("/* tenant_id='acme' */ SELECT * FROM users", Anon, "app"),
    ("/* tenant_id='acme' */ SELECT * FROM accounts", OnlyAcme, "acme/hint"),
    ("/* tenant_id='globex' */ SELECT * FROM accounts", OnlyAcme, "err 42501"),
    ("SELECT * FROM accounts; /* tenant_id='acme' */ SELECT * FROM contacts", Anon, "err 55000"),
    // Statement filters.
    ("SELECT * FROM accounts WHERE tenant_id = 42", Anon, "err 3D000"),
    ("SELECT * FROM accounts WHERE tenant_id IN ('acme')", Anon, "acme/stmt"),
    ("SELECT * FROM accounts WHERE tenant_id IN ('acme', 'acme')", Anon, "acme/stmt"),
    ("SELECT * FROM accounts WHERE tenant_id IN ('acme', 'globex')", Anon, "err 0A000"),
    ("SELECT * FROM accounts WHERE tenant_id = 'acme' OR id = 1", Anon, "err 0A000"),
    ("SELECT * FROM accounts WHERE NOT (tenant_id = 'acme')", Anon, "err 0A000"),
    ("SELECT * FROM accounts WHERE tenant_id <> 'acme'", Acme, "err 0A000"),
    ("SELECT * FROM accounts WHERE tenant_id NOT IN ('acme')", Acme, "err 0A000"),
    ("SELECT * FROM accounts a WHERE a.tenant_id = 'acme' AND a.id = 5", Anon, "acme/stmt"),
    ("SELECT * FROM accounts WHERE 'acme' = tenant_id", Anon, "acme/stmt"),
    ("SELECT * FROM accounts WHERE tenant_id = 'acme'::text", Anon, "acme/stmt"),
    ("SELECT * FROM accounts WHERE tenant_id = E'acme'", Anon, "acme/stmt"),
    ("SELECT * FROM accounts WHERE tenant_id = $$acme$$", Anon, "acme/stmt"),
    ("SELECT * FROM accounts WHERE tenant_id = $1", Params(&[(1, "acme")]), "acme/stmt"),
    ("SELECT * FROM accounts WHERE tenant_id = $1", Params(&[(1, "globex")]), "globex/stmt"),
    ("SELECT * FROM accounts WHERE tenant_id = $1", Anon, "err 55000"),
    ("SELECT * FROM accounts WHERE tenant_id = 'acme' AND tenant_id = $1", Params(&[(1, "globex")]), "err 0A000"),
    ("SELECT * FROM accounts WHERE tenant_id = 'acme' AND tenant_id = $1", Params(&[(1, "acme")]), "acme/stmt"),
    ("SELECT * FROM events WHERE tenant_id = $2 AND id = $1", Params(&[(1, "5"), (2, "initech")]), "initech/stmt"),
    ("SELECT * FROM accounts WHERE tenant_id = 'acme' AND (x = 1 OR y = 2)", Anon, "acme/stmt"),
    ("SELECT * FROM accounts WHERE tenant_id = ANY(ARRAY['acme'])", Anon, "acme/stmt"),
    ("SELECT * FROM accounts WHERE tenant_id = ANY($1)", Acme, "err 0A000"),
    ("SELECT * FROM accounts WHERE tenant_id = 'acme' AND tenant_id = 'globex'", Anon, "err 0A000"),
    ("SELECT * FROM accounts WHERE tenant_id = 'acme'", Globex, "err 42501"),
    ("SELECT * FROM accounts WHERE tenant_id = 'acme'", Acme, "acme/stmt"),
    ("SELECT * FROM accounts WHERE tenant_id = 'globex'", OnlyAcme, "err 42501"),
    ("SELECT * FROM accounts WHERE tenant_id = 'hooli'", Anon, "err 08004"),
    ("SELECT * FROM accounts WHERE tenant_id = 'unknown-t'", Anon, "err 3D000"),
    ("SELECT * FROM accounts WHERE tenant_id = 'tenant-demo-main'", Anon, "tenant-demo-main/stmt"),
    ("SELECT * FROM accounts WHERE tenant_id = '7d8c1b2e-4f6a-4c1e-9b7d-2a5e8f3c6d10'", Anon, "7d8c1b2e-4f6a-4c1e-9b7d-2a5e8f3c6d10/stmt"),
    ("SELECT * FROM accounts WHERE tenant_id = 'acme' UNION ALL SELECT * FROM leads WHERE tenant_id = 'acme'", Anon, "acme/stmt"),
    ("SELECT * FROM accounts WHERE tenant_id = 'acme' UNION SELECT * FROM leads WHERE tenant_id = 'globex'", Anon, "err 0A000"),
    ("SELECT * FROM accounts WHERE tenant_id = 'acme' UNION SELECT * FROM leads", Anon, "err 55000"),
    ("UPDATE accounts SET name = 'x' WHERE tenant_id = 'acme'", Anon, "acme/stmt"),
    ("UPDATE accounts SET tenant_id = 'globex' WHERE tenant_id = 'acme'", Anon, "err 0A000"),
    ("UPDATE accounts a SET name = l.name FROM leads l WHERE l.id = a.id AND a.tenant_id = 'globex'", Anon, "globex/stmt"),
    ("DELETE FROM contacts WHERE tenant_id = 'initech' AND id = 3", Anon, "initech/stmt"),
    ("DELETE FROM contacts c USING accounts a WHERE c.account_id = a.id AND a.tenant_id = 'acme'", Anon, "acme/stmt"),
    ("MERGE INTO accounts a USING leads l ON a.id = l.id WHEN MATCHED THEN UPDATE SET name = l.name", Initech, "initech/session"),
    ("MERGE INTO accounts a USING users u ON a.id = u.id WHEN NOT MATCHED THEN DO NOTHING", Initech, "err 0A000"),
    ("SELECT a.name, c.email FROM accounts a JOIN contacts c ON c.account_id = a.id WHERE a.tenant_id = 'acme' AND c.id = 42", Anon, "acme/stmt"),
    ("SELECT * FROM opportunities o JOIN opportunity_line_items li ON li.opportunity_id = o.id WHERE o.tenant_id = 'globex'", Anon, "globex/stmt"),
    ("SELECT * FROM invoices i LEFT JOIN invoice_line_items l ON true LEFT JOIN payments p ON true", Initech, "initech/session"),
    ("SELECT * FROM events e, event_dates d WHERE e.id = d.event_id AND e.tenant_id = $1", Params(&[(1, "acme")]), "acme/stmt"),
    ("SELECT * FROM tenant_users WHERE tenant_id IN ('acme', 'globex')", Anon, "app"),
    // Other session sources.
    ("SELECT * FROM accounts", StartupAcme, "acme/startup"),
    ("SELECT * FROM accounts", DbGlobex, "globex/db"),
    ("SELECT * FROM accounts WHERE tenant_id = 'acme'", DbGlobex, "err 42501"),
    ("SELECT * FROM accounts", OnlyAcme, "acme/only"),
    ("SELECT 1", OnlyAcme, "acme/only"),
    ("SELECT * FROM accounts", AcmeGlobexUser, "err 55000"),
    ("SELECT * FROM accounts WHERE tenant_id = 'globex'", AcmeGlobexUser, "globex/stmt"),
    ("SELECT 1", AcmeSessionGlobexUser, "err 42501"),
    // The session tenant unknown: whatever needs it is refused until a SET or RESET.
    ("SELECT * FROM accounts", UnknownStartupAcme, "err 55000"),
    ("SELECT * FROM accounts WHERE tenant_id = 'acme'", UnknownStartupAcme, "err 55000"),
    ("/* tenant_id='acme' */ SELECT * FROM accounts", UnknownStartupAcme, "err 55000"),
    ("SELECT 1", UnknownStartupAcme, "current"),
    ("ROLLBACK", UnknownStartupAcme, "current"),
    ("/* tenant_id='acme' */ SELECT 1", UnknownStartupAcme, "err 55000"),
    ("SELECT * FROM users", UnknownStartupAcme, "app"),
    ("SET app.tenant_id = 'globex'; SELECT * FROM accounts", UnknownStartupAcme, "globex/session"),
    ("RESET app.tenant_id; SELECT * FROM accounts", UnknownStartupAcme, "acme/startup"),
    ("SET LOCAL app.tenant_id = 'globex'; SELECT * FROM accounts", UnknownStartupAcme, "globex/session"),
    // A ROLLBACK that may undo the string's own SET: what follows is not routed by a guess.
    ("BEGIN; SET app.tenant_id = 'globex'; ROLLBACK; SELECT * FROM accounts", Acme, "err 55000"),
    ("SET app.tenant_id = 'globex'; ROLLBACK; SELECT * FROM accounts", Acme, "err 55000"),
    ("SET app.tenant_id = 'globex'; ROLLBACK", Acme, "current"),
    ("BEGIN; ROLLBACK; SELECT * FROM accounts", Acme, "acme/session"),
    ("SELECT * FROM accounts", Hooli, "err 08004"),
];

#[test]
fn routing_table() {
    let cfg = Arc::new(RouterConfig::default());
    let cache = ParseCache::new(64);
    assert!(CASES.len() >= 150, "only {} cases", CASES.len());
    let mut failures = Vec::new();
    for (sql, ctx, want) in CASES {
        let got = match analyze(sql, &cfg) {
            Ok(a) => outcome(route_with(&a, *ctx)),
            Err(e) => format!("err {}", e.sqlstate),
        };
        if got != *want {
            failures.push(format!("{sql}  [{ctx:?}]\n    want {want}, got {got}"));
        }
        // The cached path (including level-2 templates built from earlier
        // cases with other literals) must agree with a fresh analysis.
        let cached = match cache.analyze(sql, &cfg) {
            Ok(a) => {
                if let Ok(fresh) = analyze(sql, &cfg) {
                    if *a != fresh {
                        failures.push(format!("{sql}  cached analysis differs from fresh"));
                    }
                }
                outcome(route_with(&a, *ctx))
            }
            Err(e) => format!("err {}", e.sqlstate),
        };
        if cached != got {
            failures.push(format!("{sql}  [{ctx:?}] cache gave {cached}, fresh {got}"));
        }
    }
    assert!(failures.is_empty(), "{}\n", failures.join("\n"));
}

fn t(name: &str, class: TableClass) -> TableRef {
    TableRef {
        schema: None,
        name: name.into(),
        class,
    }
}

#[test]
fn rls_required_only_for_session_sources_on_shared_sources() {
    let cfg = RouterConfig::default();
    let a = analyze(
        "SELECT * FROM accounts a JOIN contacts c ON true JOIN pg_class p ON true",
        &cfg,
    )
    .unwrap();
    let d = route_with(&a, Acme).unwrap();
    assert_eq!(
        d.rls_required,
        vec![
            t("accounts", TableClass::Tenant),
            t("contacts", TableClass::Tenant)
        ]
    );
    assert!(route_with(&a, Initech).unwrap().rls_required.is_empty());
    let d = route_with(&a, OnlyAcme).unwrap();
    assert_eq!(d.rls_required.len(), 2);
    assert_eq!(route_with(&a, StartupAcme).unwrap().rls_required.len(), 2);

    let f = analyze("SELECT * FROM accounts WHERE tenant_id = 'acme'", &cfg).unwrap();
    assert!(route_with(&f, Anon).unwrap().rls_required.is_empty());
    let h = analyze("/* tenant_id='acme' */ SELECT * FROM accounts", &cfg).unwrap();
    assert!(route_with(&h, Anon).unwrap().rls_required.is_empty());
    let s = analyze("SET app.tenant_id = 'globex'; SELECT * FROM leads", &cfg).unwrap();
    assert_eq!(
        route_with(&s, Anon).unwrap().rls_required,
        vec![t("leads", TableClass::Tenant)]
    );
    let one = analyze("SELECT 1", &cfg).unwrap();
    assert!(route_with(&one, Acme).unwrap().rls_required.is_empty());
}

#[test]
fn one_analysis_routes_by_bind_parameters() {
    let cfg = RouterConfig::default();
    let a = analyze(
        "SELECT * FROM invoices WHERE tenant_id = $1 AND id = $2",
        &cfg,
    )
    .unwrap();
    assert_eq!(a.statements[0].filter_tenant, Some(TenantValue::Param(1)));
    let d1 = route_with(&a, Params(&[(1, "acme"), (2, "7")])).unwrap();
    let d2 = route_with(&a, Params(&[(1, "initech"), (2, "7")])).unwrap();
    assert_eq!(
        d1.target,
        Target::Tenant {
            tenant_id: "acme".into(),
            data_source: "shared1".into()
        }
    );
    assert_eq!(
        d2.target,
        Target::Tenant {
            tenant_id: "initech".into(),
            data_source: "dedicated1".into()
        }
    );
    assert_eq!(d1.tenant, Some(("acme".into(), ResolvedBy::Statement)));
}

#[test]
fn error_messages_name_tables_and_hint() {
    let cfg = RouterConfig::default();
    let a = analyze("SELECT * FROM accounts a JOIN users u ON true", &cfg).unwrap();
    let e = route_with(&a, Acme).unwrap_err();
    assert_eq!(e.sqlstate, "0A000");
    assert!(
        e.message.contains("users") && e.message.contains("accounts"),
        "{e}"
    );
    assert!(e.hint.as_deref().unwrap().contains("split"));

    let a = analyze("SELECT * FROM \"Event Dates\", crm.leads", &cfg).unwrap();
    let e = route_with(&a, Anon).unwrap_err();
    assert_eq!(e.sqlstate, "55000");
    assert!(
        e.message.contains("\"Event Dates\"") && e.message.contains("crm.leads"),
        "{e}"
    );
    let hint = e.hint.unwrap();
    for needle in [
        "/* tenant_id=",
        "tenant_id = '<id>'",
        "SET app.tenant_id",
        "options=-c",
        "subdomain",
        "exactly one tenant",
    ] {
        assert!(hint.contains(needle), "hint lacks {needle}: {hint}");
    }
    let a = analyze("SELECT * FROM accounts WHERE tenant_id = 'hooli'", &cfg).unwrap();
    assert_eq!(
        route_with(&a, Anon).unwrap_err().message,
        "tenant \"hooli\" is suspended"
    );
    let a = analyze("SELECT * FROM accounts WHERE tenant_id = 'zz'", &cfg).unwrap();
    assert_eq!(
        route_with(&a, Anon).unwrap_err().message,
        "tenant \"zz\" is not known"
    );
}

#[test]
fn analysis_details() {
    let cfg = RouterConfig::default();
    let a = analyze(
        "BEGIN; SET LOCAL app.tenant_id = 'acme'; SELECT set_config('app.tenant_id', $1, false); RESET app.tenant_id; DISCARD ALL; SET work_mem = '4MB'; SAVEPOINT a; ROLLBACK TO SAVEPOINT a; RELEASE a; END; ABORT; PREPARE TRANSACTION 'g'; COMMIT PREPARED 'g'; DEALLOCATE \"A1\"; DEALLOCATE PREPARE a2; DEALLOCATE ALL",
        &cfg,
    )
    .unwrap();
    let s = &a.statements;
    assert_eq!(s[0].txn, TxnControl::Begin);
    assert_eq!(
        s[1].effects,
        vec![SessionEffect::SetTenant {
            value: TenantValue::Literal("acme".into()),
            local: true
        }]
    );
    assert_eq!(
        s[2].effects,
        vec![SessionEffect::SetTenant {
            value: TenantValue::Param(1),
            local: false
        }]
    );
    assert_eq!(s[3].effects, vec![SessionEffect::ResetTenant]);
    assert_eq!(
        s[4].effects,
        vec![SessionEffect::ResetAll, SessionEffect::Deallocate(None)]
    );
    assert_eq!(s[5].effects, vec![SessionEffect::Other]);
    assert_eq!(s[6].txn, TxnControl::Savepoint("a".into()));
    assert_eq!(s[7].txn, TxnControl::RollbackToSavepoint("a".into()));
    assert_eq!(s[8].txn, TxnControl::ReleaseSavepoint("a".into()));
    assert_eq!(s[9].txn, TxnControl::Commit);
    assert_eq!(s[10].txn, TxnControl::Rollback);
    assert_eq!(s[11].txn, TxnControl::PrepareTransaction("g".into()));
    assert_eq!(s[12].txn, TxnControl::CommitPrepared("g".into()));
    // Quoted names keep their case, others fold, as in PostgreSQL.
    assert_eq!(
        s[13].effects,
        vec![SessionEffect::Deallocate(Some("A1".into()))]
    );
    assert_eq!(
        s[14].effects,
        vec![SessionEffect::Deallocate(Some("a2".into()))]
    );
    assert_eq!(s[15].effects, vec![SessionEffect::Deallocate(None)]);

    let a = analyze("EXECUTE p(1)", &cfg).unwrap();
    assert!(a.statements[0].unknown_tables && !a.statements[0].assume_tenant_tables);
    let a = analyze("DO $$ BEGIN EXECUTE 'x'; END $$", &cfg).unwrap();
    assert!(a.statements[0].assume_tenant_tables);

    let a = analyze("SELECT * FROM \"Event Dates\" JOIN crm.Leads ON true", &cfg).unwrap();
    assert_eq!(a.statements[0].tables[0].name, "Event Dates");
    assert_eq!(a.statements[0].tables[1].schema.as_deref(), Some("crm"));
    assert_eq!(a.statements[0].tables[1].name, "leads");

    // set_config with a computed setting name cannot be routed safely.
    let e = analyze("SELECT set_config(current_user, 'x', false)", &cfg).unwrap_err();
    assert_eq!(e.sqlstate, "0A000");
}

/// pg_query's own `tables()` drops every reference whose name equals a CTE
/// name anywhere in the statement, so it misses the real table read inside
/// `WITH accounts AS (SELECT * FROM accounts)`. That is why the router walks
/// the tree with proper CTE scoping instead.
#[test]
fn pg_query_tables_vs_scoped_walk() {
    let sql = "WITH accounts AS (SELECT * FROM accounts) SELECT * FROM accounts";
    let pq = pg_query::parse(sql, 0).unwrap();
    assert!(
        pq.tables().is_empty(),
        "pg_query now reports {:?}",
        pq.tables()
    );
    let a = analyze(sql, &RouterConfig::default()).unwrap();
    assert_eq!(
        a.statements[0].tables,
        vec![t("accounts", TableClass::Tenant)]
    );

    let plain = "WITH c AS (SELECT * FROM contacts) SELECT * FROM c";
    assert_eq!(
        pg_query::parse(plain, 0).unwrap().tables(),
        vec!["contacts"]
    );
}

#[test]
fn custom_config() {
    let cfg = RouterConfig {
        app_tables: vec!["auth.*".into(), "app_*".into(), "public.orgs".into()],
        tenant_column: "org_id".into(),
        tenant_setting: "myapp.org".into(),
        cache_capacity: 16,
    };
    let d = |sql: &str, ctx: Ctx| outcome(route_with(&analyze(sql, &cfg).unwrap(), ctx));
    assert_eq!(d("SELECT * FROM auth.sessions", Anon), "app");
    assert_eq!(d("SELECT * FROM app_flags", Anon), "app");
    assert_eq!(d("SELECT * FROM orgs", Anon), "app");
    assert_eq!(
        d("SELECT * FROM users WHERE org_id = 'acme'", Anon),
        "acme/stmt"
    );
    assert_eq!(
        d("SELECT * FROM users WHERE tenant_id = 'acme'", Anon),
        "err 55000"
    );
    assert_eq!(
        d("/* org_id='globex' */ SELECT * FROM users", Anon),
        "globex/hint"
    );
    assert_eq!(
        d("SET myapp.org = 'initech'; SELECT * FROM users", Anon),
        "initech/session"
    );
    assert_eq!(
        d("SET app.tenant_id = 'initech'; SELECT * FROM users", Anon),
        "err 55000"
    );
}

#[test]
fn level2_hit_substitutes_tenant_literal() {
    let cfg = Arc::new(RouterConfig::default());
    let cache = ParseCache::new(16);
    let a1 = cache
        .analyze(
            "SELECT * FROM accounts WHERE tenant_id = 'acme' AND id = 1",
            &cfg,
        )
        .unwrap();
    // The shape's second parse builds its template (the first only marks
    // the shape as seen: a one-off statement pays for one parse, no more).
    cache
        .analyze(
            "SELECT * FROM accounts WHERE tenant_id = 'warm' AND id = 0",
            &cfg,
        )
        .unwrap();
    assert_eq!((cache.stats().misses, cache.stats().l2_hits), (2, 0));
    let a2 = cache
        .analyze(
            "SELECT * FROM accounts WHERE tenant_id = 'globex' AND id = 2",
            &cfg,
        )
        .unwrap();
    assert_eq!(outcome(route_with(&a1, Anon)), "acme/stmt");
    assert_eq!(outcome(route_with(&a2, Anon)), "globex/stmt");
    let st = cache.stats();
    assert_eq!((st.misses, st.l2_hits, st.l1_hits, st.hits), (2, 1, 0, 1));
    // The instantiated template equals a fresh analysis.
    let fresh = analyze(
        "SELECT * FROM accounts WHERE tenant_id = 'globex' AND id = 2",
        &cfg,
    )
    .unwrap();
    assert_eq!(*a2, fresh);
    // Level-2 hits are not copied into level 1 (see ParseCache::analyze),
    // so the same text is served from its template again.
    let again = cache
        .analyze(
            "SELECT * FROM accounts WHERE tenant_id = 'globex' AND id = 2",
            &cfg,
        )
        .unwrap();
    assert_eq!(*again, fresh);
    let st = cache.stats();
    assert_eq!((st.l1_hits, st.l2_hits, st.hits, st.size), (0, 2, 2, 3));
    let first = cache
        .analyze(
            "SELECT * FROM accounts WHERE tenant_id = 'acme' AND id = 1",
            &cfg,
        )
        .unwrap();
    assert!(Arc::ptr_eq(&a1, &first));
    assert_eq!(cache.stats().l1_hits, 1);

    // Quoting forms and INSERT rows go through the same substitution.
    for sql in [
        "SELECT * FROM accounts WHERE tenant_id = 'it''s' AND id = 3",
        "SELECT * FROM accounts WHERE tenant_id = E'x' AND id = 3",
        "SELECT * FROM accounts WHERE tenant_id = $q$initech$q$ AND id = 3",
        "SELECT * FROM accounts WHERE tenant_id = 0042 AND id = 3",
        "SELECT * FROM accounts WHERE tenant_id = -5 AND id = 3",
        "SELECT * FROM accounts WHERE tenant_id = 'a'\n'b' AND id = 3",
    ] {
        let c = cache.analyze(sql, &cfg).unwrap();
        assert_eq!(*c, analyze(sql, &cfg).unwrap(), "{sql}");
    }
    for v in ["acme", "globex", "initech"] {
        let sql =
            format!("INSERT INTO leads (tenant_id, name) VALUES ('{v}', 'n1'), ('{v}', 'n2')");
        let c = cache.analyze(&sql, &cfg).unwrap();
        assert_eq!(outcome(route_with(&c, Anon)), format!("{v}/stmt"));
    }
}

#[test]
fn level2_never_templates_structural_literals() {
    let cfg = Arc::new(RouterConfig::default());
    let cache = ParseCache::new(16);
    let pairs = [
        ("SET app.tenant_id = 'acme'", "SET app.tenant_id = 'globex'"),
        (
            "SELECT set_config('search_path', 'x', false)",
            "SELECT set_config('app.tenant_id', 'acme', false)",
        ),
        (
            "DO $$ BEGIN DELETE FROM users; END $$",
            "DO $$ BEGIN DELETE FROM accounts; END $$",
        ),
        (
            "/* tenant_id='acme' */ SELECT * FROM accounts",
            "/* tenant_id='globex' */ SELECT * FROM accounts",
        ),
        // Two-phase-commit gids are literals carried by the analysis.
        ("PREPARE TRANSACTION 'g1'", "PREPARE TRANSACTION 'g2'"),
        ("COMMIT PREPARED 'g1'", "COMMIT PREPARED 'g2'"),
        ("ROLLBACK PREPARED 'g1'", "ROLLBACK PREPARED 'g2'"),
    ];
    for (a, b) in pairs {
        let ca = cache.analyze(a, &cfg).unwrap();
        let cb = cache.analyze(b, &cfg).unwrap();
        assert_eq!(*ca, analyze(a, &cfg).unwrap());
        assert_eq!(*cb, analyze(b, &cfg).unwrap());
    }
    assert_eq!(cache.stats().l2_hits, 0);
    assert_eq!(cache.stats().misses, 14);
}

#[test]
fn cache_is_bounded_shared_and_config_aware() {
    fn assert_sync<T: Sync + Send>() {}
    assert_sync::<ParseCache>();
    let cfg = Arc::new(RouterConfig::default());
    let cache = ParseCache::new(4);
    for i in 0..10 {
        cache
            .analyze(
                &format!("SELECT * FROM t{i} WHERE tenant_id = 'acme'"),
                &cfg,
            )
            .unwrap();
    }
    assert!(cache.stats().size <= 8);
    assert!(cache.analyze("SELEC", &cfg).is_err());

    let other = Arc::new(RouterConfig {
        app_tables: vec!["accounts".into()],
        ..RouterConfig::default()
    });
    let a = cache.analyze("SELECT * FROM accounts", &cfg).unwrap();
    assert_eq!(a.statements[0].tables[0].class, TableClass::Tenant);
    let b = cache.analyze("SELECT * FROM accounts", &other).unwrap();
    assert_eq!(b.statements[0].tables[0].class, TableClass::App);

    let shared = Arc::new(ParseCache::new(64));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let c = Arc::clone(&shared);
            std::thread::spawn(move || {
                let cfg = Arc::new(RouterConfig::default());
                for j in 0..50 {
                    let sql = format!("SELECT * FROM leads WHERE tenant_id = 't{i}' AND id = {j}");
                    let a = c.analyze(&sql, &cfg).unwrap();
                    assert_eq!(
                        a.statements[0].filter_tenant,
                        Some(TenantValue::Literal(format!("t{i}")))
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(shared.stats().hits + shared.stats().misses, 200);
}

#[test]
fn explain_output() {
    let cfg = RouterConfig::default();
    let text = explain(
        "SELECT * FROM accounts a JOIN contacts c ON true",
        None,
        Some("acme"),
        &cfg,
        &dir(),
    );
    assert!(text.contains("accounts (tenant)"), "{text}");
    assert!(
        text.contains("tenant: acme (from the session setting)"),
        "{text}"
    );
    assert!(
        text.contains("route: tenant acme on data source shared1"),
        "{text}"
    );
    assert!(
        text.contains("row-level security must be verified on: accounts, contacts"),
        "{text}"
    );

    let allowed = vec!["globex".to_string()];
    let text = explain(
        "SELECT * FROM accounts WHERE tenant_id = 'acme'",
        Some(&allowed),
        Option::None,
        &cfg,
        &dir(),
    );
    assert!(text.contains("error: 42501"), "{text}");
    let text = explain(
        "SELECT * FROM users",
        Option::None,
        Option::None,
        &cfg,
        &dir(),
    );
    assert!(
        text.contains("users (app)") && text.contains("route: application database"),
        "{text}"
    );
    let text = explain("SELEC 1", Option::None, Option::None, &cfg, &dir());
    assert!(text.starts_with("error: 42601"), "{text}");
}

// ---------------------------------------------------------------------------
// Level-2 keys from the fast lexer, checked against PostgreSQL's scanner.

use crate::router::lexer::{fast_key, LitKind};
use pg_query::protobuf::Token;

/// Literal ranges and kinds as pg_query's scanner reports them; a kind of
/// None is a literal the fast lexer never produces (bit strings).
fn pg_literals(sql: &str) -> Result<Vec<(u32, u32, Option<LitKind>)>, String> {
    // pg_query 18.1 builds a slice from a null pointer when there are no
    // tokens (see cache::scan_tokens).
    if sql.bytes().all(|b| b" \t\n\r\x0b\x0c".contains(&b)) {
        return Ok(Vec::new());
    }
    let tokens = pg_query::scan_tokens(sql).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for t in tokens {
        let kind = match Token::try_from(t.token) {
            Ok(Token::Sconst | Token::Usconst) => Some(LitKind::Str),
            Ok(Token::Iconst) => Some(LitKind::Int),
            Ok(Token::Fconst) => Some(LitKind::Float),
            Ok(Token::Bconst | Token::Xconst) => None,
            _ => continue,
        };
        out.push((t.start as u32, t.end as u32, kind));
    }
    Ok(out)
}

/// Ok(true) when the fast lexer found exactly the scanner's literals,
/// Ok(false) when it declined, Err when it answered wrongly.
fn fast_key_agrees(sql: &str) -> Result<bool, String> {
    let Some(k) = fast_key(sql) else {
        return Ok(false);
    };
    let fast: Vec<_> = k
        .literals
        .iter()
        .map(|l| (l.start, l.end, Some(l.kind)))
        .collect();
    match pg_literals(sql) {
        Ok(pg) if pg == fast => Ok(true),
        Ok(pg) => Err(format!("{sql:?}\n    fast {fast:?}\n    pg   {pg:?}")),
        Err(e) => Err(format!("{sql:?}: fast key but scanner error {e}")),
    }
}

/// The same text with every literal replaced by another value of the same
/// kind, as the fast lexer sees it: a text that must share the key.
fn respell_literals(sql: &str) -> Option<String> {
    let k = fast_key(sql)?;
    let mut out = String::new();
    let mut last = 0;
    for l in &k.literals {
        out.push_str(&sql[last..l.start as usize]);
        // Keep the quoting style (`''E'a'` is two literals, `'''a'` one),
        // and start a float with `.` since it may follow an identifier
        // (`a.5`).
        out.push_str(match (l.kind, sql.as_bytes()[l.start as usize]) {
            (LitKind::Str, b'e' | b'E') => "E'q''\\\\é'",
            (LitKind::Str, b'$') => "$z$q'é$$z$",
            (LitKind::Str, _) => "'q''é'",
            (LitKind::Int, _) => "7",
            (LitKind::Float, _) => ".5e1",
        });
        last = l.end as usize;
    }
    out.push_str(&sql[last..]);
    Some(out)
}

const TRICKY: &[&str] = &[
    "SELECT /* a /* it's */ 'b */ 1, 'c'",
    "SELECT /* tenant_id='t1' /* nested 'x */ $$ */ * FROM accounts WHERE id = 3",
    "/* tenant_id='t1' */ SELECT * FROM accounts WHERE tenant_id = 't2'",
    "SELECT * FROM accounts -- tenant_id='x' it's\nWHERE tenant_id = 'acme'",
    "SELECT $$ it's $1 'x' $$, $a$ '$$' $b$ $a$, 'y', $1",
    "SELECT $a$ $ba$a$, $_1$x$_1$, $é$x$é$",
    "SELECT E'it\\'s', e'\\\\', E'a''b\\n', 'a\\', 1",
    "SELECT E'\\101', E'\\x41', E'\\u0041'",
    "SELECT a$b, a$1, a$$b$$, \"a$\", x FROM t$1 WHERE c = $1",
    "SELECT \"quoted \"\"identifier\"\"\" FROM \"t\"\"x\" WHERE \"tenant_id\" = 'acme'",
    "SELECT \"it's\", '\"', \"--\", \"/*\" FROM t",
    "SELECT 'a'\n'b'",
    "SELECT 'a' -- c\n 'b', 1",
    "SELECT 'a'\r\n'b'",
    "SELECT 'a' 'b'",
    "SELECT 'a'/* c */'b'",
    "SELECT 'a' ||\n'b'",
    "SELECT E'a'\n'b'",
    "SELECT 1.5e3, .5, 1e-3, 1.e3, 1., 0042, 1E+10, .5e-3, 1.5E3",
    "SELECT 2147483647, 2147483648, -2147483648, 000000000000012, 99999999999999999999",
    "SELECT x..5, a.5, t.col, 1 .. 2",
    "SELECT 1..5",
    "SELECT 1.2.3",
    "SELECT 1abc",
    "SELECT 1e",
    "SELECT 1ex",
    "SELECT 0x1F, 0o17, 0b101, 1_000",
    "SELECT $1abc",
    "SELECT $1.5",
    "SELECT n'abc', N'x', date '2020-01-01', interval '1 day', 'x'::text",
    "SELECT U&'d\\0061t\\+000061', U&\"d\\0061t\"",
    "SELECT B'101', X'1F', b'1', x'f'",
    "SELECT e'x', be'y', Ee'z', ue'w', u&1",
    "SELECT 'é', \"é\", é, 1 ≠ 2",
    "SELECT 1 +-- c\n2, 3 */* c */ 4, 5 <-- c\n6",
    "SELECT 1 */**/ 2 */",
    "SELECT $1::int, $2, $10 FROM t",
    "\tSELECT\u{b}1\u{c},\r2",
    "SELECT 1; SELECT 'a'; -- c\nSELECT $$b$$",
    "SELECT 'unterminated",
    "SELECT \"unterminated",
    "SELECT /* unterminated",
    "SELECT $$unterminated",
    "SELECT $tag unterminated",
    "SELECT \"\"",
    "SELECT 'a''''b', '''', ''",
    "SELECT '\\' , 'x'",
    "SELECT ?, :x, @ 1, ~2, !3, #4, ^5, &6, |7, `8",
    "SELECT 1::numeric(10,2), 'a' COLLATE \"C\", ARRAY[1,2.5]",
];

/// Every statement the tests route, and the tricky forms above: the fast
/// lexer either declines or finds exactly the scanner's literals, and so
/// does every text that shares its key.
#[test]
fn fast_key_matches_postgres_scanner() {
    let mut failures = Vec::new();
    let mut answered = 0;
    let mut all: Vec<&str> = CASES.iter().map(|c| c.0).collect();
    all.extend_from_slice(TRICKY);
    for sql in &all {
        match fast_key_agrees(sql) {
            Ok(true) => answered += 1,
            Ok(false) => {}
            Err(e) => failures.push(e),
        }
        if let Some(other) = respell_literals(sql) {
            assert_eq!(
                fast_key(&other).map(|k| k.key),
                fast_key(sql).map(|k| k.key)
            );
            if let Err(e) = fast_key_agrees(&other) {
                failures.push(format!("respelled: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}\n", failures.join("\n"));
    // The fast path must actually serve ordinary SQL.
    assert!(
        answered * 10 >= CASES.len() * 9,
        "only {answered} of {} answered",
        all.len()
    );
}

/// Random concatenations of lexically interesting fragments. Any fast key
/// must describe the scanner's literals exactly, also after respelling.
#[test]
fn fast_key_fuzz_against_postgres_scanner() {
    const FRAGMENTS: &[&str] = &[
        "'",
        "''",
        "'a'",
        "E'",
        "e",
        "E",
        "\\",
        "\\'",
        "$",
        "$$",
        "$a$",
        "$1",
        "a$",
        "1",
        "0",
        "42",
        ".",
        "..",
        "e5",
        "E-3",
        "+",
        "-",
        "--",
        "/",
        "*",
        "/*",
        "*/",
        "\n",
        "\r",
        " ",
        "\t",
        "\"",
        "\"\"",
        "x",
        "b",
        "n",
        "U&",
        "u",
        "&",
        "_",
        "é",
        ";",
        ",",
        "(",
        ")",
        ":",
        "::",
        "=",
        "<",
        ">",
        "|",
        "2147483648",
        "SELECT ",
    ];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // xorshift64*: deterministic, so failures reproduce.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut failures = Vec::new();
    let mut answered = 0;
    let runs = 30_000;
    for _ in 0..runs {
        let n = 1 + next() % 12;
        let mut sql = String::new();
        for _ in 0..n {
            sql.push_str(FRAGMENTS[(next() % FRAGMENTS.len() as u64) as usize]);
        }
        match fast_key_agrees(&sql) {
            Ok(true) => answered += 1,
            Ok(false) => {}
            Err(e) => failures.push(e),
        }
        if let Some(other) = respell_literals(&sql) {
            if fast_key(&other).map(|k| k.key) != fast_key(&sql).map(|k| k.key) {
                failures.push(format!("{sql:?}: respelled {other:?} has another key"));
            }
            if let Err(e) = fast_key_agrees(&other) {
                failures.push(format!("respelled: {e}"));
            }
        }
        if failures.len() > 20 {
            break;
        }
    }
    assert!(failures.is_empty(), "{}\n", failures.join("\n"));
    assert!(answered > runs / 5, "only {answered} of {runs} answered");
}

/// Every routed statement, served from a template built from a variant
/// with other literal values, equals a fresh analysis.
#[test]
fn level2_templates_agree_with_fresh_analysis() {
    let cfg = Arc::new(RouterConfig::default());
    let mut l2 = 0;
    for (sql, _, _) in CASES {
        let Some(variant) = respell_literals(sql) else {
            continue;
        };
        for (first, second) in [(variant.as_str(), *sql), (*sql, variant.as_str())] {
            let cache = ParseCache::new(8);
            // Twice, so the shape recurs and gets its template.
            let _ = cache.analyze(first, &cfg);
            cache.forget_level1();
            let _ = cache.analyze(first, &cfg);
            let cached = cache.analyze(second, &cfg);
            l2 += cache.stats().l2_hits;
            match (cached, analyze(second, &cfg)) {
                (Ok(c), Ok(f)) => assert_eq!(*c, f, "{second} after {first}"),
                (Err(c), Err(f)) => assert_eq!(c, f, "{second} after {first}"),
                (c, f) => panic!("{second} after {first}: cached {c:?}, fresh {f:?}"),
            }
        }
    }
    assert!(l2 >= 100, "only {l2} level-2 hits");
}

#[test]
fn level2_serves_only_same_shape() {
    let cfg = Arc::new(RouterConfig::default());
    let cache = ParseCache::new(64);
    let route = |sql: &str| {
        let a = cache.analyze(sql, &cfg).unwrap();
        assert_eq!(*a, analyze(sql, &cfg).unwrap(), "{sql}");
        outcome(route_with(&a, Anon))
    };
    let l2 = || cache.stats().l2_hits;

    let base = "/* app=web */ SELECT * FROM accounts a WHERE a.tenant_id = 'acme' AND a.id = 10";
    assert_eq!(route(base), "acme/stmt");
    cache.forget_level1();
    assert_eq!(route(base), "acme/stmt");
    assert_eq!((cache.stats().misses, l2()), (2, 0));
    // Same shape, other literals (any string spelling): served from the
    // template, with the new tenant.
    for (sql, want) in [
        (
            "/* app=web */ SELECT * FROM accounts a WHERE a.tenant_id = 'globex' AND a.id = 11",
            "globex/stmt",
        ),
        (
            "/* app=web */ SELECT * FROM accounts a WHERE a.tenant_id = E'initech' AND a.id = 12",
            "initech/stmt",
        ),
        (
            "/* app=web */ SELECT * FROM accounts a WHERE a.tenant_id = $t$hooli$t$ AND a.id = 1",
            "err 08004",
        ),
    ] {
        let before = l2();
        assert_eq!(route(sql), want, "{sql}");
        assert_eq!(l2(), before + 1, "{sql} was not a level-2 hit");
    }
    // A different non-literal: never served by the template above.
    for (sql, want) in [
        // Table name.
        (
            "/* app=web */ SELECT * FROM users a WHERE a.tenant_id = 'globex' AND a.id = 11",
            "app",
        ),
        // Identifier: not the tenant column, so no statement tenant.
        (
            "/* app=web */ SELECT * FROM accounts a WHERE a.owner_id = 'globex' AND a.id = 11",
            "err 55000",
        ),
        // Comment: a tenant hint appears.
        (
            "/* app=web, tenant_id='globex' */ SELECT * FROM accounts a WHERE a.tenant_id = 'globex' AND a.id = 11",
            "globex/hint",
        ),
        // Operator.
        (
            "/* app=web */ SELECT * FROM accounts a WHERE a.tenant_id <> 'globex' AND a.id = 11",
            "err 0A000",
        ),
        // Literal kind: a number is not a string.
        (
            "/* app=web */ SELECT * FROM accounts a WHERE a.tenant_id = 'globex' AND a.id = 11.5",
            "globex/stmt",
        ),
    ] {
        let before = l2();
        assert_eq!(route(sql), want, "{sql}");
        assert_eq!(l2(), before, "{sql} was served by another statement's template");
    }

    // Hint values live in comments, which are part of the key.
    let hinted = "/* tenant_id='acme' */ SELECT * FROM accounts WHERE id = 1";
    assert_eq!(route(hinted), "acme/hint");
    cache.forget_level1();
    assert_eq!(route(hinted), "acme/hint");
    let before = l2();
    assert_eq!(
        route("/* tenant_id='globex' */ SELECT * FROM accounts WHERE id = 1"),
        "globex/hint"
    );
    assert_eq!(l2(), before);
    assert_eq!(
        route("/* tenant_id='acme' */ SELECT * FROM accounts WHERE id = 2"),
        "acme/hint"
    );
    assert_eq!(l2(), before + 1);

    // Texts the fast lexer declines still work, through the full path.
    let misses = cache.stats().misses;
    assert_eq!(
        route("SELECT * FROM accounts WHERE tenant_id = 'ac'\n'me'"),
        "acme/stmt"
    );
    assert_eq!(
        route("SELECT * FROM accounts WHERE tenant_id = 'gl'\n'obex'"),
        "globex/stmt"
    );
    assert_eq!(cache.stats().misses, misses + 2);

    // Texts without any token (an empty simple Query) must not reach
    // pg_query's scanner, which mishandles them.
    for sql in ["", " ", "\n\t"] {
        assert!(cache.analyze(sql, &cfg).unwrap().statements.is_empty());
    }
}

#[test]
fn empty_and_blank_texts_analyze_without_touching_the_scanner_bug() {
    // pg_query 18.1's scanner builds a slice from a null pointer for a text
    // without tokens; an empty simple Query is valid protocol, so both entry
    // points must survive it (a debug build aborts otherwise).
    let cfg = Arc::new(RouterConfig::default());
    let cache = ParseCache::new(16);
    for sql in ["", " ", "\n\t ", "\r\n"] {
        let a = analyze(sql, &cfg).expect("blank text analyses");
        assert!(a.statements.iter().all(|s| s.tables.is_empty()), "{sql:?}");
        cache
            .analyze(sql, &cfg)
            .expect("blank text through the cache");
    }
}

#[test]
fn state_left_on_the_connection_is_untracked() {
    let cfg = RouterConfig::default();
    for sql in [
        "CREATE TEMP TABLE t (x int)",
        "CREATE TABLE pg_temp.t (x int)",
        "CREATE TEMPORARY VIEW v AS SELECT 1",
        "CREATE TEMP SEQUENCE s",
        "SELECT 1 AS x INTO TEMP t",
        "CREATE TEMP TABLE t AS SELECT 1",
        "LISTEN ch",
        "PREPARE p AS SELECT 1",
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
    ] {
        let a = analyze(sql, &cfg).unwrap();
        assert!(
            a.statements[0].effects.contains(&SessionEffect::Untracked),
            "{sql}"
        );
    }
    for sql in [
        "CREATE TABLE t (x int)",
        "DECLARE c CURSOR FOR SELECT 1",
        "SET LOCAL work_mem = '4MB'",
        "SELECT set_config('request.claims', 'x', true)",
    ] {
        let a = analyze(sql, &cfg).unwrap();
        assert!(
            !a.statements[0].effects.contains(&SessionEffect::Untracked),
            "{sql}"
        );
    }
    let a = analyze("SELECT set_config('request.claims', 'x', true)", &cfg).unwrap();
    assert_eq!(a.statements[0].effects, vec![SessionEffect::LocalSetting]);
}
