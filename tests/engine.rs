//! Issue #2: the protocol engine against real PostgreSQL and real clients
//! (psql, pgbench, tokio-postgres), all statements passing through to the app DB.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::wire::{msg, Raw};
use support::*;

const PW: &str = "alice-secret-1";

/// An app DB with users for every verifier kind, and a proxy in front of it.
struct Setup {
    app: Cluster,
    proxy: Proxy,
}

fn setup_with(extra_config: &str) -> Setup {
    let app = Cluster::start();
    app.createdb("app");
    app.psql("app", APP_SCHEMA);
    add_user(&app, "app", "alice@example.com", &scram(PW), None);
    add_user(
        &app,
        "app",
        "md5user",
        &postgres_protocol::password::md5(PW.as_bytes(), "md5user"),
        None,
    );
    add_user(
        &app,
        "app",
        "bcryptuser",
        &bcrypt::hash(PW, 4).unwrap(),
        None,
    );
    app.psql("app", "CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items VALUES (1, 'one'), (2, 'two');");
    let config = format!(
        "[app_db]\nurl = \"{}\"\n[auth]\nquery = \"{}\"\n[routing]\nenabled = false\n{extra_config}",
        app.url("app"),
        auth_query()
    );
    let proxy = Proxy::start(&config, &[]);
    Setup { app, proxy }
}

fn setup() -> Setup {
    setup_with("")
}

#[test]
fn psql_query_copy_both_ways_and_error_sqlstate() {
    let s = setup();
    let (ok, out, err) = s.proxy.psql(
        "alice@example.com",
        PW,
        "app",
        "SELECT name FROM items ORDER BY id",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "one\ntwo");

    // libpq's default sslmode=prefer asks for TLS first; without a certificate
    // the proxy answers 'N' and the session goes on in plaintext.
    let out = Command::new("psql")
        .args(["-X", "-A", "-t", "-c", "SELECT 'plain'"])
        .arg(format!(
            "host=127.0.0.1 port={} user=alice@example.com password={PW} dbname=app sslmode=prefer",
            s.proxy.port
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "plain");

    // Multi-statement simple query string.
    let (ok, out, _) = s
        .proxy
        .psql("alice@example.com", PW, "app", "SELECT 1; SELECT 2");
    assert!(ok);
    assert_eq!(out, "1\n2");

    let dir = s.proxy.dir.clone();
    let csv = dir.join("in.csv");
    std::fs::write(&csv, "10,ten\n11,eleven\n").unwrap();
    let (ok, _, err) = s.proxy.psql(
        "alice@example.com",
        PW,
        "app",
        &format!("\\copy items FROM '{}' CSV", csv.display()),
    );
    assert!(ok, "{err}");
    assert_eq!(s.app.psql("app", "SELECT count(*) FROM items"), "4");
    let outcsv = dir.join("out.csv");
    let (ok, _, err) = s.proxy.psql(
        "alice@example.com",
        PW,
        "app",
        &format!(
            "\\copy (SELECT * FROM items ORDER BY id) TO '{}' CSV",
            outcsv.display()
        ),
    );
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read_to_string(&outcsv).unwrap(),
        "1,one\n2,two\n10,ten\n11,eleven\n"
    );

    let (ok, _, err) = s.proxy.psql(
        "alice@example.com",
        PW,
        "app",
        "SELECT * FROM no_such_table",
    );
    assert!(!ok);
    assert!(
        err.contains("42P01"),
        "psql should show the backend's SQLSTATE: {err}"
    );
    // The session survives errors.
    let (ok, out, _) = s.proxy.psql("alice@example.com", PW, "app", "SELECT 1/0; ");
    assert!(!ok && out.is_empty());
}

