//! Issue #3: per-statement routing on real clusters — app DB, a shared data
//! DB (acme, globex) and a dedicated one (initech) — checked by querying each
//! backend directly.

mod support;

use std::time::Duration;
use support::*;

const PW: &str = "user-pw-1";

fn users(f: &Fleet) {
    add_user(&f.app, "app", "svc@example.com", &scram(PW), None);
    add_user(
        &f.app,
        "app",
        "ann@example.com",
        &scram(PW),
        Some(&["acme"]),
    );
    add_user(
        &f.app,
        "app",
        "multi@example.com",
        &scram(PW),
        Some(&["acme", "globex"]),
    );
}

async fn connect(p: &Proxy, user: &str, db: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(&p.conninfo(user, PW, db), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {user}: {e}\n{}", p.log_text()));
    tokio::spawn(conn);
    c
}

fn code(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_land_only_in_the_right_database() {
    let f = Fleet::start();
    users(&f);
    let p = f.proxy("");
    // Registry loads asynchronously at start.
    pgtenant::clock::sleep(Duration::from_millis(500)).await;
    let svc = connect(&p, "svc@example.com", "app").await;

    svc.batch_execute("INSERT INTO accounts (tenant_id, name) VALUES ('acme', 'Acme Rockets')")
        .await
        .unwrap();
    svc.batch_execute("INSERT INTO accounts (tenant_id, name) VALUES ('globex', 'Globex Corp')")
        .await
        .unwrap();
    svc.batch_execute("INSERT INTO accounts (tenant_id, name) VALUES ('initech', 'Initech TPS')")
        .await
        .unwrap();
    svc.batch_execute("INSERT INTO audit_log (actor, action) VALUES ('svc', 'routed-test')")
        .await
        .unwrap();
    svc.execute(
        "INSERT INTO contacts (tenant_id, email) VALUES ($1, $2)",
        &[&"initech", &"peter@initech"],
    )
    .await
    .unwrap();

    assert_eq!(
        f.shared.psql(
            "shared",
            "SELECT string_agg(tenant_id || ':' || name, ',' ORDER BY id) FROM accounts"
        ),
        "acme:Acme Rockets,globex:Globex Corp"
    );
    assert_eq!(
        f.dedicated.psql(
            "dedicated",
            "SELECT string_agg(tenant_id || ':' || name, ',') FROM accounts"
        ),
        "initech:Initech TPS"
    );
    assert_eq!(
        f.dedicated.psql("dedicated", "SELECT email FROM contacts"),
        "peter@initech"
    );
    assert_eq!(
        f.app.psql(
            "app",
            "SELECT count(*) FROM audit_log WHERE action = 'routed-test'"
        ),
        "1"
    );
    assert_eq!(
        f.app.psql(
            "app",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'accounts'"
        ),
        "0"
    );

    // A statement touching both sides is refused, naming both.
    let e = svc
        .simple_query(
            "SELECT * FROM users u JOIN accounts a ON a.name = u.email WHERE a.tenant_id = 'acme'",
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000");
    let msg = e.as_db_error().unwrap().message().to_string();
    assert!(msg.contains("users") && msg.contains("accounts"), "{msg}");

    // No tenant: refused with the four ways in the hint.
    let e = svc
        .simple_query("SELECT count(*) FROM invoices")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "55000");
    assert!(e
        .as_db_error()
        .unwrap()
        .hint()
        .unwrap_or("")
        .contains("app.tenant_id"));

    // Catalog queries follow the session: \d-style lookups work on the tenant DB.
    svc.batch_execute("SET app.tenant_id = 'initech'")
        .await
        .unwrap();
    let row = svc
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_tables WHERE tablename = 'accounts'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
    let row = svc
        .query_one("SELECT count(*) FROM accounts", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
    // Defense in depth: the backend carries the tenant setting.
    let row = svc
        .query_one("SELECT current_setting('app.tenant_id')", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "initech");
    svc.batch_execute("RESET app.tenant_id").await.unwrap();
    let row = svc
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_tables WHERE tablename = 'users'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1, "back on the app DB after RESET");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_scoped_user_never_sees_another_tenant() {
    let f = Fleet::start();
    users(&f);
    f.shared.psql("shared", "INSERT INTO accounts (tenant_id, name) VALUES ('acme','a1'),('acme','a2'),('globex','g1'); INSERT INTO contacts (tenant_id, email) VALUES ('acme','x@acme'),('globex','y@globex')");
    let p = f.proxy("");
    pgtenant::clock::sleep(Duration::from_millis(500)).await;
    let ann = connect(&p, "ann@example.com", "app").await;

    // Her only tenant applies by default, and RLS on the shared DB limits the rows.
    let row = ann
        .query_one("SELECT count(*) FROM accounts", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 2);
    // Naming another tenant anywhere is refused before it is sent.
    for sql in [
        "SELECT * FROM accounts WHERE tenant_id = 'globex'",
        "/* tenant_id='globex' */ SELECT * FROM accounts",
        "UPDATE accounts SET name = 'pwned' WHERE tenant_id = 'globex'",
        "INSERT INTO accounts (tenant_id, name) VALUES ('globex', 'sneaky')",
        "SET app.tenant_id = 'globex'",
    ] {
        let e = ann.simple_query(sql).await.unwrap_err();
        assert_eq!(code(&e), "42501", "{sql}");
    }
    let e = ann
        .query(
            "SELECT name FROM accounts WHERE tenant_id = $1",
            &[&"globex"],
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501");
    // contacts has no RLS: a statement without its own tenant filter is refused on a shared source.
    let e = ann
        .simple_query("SELECT * FROM contacts")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501");
    assert!(e
        .as_db_error()
        .unwrap()
        .message()
        .contains("row-level security"));
    // With its own filter it is fine.
    let rows = ann
        .query("SELECT email FROM contacts WHERE tenant_id = 'acme'", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        f.shared.psql(
            "shared",
            "SELECT count(*) FROM accounts WHERE name = 'pwned' OR name = 'sneaky'"
        ),
        "0"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_prepared_statement_rebound_for_different_tenants() {
    let f = Fleet::start();
    users(&f);
    f.shared.psql(
        "shared",
        "INSERT INTO accounts (tenant_id, name) VALUES ('acme','acme-1'),('globex','globex-1')",
    );
    f.dedicated.psql(
        "dedicated",
        "INSERT INTO accounts (tenant_id, name) VALUES ('initech','initech-1')",
    );
    let p = f.proxy("[pool]\nsize = 2\n");
    pgtenant::clock::sleep(Duration::from_millis(500)).await;
    let svc = connect(&p, "svc@example.com", "app").await;
    let stmt = svc
        .prepare("SELECT name FROM accounts WHERE tenant_id = $1")
        .await
        .unwrap();
    for _ in 0..3 {
        for t in ["acme", "globex", "initech"] {
            let rows = svc.query(&stmt, &[&t]).await.unwrap();
            let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            assert_eq!(names, vec![format!("{t}-1")], "tenant {t}");
        }
    }
    // A multi-tenant user may switch between her tenants, not beyond them.
    let multi = connect(&p, "multi@example.com", "app").await;
    let stmt = multi
        .prepare("SELECT count(*) FROM accounts WHERE tenant_id = $1")
        .await
        .unwrap();
    assert_eq!(
        multi
            .query_one(&stmt, &[&"globex"])
            .await
            .unwrap()
            .get::<_, i64>(0),
        1
    );
    assert_eq!(
        code(&multi.query_one(&stmt, &[&"initech"]).await.unwrap_err()),
        "42501"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn transactions_are_pinned_and_fail_like_postgres() {
    let f = Fleet::start();
    users(&f);
    let p = f.proxy("");
    pgtenant::clock::sleep(Duration::from_millis(500)).await;
    let svc = connect(&p, "svc@example.com", "app").await;
    svc.batch_execute("BEGIN").await.unwrap();
    svc.batch_execute("INSERT INTO accounts (tenant_id, name) VALUES ('acme', 'in-tx')")
        .await
        .unwrap();
    let e = svc
        .simple_query("SELECT count(*) FROM users")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000");
    let e = svc.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(code(&e), "25P02");
    svc.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        f.shared.psql(
            "shared",
            "SELECT count(*) FROM accounts WHERE name = 'in-tx'"
        ),
        "0"
    );
    // A held BEGIN followed by an app statement runs on the app DB.
    svc.batch_execute("BEGIN; INSERT INTO audit_log (actor, action) VALUES ('svc', 'tx'); COMMIT")
        .await
        .unwrap();
    assert_eq!(
        f.app
            .psql("app", "SELECT count(*) FROM audit_log WHERE action = 'tx'"),
        "1"
    );
    // SET LOCAL names the tenant for one transaction only.
    svc.batch_execute("BEGIN").await.unwrap();
    svc.batch_execute("SET LOCAL app.tenant_id = 'initech'")
        .await
        .unwrap();
    let n: i64 = svc
        .query_one("SELECT count(*) FROM accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    svc.batch_execute("COMMIT").await.unwrap();
    let e = svc
        .simple_query("SELECT count(*) FROM accounts")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "55000", "the local tenant ended with COMMIT");
    // A multi-statement string that mixes targets is refused before anything runs.
    let e = svc
        .simple_query("INSERT INTO audit_log (actor, action) VALUES ('svc', 'mixed'); INSERT INTO accounts (tenant_id, name) VALUES ('acme', 'mixed')")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000");
    assert_eq!(
        f.app.psql(
            "app",
            "SELECT count(*) FROM audit_log WHERE action = 'mixed'"
        ),
        "0"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_changes_apply_live() {
    let f = Fleet::start();
    users(&f);
    f.dedicated.createdb("moved");
    f.dedicated.psql(
        "moved",
        TENANT_SCHEMA
            .replace(
                "CREATE ROLE pgtenant_data LOGIN PASSWORD 'data-role-pw-7';",
                "",
            )
            .as_str(),
    );
    f.dedicated.psql(
        "moved",
        "INSERT INTO accounts (tenant_id, name) VALUES ('initech', 'moved-row')",
    );
    let p = f.proxy("");
    // A second replica sharing the same app DB.
    let p2 = f.proxy("");
    pgtenant::clock::sleep(Duration::from_millis(500)).await;
    let svc = connect(&p, "svc@example.com", "app").await;
    let svc2 = connect(&p2, "svc@example.com", "app").await;
    let q = "SELECT count(*) FROM accounts WHERE tenant_id = 'initech' AND name = 'moved-row'";
    assert_eq!(svc.query_one(q, &[]).await.unwrap().get::<_, i64>(0), 0);
    assert_eq!(svc2.query_one(q, &[]).await.unwrap().get::<_, i64>(0), 0);
    // A plain SQL UPDATE of the URL re-routes the next transaction within 1 s.
    f.app.psql(
        "app",
        "UPDATE tenants SET data_source_url = replace(data_source_url, '/dedicated', '/moved') WHERE id = 'initech'",
    );
    pgtenant::clock::sleep(Duration::from_millis(1000)).await;
    assert_eq!(svc.query_one(q, &[]).await.unwrap().get::<_, i64>(0), 1);
    assert_eq!(
        svc2.query_one(q, &[]).await.unwrap().get::<_, i64>(0),
        1,
        "every replica follows NOTIFY"
    );

    // Suspend and resume through the CLI.
    f.tenant_cli(&["suspend", "initech"]);
    pgtenant::clock::sleep(Duration::from_millis(1000)).await;
    let e = svc.query_one(q, &[]).await.unwrap_err();
    assert_eq!(code(&e), "08004");
    f.tenant_cli(&["resume", "initech"]);
    pgtenant::clock::sleep(Duration::from_millis(1000)).await;
    assert_eq!(svc.query_one(q, &[]).await.unwrap().get::<_, i64>(0), 1);
    // The tenant list never shows a secret.
    let list = f.tenant_cli(&["list"]);
    assert!(
        list.contains("initech") && !list.contains(DATA_ROLE_PW),
        "{list}"
    );
    assert!(!p.log_text().contains(DATA_ROLE_PW) && !p.log_text().contains(&f.key));
}

/// A statement for another data source first waits for the responses
/// still due on the current one (the client pipelined it behind them).
/// Meanwhile those responses reach the client as they come, and a client
/// that leaves ends the wait: its running statement is cancelled rather
/// than left to finish with the session holding its results.
#[tokio::test(flavor = "multi_thread")]
async fn a_switch_waiting_for_responses_forwards_them_and_watches_the_client() {
    use support::wire::*;
    let f = Fleet::start();
    users(&f);
    let p = f.proxy("");
    let mut c = Raw::connect(p.port, "ann@example.com", PW, "app").await;
    c.send(&[
        query("SELECT 'first' FROM users LIMIT 1"),
        query("SELECT pg_sleep(30) FROM users LIMIT 1"),
        query("SELECT name FROM accounts"),
    ])
    .await;
    let r = c.read_until(b'C', 0).await;
    assert!(
        r.contains(&"D(first)".to_string()),
        "{r:?}\n{}",
        p.log_text()
    );
    drop(c);
    let sleeping = || {
        f.app.psql(
            "app",
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' AND pid <> pg_backend_pid()",
        )
    };
    let mut n = sleeping();
    for _ in 0..20 {
        if n == "0" {
            break;
        }
        pgtenant::clock::sleep(Duration::from_millis(250)).await;
        n = sleeping();
    }
    assert_eq!(n, "0", "the statement of a client that left still runs");
}
