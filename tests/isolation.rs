//! Sessions share backend connections (transaction pooling): nothing one
//! session leaves on a connection may reach another, and the extended
//! protocol must fail, skip and answer exactly as PostgreSQL does, even
//! where the proxy answers for the server. Raw protocol clients, real
//! PostgreSQL.
mod support;

use std::time::Duration;
use support::wire::*;
use support::*;

const PW: &str = "alice-secret-1";
const FPW: &str = "user-pw-1";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// The app DB alone, routing off, with a schema and a role that could leak.
fn passthrough(extra: &str) -> (Cluster, Proxy) {
    let app = Cluster::start();
    app.createdb("app");
    app.psql("app", APP_SCHEMA);
    add_user(&app, "app", "alice@example.com", &scram(PW), None);
    app.psql(
        "app",
        "CREATE TABLE items (id int PRIMARY KEY, name text); \
         INSERT INTO items VALUES (1, 'one'), (2, 'two'); \
         CREATE SCHEMA leaked; CREATE TABLE leaked.items (id int, name text); \
         INSERT INTO leaked.items VALUES (99, 'LEAKED'); \
         CREATE ROLE other_role; GRANT ALL ON ALL TABLES IN SCHEMA public TO other_role;",
    );
    let config = format!(
        "[app_db]\nurl = \"{}\"\n[auth]\nquery = \"{}\"\n[routing]\nenabled = false\n{extra}",
        app.url("app"),
        auth_query()
    );
    let proxy = Proxy::start(&config, &[]);
    (app, proxy)
}

async fn alice(p: &Proxy) -> Raw {
    Raw::connect(p.port, "alice@example.com", PW, "app").await
}

/// A replayed setting that fails on the next connection must not leave that
/// connection with the previous session's tenant: the tenant setting is
/// written whatever happens to the settings, so a tenant never reads another
/// tenant's rows.
#[test]
fn a_failing_replayed_setting_never_leaves_another_tenants_setting() {
    let f = Fleet::start();
    add_user(
        &f.app,
        "app",
        "ann@example.com",
        &scram(FPW),
        Some(&["acme"]),
    );
    add_user(
        &f.app,
        "app",
        "gil@example.com",
        &scram(FPW),
        Some(&["globex"]),
    );
    f.shared.psql(
        "shared",
        "INSERT INTO accounts (tenant_id, name) VALUES ('acme', 'ACME-SECRET'), ('globex', 'globex-row')",
    );
    f.tenant_cli(&["set", "acme", "--pool-size", "1"]);
    f.tenant_cli(&["set", "globex", "--pool-size", "1"]);
    let p = f.proxy("[pool]\nsize = 1\n");
    std::thread::sleep(Duration::from_millis(800));
    rt().block_on(async {
        let mut g = Raw::connect(p.port, "gil@example.com", FPW, "globex").await;
        let mut a = Raw::connect(p.port, "ann@example.com", FPW, "acme").await;
        g.send(&[query("SET work_mem = 'bogus'")]).await;
        let r = g.read_until(0, 1).await;
        assert!(r.iter().any(|m| m.starts_with("E(22023")), "{r:?}");
        a.send(&[query("SELECT name FROM accounts")]).await;
        let r = a.read_until(0, 1).await;
        assert!(r.contains(&"D(ACME-SECRET)".to_string()), "{r:?}");
        g.send(&[query("SELECT name FROM accounts")]).await;
        let r = g.read_until(0, 1).await;
        assert!(
            !r.iter().any(|m| m.contains("ACME")),
            "globex read acme's rows: {r:?}"
        );
        g.send(&[query("SELECT current_setting('app.tenant_id')")])
            .await;
        let r = g.read_until(0, 1).await;
        assert!(r.contains(&"D(globex)".to_string()), "{r:?}");
        // The failed SET was not kept for replay: no error on every transaction.
        g.send(&[query("SELECT 1")]).await;
        let r = g.read_until(0, 1).await;
        assert_eq!(r, ["T", "D(1)", "C(SELECT 1)", "Z(I)"], "{r:?}");
    });
}