#[test]
fn psql_lo_import_uses_function_call() {
    let s = setup();
    let file = s.proxy.dir.join("blob.bin");
    std::fs::write(&file, b"large object payload").unwrap();
    let (ok, out, err) = s.proxy.psql(
        "alice@example.com",
        PW,
        "app",
        &format!("\\lo_import '{}'", file.display()),
    );
    assert!(ok, "{err} {out}\n{}", s.proxy.log_text());
    assert_eq!(
        s.app.psql(
            "app",
            "SELECT convert_from(lo_get(oid), 'UTF8') FROM pg_largeobject_metadata"
        ),
        "large object payload"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tokio_postgres_prepared_pipelined_copy_listen_cancel() {
    let s = setup();
    let c = s.proxy.client("alice@example.com", PW, "app").await;

    // Prepared statements, executed repeatedly.
    let stmt = c
        .prepare("SELECT name FROM items WHERE id = $1")
        .await
        .unwrap();
    for (id, name) in [(1, "one"), (2, "two"), (1, "one")] {
        let row = c.query_one(&stmt, &[&id]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), name);
    }

    // Pipelining: several queries in flight at once.
    let f1 = c.query_one("SELECT $1::int + 1", &[&1i32]);
    let f2 = c.query_one("SELECT $1::text || 'x'", &[&"a"]);
    let f3 = c.query_one("SELECT count(*) FROM items", &[]);
    let (r1, r2, r3) = tokio::join!(f1, f2, f3);
    assert_eq!(r1.unwrap().get::<_, i32>(0), 2);
    assert_eq!(r2.unwrap().get::<_, String>(0), "ax");
    assert_eq!(r3.unwrap().get::<_, i64>(0), 2);

    // COPY both ways.
    use futures::{SinkExt, StreamExt};
    let sink = match c.copy_in("COPY items FROM STDIN").await {
        Ok(s) => s,
        Err(e) => panic!("copy_in: {e:?}\n{}", s.proxy.log_text()),
    };
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"20\ttwenty\n21\ttwenty-one\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    let stream = match c
        .copy_out("COPY (SELECT id FROM items ORDER BY id) TO STDOUT")
        .await
    {
        Ok(s) => s,
        Err(e) => panic!("copy_out: {e:?}\n{}", s.proxy.log_text()),
    };
    let chunks: Vec<_> = stream.collect().await;
    let text: Vec<u8> = chunks
        .into_iter()
        .flat_map(|c| c.unwrap().to_vec())
        .collect();
    assert_eq!(String::from_utf8(text).unwrap(), "1\n2\n20\n21\n");

    // Errors carry the backend's SQLSTATE.
    let err = c.simple_query("SELECT 1/0").await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "22012");

    // Cancel of pg_sleep reaches the right backend.
    let token = c.cancel_token();
    let sleeper = tokio::spawn(async move {
        let r = c.simple_query("SELECT pg_sleep(30)").await;
        (r, c)
    });
    pgtenant::clock::sleep(Duration::from_millis(500)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let (r, c) = pgtenant::clock::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("cancel took effect")
        .unwrap();
    assert_eq!(r.unwrap_err().code().unwrap().code(), "57014");
    // The session is still usable after the cancel.
    assert_eq!(
        c.query_one("SELECT 7", &[]).await.unwrap().get::<_, i32>(0),
        7
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn listen_notify_reaches_the_listening_client() {
    let s = setup_with("[pool]\nmode = \"session\"\n");
    let (listener, mut conn) = tokio_postgres::connect(
        &s.proxy.conninfo("alice@example.com", PW, "app"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        use futures::StreamExt;
        while let Some(Ok(m)) = stream.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
            }
        }
    });
    listener.batch_execute("LISTEN jobs").await.unwrap();
    let other = s.proxy.client("alice@example.com", PW, "app").await;
    other.batch_execute("NOTIFY jobs, 'hello'").await.unwrap();
    let got = pgtenant::clock::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, ("jobs".to_string(), "hello".to_string()));
}

fn pgbench(s: &Setup, args: &[&str]) -> String {
    let out = Command::new("pgbench")
        .args(args)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &s.proxy.port.to_string(),
            "-U",
            "alice@example.com",
            "app",
        ])
        .env("PGPASSWORD", PW)
        .env("PGSSLMODE", "disable")
        .output()
        .expect("pgbench");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pgbench {args:?} failed:\n{text}");
    text
}

#[test]
fn pgbench_all_three_modes_without_failures() {
    let s = setup_with("[pool]\nsize = 4\n");
    pgbench(&s, &["-i", "-s", "1", "-q"]);
    for mode in ["simple", "extended", "prepared"] {
        let out = pgbench(&s, &["-M", mode, "-c", "8", "-j", "2", "-t", "200"]);
        assert!(
            out.contains("number of failed transactions: 0"),
            "{mode}: {out}"
        );
        assert!(
            out.contains("number of transactions actually processed: 1600/1600"),
            "{mode}: {out}"
        );
    }
}

