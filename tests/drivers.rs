//! Issue #4's driver matrix: protocol-level prepared statements in
//! transaction pooling with more clients than backend connections — psycopg 3
//! (server-side prepares), node-postgres (named statements), tokio-postgres,
//! and pgbench -M prepared — all with zero errors, each row from the right tenant.

mod support;

use std::process::Command;
use std::time::Duration;
use support::*;

const PW: &str = "driver-pw";

fn fleet() -> (Fleet, Proxy) {
    let f = Fleet::start();
    add_user(&f.app, "app", "svc@example.com", &scram(PW), None);
    // Two backend connections per data source, eight clients.
    f.app.psql("app", r#"UPDATE tenants SET connection_pool_config = '{"pool_size": 2, "checkout_timeout_ms": 30000}'"#);
    for (c, db, tenants) in [
        (&f.shared, "shared", &["acme", "globex"][..]),
        (&f.dedicated, "dedicated", &["initech"][..]),
    ] {
        for t in tenants {
            c.psql(db, &format!("INSERT INTO accounts (tenant_id, name) VALUES ('{t}', '{t}-1'), ('{t}', '{t}-2')"));
        }
    }
    let p = f.proxy("[pool]\nsize = 2\n");
    std::thread::sleep(Duration::from_millis(500));
    (f, p)
}

fn run(cmd: &mut Command, p: &Proxy) -> String {
    let out = cmd.output().expect("driver test runner");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{text}\nproxy log:\n{}",
        p.log_text()
    );
    text
}

#[test]
fn psycopg3_server_side_prepares() {
    let (_f, p) = fleet();
    let out = run(
        Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/drivers/psycopg_prepared.py"
            ))
            .arg(p.conninfo("svc@example.com", PW, "app"))
            .args(["8", "30"]),
        &p,
    );
    assert!(out.contains("ok 240"), "{out}");
}

#[test]
fn node_postgres_named_statements() {
    let (_f, p) = fleet();
    let out = run(
        Command::new("node")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/drivers/node_prepared.js"
            ))
            .arg(p.url("svc@example.com", PW, "app"))
            .args(["8", "30"])
            .env(
                "NODE_PATH",
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node/node_modules"),
            ),
        &p,
    );
    assert!(out.contains("ok 240"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tokio_postgres_prepared_statements_many_clients() {
    let (_f, p) = fleet();
    let mut tasks = Vec::new();
    for n in 0..8 {
        let info = p.conninfo("svc@example.com", PW, "app");
        tasks.push(tokio::spawn(async move {
            let (c, conn) = tokio_postgres::connect(&info, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let stmt = c
                .prepare("SELECT name FROM accounts WHERE tenant_id = $1 ORDER BY id LIMIT 1")
                .await
                .unwrap();
            for i in 0..30 {
                let t = ["acme", "globex", "initech"][(n + i) % 3];
                let row = c.query_one(&stmt, &[&t]).await.unwrap();
                assert_eq!(row.get::<_, String>(0), format!("{t}-1"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}
