//! Issue #4: pools per data source on real clusters — sharing, exhaustion,
//! healing, cleanup after vanished clients, per-tenant fairness.

mod support;

use std::time::{Duration, Instant};
use support::*;

const PW: &str = "pool-user-pw";

fn fleet_with_pool(config_json: &str) -> Fleet {
    let f = Fleet::start();
    add_user(&f.app, "app", "svc@example.com", &scram(PW), None);
    f.app.psql(
        "app",
        &format!("UPDATE tenants SET connection_pool_config = '{config_json}'"),
    );
    f
}

/// The service account's client through `p`.
async fn connect(p: &Proxy) -> tokio_postgres::Client {
    p.client("svc@example.com", PW, "app").await
}

fn code(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

fn backend_conns(c: &Cluster, db: &str) -> i64 {
    c.psql(db, &format!("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND datname = '{db}'"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_on_one_shared_source_share_one_pool_and_exhaustion_gives_53300() {
    let f = fleet_with_pool(
        r#"{"pool_size": 1, "checkout_timeout_ms": 500, "max_connections_per_tenant": 1}"#,
    );
    let p = f.proxy("");
    pgtenant::clock::sleep(Duration::from_millis(500)).await;
    let c = connect(&p).await;
    for t in ["acme", "globex", "acme", "globex"] {
        c.query(
            &format!("SELECT count(*) FROM accounts WHERE tenant_id = '{t}'"),
            &[],
        )
        .await
        .unwrap();
    }
    assert_eq!(
        backend_conns(&f.shared, "shared"),
        1,
        "acme and globex share one pool of size 1"
    );

    // One client holds the only connection in a transaction: the next waits 500 ms, then 53300.
    let holder = connect(&p).await;
    holder
        .batch_execute("BEGIN; SELECT * FROM accounts WHERE tenant_id = 'acme'")
        .await
        .unwrap();
    let waiter = connect(&p).await;
    let started = Instant::now();
    let e = waiter
        .query("SELECT * FROM accounts WHERE tenant_id = 'globex'", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "53300");
    assert!(
        e.as_db_error().unwrap().message().contains("shared"),
        "names the pool"
    );
    assert!(started.elapsed() >= Duration::from_millis(450));
    // The dedicated tenant is unaffected.
    waiter
        .query("SELECT * FROM accounts WHERE tenant_id = 'initech'", &[])
        .await
        .unwrap();
    holder.batch_execute("COMMIT").await.unwrap();
    waiter
        .query("SELECT * FROM accounts WHERE tenant_id = 'globex'", &[])
        .await
        .unwrap();
}

/// A client that gives up while queued for a connection costs nothing: its
/// statement never runs on the connection freed after it left, and the
/// pool's waiting count goes back to zero.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_leaving_while_queued_never_runs_its_statement() {
    let f = fleet_with_pool(r#"{"pool_size": 1, "checkout_timeout_ms": 60000}"#);
    let mport = free_port();
    let p = f.proxy(&format!("[metrics]\nlisten = \"127.0.0.1:{mport}\"\n"));
    pgtenant::clock::sleep(Duration::from_millis(500)).await;
    let holder = connect(&p).await;
    holder
        .batch_execute("BEGIN; SELECT * FROM accounts WHERE tenant_id = 'acme'")
        .await
        .unwrap();
    let waiting = || {
        let (_, m) = http_get(mport, "/metrics").unwrap();
        m.lines()
            .find(|l| {
                l.starts_with("pgtenant_pool_client_connections{")
                    && l.contains("shared")
                    && l.contains("state=\"waiting\"")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
            .unwrap_or_else(|| panic!("no waiting gauge for the shared pool in\n{m}"))
    };

    let conninfo = p.conninfo("svc@example.com", PW, "app");
    // Client and connection in one task: aborting it closes the socket.
    let leaver = tokio::spawn(async move {
        let (c, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
            .await
            .unwrap();
        let insert =
            c.batch_execute("INSERT INTO accounts (tenant_id, name) VALUES ('globex', 'ghost')");
        tokio::select! {
            _ = conn => {}
            _ = insert => {}
        }
    });
    assert!(
        eventually(Duration::from_secs(5), || waiting() == 1).await,
        "the INSERT never queued\n{}",
        p.log_text()
    );
    // The client goes away (its socket closes) while still queued.
    leaver.abort();
    let _ = leaver.await;
    assert!(
        eventually(Duration::from_secs(5), || waiting() == 0).await,
        "the departed client still counts as waiting\n{}",
        p.log_text()
    );

    holder.batch_execute("COMMIT").await.unwrap();
    // The freed connection serves the next client, never the departed one.
    let next = connect(&p).await;
    next.query("SELECT * FROM accounts WHERE tenant_id = 'globex'", &[])
        .await
        .unwrap();
    pgtenant::clock::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        f.shared.psql(
            "shared",
            "SELECT count(*) FROM accounts WHERE name = 'ghost'"
        ),
        "0",
        "the departed client's INSERT ran\n{}",
        p.log_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_data_source_fails_only_its_tenants_and_heals() {
    let f = fleet_with_pool(r#"{"pool_size": 4}"#);
    let p = f.proxy("");
    pgtenant::clock::sleep(Duration::from_millis(500)).await;
    let c = connect(&p).await;
    let initech = "SELECT count(*) FROM accounts WHERE tenant_id = 'initech'";
    let acme = "SELECT count(*) FROM accounts WHERE tenant_id = 'acme'";
    c.query(initech, &[]).await.unwrap();
    f.dedicated.stop();
    let e = c.query(initech, &[]).await.unwrap_err();
    assert_eq!(&code(&e)[..2], "08", "connection-class error: {e:?}");
    // Same client session, other tenant: fine.
    c.query(acme, &[]).await.unwrap();
    f.dedicated.restart();
    // No pgtenant restart: the pool reconnects by itself (stale idle connections are dropped).
    let mut healed = false;
    for _ in 0..20 {
        if c.query(initech, &[]).await.is_ok() {
            healed = true;
            break;
        }
        pgtenant::clock::sleep(Duration::from_millis(250)).await;
    }
    assert!(healed, "{}", p.log_text());
    c.query(acme, &[]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_vanishing_mid_transaction_leave_nothing_behind() {
    let f = fleet_with_pool(r#"{"pool_size": 10, "checkout_timeout_ms": 60000}"#);
    f.dedicated.psql(
        "dedicated",
        "INSERT INTO accounts (tenant_id, name) VALUES ('initech', 'locked-row')",
    );
    let p = f.proxy("");
    pgtenant::clock::sleep(Duration::from_millis(500)).await;
    let port = p.port;
    let mut tasks = Vec::new();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(24));
    for i in 0..1000 {
        let sem = sem.clone();
        let info = p.conninfo("svc@example.com", PW, "app");
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.unwrap();
            let (c, conn) = tokio_postgres::connect(&info, tokio_postgres::NoTls)
                .await
                .unwrap();
            let h = tokio::spawn(conn);
            c.batch_execute("BEGIN").await.unwrap();
            c.batch_execute(&format!(
                "INSERT INTO accounts (tenant_id, name) VALUES ('initech', 'ghost-{i}')"
            ))
            .await
            .unwrap();
            if i % 2 == 0 {
                // Vanish while a statement is running.
                let _ = pgtenant::clock::timeout(
                    Duration::from_millis(20),
                    c.batch_execute("SELECT pg_sleep(0.5)"),
                )
                .await;
            }
            h.abort();
            drop(c);
            let _ = port;
        }));
    }
    for t in tasks {
        if let Err(e) = t.await {
            let log = p.log_text();
            let tail: Vec<&str> = log
                .lines()
                .filter(|l| !l.contains("DEBUG") && !l.contains("client authenticated"))
                .collect();
            panic!("{e}\n{}", tail[tail.len().saturating_sub(40)..].join("\n"));
        }
    }
    pgtenant::clock::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        f.dedicated.psql(
            "dedicated",
            "SELECT count(*) FROM accounts WHERE name LIKE 'ghost-%'"
        ),
        "0"
    );
    assert_eq!(
        f.dedicated.psql("dedicated", "SELECT count(*) FROM pg_stat_activity WHERE datname = 'dedicated' AND (state LIKE 'idle in transaction%' OR state = 'active') AND pid <> pg_backend_pid()"),
        "0"
    );
    assert_eq!(f.dedicated.psql("dedicated", "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'accounts'"), "0");
    // And the pool still works.
    let c = connect(&p).await;
    c.batch_execute("SET app.tenant_id = 'initech'; SET lock_timeout = '1s'; BEGIN; LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE; COMMIT").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn session_state_never_leaks_between_clients() {
    let f = fleet_with_pool(r#"{"pool_size": 1}"#);
    let p = f.proxy("");
    pgtenant::clock::sleep(Duration::from_millis(500)).await;
    let a = connect(&p).await;
    let b = connect(&p).await;
    let q = "/* tenant_id='initech' */ SELECT current_setting('statement_timeout')";
    a.batch_execute("/* tenant_id='initech' */ SET statement_timeout = '1234ms'")
        .await
        .unwrap();
    a.batch_execute("/* tenant_id='initech' */ SELECT pg_advisory_lock(42)")
        .await
        .unwrap();
    assert_eq!(
        a.query_one(q, &[]).await.unwrap().get::<_, String>(0),
        "1234ms"
    );
    // Same single backend connection, other client: clean state, lock released.
    assert_eq!(b.query_one(q, &[]).await.unwrap().get::<_, String>(0), "0");
    let got: bool = b
        .query_one(
            "/* tenant_id='initech' */ SELECT pg_try_advisory_lock(42)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(got, "the other client's session lock was released");
    // The first client's setting is replayed when it comes back.
    assert_eq!(
        a.query_one(q, &[]).await.unwrap().get::<_, String>(0),
        "1234ms"
    );

    // A SET sent with the extended protocol is tracked too.
    b.execute("/* tenant_id='initech' */ SET work_mem = '7MB'", &[])
        .await
        .unwrap();
    let wm = "/* tenant_id='initech' */ SELECT current_setting('work_mem')";
    assert_eq!(
        a.query_one(wm, &[]).await.unwrap().get::<_, String>(0),
        "4MB"
    );
    assert_eq!(
        b.query_one(wm, &[]).await.unwrap().get::<_, String>(0),
        "7MB"
    );

    // Only pure SETs are replayed: a string that also writes is never re-run.
    a.batch_execute("SET app.tenant_id = 'initech'; SET lock_timeout = '3s'; INSERT INTO accounts (tenant_id, name) VALUES ('initech', 'exactly-once')")
        .await
        .unwrap();
    b.query_one(wm, &[]).await.unwrap();
    a.query_one(q, &[]).await.unwrap();
    assert_eq!(
        f.dedicated.psql(
            "dedicated",
            "SELECT count(*) FROM accounts WHERE name = 'exactly-once'"
        ),
        "1"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flooding_tenant_cannot_starve_its_neighbour() {
    let f = fleet_with_pool(
        r#"{"pool_size": 4, "max_connections_per_tenant": 2, "checkout_timeout_ms": 30000}"#,
    );
    let p = f.proxy("");
    pgtenant::clock::sleep(Duration::from_millis(500)).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flood = Vec::new();
    for _ in 0..16 {
        let c = connect(&p).await;
        let stop = stop.clone();
        flood.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                c.batch_execute("/* tenant_id='acme' */ SELECT pg_sleep(0.2)")
                    .await
                    .unwrap();
                n += 1;
            }
            n
        }));
    }
    pgtenant::clock::sleep(Duration::from_millis(500)).await;
    let victim = connect(&p).await;
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let t = Instant::now();
        victim
            .query(
                "SELECT count(*) FROM accounts WHERE tenant_id = 'globex'",
                &[],
            )
            .await
            .unwrap();
        worst = worst.max(t.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in flood {
        t.await.unwrap();
    }
    // Without the per-tenant cap the flood (16 clients × 200 ms on 4 connections)
    // would queue globex behind ~800 ms of acme work.
    assert!(
        worst < Duration::from_millis(400),
        "globex waited {worst:?}"
    );
    assert!(backend_conns(&f.shared, "shared") <= 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn suspending_closes_idle_connections_and_a_wrong_key_fails_only_that_tenant() {
    let f = fleet_with_pool(r#"{"pool_size": 4}"#);
    let p = f.proxy("");
    pgtenant::clock::sleep(Duration::from_millis(500)).await;
    let c = connect(&p).await;
    c.query("SELECT 1 FROM accounts WHERE tenant_id = 'initech'", &[])
        .await
        .unwrap();
    assert_eq!(backend_conns(&f.dedicated, "dedicated"), 1);
    f.tenant_cli(&["suspend", "initech"]);
    pgtenant::clock::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        backend_conns(&f.dedicated, "dedicated"),
        0,
        "idle connections of a suspended tenant are closed"
    );
    let e = c
        .query("SELECT 1 FROM accounts WHERE tenant_id = 'initech'", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "08004");
    assert!(e.as_db_error().unwrap().message().contains("suspended"));

    // A value encrypted with another key: that tenant gets 08004, the others work.
    let other = Fleet {
        app: Cluster::start(),
        shared: Cluster::start(),
        dedicated: Cluster::start(),
        key: "11".repeat(32),
    };
    let _ = &other;
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_pgtenant"))
        .arg("encrypt")
        .env("ENCRYPTION_KEY", "22".repeat(32))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = {
        use std::io::Write;
        let mut bad = bad;
        bad.stdin
            .take()
            .unwrap()
            .write_all(DATA_ROLE_PW.as_bytes())
            .unwrap();
        bad.wait_with_output().unwrap()
    };
    let wrong = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(wrong.split(':').count(), 3, "iv:authTag:ciphertext");
    f.app.psql(
        "app",
        &format!("UPDATE tenants SET data_source_password = '{wrong}' WHERE id = 'globex'"),
    );
    pgtenant::clock::sleep(Duration::from_millis(1000)).await;
    let e = c
        .query("SELECT 1 FROM accounts WHERE tenant_id = 'globex'", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "08004");
    c.query("SELECT 1 FROM accounts WHERE tenant_id = 'acme'", &[])
        .await
        .unwrap();
    assert!(!p.log_text().contains(DATA_ROLE_PW));
}

#[tokio::test(flavor = "multi_thread")]
async fn min_idle_connections_are_opened_ahead_of_demand() {
    let f = fleet_with_pool(r#"{"pool_size": 5, "min_idle": 2}"#);
    let p = f.proxy("");
    pgtenant::clock::sleep(Duration::from_millis(500)).await;
    // The pool exists once a statement used it; then it keeps two idle connections.
    let c = connect(&p).await;
    c.query("SELECT 1 FROM accounts WHERE tenant_id = 'initech'", &[])
        .await
        .unwrap();
    let mut n = 0;
    for _ in 0..40 {
        n = backend_conns(&f.dedicated, "dedicated");
        if n >= 2 {
            break;
        }
        pgtenant::clock::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(n, 2);
}

/// Topping the idle lists up to `min_idle` counts the connections clients
/// hold (kept between transactions, or busy): the pool never opens more
/// than its size, and the upkeep tick does not replace kept connections
/// with new ones every time it runs.
#[tokio::test(flavor = "multi_thread")]
async fn min_idle_never_opens_past_the_pool_size() {
    let f = fleet_with_pool(r#"{"pool_size": 3, "min_idle": 3}"#);
    let p = f.proxy("");
    pgtenant::clock::sleep(Duration::from_millis(500)).await;
    let clients = [connect(&p).await, connect(&p).await, connect(&p).await];
    let pids = || {
        f.dedicated.psql(
            "dedicated",
            "SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND datname = 'dedicated'",
        )
    };
    let work = || async {
        for c in &clients {
            backend_pid(c).await;
        }
    };
    // Two upkeep ticks (2 s each) to settle.
    for _ in 0..25 {
        work().await;
        pgtenant::clock::sleep(Duration::from_millis(200)).await;
    }
    let settled = pids();
    assert_eq!(settled.split(',').count(), 3, "{settled}");
    for _ in 0..25 {
        work().await;
        pgtenant::clock::sleep(Duration::from_millis(200)).await;
        assert_eq!(pids(), settled, "connections were closed and reopened");
    }
}

async fn backend_pid(c: &tokio_postgres::Client) -> i32 {
    c.query_one(
        "SELECT pg_backend_pid(), count(*) FROM accounts WHERE tenant_id = 'initech'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// While its pool has room, a client keeps its connection between
/// transactions (its next transaction skips the pool); the pool takes it
/// back as soon as another client would have to wait, and a kept
/// connection the server closed is replaced, not used.
#[tokio::test(flavor = "multi_thread")]
async fn kept_connections_come_back_when_another_client_needs_one() {
    let f = fleet_with_pool(r#"{"pool_size": 2, "checkout_timeout_ms": 5000}"#);
    let p = f.proxy("");
    pgtenant::clock::sleep(Duration::from_millis(500)).await;
    let c = connect(&p).await;
    // The pool's upkeep tick (every 2 s) also asks for kept connections;
    // one landing inside the scene below makes A's connection idle, and
    // the roles get mixed up. The scene is then set again with new
    // clients (the tick comes back only 2 s later); a real failure fails
    // every attempt.
    let mut attempt = 0;
    let (a, pid_a, holder) = loop {
        attempt += 1;
        assert!(attempt <= 3, "the scene never set up\n{}", p.log_text());
        if attempt > 1 {
            // The last attempt's sessions end and give their connections back.
            pgtenant::clock::sleep(Duration::from_millis(300)).await;
        }
        let (a, b, holder) = (connect(&p).await, connect(&p).await, connect(&p).await);
        let pid_a = backend_pid(&a).await;
        if backend_pid(&a).await != pid_a {
            continue; // not kept between transactions
        }
        // With A's connection kept, B gets the pool's other one (a released
        // connection would have been the most recently used, A's).
        if backend_pid(&b).await == pid_a {
            continue;
        }
        // The holder takes the last free connection, B's; C must not wait
        // for A, an idle client, up to the checkout timeout.
        holder.batch_execute("BEGIN").await.unwrap();
        if backend_pid(&holder).await == pid_a {
            continue;
        }
        break (a, pid_a, holder);
    };
    let started = Instant::now();
    let pid_c = backend_pid(&c).await;
    assert_eq!(pid_c, pid_a, "A gave its connection back to C");
    // At once, not at the pool's next upkeep tick (every 2 s), which also
    // recalls kept connections.
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "C waited {:?} for an idle client's connection",
        started.elapsed()
    );
    holder.batch_execute("COMMIT").await.unwrap();
    assert!(backend_pid(&a).await > 0, "A still works");

    // A kept connection that the server closed is replaced at the next use.
    let pid = backend_pid(&a).await;
    assert_eq!(backend_pid(&a).await, pid, "kept again");
    let killed = f
        .dedicated
        .psql("dedicated", &format!("SELECT pg_terminate_backend({pid})"));
    assert_eq!(killed, "t");
    pgtenant::clock::sleep(Duration::from_millis(300)).await;
    let replaced = a
        .query_one(
            "SELECT pg_backend_pid(), count(*) FROM accounts WHERE tenant_id = 'initech'",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("after the kept backend died: {e}\n{}", p.log_text()));
    assert_ne!(replaced.get::<_, i32>(0), pid);
    assert_eq!(
        backend_conns(&f.dedicated, "dedicated"),
        2,
        "the pool never exceeds its size"
    );
}