#[test]
fn auth_matrix() {
    let s = setup();
    let try_login = |user: &str, pw: &str| s.proxy.psql(user, pw, "app", "SELECT 1");
    assert!(try_login("alice@example.com", PW).0, "scram ok");
    let (ok, _, err) = try_login("alice@example.com", "wrong");
    assert!(
        !ok && err.contains("password authentication failed"),
        "{err}"
    );
    assert_eq!(
        login_error_code(&s.proxy, "alice@example.com", "wrong"),
        "28P01"
    );
    assert_eq!(
        login_error_code(&s.proxy, "nobody@example.com", "wrong"),
        "28P01"
    );
    assert!(try_login("md5user", PW).0, "md5 ok");
    assert!(!try_login("md5user", "wrong").0, "md5 bad");
    // bcrypt needs TLS: refused in plaintext.
    let (ok, _, err) = try_login("bcryptuser", PW);
    assert!(!ok && err.contains("requires an SSL connection"), "{err}");
    // Unknown user: the same error as a wrong password.
    let (ok, _, err) = try_login("nobody@example.com", "whatever");
    assert!(
        !ok && err.contains("password authentication failed for user \"nobody@example.com\""),
        "{err}"
    );
}

/// The SQLSTATE a failed login gets (via tokio-postgres, which exposes it).
fn login_error_code(p: &Proxy, user: &str, pw: &str) -> String {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        match tokio_postgres::connect(&p.conninfo(user, pw, "app"), tokio_postgres::NoTls).await {
            Ok(_) => "ok".to_string(),
            Err(e) => e
                .code()
                .map(|c| c.code().to_string())
                .unwrap_or_else(|| e.to_string()),
        }
    })
}

fn make_cert(dir: &std::path::Path) -> (String, String) {
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(st.status.success());
    (cert.display().to_string(), key.display().to_string())
}

