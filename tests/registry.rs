//! Integration tests against a throwaway PostgreSQL 15 cluster.
//!
//! Each test starts its own cluster (initdb as the `postgres` user in a temp
//! dir, random port, socket in the temp dir) and removes it afterwards.
//! Skipped with a message when not root or when PostgreSQL 15 is missing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgtenant::registry::ops::{self, NewTenant, PasswordState, TenantChanges};
use pgtenant::registry::{
    load_all, spawn_registry_sync, CryptoError, DataSourceError, PoolMode, Secret, SecretBox,
    TenantChange, TenantRegistry, TenantStatus,
};
use tokio_postgres::{Client, NoTls};

mod support;
use support::eventually;

const MIGRATION: &str = include_str!("../deploy/sql/app_db.sql");
const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const OLD_KEY: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
/// A password with characters that need percent-encoding in a URL.
const TENANT_PW: &str = "p@ss:w/rd-Tenant1";
const TENANT_PW_ENC: &str = "p%40ss%3Aw%2Frd-Tenant1";

/// The shared throwaway cluster, with the registry tests' helpers on top.
struct Cluster {
    inner: support::Cluster,
    port: u16,
}

impl Cluster {
    fn start() -> Option<Cluster> {
        let inner = support::Cluster::start();
        let port = inner.port;
        Some(Cluster { inner, port })
    }

    fn url(&self, db: &str) -> String {
        self.inner.url(db)
    }

    async fn client(&self, db: &str) -> Client {
        let (client, conn) = tokio_postgres::connect(&self.url(db), NoTls).await.unwrap();
        tokio::spawn(conn);
        client
    }

    /// A fresh database with a login role for tenant data-source tests.
    async fn setup(&self) -> Client {
        let admin = self.client("postgres").await;
        admin.batch_execute("CREATE DATABASE app").await.unwrap();
        admin
            .batch_execute(&format!(
                "CREATE ROLE tenant_role LOGIN PASSWORD '{}'",
                TENANT_PW.replace('\'', "''")
            ))
            .await
            .unwrap();
        let app = self.client("app").await;
        app.batch_execute(MIGRATION).await.unwrap();
        app
    }

