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
    passthrough_with_items(PW, extra, &[])
}

/// The proxy's server-side name for `sql` prepared without declared types:
/// anyone can compute it.
fn pgt_name(sql: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(sql);
    h.update([0]);
    h.update(0i16.to_be_bytes());
    format!("pgt_{}", hex::encode(&h.finalize()[..16]))
}

/// A fleet whose shared source holds one `accounts` row for acme and one
/// for globex, a service account that may use every tenant, and a proxy.
fn two_tenants_one_row_each() -> (Fleet, Proxy) {
    let f = Fleet::start();
    add_user(&f.app, "app", "svc@example.com", &scram(FPW), None);
    f.shared.psql(
        "shared",
        "INSERT INTO accounts (tenant_id, name) VALUES ('acme', 'acme-row'), ('globex', 'globex-row')",
    );
    let p = f.proxy("");
    (f, p)
}

/// Runs its closure when dropped, the test passing or not.
struct Defer<F: FnMut()>(F);

impl<F: FnMut()> Drop for Defer<F> {
    fn drop(&mut self) {
        (self.0)()
    }
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

/// A statement name the client never prepared is never sent to the server,
/// where it could name another session's statement (the unnamed one, or a
/// `pgt_…` name anyone can compute): PostgreSQL's 26000 instead.
#[test]
fn an_unknown_statement_name_never_reaches_another_sessions_statement() {
    let (_app, p) = passthrough("[pool]\nsize = 1\n");
    rt().block_on(async {
        let mut a = alice(&p).await;
        a.send(&[
            parse(b"", b"SELECT 'A-private'"),
            bind(b"", b""),
            execute(b""),
            parse(b"s", b"SELECT 'A-named'"),
            bind(b"", b"s"),
            execute(b""),
            sync(),
        ])
        .await;
        let r = a.read_until(0, 1).await;
        assert!(r.contains(&"D(A-named)".to_string()), "{r:?}");
        drop(a);
        pgtenant::clock::sleep(Duration::from_millis(200)).await;

        let pgt = pgt_name(b"SELECT 'A-named'");
        let mut b = alice(&p).await;
        for probe in [
            vec![describe(b'S', b""), bind(b"", b""), execute(b""), sync()],
            vec![bind(b"", pgt.as_bytes()), execute(b""), sync()],
            vec![describe(b'S', pgt.as_bytes()), sync()],
        ] {
            b.send(&probe).await;
            let r = b.read_until(0, 1).await;
            assert!(!r.iter().any(|m| m.contains("A-")), "{r:?}");
            assert!(r[0].starts_with("E(26000:"), "{r:?}");
            assert_eq!(r.last().unwrap(), "Z(I)", "{r:?}");
        }
        // The session goes on.
        b.send(&[query("SELECT 'still here'")]).await;
        assert!(b
            .read_until(0, 1)
            .await
            .contains(&"D(still here)".to_string()));
    });
}

/// An error the proxy finds in a batch (a duplicate Parse) fails the
/// transaction and skips the rest of the batch, as PostgreSQL does: nothing
/// after it runs, and COMMIT rolls back.
#[test]
fn an_error_the_proxy_finds_in_a_batch_fails_the_transaction() {
    let (app, p) = passthrough("[pool]\nsize = 2\n");
    rt().block_on(async {
        let mut a = alice(&p).await;
        a.send(&[parse(b"s", b"SELECT 1"), sync()]).await;
        assert_eq!(a.read_until(0, 1).await, ["1", "Z(I)"]);
        a.send(&[query("BEGIN; INSERT INTO items VALUES (10, 'ten')")])
            .await;
        a.read_until(0, 1).await;
        a.send(&[parse(b"s", b"SELECT 2"), parse(b"t", b"SELECT 't'"), sync()])
            .await;
        let r = a.read_until(0, 1).await;
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(r[0].starts_with("E(42P05:"), "{r:?}");
        assert_eq!(r[1], "Z(E)");
        a.send(&[query("COMMIT")]).await;
        assert_eq!(a.read_until(0, 1).await, ["C(ROLLBACK)", "Z(I)"]);
        // `t` came after the error: never prepared.
        a.send(&[parse(b"t", b"SELECT 't'"), sync()]).await;
        assert_eq!(a.read_until(0, 1).await, ["1", "Z(I)"]);
        // Implicit transaction: the INSERT before the error is rolled back.
        a.send(&[
            parse(b"i", b"INSERT INTO items VALUES (11, 'eleven')"),
            bind(b"", b"i"),
            execute(b""),
            parse(b"s", b"SELECT 3"),
            sync(),
        ])
        .await;
        let r = a.read_until(0, 1).await;
        assert!(r.iter().any(|m| m.starts_with("E(42P05")), "{r:?}");
        assert_eq!(r.last().unwrap(), "Z(I)");
    });
    assert_eq!(
        app.psql("app", "SELECT count(*) FROM items WHERE id >= 10"),
        "0"
    );
}

/// Session state the proxy does not replay never reaches the next session
/// on the connection: a SET it cannot record, SET ROLE (which RESET ALL
/// keeps), a temporary table. The connection is closed after such a use.
#[test]
fn untracked_session_state_never_reaches_the_next_session() {
    let (_app, p) = passthrough("[pool]\nsize = 1\n");
    rt().block_on(async {
        for (set, probe, clean) in [
            (
                "SET search_path = \"$user\", leaked",
                "SELECT name FROM items ORDER BY id LIMIT 1",
                "D(one)",
            ),
            (
                "SET search_path = leaked; SELECT 1",
                "SELECT name FROM items ORDER BY id LIMIT 1",
                "D(one)",
            ),
            ("SET ROLE other_role", "SELECT current_user", "D(postgres)"),
            (
                "CREATE TEMP TABLE items (id int, name text); INSERT INTO items VALUES (0, 'TEMP')",
                "SELECT name FROM items ORDER BY id LIMIT 1",
                "D(one)",
            ),
        ] {
            let mut a = alice(&p).await;
            a.send(&[query(set)]).await;
            let r = a.read_until(0, 1).await;
            assert!(!r.iter().any(|m| m.starts_with("E(")), "{set}: {r:?}");
            drop(a);
            pgtenant::clock::sleep(Duration::from_millis(200)).await;
            let mut b = alice(&p).await;
            b.send(&[query(probe)]).await;
            let r = b.read_until(0, 1).await;
            assert!(r.contains(&clean.to_string()), "after {set}: {r:?}");
        }
    });
}

/// After an error inside a transaction the proxy holds (BEGIN not sent to
/// any server yet), an extended-protocol statement gets 25P02 and COMMIT
/// rolls back, as on PostgreSQL: nothing runs, nothing commits.
#[test]
fn a_failed_held_transaction_refuses_extended_statements() {
    let f = Fleet::start();
    add_user(
        &f.app,
        "app",
        "multi@example.com",
        &scram(FPW),
        Some(&["acme", "globex"]),
    );
    let p = f.proxy("");
    std::thread::sleep(Duration::from_millis(800));
    rt().block_on(async {
        let mut m = Raw::connect(p.port, "multi@example.com", FPW, "app").await;
        m.send(&[query("BEGIN")]).await;
        assert_eq!(m.read_until(0, 1).await, ["C(BEGIN)", "Z(T)"]);
        m.send(&[query(
            "SELECT * FROM accounts WHERE tenant_id = 'acme' UNION ALL SELECT * FROM accounts WHERE tenant_id = 'globex'",
        )])
        .await;
        let r = m.read_until(0, 1).await;
        assert_eq!(r.last().unwrap(), "Z(E)", "{r:?}");
        m.send(&[
            parse(b"", b"INSERT INTO accounts (tenant_id, name) VALUES ('acme', 'AFTER-ERROR')"),
            bind(b"", b""),
            execute(b""),
            sync(),
        ])
        .await;
        let r = m.read_until(0, 1).await;
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(r[0].starts_with("E(25P02:"), "{r:?}");
        assert_eq!(r[1], "Z(E)");
        m.send(&[parse(b"", b"COMMIT"), bind(b"", b""), execute(b""), sync()])
            .await;
        assert_eq!(m.read_until(0, 1).await, ["1", "2", "C(ROLLBACK)", "Z(I)"]);
        m.send(&[query("SELECT 1")]).await;
        assert_eq!(m.read_until(0, 1).await, ["T", "D(1)", "C(SELECT 1)", "Z(I)"]);
    });
    assert_eq!(
        f.shared.psql(
            "shared",
            "SELECT count(*) FROM accounts WHERE name = 'AFTER-ERROR'"
        ),
        "0"
    );
}

/// An error in a batch the client ended with Flush leaves the server
/// skipping to the client's next Sync: the proxy skips with it, so the
/// following requests get their own answers (PostgreSQL's) and nothing
/// hangs.
#[test]
fn an_error_before_a_flush_skips_to_the_next_sync() {
    let (_app, p) = passthrough("[pool]\nsize = 2\n");
    rt().block_on(async {
        let mut a = alice(&p).await;
        a.send(&[
            parse(b"", b"SELECT 1/0"),
            bind(b"", b""),
            execute(b""),
            flush(),
        ])
        .await;
        let r = a.read_until(b'E', 1).await;
        assert!(r.last().unwrap().starts_with("E(22012"), "{r:?}");
        // Skipped by PostgreSQL up to its Sync: only ReadyForQuery.
        a.send(&[
            parse(b"", b"SELECT 'skipped'"),
            bind(b"", b""),
            execute(b""),
            parse(b"n1", b"SELECT 'n1'"),
            sync(),
        ])
        .await;
        assert_eq!(a.read_until(0, 1).await, ["Z(I)"]);
        // n1 was skipped too: it can be prepared now, and runs.
        a.send(&[
            parse(b"n1", b"SELECT 'three'"),
            bind(b"", b"n1"),
            execute(b""),
            sync(),
        ])
        .await;
        assert_eq!(
            a.read_until(0, 1).await,
            ["1", "2", "D(three)", "C(SELECT 1)", "Z(I)"]
        );
        a.send(&[query("SELECT 'four'")]).await;
        assert_eq!(
            a.read_until(0, 1).await,
            ["T", "D(four)", "C(SELECT 1)", "Z(I)"]
        );
    });
}

/// A Close or Parse the proxy answers for itself, after an error earlier in
/// the batch, did not happen (PostgreSQL skipped it): the statement closed
/// is still there, the one parsed does not exist. And a statement whose
/// text no longer prepares is forgotten, so it can be prepared again.
#[test]
fn statement_changes_an_error_skipped_are_taken_back() {
    let (app, p) = passthrough("[pool]\nsize = 2\n");
    rt().block_on(async {
        let mut a = alice(&p).await;
        a.send(&[parse(b"s", b"SELECT 's'"), sync()]).await;
        assert_eq!(a.read_until(0, 1).await, ["1", "Z(I)"]);
        a.send(&[
            parse(b"", b"SELECT 1/0"),
            bind(b"", b""),
            execute(b""),
            close(b'S', b"s"),
            parse(b"t", b"SELECT 't'"),
            sync(),
        ])
        .await;
        let r = a.read_until(0, 1).await;
        assert!(r.iter().any(|m| m.starts_with("E(22012")), "{r:?}");
        assert!(!r.contains(&"3".to_string()), "no CloseComplete: {r:?}");
        a.send(&[bind(b"", b"s"), execute(b""), sync()]).await;
        assert_eq!(
            a.read_until(0, 1).await,
            ["2", "D(s)", "C(SELECT 1)", "Z(I)"]
        );
        a.send(&[parse(b"t", b"SELECT 't2'"), sync()]).await;
        assert_eq!(a.read_until(0, 1).await, ["1", "Z(I)"]);

        // A statement over a table that does not exist yet.
        a.send(&[
            parse(b"later", b"SELECT * FROM later"),
            describe(b'S', b"later"),
            sync(),
        ])
        .await;
        let r = a.read_until(0, 1).await;
        assert!(r.iter().any(|m| m.starts_with("E(42P01")), "{r:?}");
        app.psql("app", "CREATE TABLE later (x int)");
        a.send(&[
            parse(b"later", b"SELECT * FROM later"),
            describe(b'S', b"later"),
            sync(),
        ])
        .await;
        let r = a.read_until(0, 1).await;
        assert!(!r.iter().any(|m| m.starts_with("E(")), "{r:?}");
    });
}

/// With room for one statement per connection, an error that skips
/// injected evictions and Parses leaves the connection's statement list as
/// the server has it (taken back in reverse order): both statements still
/// run afterwards, no 26000 or 42P05 on the proxy's own names.
#[test]
fn skipped_evictions_leave_the_statement_list_as_the_server_has_it() {
    let (_app, p) = passthrough("[pool]\nsize = 1\nprepared_statements_per_connection = 1\n");
    rt().block_on(async {
        let mut a = alice(&p).await;
        a.send(&[
            parse(b"a", b"SELECT 'a'"),
            parse(b"b", b"SELECT 'b'"),
            sync(),
        ])
        .await;
        assert_eq!(a.read_until(0, 1).await, ["1", "1", "Z(I)"]);
        a.send(&[
            bind(b"", b"a"),
            execute(b""),
            parse(b"", b"SELECT 1/0"),
            bind(b"", b""),
            execute(b""),
            bind(b"", b"b"),
            execute(b""),
            bind(b"", b"a"),
            execute(b""),
            sync(),
        ])
        .await;
        let r = a.read_until(0, 1).await;
        assert!(r.iter().any(|m| m.starts_with("E(22012")), "{r:?}");
        for (name, row) in [(b"b", "D(b)"), (b"a", "D(a)")] {
            a.send(&[bind(b"", name), execute(b""), sync()]).await;
            let r = a.read_until(0, 1).await;
            assert!(r.contains(&row.to_string()), "{r:?}");
        }
    });
}

/// Text from the client that the proxy puts in SQL of its own (a statement
/// name in an error it raises, a startup parameter it replays) stays text,
/// whatever the client set: `standard_conforming_strings` off (a backslash
/// would end a plain literal early), or SJIS with `backslash_quote` (a
/// multibyte character would swallow an escaping backslash).
#[test]
fn client_text_in_the_proxys_own_sql_stays_text() {
    let (app, p) = passthrough("[pool]\nsize = 1\n");
    let name: &[u8] = br"x\'; CREATE TABLE injected (); --";
    // "Ё\'": D0 81 in UTF-8, read by SJIS as a katakana and a lead byte.
    let sjis: &[u8] = "\u{401}\\' || (SELECT 'INJ' || 'ECTED'); END --".as_bytes();
    rt().block_on(async {
        let mut a = alice(&p).await;
        a.send(&[query("SET standard_conforming_strings = off")])
            .await;
        a.read_until(0, 1).await;
        a.send(&[bind(b"", name), execute(b""), sync()]).await;
        let r = a.read_until(0, 1).await;
        let expected = format!(
            "E(26000:prepared statement \"{}\" does not exist)",
            String::from_utf8_lossy(name)
        );
        assert_eq!(r[0], expected, "{r:?}");
        drop(a);

        let mut b = alice(&p).await;
        b.send(&[query("SET backslash_quote = on")]).await;
        b.read_until(0, 1).await;
        b.send(&[query("SET client_encoding = 'SJIS'")]).await;
        b.read_until(0, 1).await;
        b.send(&[bind(b"", sjis), execute(b""), sync()]).await;
        let r = b.read_until(0, 1).await;
        assert!(r[0].starts_with("E(26000:"), "{r:?}");
        assert!(!r[0].contains("INJECTED"), "{r:?}");
    });
    assert_eq!(
        app.psql(
            "app",
            "SELECT count(*) FROM pg_class WHERE relname = 'injected'"
        ),
        "0"
    );
}

/// What the proxy forgets or retires is only what PostgreSQL would lose:
/// a statement whose re-prepare failed only because the transaction had
/// failed is kept; a transaction-local setting with a parameter does not
/// cost the connection; SET ROLE stays with its session (replayed) and not
/// with the next one; a `DEALLOCATE` of a shared server statement retires
/// the connection rather than leave other sessions a statement list that
/// is wrong.
#[test]
fn only_what_postgresql_would_lose_is_lost() {
    let (_app, p) = passthrough("[pool]\nsize = 1\n");
    let pid = |r: &[String]| r.iter().find(|m| m.starts_with("D(")).cloned().unwrap();
    rt().block_on(async {
        let mut a = alice(&p).await;
        a.send(&[parse(b"s1", b"SELECT 'kept'"), sync()]).await;
        assert_eq!(a.read_until(0, 1).await, ["1", "Z(I)"]);
        a.send(&[query("BEGIN; SELECT 1/0")]).await;
        a.read_until(0, 1).await;
        a.send(&[bind(b"", b"s1"), execute(b""), sync()]).await;
        let r = a.read_until(0, 1).await;
        assert!(r[0].starts_with("E(25P02"), "{r:?}");
        a.send(&[query("ROLLBACK")]).await;
        a.read_until(0, 1).await;
        a.send(&[bind(b"", b"s1"), execute(b""), sync()]).await;
        assert_eq!(
            a.read_until(0, 1).await,
            ["2", "D(kept)", "C(SELECT 1)", "Z(I)"]
        );

        let local = || {
            vec![
                parse(
                    b"",
                    b"SELECT set_config('request.claims', $1, true) || pg_backend_pid()",
                ),
                bind1(b"", b"", b"x"),
                execute(b""),
                sync(),
            ]
        };
        a.send(&local()).await;
        let first = pid(&a.read_until(0, 1).await);
        a.send(&local()).await;
        assert_eq!(pid(&a.read_until(0, 1).await), first, "connection kept");

        a.send(&[query("SET ROLE other_role")]).await;
        a.read_until(0, 1).await;
        a.send(&[query("SELECT current_user")]).await;
        assert!(a
            .read_until(0, 1)
            .await
            .contains(&"D(other_role)".to_string()));
        let mut b = alice(&p).await;
        b.send(&[query("SELECT current_user")]).await;
        assert!(b
            .read_until(0, 1)
            .await
            .contains(&"D(postgres)".to_string()));
        a.send(&[query("SELECT current_user")]).await;
        assert!(a
            .read_until(0, 1)
            .await
            .contains(&"D(other_role)".to_string()));

        let pgt = pgt_name(b"SELECT 'kept'");
        b.send(&[query(&format!("DEALLOCATE {pgt}"))]).await;
        let r = b.read_until(0, 1).await;
        assert_eq!(r, ["C(DEALLOCATE)", "Z(I)"], "the server had it: {r:?}");
        a.send(&[bind(b"", b"s1"), execute(b""), sync()]).await;
        assert_eq!(
            a.read_until(0, 1).await,
            ["2", "D(kept)", "C(SELECT 1)", "Z(I)"]
        );
    });
}

/// DEALLOCATE of a protocol-level statement works as on PostgreSQL, though
/// the server knows the statement by another name; DEALLOCATE ALL and
/// DISCARD ALL forget the client's statements, so it can prepare the same
/// names again.
#[test]
fn deallocate_forgets_the_clients_prepared_statements() {
    let (_app, p) = passthrough("");
    let run = |name: &[u8]| vec![bind(b"", name), execute(b""), sync()];
    rt().block_on(async {
        let a = &mut alice(&p).await;
        async fn step(a: &mut Raw, parts: Vec<Vec<u8>>) -> Vec<String> {
            a.send(&parts).await;
            a.read_until(0, 1).await
        }
        let r = step(
            a,
            [vec![parse(b"a1", b"SELECT 'first'")], run(b"a1")].concat(),
        )
        .await;
        assert!(r.contains(&"D(first)".to_string()), "{r:?}");
        assert_eq!(
            step(a, vec![query("DEALLOCATE a1")]).await,
            ["C(DEALLOCATE)", "Z(I)"]
        );
        // Gone for the client: PostgreSQL's 26000, then prepared again.
        let r = step(a, run(b"a1")).await;
        assert!(r[0].starts_with("E(26000"), "{r:?}");
        let r = step(
            a,
            [vec![parse(b"a1", b"SELECT 'second'")], run(b"a1")].concat(),
        )
        .await;
        assert!(r.contains(&"D(second)".to_string()), "{r:?}");
        step(a, vec![parse(b"a2", b"SELECT 'third'"), sync()]).await;
        assert_eq!(
            step(a, vec![query("DEALLOCATE ALL")]).await,
            ["C(DEALLOCATE ALL)", "Z(I)"]
        );
        // No 42P05: both names are free again.
        let r = step(
            a,
            [
                vec![
                    parse(b"a1", b"SELECT 'fourth'"),
                    parse(b"a2", b"SELECT 'fifth'"),
                ],
                run(b"a2"),
            ]
            .concat(),
        )
        .await;
        assert!(r.contains(&"D(fifth)".to_string()), "{r:?}");
        step(a, vec![query("DISCARD ALL")]).await;
        let r = step(
            a,
            [vec![parse(b"a1", b"SELECT 'sixth'")], run(b"a1")].concat(),
        )
        .await;
        assert!(r.contains(&"D(sixth)".to_string()), "{r:?}");
    });
}

/// In session pooling the connection stays after DEALLOCATE ALL: a
/// statement prepared again afterwards is on the server again, not taken
/// for one the server still has.
#[test]
fn statements_prepared_again_after_deallocate_all_run() {
    let (_app, p) = passthrough("[pool]\nmode = \"session\"\n");
    rt().block_on(async {
        let mut a = alice(&p).await;
        let once = || {
            vec![
                parse(b"s", b"SELECT 'again'"),
                bind(b"", b"s"),
                execute(b""),
                sync(),
            ]
        };
        a.send(&once()).await;
        assert!(a.read_until(0, 1).await.contains(&"D(again)".to_string()));
        a.send(&[query("DEALLOCATE ALL")]).await;
        a.read_until(0, 1).await;
        a.send(&once()).await;
        let r = a.read_until(0, 1).await;
        assert!(r.contains(&"D(again)".to_string()), "{r:?}");
    });
}

/// After an error before a Flush, a batch the router would refuse is
/// skipped by the server like any other: its Sync still goes out, and the
/// next batch runs.
#[test]
fn a_batch_after_an_error_before_a_flush_is_not_routed() {
    let f = Fleet::start();
    add_user(
        &f.app,
        "app",
        "multi@example.com",
        &scram(FPW),
        Some(&["acme", "globex"]),
    );
    let p = f.proxy("");
    std::thread::sleep(Duration::from_millis(800));
    rt().block_on(async {
        let mut m = Raw::connect(p.port, "multi@example.com", FPW, "acme").await;
        m.send(&[parse(b"", b"SELECT 1/0"), bind(b"", b""), execute(b""), flush()])
            .await;
        let r = m.read_until(b'E', 1).await;
        assert!(r.last().unwrap().starts_with("E(22012"), "{r:?}");
        m.send(&[
            parse(b"", b"SELECT * FROM accounts WHERE tenant_id = 'acme' UNION ALL SELECT * FROM accounts WHERE tenant_id = 'globex'"),
            bind(b"", b""),
            execute(b""),
            sync(),
        ])
        .await;
        assert_eq!(m.read_until(0, 1).await, ["Z(I)"]);
        m.send(&[parse(b"", b"SELECT 'next'"), bind(b"", b""), execute(b""), sync()])
            .await;
        let r = m.read_until(0, 1).await;
        assert!(r.contains(&"D(next)".to_string()), "{r:?}");
    });
}

/// A SET in a batch ended by Flush runs in its request's implicit
/// transaction: an error anywhere in the request before its Sync undoes
/// it, and the session does not replay it elsewhere (whether the error
/// came before the client sent the Sync or after). Without an error, it
/// stands and is replayed.
#[test]
fn a_set_in_a_batch_ended_by_flush_is_forgotten_when_its_request_fails() {
    let (_app, p) = passthrough("[pool]\nsize = 1\n");
    rt().block_on(async {
        let mut a = alice(&p).await;
        let mut b = alice(&p).await;
        let stmt = |sql: &str, end: Vec<u8>| [unnamed(sql), vec![end]].concat();
        a.send(&[query("SET myapp.x = 'before'")]).await;
        a.read_until(0, 1).await;
        // B takes the pool's only connection, so that A's next
        // transaction replays A's settings on it.
        let mut check = async |a: &mut Raw, expected: &str, case: &str| {
            b.send(&[query("SELECT 1")]).await;
            b.read_until(0, 1).await;
            a.send(&[query("SELECT current_setting('myapp.x', true)")])
                .await;
            let r = a.read_until(0, 1).await;
            assert!(r.contains(&format!("D({expected})")), "{case}: {r:?}");
        };

        // The error before the Sync is sent: the server skips to it.
        a.send(&stmt("SET myapp.x = 'skipped to sync'", flush()))
            .await;
        a.read_until(b'C', 0).await;
        a.send(&stmt("SELECT 1/0", flush())).await;
        let r = a.read_until(b'E', 0).await;
        assert!(r.last().is_some_and(|m| m.starts_with("E(22012")), "{r:?}");
        a.send(&[sync()]).await;
        assert_eq!(a.read_until(0, 1).await, ["Z(I)"]);
        check(&mut a, "before", "error before the Sync").await;

        // The error after it: the SET's batch and the failing one pipelined.
        let mut both = stmt("SET myapp.x = 'failed with sync'", flush());
        both.extend(stmt("SELECT 1/0", sync()));
        a.send(&both).await;
        let r = a.read_until(0, 1).await;
        assert!(r.iter().any(|m| m.starts_with("E(22012")), "{r:?}");
        check(&mut a, "before", "error after the Sync").await;

        // No error: the SET stands, and is replayed.
        let mut fine = stmt("SET myapp.x = 'stands'", flush());
        fine.extend(stmt("SELECT 1", sync()));
        a.send(&fine).await;
        let r = a.read_until(0, 1).await;
        assert_eq!(r.last().map(String::as_str), Some("Z(I)"), "{r:?}");
        check(&mut a, "stands", "no error").await;
    });
}

/// An extended COPY FROM STDIN pipelined with its Sync, as drivers send it:
/// the backend ignores that Sync while copying, and the request ends at the
/// Sync the client sends after CopyDone, which carries what the first one
/// did (`ExpectQueue::on_copy_in`). A SET earlier in the request (a batch
/// ended by Flush) fails with a failed copy, and stands with a good one.
#[test]
fn a_copy_carries_its_request_to_the_sync_after_it() {
    let (app, p) = passthrough("[pool]\nsize = 1\n");
    rt().block_on(async {
        let mut a = alice(&p).await;
        let mut b = alice(&p).await;
        a.send(&[query("SET myapp.x = 'before'")]).await;
        a.read_until(0, 1).await;
        for (rows, copied, expected) in [
            (&b"x\tnot a number\n"[..], "E(22P02", "before"),
            (&b"3\tthree\n"[..], "C(COPY 1)", "with copy"),
        ] {
            a.send(&[unnamed("SET myapp.x = 'with copy'"), vec![flush()]].concat())
                .await;
            a.read_until(b'C', 0).await;
            a.send(&[unnamed("COPY items FROM STDIN"), vec![sync()]].concat())
                .await;
            assert_eq!(a.read_until(b'G', 0).await, ["1", "2", "G"]);
            a.send(&[msg(b'd', &[rows]), msg(b'c', &[]), sync()]).await;
            let r = a.read_until(0, 1).await;
            assert!(r[0].starts_with(copied), "{r:?}");
            assert_eq!(r[1..], ["Z(I)"], "one ReadyForQuery: {r:?}");
            // B takes the pool's only connection: A's settings are replayed.
            b.send(&[query("SELECT 1")]).await;
            b.read_until(0, 1).await;
            a.send(&[query("SELECT current_setting('myapp.x', true)")])
                .await;
            let r = a.read_until(0, 1).await;
            assert!(r.contains(&format!("D({expected})")), "{copied}: {r:?}");
        }
    });
    assert_eq!(app.psql("app", "SELECT count(*) FROM items").trim(), "3");
}

/// A SET that PostgreSQL undid is not replayed on the session's next
/// connection: its transaction rolled back (ROLLBACK, or COMMIT of a
/// failed transaction), or a ROLLBACK TO went back to a savepoint made
/// before it. A SET whose transaction committed is.
#[test]
fn a_set_its_transaction_undid_is_not_replayed() {
    let (_app, p) = passthrough("[pool]\nsize = 1\n");
    rt().block_on(async {
        let mut a = alice(&p).await;
        let mut b = alice(&p).await;
        let ok = |r: Vec<String>| assert!(!r.iter().any(|m| m.starts_with("E(")), "{r:?}");
        a.send(&[query("SET myapp.x = 'before'")]).await;
        ok(a.read_until(0, 1).await);
        // Each sequence, then B takes the pool's only connection, so that
        // A's next transaction replays A's settings on it.
        let mut check = async |steps: &[&str], expected: &str| {
            for s in steps {
                a.send(&[query(s)]).await;
                a.read_until(0, 1).await;
            }
            b.send(&[query("SELECT 1")]).await;
            ok(b.read_until(0, 1).await);
            a.send(&[query("SELECT current_setting('myapp.x', true)")])
                .await;
            let r = a.read_until(0, 1).await;
            assert!(
                r.contains(&format!("D({expected})")),
                "after {steps:?}: {r:?}"
            );
        };
        check(
            &["BEGIN", "SET myapp.x = 'rolled back'", "ROLLBACK"],
            "before",
        )
        .await;
        check(
            &["BEGIN", "SET myapp.x = 'failed'", "SELECT 1/0", "COMMIT"],
            "before",
        )
        .await;
        check(
            &[
                "BEGIN",
                "SAVEPOINT s",
                "SET myapp.x = 'to savepoint'",
                "ROLLBACK TO s",
                "COMMIT",
            ],
            "before",
        )
        .await;
        check(
            &["BEGIN", "SET myapp.x = 'committed'", "COMMIT"],
            "committed",
        )
        .await;
        check(
            &[
                "BEGIN",
                "SET myapp.x = 'kept'",
                "SAVEPOINT s",
                "SELECT 1",
                "ROLLBACK TO s",
                "COMMIT",
            ],
            "kept",
        )
        .await;
        // RESET ALL is undone with its block too: the settings it cleared
        // are replayed again, less the block's own SETs.
        check(&["BEGIN", "RESET ALL", "ROLLBACK"], "kept").await;
        check(
            &[
                "BEGIN",
                "SET myapp.x = 'in the block'",
                "RESET ALL",
                "SELECT 1/0",
                "COMMIT",
            ],
            "kept",
        )
        .await;
        check(&["BEGIN", "RESET ALL", "COMMIT"], "").await;
        // Outside a block, with the request that fails (its implicit
        // transaction), as one Query or two pipelined.
        check(&["SET myapp.x = 'again'"], "again").await;
        check(&["RESET ALL; SELECT 1/0"], "again").await;
        check(&["RESET ALL; SELECT 1"], "").await;
    });
}

/// A tenant chosen with SET inside a transaction block is undone with the
/// block, as PostgreSQL undoes the setting: after ROLLBACK (or COMMIT of
/// a failed block, or ROLLBACK TO a savepoint made before the SET) the
/// session's statements go to the tenant from before, never to the one
/// rolled back. A tenant SET in a committed block stays.
#[test]
fn a_tenant_its_transaction_undid_is_not_used() {
    let (_f, p) = two_tenants_one_row_each();
    rt().block_on(async {
        let mut c = Raw::connect(p.port, "svc@example.com", FPW, "app").await;
        let mut run = async |steps: &[&str]| {
            let mut last = Vec::new();
            for s in steps {
                c.send(&[query(s)]).await;
                last = c.read_until(0, 1).await;
            }
            last
        };
        run(&["SET app.tenant_id = 'acme'"]).await;
        for undone in [
            &["BEGIN", "SET app.tenant_id = 'globex'", "ROLLBACK"][..],
            &[
                "BEGIN",
                "SET app.tenant_id = 'globex'",
                "SELECT 1/0",
                "COMMIT",
            ],
            &[
                "BEGIN",
                "SAVEPOINT s",
                "SET app.tenant_id = 'globex'",
                "ROLLBACK TO s",
                "COMMIT",
            ],
            &[
                "BEGIN",
                "SAVEPOINT s",
                "RESET app.tenant_id",
                "ROLLBACK TO s",
                "COMMIT",
            ],
        ] {
            run(undone).await;
            let r = run(&["SELECT name FROM accounts"]).await;
            assert_eq!(
                r,
                ["T", "D(acme-row)", "C(SELECT 1)", "Z(I)"],
                "after {undone:?}"
            );
        }
        let r = run(&[
            "BEGIN",
            "SAVEPOINT s",
            "SET app.tenant_id = 'globex'",
            "ROLLBACK TO s",
            "SELECT name FROM accounts",
        ])
        .await;
        assert_eq!(
            r,
            ["T", "D(acme-row)", "C(SELECT 1)", "Z(T)"],
            "in the block"
        );
        run(&["COMMIT"]).await;
        // Back to a savepoint made after the first change.
        let r = run(&[
            "BEGIN",
            "SET app.tenant_id = 'globex'",
            "SAVEPOINT s",
            "SET app.tenant_id = 'acme'",
            "ROLLBACK TO s",
            "SELECT name FROM accounts",
        ])
        .await;
        assert_eq!(r, ["T", "D(globex-row)", "C(SELECT 1)", "Z(T)"], "to s");
        run(&["ROLLBACK"]).await;
        let r = run(&["SELECT name FROM accounts"]).await;
        assert_eq!(
            r,
            ["T", "D(acme-row)", "C(SELECT 1)", "Z(I)"],
            "rolled back"
        );
        run(&["BEGIN", "SET app.tenant_id = 'globex'", "COMMIT"]).await;
        let r = run(&["SELECT name FROM accounts"]).await;
        assert_eq!(
            r,
            ["T", "D(globex-row)", "C(SELECT 1)", "Z(I)"],
            "committed"
        );
    });
}

/// A statement prepared alone (libpq's PQprepare: Parse, Sync) is checked
/// by the server, as on PostgreSQL: a bad one fails at its Parse with the
/// server's error and its name stays free; a good one is prepared and runs.
/// With routing, the statement's tables choose the server that checks it;
/// inside a transaction on another data source it is left for its first
/// Bind rather than failing that transaction.
#[test]
fn a_statement_prepared_alone_is_checked_by_the_server() {
    async fn step(c: &mut Raw, parts: Vec<Vec<u8>>) -> Vec<String> {
        c.send(&parts).await;
        c.read_until(0, 1).await
    }
    let run = |name: &[u8]| vec![bind(b"", name), execute(b""), sync()];
    let (_app, p) = passthrough("");
    rt().block_on(async {
        let a = &mut alice(&p).await;
        let r = step(a, vec![parse(b"s", b"SELEC 'bad'"), sync()]).await;
        assert!(r.len() == 2 && r[0].starts_with("E(42601"), "{r:?}");
        let r = step(a, run(b"s")).await;
        assert!(r[0].starts_with("E(26000"), "never prepared: {r:?}");
        let r = step(a, vec![parse(b"s", b"SELECT 'good'"), sync()]).await;
        assert_eq!(r, ["1", "Z(I)"]);
        let r = step(a, run(b"s")).await;
        assert_eq!(r, ["2", "D(good)", "C(SELECT 1)", "Z(I)"]);
        // Found by the server only: a table that does not exist.
        let r = step(a, vec![parse(b"t", b"SELECT * FROM no_such_table"), sync()]).await;
        assert!(r[0].starts_with("E(42P01"), "{r:?}");
    });

    let f = Fleet::start();
    add_user(&f.app, "app", "svc@example.com", &scram(FPW), None);
    let p = f.proxy("");
    rt().block_on(async {
        let c = &mut Raw::connect(p.port, "svc@example.com", FPW, "app").await;
        step(c, vec![query("SET app.tenant_id = 'acme'")]).await;
        let r = step(
            c,
            vec![
                parse(b"bad", b"SELECT no_such_column FROM accounts"),
                sync(),
            ],
        )
        .await;
        assert!(
            r[0].starts_with("E(42703"),
            "checked on the tenant's source: {r:?}"
        );
        let r = step(c, vec![parse(b"app", b"SELECT email FROM users"), sync()]).await;
        assert_eq!(r, ["1", "Z(I)"], "checked on the app DB");
        step(c, vec![query("BEGIN"), query("SELECT name FROM accounts")]).await;
        c.read_until(0, 1).await;
        let r = step(
            c,
            vec![parse(b"later", b"SELECT id FROM audit_log"), sync()],
        )
        .await;
        assert_eq!(
            r,
            ["1", "Z(T)"],
            "another source's statement waits for its Bind"
        );
        let r = step(c, vec![query("SELECT name FROM accounts")]).await;
        assert_eq!(r.last().map(String::as_str), Some("Z(T)"), "{r:?}");
        step(c, vec![query("COMMIT")]).await;
    });
}

/// A transaction's connection is back in the pool before its client reads
/// the ReadyForQuery that ends it, as PgBouncer releases its server there.
/// So another client's statement prepared alone right after (pool size 1)
/// finds it free and is checked by the server, whichever worker thread
/// serves each client; the other way round, the second client could come
/// while the first session was still between its answer and its release,
/// and get the proxy's ParseComplete for a statement that cannot prepare.
#[test]
fn a_connection_is_free_once_its_client_has_seen_its_transaction_end() {
    let (_app, p) = passthrough_with_items(PW, "[pool]\nsize = 1\n", &[("PGTENANT_WORKERS", "2")]);
    // The proxy and these clients on one CPU: the first client, woken by
    // its answer, then preempts the proxy's worker right after its send,
    // which is where the connection used to be still checked out.
    let taskset = |args: &[&str]| {
        let out = std::process::Command::new("taskset")
            .args(args)
            .output()
            .expect("taskset (util-linux)");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let me = std::process::id().to_string();
    // "pid N's current affinity mask: 3": the mask is the last word.
    let mask = taskset(&["-p", &me]);
    let mask = mask.rsplit(' ').next().unwrap_or("").to_string();
    let low: String = mask.chars().filter(|c| *c != ',').collect();
    let low = &low[low.len().saturating_sub(32)..];
    let first_cpu = u128::from_str_radix(low, 16)
        .expect("a hex mask")
        .trailing_zeros();
    let one = format!("{:x}", 1u128 << first_cpu);
    taskset(&["-a", "-p", &one, &p.child.id().to_string()]);
    taskset(&["-a", "-p", &one, &me]);
    // Not asserted: a panic while the test unwinds would abort the binary.
    let _unpin = Defer(|| {
        let _ = std::process::Command::new("taskset")
            .args(["-a", "-p", &mask, &me])
            .output();
    });
    rt().block_on(async {
        let (a, b) = (&mut alice(&p).await, &mut alice(&p).await);
        for round in 0..100 {
            a.send(&[query("SELECT 1")]).await;
            assert_eq!(
                a.read_until(0, 1).await.last().map(String::as_str),
                Some("Z(I)")
            );
            b.send(&[parse(b"", b"SELECT * FROM no_such_table"), sync()])
                .await;
            let r = b.read_until(0, 1).await;
            assert!(r[0].starts_with("E(42P01"), "round {round}: {r:?}");
        }
    });
}

/// A connection another session keeps idle between its transactions is
/// as good as free for a statement prepared alone: the proxy asks for it
/// back, and the server checks the statement at its Parse, as PostgreSQL
/// does. (Pool of 2: `a` keeps one after its transaction, `b` holds the
/// other in an open transaction; without the recall the proxy would answer
/// ParseComplete itself for a statement that cannot prepare.) Where no
/// session holds an idle one, the Parse is still answered by the proxy
/// rather than queued behind transactions.
#[test]
fn a_statement_prepared_alone_gets_a_connection_another_session_keeps() {
    let (_app, p) = passthrough("[pool]\nsize = 2\n");
    rt().block_on(async {
        let (a, b, c) = (
            &mut alice(&p).await,
            &mut alice(&p).await,
            &mut alice(&p).await,
        );
        let bad = || vec![parse(b"", b"SELECT * FROM no_such_table"), sync()];
        let last = |r: Vec<String>| r.last().cloned().unwrap_or_default();
        for round in 0..20 {
            a.send(&[query("SELECT 1")]).await;
            assert_eq!(last(a.read_until(0, 1).await), "Z(I)");
            b.send(&[query("BEGIN"), query("SELECT 1")]).await;
            assert_eq!(last(b.read_until(0, 2).await), "Z(T)");
            c.send(&bad()).await;
            let r = c.read_until(0, 1).await;
            assert!(r[0].starts_with("E(42P01"), "round {round}: {r:?}");
            // `a` lost nothing: its next transaction gets a connection.
            a.send(&[query("SELECT 2")]).await;
            let r = a.read_until(0, 1).await;
            assert_eq!(r, ["T", "D(2)", "C(SELECT 1)", "Z(I)"], "round {round}");
            b.send(&[query("COMMIT")]).await;
            assert_eq!(last(b.read_until(0, 1).await), "Z(I)");
        }
        // Both connections busy in transactions, none kept: answered by
        // the proxy, checked at the first Bind, as before.
        for x in [&mut *a, &mut *b] {
            x.send(&[query("BEGIN"), query("SELECT 1")]).await;
            assert_eq!(last(x.read_until(0, 2).await), "Z(T)");
        }
        c.send(&bad()).await;
        assert_eq!(c.read_until(0, 1).await, ["1", "Z(I)"]);
        for x in [a, b] {
            x.send(&[query("COMMIT")]).await;
            assert_eq!(last(x.read_until(0, 1).await), "Z(I)");
        }
    });
}

/// What a reset goes back to is the client's startup parameters, as on
/// PostgreSQL (its own application_name, `options=-c …`), not a pooled
/// connection's defaults: from the request after the reset on, with the
/// reported parameters told to the client again. A list value given at
/// startup (`search_path=leaked,public`, as JDBC's `currentSchema` sends)
/// stays a list. And a RESET ALL runs where the client's own settings are,
/// so that it reports what it changes.
#[test]
fn a_reset_goes_back_to_the_clients_startup_parameters() {
    /// Runs `sql`; its messages but ParameterStatus, and in `reported`
    /// the application_name last reported.
    async fn run(c: &mut Raw, sql: &str, reported: &mut String) -> Vec<String> {
        c.send(&[query(sql)]).await;
        let mut r = c.read_until(0, 1).await;
        r.retain(|m| match m.strip_prefix("S(application_name=") {
            Some(v) => {
                *reported = v.trim_end_matches(')').trim_end_matches('=').to_string();
                false
            }
            None => true,
        });
        r
    }
    /// RESET ALL and DISCARD ALL after SETs of every startup parameter:
    /// `shows` gives `want` again, and the client was last told `start`.
    async fn full_resets_go_back(c: &mut Raw, shows: &str, want: &str, reported: &mut String) {
        for reset in ["RESET ALL", "DISCARD ALL"] {
            run(c, "SET application_name = 'diff'", reported).await;
            run(c, "SET work_mem = '5MB'", reported).await;
            run(c, "SET search_path = public", reported).await;
            run(c, reset, reported).await;
            assert_eq!(run(c, shows, reported).await[1], want, "after {reset}");
            assert_eq!(reported, "start", "the client's view after {reset}");
        }
    }
    let (_app, p) = passthrough("[pool]\nsize = 1\n");
    rt().block_on(async {
        let params = [
            ("application_name", "start"),
            ("options", "-c work_mem=3MB -c search_path=leaked,public"),
        ];
        let c = &mut Raw::connect_with(p.port, "alice@example.com", PW, "app", &params).await;
        let mut reported = "start".to_string();
        let items = "SELECT name FROM items ORDER BY id";
        let shows = "SELECT current_setting('application_name') || '|' || \
                     current_setting('work_mem') || '|' || current_setting('search_path')";
        let start = ["T", "D(start|3MB|leaked,public)", "C(SELECT 1)", "Z(I)"];
        assert_eq!(run(c, shows, &mut reported).await, start);
        let r = run(c, items, &mut reported).await;
        assert_eq!(
            r[1], "D(LEAKED)",
            "the schema list, first schema first: {r:?}"
        );

        full_resets_go_back(c, shows, start[1], &mut reported).await;
        for reset in ["RESET search_path", "SET search_path TO DEFAULT"] {
            run(c, "SET search_path = public", &mut reported).await;
            assert_eq!(run(c, items, &mut reported).await[1], "D(one)");
            run(c, reset, &mut reported).await;
            assert_eq!(
                run(c, items, &mut reported).await[1],
                "D(LEAKED)",
                "after {reset}"
            );
        }
        run(c, "SET application_name = 'x'", &mut reported).await;
        run(c, "RESET application_name", &mut reported).await;
        assert_eq!(run(c, shows, &mut reported).await[1], start[1]);
        assert_eq!(reported, "start");

        // Session pooling keeps the connection through the reset: the
        // startup values go back on it before the next request.
        let (_app, session_mode) = passthrough("[pool]\nmode = \"session\"\n");
        let s = &mut Raw::connect_with(session_mode.port, "alice@example.com", PW, "app", &params)
            .await;
        let mut reported = "start".to_string();
        full_resets_go_back(s, shows, start[1], &mut reported).await;
        // A reset in a batch ended by Flush: nothing of the proxy's goes
        // out before the request's Sync. Its error then rolls the reset
        // back with the request's implicit transaction, and the row written
        // before it, as on PostgreSQL (a setup Query sent in between would
        // have committed them).
        run(s, "SET work_mem = '5MB'", &mut reported).await;
        let mut reset = unnamed("INSERT INTO items VALUES (3, 'three')");
        reset.extend(unnamed("RESET ALL"));
        reset.push(flush());
        s.send(&reset).await;
        let mut r = s.read_until(b'C', 0).await;
        r.extend(s.read_until(b'C', 0).await);
        assert!(r.ends_with(&["C(RESET)".to_string()]), "{r:?}");
        let mut fail = unnamed("SELECT 1/0");
        fail.push(sync());
        s.send(&fail).await;
        let r = s.read_until(0, 1).await;
        assert!(r.iter().any(|m| m.starts_with("E(22012")), "{r:?}");
        let r = run(s, "SHOW work_mem", &mut reported).await;
        assert_eq!(r[1], "D(5MB)", "the reset was rolled back: {r:?}");
        let r = run(
            s,
            "SELECT count(*) FROM public.items WHERE id = 3",
            &mut reported,
        )
        .await;
        assert_eq!(r[1], "D(0)", "the row was rolled back: {r:?}");

        // Without startup parameters: the RESET ALL reports the change of
        // the client's own SET, as PostgreSQL does.
        let plain = &mut alice(&p).await;
        let mut reported = String::new();
        run(plain, "SET application_name = 'diff'", &mut reported).await;
        run(c, "SELECT 1", &mut reported).await;
        reported = "unchanged".into();
        run(plain, "RESET ALL", &mut reported).await;
        assert_eq!(reported, "", "the RESET ALL's own report");
    });
}

/// A parameter given both explicitly and in `options` takes the explicit
/// value, as on PostgreSQL (which applies `options` first), and a RESET of
/// it goes back to that value. Checked against PostgreSQL itself first.
#[test]
fn a_startup_parameter_given_twice_takes_the_explicit_value() {
    async fn shows(c: &mut Raw, sql: &str) -> Vec<String> {
        c.send(&[query(sql)]).await;
        let mut r = c.read_until(0, 1).await;
        r.retain(|m| m.starts_with("D("));
        r
    }
    let (app, p) = passthrough("[pool]\nsize = 1\n");
    rt().block_on(async {
        let params = [
            ("application_name", "explicit"),
            ("options", "-c application_name=from_options"),
        ];
        let direct =
            Raw::connect_with(app.port, "postgres", SUPERUSER_PASSWORD, "app", &params).await;
        let proxied = Raw::connect_with(p.port, "alice@example.com", PW, "app", &params).await;
        for (path, mut c) in [("direct", direct), ("through the proxy", proxied)] {
            let c = &mut c;
            assert_eq!(
                shows(c, "SHOW application_name").await,
                ["D(explicit)"],
                "{path}"
            );
            shows(c, "SET application_name = 'changed'").await;
            shows(c, "RESET application_name").await;
            assert_eq!(
                shows(c, "SHOW application_name").await,
                ["D(explicit)"],
                "{path}, after RESET"
            );
        }
    });
}

/// Outside a transaction block a request runs as one implicit
/// transaction: a tenant SET in a simple Query or an extended batch that
/// fails is undone with it, as PostgreSQL undoes the setting, and the
/// session's next statements go to the tenant from before. So does one in
/// a Query the proxy refuses, which never ran. One that succeeds stands.
#[test]
fn a_tenant_its_failed_request_undid_is_not_used() {
    let (_f, p) = two_tenants_one_row_each();
    rt().block_on(async {
        let mut c = Raw::connect(p.port, "svc@example.com", FPW, "app").await;
        c.send(&[query("SET app.tenant_id = 'acme'")]).await;
        c.read_until(0, 1).await;
        let tenant_rows = async |c: &mut Raw| {
            c.send(&[query("SELECT name FROM accounts")]).await;
            c.read_until(0, 1).await
        };
        let failing: [(&str, Vec<Vec<u8>>); 4] = [
            (
                "simple, error after the SET",
                vec![query("SET app.tenant_id = 'globex'; SELECT 1/0")],
            ),
            (
                "simple, error before the SET",
                vec![query("SELECT 1/0; SET app.tenant_id = 'globex'")],
            ),
            (
                "simple, refused by the proxy",
                vec![query(
                    "SET app.tenant_id = 'globex'; SET app.tenant_id = 'nosuch'",
                )],
            ),
            (
                "extended batch",
                [
                    unnamed("SET app.tenant_id = 'globex'"),
                    unnamed("SELECT 1/0"),
                    vec![sync()],
                ]
                .concat(),
            ),
        ];
        for (what, request) in failing {
            c.send(&request).await;
            let r = c.read_until(0, 1).await;
            assert!(r.iter().any(|m| m.starts_with("E(")), "{what}: {r:?}");
            assert_eq!(
                tenant_rows(&mut c).await,
                ["T", "D(acme-row)", "C(SELECT 1)", "Z(I)"],
                "after {what}"
            );
        }
        // A batch ended by Flush: the implicit transaction runs on to the
        // Sync, and an error anywhere before it undoes the SET, whether the
        // rest of the request comes pipelined or after the error.
        let flushed = [
            (
                "an error after the Flush",
                [unnamed("SET app.tenant_id = 'globex'"), vec![flush()]].concat(),
                [unnamed("SELECT 1/0"), vec![sync()]].concat(),
            ),
            (
                "an error before the Flush",
                [
                    unnamed("SET app.tenant_id = 'globex'"),
                    unnamed("SELECT 1/0"),
                    vec![flush()],
                ]
                .concat(),
                vec![sync()],
            ),
        ];
        for (what, first, rest) in &flushed {
            for pause in [false, true] {
                c.send(first).await;
                if pause {
                    pgtenant::clock::sleep(Duration::from_millis(300)).await;
                }
                c.send(rest).await;
                let r = c.read_until(0, 1).await;
                assert!(r.iter().any(|m| m.starts_with("E(22012")), "{what}: {r:?}");
                assert_eq!(
                    tenant_rows(&mut c).await,
                    ["T", "D(acme-row)", "C(SELECT 1)", "Z(I)"],
                    "after {what} (pause: {pause})"
                );
            }
        }
        // With transaction control in the failed request, where the error
        // came decides whether the SET stands; a ROLLBACK may undo it too
        // (here it does, the implicit block's). The proxy refuses to guess
        // until the tenant is set again, and meanwhile sends table-less
        // statements (a driver's ROLLBACK) where they reach no tenant.
        for (request, error, then) in [
            (
                "SET app.tenant_id = 'globex'; COMMIT; SELECT 1/0",
                true,
                None,
            ),
            (
                "SET app.tenant_id = 'globex'; BEGIN; SELECT 1/0",
                true,
                Some("ROLLBACK"),
            ),
            ("SET app.tenant_id = 'globex'; ROLLBACK", false, None),
        ] {
            c.send(&[query(request)]).await;
            let r = c.read_until(0, 1).await;
            assert_eq!(
                r.iter().any(|m| m.starts_with("E(22012")),
                error,
                "{request}: {r:?}"
            );
            if let Some(then) = then {
                c.send(&[query(then)]).await;
                c.read_until(0, 1).await;
            }
            let r = tenant_rows(&mut c).await;
            assert!(
                r[0].starts_with("E(55000:the session's tenant is unknown"),
                "after {request}: {r:?}"
            );
            c.send(&[query("ROLLBACK")]).await;
            let r = c.read_until(0, 1).await;
            assert!(r.contains(&"C(ROLLBACK)".to_string()), "{r:?}");
            c.send(&[query("SET app.tenant_id = 'acme'")]).await;
            c.read_until(0, 1).await;
            assert_eq!(
                tenant_rows(&mut c).await,
                ["T", "D(acme-row)", "C(SELECT 1)", "Z(I)"],
                "set again after {request}"
            );
        }
        // Pipelined behind the failing request: routed by its outcome.
        let pipelined: [(&str, Vec<Vec<u8>>); 2] = [
            (
                "simple",
                vec![
                    query("SET app.tenant_id = 'globex'; SELECT 1/0"),
                    query("SELECT name FROM accounts"),
                ],
            ),
            (
                "extended",
                [
                    unnamed("SET app.tenant_id = 'globex'"),
                    unnamed("SELECT 1/0"),
                    vec![sync()],
                    unnamed("SELECT name FROM accounts"),
                    vec![sync()],
                ]
                .concat(),
            ),
        ];
        for (what, requests) in pipelined {
            c.send(&requests).await;
            let r = c.read_until(0, 2).await;
            assert!(
                r.contains(&"D(acme-row)".to_string()),
                "pipelined {what}: {r:?}"
            );
        }
        // A block that failed: its COMMIT rolls back, whatever was still in flight.
        let block = [
            "BEGIN",
            "SET app.tenant_id = 'globex'",
            "SELECT 1/0",
            "COMMIT",
        ];
        c.send(&block.iter().map(|q| query(q)).collect::<Vec<_>>())
            .await;
        c.send(&[query("SELECT name FROM accounts")]).await;
        let r = c.read_until(0, 5).await;
        assert!(
            r.contains(&"D(acme-row)".to_string()),
            "pipelined block: {r:?}"
        );
        c.send(&[query("SET app.tenant_id = 'globex'; SELECT 1")])
            .await;
        c.read_until(0, 1).await;
        assert_eq!(
            tenant_rows(&mut c).await,
            ["T", "D(globex-row)", "C(SELECT 1)", "Z(I)"],
            "a request that succeeded"
        );
    });
}

/// SETs sent with the extended protocol (JDBC sends every statement so)
/// are forgotten like simple-protocol ones when PostgreSQL refuses or
/// undoes them: an error anywhere in their batch, or a rollback of their
/// transaction block. Replayed, a refused one would fail every later
/// transaction on another connection.
#[test]
fn extended_protocol_sets_are_forgotten_when_refused_or_undone() {
    let (_app, p) = passthrough("[pool]\nsize = 1\n");
    rt().block_on(async {
        let mut a = alice(&p).await;
        let mut b = alice(&p).await;
        let set = |sql: &[u8]| vec![parse(b"", sql), bind(b"", b""), execute(b"")];
        let mut check = async |batches: &[Vec<Vec<u8>>], expected: &str| {
            for batch in batches {
                a.send(batch).await;
                a.read_until(0, 1).await;
            }
            // B takes the only connection: A's next transaction replays.
            b.send(&[query("SELECT 1")]).await;
            b.read_until(0, 1).await;
            a.send(&[query(
                "SELECT concat(current_setting('myapp.x', true), '/', \
                 current_setting('myapp.y', true))",
            )])
            .await;
            let r = a.read_until(0, 1).await;
            assert!(
                r.contains(&format!("D({expected})")),
                "expected {expected}: {r:?}"
            );
        };
        let batch = |mut msgs: Vec<Vec<u8>>| {
            msgs.push(sync());
            msgs
        };
        check(&[batch(set(b"SET myapp.x = 'kept'"))], "kept/").await;
        // Refused by the server, then an error after a SET in the batch.
        check(&[batch(set(b"SET statement_timeout = 'bogus'"))], "kept/").await;
        let mut msgs = set(b"SET myapp.x = 'in a failed batch'");
        msgs.extend(set(b"SELECT 1/0"));
        check(&[batch(msgs)], "kept/").await;
        // Two SETs in one batch stand or fall together.
        let mut msgs = set(b"SET myapp.x = 'first'");
        msgs.extend(set(b"SET myapp.y = 'second'"));
        check(&[batch(msgs)], "first/second").await;
        // Undone by the rollback of its block.
        check(
            &[
                batch(set(b"BEGIN")),
                batch(set(b"SET myapp.x = 'rolled back'")),
                batch(set(b"ROLLBACK")),
            ],
            "first/second",
        )
        .await;
        // A setting ending in a comment is replayed without hiding the next.
        check(
            &[
                vec![query("SET myapp.x = 'c1' -- a comment")],
                vec![query("SET myapp.y = 'c2'")],
            ],
            "c1/c2",
        )
        .await;
        // RESET ALL clears them, unless its batch fails (PostgreSQL undoes
        // it with the implicit transaction).
        let mut msgs = set(b"RESET ALL");
        msgs.extend(set(b"SELECT 1/0"));
        check(&[batch(msgs)], "c1/c2").await;
        // The same across a Flush: the implicit transaction runs on to the
        // Sync, whether the error comes after the Flush or before it, and
        // whether the Sync follows at once or after the error.
        let mut flushed = set(b"RESET ALL");
        flushed.push(flush());
        check(
            &[[flushed.clone(), batch(set(b"SELECT 1/0"))].concat()],
            "c1/c2",
        )
        .await;
        let mut failing = set(b"RESET ALL");
        failing.extend(set(b"SELECT 1/0"));
        failing.push(flush());
        check(&[[failing.clone(), vec![sync()]].concat()], "c1/c2").await;
        // (The first read waits out its 3 s for a ReadyForQuery that only
        // the Sync brings: the error is in before the Sync is sent.)
        check(&[failing, vec![sync()]], "c1/c2").await;
        check(&[batch(set(b"RESET ALL"))], "/").await;
        // No replayed setting fails: transactions run.
        a.send(&[query("SELECT 1")]).await;
        assert_eq!(
            a.read_until(0, 1).await,
            ["T", "D(1)", "C(SELECT 1)", "Z(I)"]
        );
    });
}

/// A batch the proxy refuses after batches ended by Flush fails the
/// request's implicit transaction on the server too, as PostgreSQL's own
/// error would: what those batches ran is rolled back, not committed by a
/// later Sync.
#[test]
fn a_refusal_after_a_flush_rolls_back_what_ran_before_it() {
    let (app, p) = passthrough("");
    rt().block_on(async {
        let mut a = alice(&p).await;
        let mut first = unnamed(b"INSERT INTO items VALUES (3, 'three')");
        first.push(flush());
        a.send(&first).await;
        let r = a.read_until(b'C', 0).await;
        assert_eq!(r.last().map(String::as_str), Some("C(INSERT 0 1)"), "{r:?}");
        // Not UTF-8, so pass-through cannot read it: refused (22021).
        let mut refused = unnamed(b"SET myapp.x = '\xff'");
        refused.push(sync());
        a.send(&refused).await;
        let r = a.read_until(0, 1).await;
        assert!(r.iter().any(|m| m.starts_with("E(22021")), "{r:?}");
        assert_eq!(r.last().map(String::as_str), Some("Z(I)"), "{r:?}");
        a.send(&[query("SELECT count(*) FROM items")]).await;
        let r = a.read_until(0, 1).await;
        assert!(r.contains(&"D(2)".to_string()), "{r:?}");
        // The refused batch ended by Flush too: the error now, then only
        // the client's Sync answers, with ReadyForQuery.
        a.send(&first).await;
        a.read_until(b'C', 0).await;
        let mut refused = unnamed(b"SET myapp.x = '\xff'");
        refused.push(flush());
        a.send(&refused).await;
        let r = a.read_until(b'E', 0).await;
        assert!(r.last().is_some_and(|m| m.starts_with("E(22021")), "{r:?}");
        a.send(&[sync()]).await;
        assert_eq!(a.read_until(0, 1).await, ["Z(I)"]);
    });
    assert_eq!(app.psql("app", "SELECT count(*) FROM items").trim(), "2");
}

/// Inside a transaction block too, a refused batch ended by Flush gets its
/// error at once and no ReadyForQuery before the client's Sync, which gets
/// the only one, in the failed block: one answer per Sync, as from
/// PostgreSQL (a driver that pipelines reads each answer as its own).
#[test]
fn a_refused_batch_ended_by_flush_in_a_block_waits_for_its_sync() {
    let (app, p) = passthrough("");
    rt().block_on(async {
        let mut a = alice(&p).await;
        a.send(&[query("BEGIN; INSERT INTO items VALUES (3, 'three')")])
            .await;
        assert_eq!(a.read_until(0, 1).await.last().unwrap(), "Z(T)");
        // Not UTF-8, so pass-through cannot read it: refused (22021).
        let mut refused = unnamed(b"SET myapp.x = '\xff'");
        refused.push(flush());
        a.send(&refused).await;
        let r = a.read_until(b'E', 0).await;
        assert!(r.last().is_some_and(|m| m.starts_with("E(22021")), "{r:?}");
        a.send(&[sync()]).await;
        assert_eq!(a.read_until(0, 1).await, ["Z(E)"]);
        a.send(&[query("COMMIT")]).await;
        assert_eq!(a.read_until(0, 1).await, ["C(ROLLBACK)", "Z(I)"]);
    });
    assert_eq!(app.psql("app", "SELECT count(*) FROM items").trim(), "2");
}

/// A Parse in a failed transaction fails as on PostgreSQL (25P02), and its
/// statement does not exist afterwards, unless it ends the transaction; a
/// Bind of a name never prepared gets 26000 there too. Whether the server
/// holds the transaction, or the proxy (its BEGIN not sent yet).
#[test]
fn a_parse_in_a_failed_transaction_fails_as_on_postgresql() {
    let f = Fleet::start();
    add_user(&f.app, "app", "svc@example.com", &scram(FPW), None);
    let p = f.proxy("");
    rt().block_on(async {
        let mut c = Raw::connect(p.port, "svc@example.com", FPW, "app").await;
        for fail in [
            // On the server: an error inside the transaction.
            "SELECT 1/0",
            // Held by the proxy: a statement it refuses before any backend.
            "SELECT * FROM accounts WHERE tenant_id = 'acme' UNION ALL SELECT * FROM accounts WHERE tenant_id = 'globex'",
        ] {
            c.send(&[query("BEGIN")]).await;
            c.read_until(0, 1).await;
            c.send(&[query(fail)]).await;
            let r = c.read_until(0, 1).await;
            assert_eq!(r.last().unwrap(), "Z(E)", "{r:?}");
            c.send(&[parse(b"s1", b"SELECT 1"), sync()]).await;
            let r = c.read_until(0, 1).await;
            assert!(r[0].starts_with("E(25P02:"), "after {fail}: {r:?}");
            assert_eq!(r[1..], ["Z(E)"], "after {fail}: {r:?}");
            // A name never prepared: named, as PostgreSQL looks it up first.
            c.send(&[bind(b"", b"nope"), execute(b""), sync()]).await;
            let r = c.read_until(0, 1).await;
            assert!(r[0].starts_with("E(26000:"), "after {fail}: {r:?}");
            assert_eq!(r[1..], ["Z(E)"], "after {fail}: {r:?}");
            c.send(&[parse(b"end", b"ROLLBACK"), sync()]).await;
            assert_eq!(c.read_until(0, 1).await, ["1", "Z(E)"], "after {fail}");
            c.send(&[bind(b"", b"end"), execute(b""), sync()]).await;
            assert_eq!(
                c.read_until(0, 1).await,
                ["2", "C(ROLLBACK)", "Z(I)"],
                "after {fail}"
            );
            c.send(&[bind(b"", b"s1"), execute(b""), sync()]).await;
            let r = c.read_until(0, 1).await;
            assert!(r[0].starts_with("E(26000:"), "after {fail}: {r:?}");
            c.send(&[close(b'S', b"end"), sync()]).await;
            c.read_until(0, 1).await;
        }
    });
}

/// A SET sent with other statements in one Query (`SET search_path = x;
/// SELECT …`) stands when the Query succeeds, and is replayed on the
/// session's next connection without the statements beside it; it is
/// forgotten when the Query fails. A SET or RESET ALL only bound (Bind, no
/// Execute) never ran, and its portal ends with its transaction: nothing
/// of it is replayed or reset.
#[test]
fn a_set_beside_other_statements_is_replayed_alone_and_a_bound_one_only_when_executed() {
    let (_app, p) = passthrough("[pool]\nsize = 1\n");
    rt().block_on(async {
        let mut a = alice(&p).await;
        let mut b = alice(&p).await;
        // A client that sets no application_name sees the server's default,
        // as connecting directly (pooled connections send none).
        a.send(&[query("SHOW application_name")]).await;
        assert_eq!(a.read_until(0, 1).await[1], "D()");
        // After each request of `a`, `b` takes the one connection, so `a`'s
        // next transaction runs where its settings must be replayed.
        async fn turn(a: &mut Raw, b: &mut Raw, req: Vec<Vec<u8>>) -> (Vec<String>, Vec<String>) {
            a.send(&req).await;
            let r = a.read_until(0, 1).await;
            b.send(&[query("SELECT 1")]).await;
            b.read_until(0, 1).await;
            a.send(&[query("SELECT name FROM items ORDER BY id LIMIT 1")])
                .await;
            (r, a.read_until(0, 1).await)
        }
        let (r, seen) = turn(
            &mut a,
            &mut b,
            vec![query("SET search_path = leaked; SELECT 1/0")],
        )
        .await;
        assert!(r.iter().any(|m| m.starts_with("E(22012")), "{r:?}");
        assert_eq!(
            seen[1], "D(one)",
            "a failed Query's SET was replayed: {seen:?}"
        );
        let (_, seen) = turn(
            &mut a,
            &mut b,
            vec![
                parse(b"s1", b"SET search_path = leaked"),
                bind(b"p1", b"s1"),
                sync(),
            ],
        )
        .await;
        assert_eq!(
            seen[1], "D(one)",
            "a SET never executed was replayed: {seen:?}"
        );
        let (r, seen) = turn(
            &mut a,
            &mut b,
            vec![query("SET search_path = leaked; SELECT 2")],
        )
        .await;
        assert!(r.contains(&"D(2)".to_string()), "{r:?}");
        assert_eq!(seen[1], "D(LEAKED)", "the SET was lost: {seen:?}");
        // A RESET ALL bound to a portal its transaction then destroyed: an
        // Execute of that portal later runs nothing (34000), so the
        // settings stand, also once the block it failed is rolled back.
        let (_, seen) = turn(
            &mut a,
            &mut b,
            vec![parse(b"r", b"RESET ALL"), bind(b"p2", b"r"), sync()],
        )
        .await;
        assert_eq!(
            seen[1], "D(LEAKED)",
            "a RESET ALL never executed ran: {seen:?}"
        );
        b.send(&[query("SELECT 1")]).await;
        b.read_until(0, 1).await;
        let mut failing = unnamed("BEGIN");
        failing.extend([execute(b"p2"), sync()]);
        a.send(&failing).await;
        let r = a.read_until(0, 1).await;
        assert!(r.iter().any(|m| m.starts_with("E(34000")), "{r:?}");
        let (_, seen) = turn(&mut a, &mut b, vec![query("ROLLBACK")]).await;
        assert_eq!(
            seen[1], "D(LEAKED)",
            "a destroyed portal's RESET ALL ran: {seen:?}"
        );
    });
}

/// What a block does to the recorded settings is decided by the backend's
/// answers, whichever way the block is sent, and after the session's
/// settings were replayed on the connection first:
/// - `BEGIN; SET …; COMMIT` in one Query is replayed, `… ROLLBACK` not;
/// - a RESET ALL that a ROLLBACK in the same batch undid (sent as a named
///   statement, which pass-through does not read) gives the settings back;
/// - a RESET ALL in a block, then a SET with the text of one it cleared,
///   then ROLLBACK: the settings from before the block, that SET included;
/// - BEGIN, RESET ALL and an error in one batch, then ROLLBACK: the same.
#[test]
fn blocks_decide_the_recorded_settings_by_the_backends_answers() {
    let (_app, p) = passthrough("[pool]\nsize = 1\n");
    rt().block_on(async {
        let mut a = alice(&p).await;
        let mut b = alice(&p).await;
        // `a` sends `req`; `b` takes the one connection; `a` reads its
        // search_path and work_mem, replayed there.
        async fn then_show(a: &mut Raw, b: &mut Raw, req: Vec<Vec<u8>>) -> String {
            a.send(&req).await;
            let n = req.iter().filter(|m| m[0] == b'S' || m[0] == b'Q').count();
            a.read_until(0, n).await;
            b.send(&[query("SELECT 1")]).await;
            b.read_until(0, 1).await;
            a.send(&[query(
                "SELECT current_setting('search_path') || ' ' || current_setting('work_mem')",
            )])
            .await;
            a.read_until(0, 1).await[1].clone()
        }
        let q = |s: &str| vec![query(s)];
        let seen = then_show(&mut a, &mut b, q("BEGIN; SET work_mem = '5MB'; COMMIT")).await;
        assert_eq!(seen, "D(\"$user\", public 5MB)", "a committed SET was lost");
        let seen = then_show(&mut a, &mut b, q("BEGIN; SET work_mem = '6MB'; ROLLBACK")).await;
        assert_eq!(
            seen, "D(\"$user\", public 5MB)",
            "a rolled back SET was kept"
        );

        a.send(&[parse(b"rb", b"ROLLBACK"), sync()]).await;
        a.read_until(0, 1).await;
        let mut req = unnamed("RESET ALL");
        req.extend([bind(b"", b"rb"), execute(b""), sync()]);
        let seen = then_show(&mut a, &mut b, req).await;
        assert_eq!(
            seen, "D(\"$user\", public 5MB)",
            "a rolled back RESET ALL stood"
        );

        let seen = then_show(
            &mut a,
            &mut b,
            q("BEGIN; RESET ALL; SET work_mem = '5MB'; ROLLBACK"),
        )
        .await;
        assert_eq!(
            seen, "D(\"$user\", public 5MB)",
            "the SETs before the block went"
        );
        let seen = then_show(
            &mut a,
            &mut b,
            [
                q("BEGIN"),
                q("RESET ALL"),
                q("SET work_mem = '5MB'"),
                q("ROLLBACK"),
            ]
            .concat(),
        )
        .await;
        assert_eq!(
            seen, "D(\"$user\", public 5MB)",
            "the SETs before the block went"
        );

        let mut req = unnamed("BEGIN");
        req.extend(unnamed("RESET ALL"));
        req.extend(unnamed("SELECT 1/0"));
        req.push(sync());
        req.push(query("ROLLBACK"));
        let seen = then_show(&mut a, &mut b, req).await;
        assert_eq!(
            seen, "D(\"$user\", public 5MB)",
            "a failed block's RESET ALL stood"
        );
    });
}