#[test]
fn tls_bcrypt_scram_plus_and_tls_required() {
    let tmp = std::env::temp_dir().join(format!("pgtenant-cert-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let (cert, key) = make_cert(&tmp);
    let s = setup_with(&format!(
        "[tls]\ncert = \"{cert}\"\nkey = \"{key}\"\nrequire = true\n"
    ));
    let psql = |user: &str, sslmode: &str, extra: &str| {
        let out = Command::new("psql")
            .args(["-X", "-A", "-t"])
            .arg(format!(
                "host=127.0.0.1 port={} user={user} password={PW} dbname=app sslmode={sslmode} {extra}",
                s.proxy.port
            ))
            .args(["-c", "SELECT 42"])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = psql("bcryptuser", "require", "");
    assert!(ok, "bcrypt over TLS: {err}");
    assert_eq!(out, "42");
    let (ok, _, err) = psql("alice@example.com", "require", "channel_binding=require");
    assert!(ok, "SCRAM-SHA-256-PLUS: {err}");
    let (ok, _, err) = psql("alice@example.com", "disable", "");
    assert!(!ok && err.contains("SSL connection is required"), "{err}");
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn malformed_input_gets_08p01_and_nothing_else_breaks() {
    use std::io::{Read, Write};
    let s = setup();
    // Garbage instead of a startup packet.
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", s.proxy.port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.write_all(&[0, 0, 0, 8, 0xde, 0xad, 0xbe, 0xef])
        .unwrap();
    let mut buf = Vec::new();
    let _ = sock.read_to_end(&mut buf);
    assert_eq!(buf.first(), Some(&b'E'));
    assert!(String::from_utf8_lossy(&buf).contains("08P01"));

    // An absurd length word.
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", s.proxy.port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.write_all(&[0x7f, 0xff, 0xff, 0xff]).unwrap();
    let mut buf = Vec::new();
    let _ = sock.read_to_end(&mut buf);
    assert!(String::from_utf8_lossy(&buf).contains("08P01"));

    // After authentication: an unknown message type and an oversized message.
    for bad in [
        &b"?\0\0\0\x04"[..],
        &b"Q\x7f\xff\xff\xff"[..],
        &b"Q\0\0\0\x02"[..],
    ] {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let text = rt.block_on(async {
            let (c, conn) = tokio_postgres::connect(
                &s.proxy.conninfo("alice@example.com", PW, "app"),
                tokio_postgres::NoTls,
            )
            .await
            .unwrap();
            drop((c, conn));
            raw_session_then(s.proxy.port, bad).await
        });
        assert!(text.contains("08P01"), "{text}");
    }
    // The proxy still serves everyone else.
    assert!(s.proxy.psql("alice@example.com", PW, "app", "SELECT 1").0);
    assert!(!s.proxy.log_text().contains("panicked"));
}

/// Statement and portal names are opaque bytes in the client's encoding:
/// a LATIN1 client's non-ASCII names work as on PostgreSQL, instead of
/// closing the connection as malformed.
#[test]
fn latin1_statement_and_portal_names_work() {
    let s = setup();
    let stmt: &[u8] = b"caf\xe9\0";
    let portal: &[u8] = b"p\xe9\0";
    let parse = msg(b'P', &[stmt, b"SELECT 40 + 2\0", &0i16.to_be_bytes()]);
    let requests = [
        msg(b'Q', &[b"SET client_encoding = 'LATIN1'\0"]),
        parse.clone(),
        // Bind: portal, statement, no formats, no parameters, no result formats.
        msg(b'B', &[portal, stmt, &[0, 0, 0, 0, 0, 0]]),
        msg(b'D', &[b"P", portal]),
        msg(b'E', &[portal, &0i32.to_be_bytes()]),
        msg(b'S', &[]),
        // The same name again: 42P05, as from PostgreSQL, and the session goes on.
        parse,
        msg(b'S', &[]),
        msg(b'C', &[b"S", stmt]),
        msg(b'S', &[]),
        msg(b'Q', &[b"SELECT 'still here'\0"]),
        msg(b'X', &[]),
    ]
    .concat();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let text = rt.block_on(raw_session_then(s.proxy.port, &requests));
    assert!(!text.contains("08P01"), "{text}\n{}", s.proxy.log_text());
    // The statement ran under its name: a DataRow with "42", no 26000.
    assert!(
        text.contains("D\0\0\0\x0c\0\x01\0\0\0\x0242"),
        "{text:?}\n{}",
        s.proxy.log_text()
    );
    assert!(!text.contains("26000"), "{text}");
    assert!(text.contains("42P05"), "{text}");
    assert!(text.contains("still here"), "{text}");
    assert!(!s.proxy.log_text().contains("panicked"));
}

/// The unnamed statement on a pooled connection is only ever used by the
/// session whose Parse put it there, and only until a simple Query destroys
/// it: a Bind in a later request than its Parse (libpq's `PQprepare("")`
/// then `PQexecPrepared`) runs the client's own statement, one after a
/// simple Query none.
#[test]
fn an_unnamed_statement_never_runs_for_another_session() {
    // One connection: every session's request lands on the same backend.
    let s = setup_with("[pool]\nsize = 1\n");
    let parse = |sql: &[u8]| msg(b'P', &[b"\0", sql, b"\0", &0i16.to_be_bytes()]);
    let run_unnamed = [
        // Bind: unnamed portal and statement, no formats, no parameters, no result formats.
        msg(b'B', &[b"\0\0", &[0, 0, 0, 0, 0, 0]]),
        msg(b'E', &[b"\0", &0i32.to_be_bytes()]),
        msg(b'S', &[]),
    ]
    .concat();
    let rt = tokio::runtime::Runtime::new().unwrap();

    // Session one parses and runs its unnamed statement on the connection.
    let one = [parse(b"SELECT 'one'"), run_unnamed.clone(), msg(b'X', &[])].concat();
    let text = rt.block_on(raw_session_then(s.proxy.port, &one));
    assert!(text.contains("one"), "{text:?}");

    // Session two parses in one request (answered by the proxy) and binds
    // in the next, on the connection that still holds session one's.
    let two = [
        parse(b"SELECT 'two'"),
        msg(b'S', &[]),
        run_unnamed.clone(),
        msg(b'X', &[]),
    ]
    .concat();
    let text = rt.block_on(raw_session_then(s.proxy.port, &two));
    assert!(
        text.contains("two") && !text.contains("one"),
        "session two ran another session's statement: {text:?}"
    );

    // A simple Query in between destroys the unnamed statement, as on
    // PostgreSQL: the next Bind gets 26000.
    let three = [
        parse(b"SELECT 'three'"),
        run_unnamed.clone(),
        msg(b'Q', &[b"SELECT 'between'\0"]),
        run_unnamed,
        msg(b'X', &[]),
    ]
    .concat();
    let text = rt.block_on(raw_session_then(s.proxy.port, &three));
    assert!(
        text.contains("unnamed prepared statement does not exist"),
        "{text:?}"
    );
    assert_eq!(text.matches("three").count(), 1, "{text:?}");
}

/// A Terminate that leaves a COPY FROM STDIN open ends the session at once
/// (the COPY can never finish), and the backend is not left in the COPY.
#[test]
fn terminate_during_copy_in_ends_the_session() {
    let s = setup();
    let requests = [msg(b'Q', &[b"COPY items FROM STDIN\0"]), msg(b'X', &[])].concat();
    let started = Instant::now();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let text = rt.block_on(raw_session_then(s.proxy.port, &requests));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the session hung after Terminate: {text}\n{}",
        s.proxy.log_text()
    );
    let copying = || {
        s.app.psql(
            "app",
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY items%' AND state <> 'idle'",
        )
    };
    assert!(
        rt.block_on(eventually(Duration::from_secs(3), || copying() == "0")),
        "a backend is still in the COPY\n{}",
        s.proxy.log_text()
    );
    assert!(s.proxy.psql("alice@example.com", PW, "app", "SELECT 1").0);
}

/// Logs in as alice, sends `bad`, returns what came back.
async fn raw_session_then(port: u16, bad: &[u8]) -> String {
    Raw::connect(port, "alice@example.com", PW, "app")
        .await
        .send_then_read_all(bad)
        .await
}

#[test]
fn client_vanishing_mid_transaction_releases_its_backend() {
    let s = setup_with("[pool]\nsize = 2\n");
    for _ in 0..5 {
        let mut child = Command::new("psql")
            .arg(s.proxy.conninfo("alice@example.com", PW, "app"))
            .args([
                "-c",
                "BEGIN; UPDATE items SET name = 'locked' WHERE id = 1; SELECT pg_sleep(30)",
            ])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(700));
        child.kill().unwrap();
        let _ = child.wait();
    }
    std::thread::sleep(Duration::from_millis(500));
    // The row lock is gone and the pool (size 2) still serves.
    let (ok, out, err) = s.proxy.psql(
        "alice@example.com",
        PW,
        "app",
        "SET lock_timeout = '2s'; UPDATE items SET name = 'free' WHERE id = 1 RETURNING name",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "free");
    let active = s.app.psql("app", "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%' OR query LIKE '%pg_sleep(30)%' AND pid <> pg_backend_pid()");
    assert_eq!(active, "0");
}

#[test]
fn bad_config_is_one_line_naming_the_key_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_pgtenant"))
        .args(["serve"])
        .env_remove("PGTENANT_APP_DB__URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("app_db.url") && err.lines().count() == 1,
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_pgtenant"))
        .args(["serve"])
        .env("PGTENANT_APP_DB__URL", "postgres://u@localhost/db")
        .env("PGTENANT_LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen"));
}

#[test]
fn passwd_prints_a_scram_verifier_postgres_accepts() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgtenant"))
        .arg("passwd")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let v = String::from_utf8(out.stdout).unwrap();
    assert!(v.starts_with("SCRAM-SHA-256$4096:"), "{v}");
    assert!(pgtenant::auth::Verifier::parse(v.trim()).is_some());
}