    fn tenant_url(&self) -> Secret {
        Secret::new(format!(
            "postgres://tenant_role:{TENANT_PW_ENC}@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        ))
    }
}

fn secrets() -> SecretBox {
    SecretBox::from_hex(KEY, None).unwrap()
}

fn new_tenant(c: &Cluster, id: &str, sub: &str) -> NewTenant {
    NewTenant {
        id: id.into(),
        name: format!("Tenant {id}"),
        subdomain: sub.into(),
        url_with_password: c.tenant_url(),
        pool_size: Some(4),
        mode: Some(PoolMode::Session),
        region: Some("eu-west-1".into()),
        notes: None,
        tenant_id_in_data_source: None,
    }
}

async fn wait_until(what: &str, limit: Duration, cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    assert!(
        eventually(limit, cond).await,
        "timed out after {limit:?} waiting for {what}"
    );
    start.elapsed()
}

async fn audit_text(app: &Client) -> String {
    app.query_one(
        "SELECT coalesce(string_agg(actor || ' ' || action || ' ' || tenant_id || ' ' || details::text, E'\\n' ORDER BY id), '') FROM audit_log",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_is_idempotent_on_fresh_and_existing_tables() {
    let Some(c) = Cluster::start() else { return };
    let admin = c.client("postgres").await;
    admin.batch_execute("CREATE DATABASE fresh").await.unwrap();
    admin.batch_execute("CREATE DATABASE legacy").await.unwrap();

    let fresh = c.client("fresh").await;
    fresh.batch_execute(MIGRATION).await.unwrap();
    fresh.batch_execute(MIGRATION).await.unwrap();
    let n: i64 = fresh
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'tenants'::regclass AND NOT tgisinternal",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        n, 4,
        "guard, audit, notify, truncate-notify; no duplicates after re-run"
    );
    let id_type: String = fresh
        .query_one("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid='tenants'::regclass AND attname='id'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(id_type, "text");
    let redacted: String = fresh
        .query_one(
            "SELECT pgtenant_redact_url('postgres://u:s3cr%40t@h:5432/db?sslmode=require')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        redacted,
        "postgres://u:<redacted>@h:5432/db?sslmode=require"
    );

    // The Node app's table: uuid id, a legacy NULL status, and an
    // audit_log whose tenant_id is uuid and which lacks `actor`.
    let legacy = c.client("legacy").await;
    legacy
        .batch_execute(
            "CREATE TABLE tenants (id uuid PRIMARY KEY, name text NOT NULL, subdomain text UNIQUE NOT NULL, status text);
             INSERT INTO tenants VALUES ('7b0e1a3c-5d3f-4f1e-9a63-2f3b8f1f0c11', 'Old Co', 'oldco', NULL);
             CREATE TABLE audit_log (id bigserial PRIMARY KEY, action text NOT NULL, tenant_id uuid, details json,
                                     created_at timestamptz DEFAULT now());",
        )
        .await
        .unwrap();
    legacy.batch_execute(MIGRATION).await.unwrap();
    legacy.batch_execute(MIGRATION).await.unwrap();
    let id_type: String = legacy
        .query_one("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid='tenants'::regclass AND attname='id'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(id_type, "uuid", "existing uuid id is left alone");

    let records = load_all(&legacy, &secrets()).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].id, "7b0e1a3c-5d3f-4f1e-9a63-2f3b8f1f0c11");
    assert_eq!(
        records[0].status,
        TenantStatus::Active,
        "NULL status backfilled to active"
    );
    assert_eq!(records[0].data_source, Err(DataSourceError::NotConfigured));

    // ops work on a uuid-keyed table and the audit trigger copes with the
    // legacy audit_log column types.
    let s = secrets();
    let rec = ops::add(
        &legacy,
        &s,
        new_tenant(&c, "0d5b2c1e-8f8a-4b51-9c1f-6a4c3d2b1a00", "newco"),
        "test",
    )
    .await
    .unwrap();
    assert!(rec.data_source.is_ok());
    ops::suspend(&legacy, &rec.id, "test").await.unwrap();
    let audit = audit_text(&legacy).await;
    assert!(audit.contains("tenant.suspended"), "{audit}");
    assert!(audit.contains("0d5b2c1e-8f8a-4b51-9c1f-6a4c3d2b1a00"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_add_list_show_set_suspend_remove_with_clean_audit() {
    let Some(c) = Cluster::start() else { return };
    let app = c.setup().await;
    let s = secrets();

    let rec = ops::add(&app, &s, new_tenant(&c, "acme", "acme"), "alice")
        .await
        .unwrap();
    let ds = rec.data_source.as_ref().unwrap();
    assert_eq!(ds.password.as_ref().unwrap().expose(), TENANT_PW);
    assert_eq!(
        ds.pool_key(),
        format!("tenant_role@127.0.0.1:{}/postgres", c.port)
    );
    assert_eq!((rec.pool.pool_size, rec.pool.mode), (4, PoolMode::Session));
    assert!(!format!("{rec:?}").contains(TENANT_PW));

    // Stored form: URL without password, password as Node-format ciphertext.
    let row = app
        .query_one(
            "SELECT data_source_url, data_source_password FROM tenants WHERE id = 'acme'",
            &[],
        )
        .await
        .unwrap();
    let (url, enc): (String, String) = (row.get(0), row.get(1));
    assert!(!url.contains("p%40ss") && !url.contains(TENANT_PW), "{url}");
    assert_eq!(enc.split(':').count(), 3);

    ops::add(&app, &s, new_tenant(&c, "beta", "beta"), "alice")
        .await
        .unwrap();
    let dup = ops::add(&app, &s, new_tenant(&c, "gamma", "beta"), "alice")
        .await
        .unwrap_err();
    assert!(dup.to_string().contains("23505"), "{dup}");
    assert!(
        !dup.to_string().contains(&enc[..10]),
        "no row DETAIL in errors: {dup}"
    );

    let all = ops::list(&app, &s).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["acme", "beta"]
    );

    let shown = ops::show(&app, &s, "acme").await.unwrap();
    assert_eq!(shown.password, PasswordState::Set);
    let text = shown.to_string();
    assert!(text.contains("password: set (encrypted)"), "{text}");
    assert!(!text.contains(TENANT_PW) && !text.contains(&enc), "{text}");

    let report = ops::test(&rec).await.unwrap();
    assert!(
        report.server_version.starts_with("PostgreSQL 15"),
        "{}",
        report.server_version
    );

    let mut ch = TenantChanges {
        notes: Some("moved to dedicated".into()),
        ..Default::default()
    };
    ch.pool.insert("pool_size".into(), 7.into());
    ch.pool.insert("checkout_timeout_ms".into(), 1500.into());
    let updated = ops::set(&app, &s, "acme", ch, "bob").await.unwrap();
    assert_eq!(updated.pool.pool_size, 7);
    assert_eq!(
        updated.pool.mode,
        PoolMode::Session,
        "merge keeps untouched keys"
    );
    assert_eq!(updated.notes.as_deref(), Some("moved to dedicated"));
    assert_eq!(
        updated
            .data_source
            .as_ref()
            .unwrap()
            .password
            .as_ref()
            .unwrap()
            .expose(),
        TENANT_PW
    );

    let mut bad = TenantChanges::default();
    bad.pool.insert("mode".into(), "statement".into());
    assert!(ops::set(&app, &s, "acme", bad, "bob").await.is_err());
    assert!(matches!(
        ops::suspend(&app, "nope", "bob").await,
        Err(pgtenant::registry::RegistryError::NotFound(_))
    ));

    ops::suspend(&app, "acme", "carol").await.unwrap();
    assert_eq!(
        ops::show(&app, &s, "acme").await.unwrap().record.status,
        TenantStatus::Suspended
    );
    ops::resume(&app, "acme", "carol").await.unwrap();
    ops::remove(&app, "beta", "carol").await.unwrap();
    assert_eq!(ops::list(&app, &s).await.unwrap().len(), 1);

    // Wrong password: test() reports an auth failure without the password.
    let wrong = ops::set(
        &app,
        &s,
        "acme",
        TenantChanges {
            password: Some(Secret::new("definitely-wrong")),
            ..Default::default()
        },
        "dave",
    )
    .await
    .unwrap();
    let err = ops::test(&wrong).await.unwrap_err().to_string();
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains("definitely-wrong"));

    let audit = audit_text(&app).await;
    if std::env::var_os("SHOW_AUDIT").is_some() {
        eprintln!("{audit}\n---\n{text}");
    }
    for needle in [
        "tenant.created",
        "tenant.suspended",
        "tenant.resumed",
        "tenant.deleted",
        "tenant.data_source.updated",
    ] {
        assert!(audit.contains(needle), "missing {needle}: {audit}");
    }
    assert!(audit.contains("alice (db user postgres)"), "{audit}");
    assert!(audit.contains("carol (db user postgres)"));
    assert!(audit.contains("data_source_password changed"));
    assert!(audit.contains("data_source_notes"));
    for secret in [TENANT_PW, TENANT_PW_ENC, "definitely-wrong", &enc] {
        assert!(!audit.contains(secret), "audit log leaks a secret: {audit}");
    }
    let audit_rows: i64 = app
        .query_one("SELECT count(*) FROM audit_log", &[])
        .await
        .unwrap()
        .get(0);
    assert!(audit_rows >= 7, "{audit_rows}");

    // Raw SQL cannot bypass the invariants, and the refusal does not echo.
    let err = app
        .execute(
            "UPDATE tenants SET data_source_password = 'plain-text-pw' WHERE id = 'acme'",
            &[],
        )
        .await
        .unwrap_err();
    let msg = format!("{err} {err:?}");
    assert!(
        msg.contains("must be encrypted") && !msg.contains("plain-text-pw"),
        "{msg}"
    );
    let err = app
        .execute(
            "UPDATE tenants SET data_source_url = 'postgres://u:leaky@h/db' WHERE id = 'acme'",
            &[],
        )
        .await
        .unwrap_err();
    let msg = format!("{err} {err:?}");
    assert!(
        msg.contains("must not contain a password") && !msg.contains("leaky"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_updates_registry_quickly_and_survives_reconnect() {
    let Some(c) = Cluster::start() else { return };
    let app = c.setup().await;
    let s = Arc::new(secrets());
    ops::add(&app, &s, new_tenant(&c, "acme", "acme"), "t")
        .await
        .unwrap();
    ops::add(&app, &s, new_tenant(&c, "beta", "beta"), "t")
        .await
        .unwrap();

    let reg = Arc::new(TenantRegistry::new());
    let mut changes = reg.subscribe();
    let handle = spawn_registry_sync(
        format!("{}&application_name=pgtenant_sync_test", c.url("app")),
        reg.clone(),
        s.clone(),
        Duration::from_secs(3600),
    );
    wait_until("initial load", Duration::from_secs(10), || reg.is_loaded()).await;
    assert_eq!(reg.len(), 2);
    assert_eq!(reg.by_subdomain("ACME").unwrap().id, "acme");
    while changes.try_recv().is_ok() {}

    // Plain SQL, as an operator or the Node app would do it.
    let new_url = format!(
        "postgres://tenant_role@localhost:{}/postgres?sslmode=require",
        c.port
    );
    app.execute(
        "UPDATE tenants SET data_source_url = $1 WHERE id = 'acme'",
        &[&new_url],
    )
    .await
    .unwrap();
    let took = wait_until("URL change", Duration::from_secs(1), || {
        reg.get("acme")
            .and_then(|r| r.data_source.as_ref().ok().map(|d| d.host == "localhost"))
            .unwrap_or(false)
    })
    .await;
    eprintln!("NOTIFY propagation took {took:?}");
    let rec = reg.get("acme").unwrap();
    let ds = rec.data_source.as_ref().unwrap();
    assert_eq!(ds.sslmode, "require");
    assert_eq!(
        ds.password.as_ref().unwrap().expose(),
        TENANT_PW,
        "password kept"
    );
    assert_eq!(
        pgtenant::clock::timeout(Duration::from_secs(1), changes.recv())
            .await
            .unwrap()
            .unwrap(),
        TenantChange::Upserted { id: "acme".into() }
    );

    app.execute(
        "UPDATE tenants SET status = 'suspended' WHERE id = 'beta'",
        &[],
    )
    .await
    .unwrap();
    wait_until("suspension", Duration::from_secs(1), || {
        reg.get("beta")
            .map(|r| r.status == TenantStatus::Suspended)
            .unwrap_or(false)
    })
    .await;
    app.execute("DELETE FROM tenants WHERE id = 'beta'", &[])
        .await
        .unwrap();
    wait_until("removal", Duration::from_secs(1), || {
        reg.get("beta").is_none()
    })
    .await;
    assert!(reg.stats().notifications >= 3);

    // Kill the sync connection: the cache must stay, then catch up after reconnect.
    let killed: i64 = app
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'pgtenant_sync_test'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    assert_eq!(
        reg.get("acme").unwrap().id,
        "acme",
        "cache survives disconnect"
    );
    ops::add(&app, &s, new_tenant(&c, "gamma", "gamma"), "t")
        .await
        .unwrap();
    wait_until("catch-up after reconnect", Duration::from_secs(10), || {
        reg.get("gamma").is_some()
    })
    .await;
    assert!(reg.stats().sync_errors >= 1);
    handle.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_marks_only_that_tenant() {
    let Some(c) = Cluster::start() else { return };
    let app = c.setup().await;
    let s = secrets();
    ops::add(&app, &s, new_tenant(&c, "good", "good"), "t")
        .await
        .unwrap();
    let foreign = SecretBox::from_hex(OLD_KEY, None).unwrap();
    ops::add(&app, &foreign, new_tenant(&c, "bad", "bad"), "t")
        .await
        .unwrap();

    let records = load_all(&app, &s).await.unwrap();
    assert_eq!(records.len(), 2);
    let bad = records.iter().find(|r| r.id == "bad").unwrap();
    assert_eq!(
        bad.data_source,
        Err(DataSourceError::Decrypt(CryptoError::AuthenticationFailed))
    );
    assert!(!bad.is_routable());
    assert!(records
        .iter()
        .find(|r| r.id == "good")
        .unwrap()
        .is_routable());

    let reg = TenantRegistry::new();
    reg.replace_all(records);
    assert_eq!(reg.stats().decrypt_failures, 1);
    assert_eq!(reg.all().len(), 2, "broken tenant stays listed");

    let shown = ops::show(&app, &s, "bad").await.unwrap();
    assert!(matches!(shown.password, PasswordState::Unreadable(_)));
    assert!(shown.to_string().contains("authentication tag mismatch"));
    let err = ops::test(&shown.record).await.unwrap_err().to_string();
    assert!(err.contains("tenant bad"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_key_moves_every_row_to_the_current_key() {
    let Some(c) = Cluster::start() else { return };
    let app = c.setup().await;
    let old = SecretBox::from_hex(OLD_KEY, None).unwrap();
    ops::add(&app, &old, new_tenant(&c, "a", "a"), "t")
        .await
        .unwrap();
    ops::add(&app, &old, new_tenant(&c, "b", "b"), "t")
        .await
        .unwrap();
    let mut no_pw = new_tenant(&c, "c", "c");
    no_pw.url_with_password =
        Secret::new(format!("postgres://trusty@127.0.0.1:{}/postgres", c.port));
    ops::add(&app, &old, no_pw, "t").await.unwrap();

    let rotating = SecretBox::from_hex(KEY, Some(OLD_KEY)).unwrap();
    assert_eq!(
        ops::show(&app, &rotating, "a").await.unwrap().password,
        PasswordState::SetWithPreviousKey
    );
    let report = ops::rotate_key(&app, &rotating, "rotator").await.unwrap();
    assert_eq!(
        (
            report.rotated,
            report.were_on_previous_key,
            report.without_password
        ),
        (2, 2, 1)
    );

    let new_only = SecretBox::from_hex(KEY, None).unwrap();
    for r in load_all(&app, &new_only).await.unwrap() {
        assert!(r.data_source.is_ok(), "{}: {:?}", r.id, r.data_source);
    }
    let audit = audit_text(&app).await;
    assert!(audit.contains("rotator (db user postgres)"), "{audit}");
    assert!(!audit.contains(TENANT_PW));

    // A row readable by neither key aborts the rotation and changes nothing.
    let stranger = SecretBox::from_hex(&"ab".repeat(32), None).unwrap();
    app.execute(
        "UPDATE tenants SET data_source_password = $1 WHERE id = 'b'",
        &[&stranger.encrypt("x").unwrap()],
    )
    .await
    .unwrap();
    let before: Vec<String> = app
        .query(
            "SELECT coalesce(data_source_password, '') FROM tenants ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let err = ops::rotate_key(&app, &new_only, "rotator")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("rotation aborted") && err.contains("b:"),
        "{err}"
    );
    let after: Vec<String> = app
        .query(
            "SELECT coalesce(data_source_password, '') FROM tenants ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(before, after);
}