#[test]
fn tls_towards_the_backend_follows_sslmode() {
    let tmp = std::env::temp_dir().join(format!("pgtenant-bcert-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let (cert, key) = make_cert(&tmp);
    // The cluster runs as postgres: give it its own copies with strict modes.
    let app = Cluster::start();
    let (c2, k2) = (app.dir.join("server.crt"), app.dir.join("server.key"));
    std::fs::copy(&cert, &c2).unwrap();
    std::fs::copy(&key, &k2).unwrap();
    let _ = Command::new("chown")
        .args(["postgres:postgres"])
        .arg(&c2)
        .arg(&k2)
        .status();
    let _ = Command::new("chmod").args(["600"]).arg(&k2).status();
    app.psql(
        "postgres",
        &format!("ALTER SYSTEM SET ssl_cert_file = '{}'", c2.display()),
    );
    app.psql(
        "postgres",
        &format!("ALTER SYSTEM SET ssl_key_file = '{}'", k2.display()),
    );
    app.psql("postgres", "ALTER SYSTEM SET ssl = on");
    app.restart();
    app.createdb("app");
    app.psql("app", APP_SCHEMA);
    add_user(&app, "app", "alice@example.com", &scram(PW), None);
    for (mode, want_ssl) in [("require", "t"), ("disable", "f"), ("prefer", "t")] {
        let url = app
            .url("app")
            .replace("sslmode=disable", &format!("sslmode={mode}"));
        let config = format!(
            "[app_db]\nurl = \"{url}\"\n[auth]\nquery = \"{}\"\n[routing]\nenabled = false\n",
            auth_query()
        );
        let proxy = Proxy::start(&config, &[]);
        let (ok, out, err) = proxy.psql(
            "alice@example.com",
            PW,
            "app",
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        );
        assert!(ok, "{mode}: {err}");
        assert_eq!(out, want_ssl, "sslmode={mode}");
    }
    // verify-full against a self-signed certificate with no CA configured: refused.
    let url = app
        .url("app")
        .replace("sslmode=disable", "sslmode=verify-full");
    let config = format!(
        "[app_db]\nurl = \"{url}\"\n[auth]\nquery = \"{}\"\n[routing]\nenabled = false\n",
        auth_query()
    );
    let proxy = Proxy::start(&config, &[]);
    let (ok, _, _) = proxy.psql("alice@example.com", PW, "app", "SELECT 1");
    assert!(!ok, "an unverifiable backend certificate must be refused");
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn json_logs_carry_no_secrets_and_sigterm_drains() {
    let app = Cluster::start();
    app.createdb("app");
    app.psql("app", APP_SCHEMA);
    add_user(&app, "app", "alice@example.com", &scram(PW), None);
    let config = format!(
        "shutdown_timeout_secs = 10\n[app_db]\nurl = \"{}\"\n[auth]\nquery = \"{}\"\n[routing]\nenabled = false\n[log]\nformat = \"json\"\n",
        app.url("app"),
        auth_query()
    );
    let mut proxy = Proxy::start(&config, &[("RUST_LOG", "debug")]);
    assert!(proxy.psql("alice@example.com", PW, "app", "SELECT 1").0);
    assert!(
        !proxy
            .psql("alice@example.com", "wrong-pw-xyz", "app", "SELECT 1")
            .0
    );
    // A transaction in flight when SIGTERM arrives finishes.
    let sleeper = Command::new("psql")
        .arg(proxy.conninfo("alice@example.com", PW, "app"))
        .args(["-X", "-At", "-c", "SELECT pg_sleep(1.5), 'finished'"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let status = proxy.terminate();
    assert!(status.success(), "{status:?}");
    let out = sleeper.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("finished"),
        "drained, not cut"
    );
    let log = proxy.log_text();
    let mut lines = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("fields").is_some(),
            "{line}"
        );
        lines += 1;
    }
    assert!(lines > 3, "{log}");
    for secret in [PW, "wrong-pw-xyz", SUPERUSER_PASSWORD] {
        assert!(!log.contains(secret), "log leaks a secret");
    }
}

/// Sessions are spread over the session workers (one event loop per thread),
/// and one pool serves them all: with a pool of one connection, clients on
/// three different workers take turns on the same backend connection, which
/// moves to whichever worker needs it.
#[tokio::test(flavor = "multi_thread")]
async fn sessions_on_every_worker_share_one_pool() {
    let app = Cluster::start();
    app.createdb("app");
    app.psql("app", APP_SCHEMA);
    add_user(&app, "app", "alice@example.com", &scram(PW), None);
    let mport = free_port();
    let config = format!(
        "workers = 3\n[app_db]\nurl = \"{}\"\n[auth]\nquery = \"{}\"\n[routing]\nenabled = false\n[pool]\nsize = 1\n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n",
        app.url("app"),
        auth_query()
    );
    let proxy = Proxy::start(&config, &[]);
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(proxy.client("alice@example.com", PW, "app").await);
    }
    let (code, metrics) = http_get(mport, "/metrics").unwrap();
    assert_eq!(code, 200);
    for k in 0..3 {
        let line = format!("pgtenant_worker_sessions{{worker=\"{k}\"}} 1");
        assert!(metrics.contains(&line), "no `{line}` in\n{metrics}");
    }

    // In turns: every client gets the one connection, whichever worker it is on.
    let mut pids = std::collections::BTreeSet::new();
    for _ in 0..3 {
        for c in &clients {
            let pid: i32 = c
                .query_one("SELECT pg_backend_pid()", &[])
                .await
                .unwrap()
                .get(0);
            pids.insert(pid);
        }
    }
    assert_eq!(
        pids.len(),
        1,
        "one pooled connection expected, saw {pids:?}"
    );

    // All at once: they queue for it and each gets its own answer.
    let answers = futures::future::join_all(clients.iter().enumerate().map(|(i, c)| async move {
        let sql = format!("SELECT {i}::int FROM pg_sleep(0.05)");
        c.query_one(sql.as_str(), &[])
            .await
            .map(|r| r.get::<_, i32>(0))
    }))
    .await;
    for (i, a) in answers.into_iter().enumerate() {
        assert_eq!(a.unwrap(), i as i32);
    }
    // The pool never grew: one backend ran those statements, the one seen above
    // (found by its statement: the proxy's control connections are there too).
    let ran: String = app.psql(
        "app",
        "SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE query LIKE '%FROM pg_sleep(0.05)' AND pid <> pg_backend_pid()",
    );
    assert_eq!(
        ran,
        pids.iter().next().unwrap().to_string(),
        "{}",
        proxy.log_text()
    );
}

/// A pooled connection the server closed while idle (restart, admin
/// termination, idle timeout) is noticed at checkout and replaced: the
/// client's next statement runs on a new backend instead of failing.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_connection_the_server_closed_is_replaced_at_checkout() {
    let Setup { app, proxy } = setup_with("[pool]\nsize = 1\n");
    let c = proxy.client("alice@example.com", PW, "app").await;
    let first: i32 = c
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let killed = app.psql("app", &format!("SELECT pg_terminate_backend({first})"));
    assert_eq!(killed, "t");
    pgtenant::clock::sleep(std::time::Duration::from_millis(300)).await;
    let second: i32 = c
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap_or_else(|e| {
            panic!(
                "statement after the backend died: {e}\n{}",
                proxy.log_text()
            )
        })
        .get(0);
    assert_ne!(first, second);
}

/// Clients in a non-UTF-8 client_encoding: their bytes reach PostgreSQL
/// unchanged in both protocols (psql's simple queries, pgbench's Parse), and
/// a statement the proxy must read (a SET) but cannot as UTF-8 is refused
/// with 22021 without ending the session.
#[test]
fn latin1_clients_relay_their_bytes_unchanged() {
    let s = setup();
    let dir = std::env::temp_dir().join(format!("pgtenant-latin1-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |program: &str, args: &[&str], script: &[u8]| {
        let file = dir.join(format!("{program}.sql"));
        std::fs::write(&file, script).unwrap();
        let out = Command::new(program)
            .args(args)
            .arg("-f")
            .arg(&file)
            .arg(s.proxy.conninfo("alice@example.com", PW, "app"))
            .env("PGCLIENTENCODING", "LATIN1")
            .output()
            .expect(program);
        (
            out.status.success(),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };

    // "été" in LATIN1: one byte per letter, not valid UTF-8.
    let (ok, stdout, stderr) = run(
        "psql",
        &["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"],
        b"SELECT length('\xe9t\xe9');\nINSERT INTO items VALUES (3, '\xe9t\xe9');\nSELECT name FROM items WHERE id = 3;\n",
    );
    assert!(ok, "{stderr}\n{}", s.proxy.log_text());
    assert_eq!(stdout, b"3\n\xe9t\xe9\n");
    assert_eq!(
        s.app.psql("app", "SELECT name FROM items WHERE id = 3"),
        "été",
        "stored as the same characters"
    );

    let (ok, stdout, stderr) = run(
        "pgbench",
        &["-n", "-M", "extended", "-c", "2", "-t", "20"],
        b"SELECT length('\xe9t\xe9');\n",
    );
    let text = String::from_utf8_lossy(&stdout);
    assert!(ok, "{text}{stderr}");
    assert!(text.contains("number of failed transactions: 0"), "{text}");

    let (ok, stdout, stderr) = run(
        "psql",
        &["-X", "-q", "-A", "-t", "-v", "VERBOSITY=verbose"],
        b"SET application_name = 'caf\xe9';\nSELECT 41 + 1;\n",
    );
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("22021") && stderr.contains("client_encoding"),
        "{stderr}"
    );
    assert_eq!(stdout, b"42\n", "the session goes on: {stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
