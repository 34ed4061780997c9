//! Differential fidelity: random request sequences, sent both straight to
//! PostgreSQL and through the proxy, must get the same answers.
//!
//! Two clients take turns. Directly, each has a server session of its own.
//! Through the proxy they share one backend connection (transaction
//! pooling, pool size 1), so every transaction may run on the connection
//! the other client used last: settings must be replayed, named statements
//! prepared again, errors and skipped messages answered as the server would.
//! A request is a simple Query or an extended-protocol batch (Parse, Bind,
//! Describe, Execute, Close, Flush) ended by Sync, built from a small
//! vocabulary of statements that change and show session state, fail, or
//! open and close blocks and savepoints. Every answer is compared message
//! by message (`wire::Raw::read_until`'s summaries).
//!
//! The seeds are fixed, so a failure reproduces; `DIFF_SEEDS=a..b` and
//! `DIFF_STEPS=n` run others, longer, when hunting, and `DIFF_PROBE=1`
//! compares the settings after every step, to find the step that made a
//! difference; `DIFF_MINIMIZE=1` shortens a failing history to the steps
//! the difference needs (see `random_request` for `DIFF_FAILED_REQUESTS`);
//! `DIFF_LOG=1` prints the proxy's log with a failure.
mod support;

use support::wire::*;
use support::*;

const PW: &str = "alice-secret-1";

/// Statements the requests are made of: session settings (application_name
/// among them, which ParameterStatus reports), what shows them, a schema
/// whose table shadows the public one, transaction control and savepoints,
/// errors of each phase. The clients send no startup parameters, whose
/// resets the proxy follows only from the next request on (see
/// docs/architecture.md "Known limits").
const STATEMENTS: &[&str] = &[
    "SELECT 1",
    "SELECT id, name FROM items ORDER BY id",
    "SELECT current_setting('search_path'), current_setting('statement_timeout'), current_setting('work_mem')",
    "SET search_path = leaked, public",
    "SET search_path = public",
    "SET work_mem = '5MB'",
    "SET statement_timeout = '7s'",
    "SET application_name = 'diff'",
    "SET LOCAL search_path = leaked",
    "SELECT set_config('work_mem', '6MB', false)",
    "RESET ALL",
    "RESET search_path",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT sp1",
    "ROLLBACK TO sp1",
    "RELEASE sp1",
    "SAVEPOINT sp2",
    "ROLLBACK TO SAVEPOINT sp2",
    "SELECT 1/0",
    "SELECT * FROM nosuch",
    "SELEC 1",
    "SHOW search_path",
    "SHOW application_name",
    "COPY (SELECT 2) TO STDOUT",
    "",
];

/// Extra texts for simple Queries only (several statements in one Query).
const MULTI: &[&str] = &[
    "SELECT 1; SELECT 2",
    "SET search_path = leaked; SELECT 1/0",
    "SET work_mem = '7MB'; SELECT 1",
    "BEGIN; SET work_mem = '8MB'; COMMIT",
    "BEGIN; SET search_path = leaked; ROLLBACK; SELECT name FROM items ORDER BY id",
    "SAVEPOINT sp1; SET search_path = leaked; ROLLBACK TO sp1; SHOW search_path",
];

const NAMES: &[&[u8]] = &[b"", b"s1", b"s2"];
const PORTALS: &[&[u8]] = &[b"", b"p1"];

/// xorshift64*: deterministic, so a failing seed reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

/// One request: its messages, and how a person would read it.
#[derive(Clone)]
struct Request {
    messages: Vec<Vec<u8>>,
    text: String,
}

/// Differences the proxy still has, listed in docs/architecture.md ("Known
/// limits"), that the requests avoid so that everything else stays guarded:
/// - a SET in the same extended-protocol request as transaction control:
///   the proxy forgets the SET when the request fails, even if a COMMIT in
///   it made it stand;
/// - a named Parse of a name in use gets 42P05 before PostgreSQL's analysis
///   of the statement could fail (42P01; its grammar's errors come first).
///
/// Hence: no SET beside transaction control in a batch (a Bind of a named
/// statement counts as either: it may be a `set_config` or a COMMIT
/// prepared earlier), and a named Parse
/// closes the name first. (A batch of only Parses and Closes of statements,
/// libpq's PQprepare, is answered by the proxy when no connection is free,
/// by design: see docs/architecture.md, "Translation". Here one always is:
/// the other client's transaction gave it back before its client saw the
/// end.) A failed transaction is only rolled back
/// (`DIFF_FAILED_REQUESTS=1` sends random requests there too): random
/// requests there once made a PostgreSQL 15.18 backend crash (signal 11,
/// seed 191 of 200 steps), which is PostgreSQL's to fix, not a difference.
fn random_request(rng: &mut Rng) -> Request {
    loop {
        let r = any_request(rng);
        let batch = !r.text.starts_with("Q ");
        let sets = r.text.contains("SET ") || r.text.contains("set_config");
        let control = ["BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE"]
            .iter()
            .any(|w| r.text.contains(w));
        // A named statement bound here, prepared earlier, may be either.
        let named = r.text.matches("<-s").count();
        let both = (sets && (control || named > 0)) || (named > 0 && control) || named > 1;
        if !(batch && both) {
            return r;
        }
    }
}

fn any_request(rng: &mut Rng) -> Request {
    if rng.below(3) == 0 {
        let sql = if rng.below(4) == 0 {
            *rng.pick(MULTI)
        } else {
            *rng.pick(STATEMENTS)
        };
        return Request {
            messages: vec![query(sql)],
            text: format!("Q {sql:?}"),
        };
    }
    let mut messages = Vec::new();
    let mut text = Vec::new();
    let show = |n: &[u8]| String::from_utf8_lossy(n).to_string();
    for _ in 0..1 + rng.below(4) {
        match rng.below(9) {
            // The drivers' usual statement, as one unit.
            0..=2 => {
                let sql = *rng.pick(STATEMENTS);
                messages.extend(unnamed(sql));
                text.push(format!("P/B/E {sql:?}"));
            }
            3 => {
                let (name, sql) = (*rng.pick(NAMES), *rng.pick(STATEMENTS));
                if !name.is_empty() {
                    // A name in use (see `random_request`).
                    messages.push(close(b'S', name));
                    text.push(format!("C(S{})", show(name)));
                }
                messages.push(parse(name, sql.as_bytes()));
                text.push(format!("P({}) {sql:?}", show(name)));
            }
            4 => {
                let (portal, name) = (*rng.pick(PORTALS), *rng.pick(NAMES));
                messages.push(bind(portal, name));
                text.push(format!("B({}<-{})", show(portal), show(name)));
            }
            5 => {
                let portal = *rng.pick(PORTALS);
                messages.push(execute(portal));
                text.push(format!("E({})", show(portal)));
            }
            n @ (6 | 7) => {
                let (kind, name) = match rng.below(2) {
                    0 => (b'S', *rng.pick(NAMES)),
                    _ => (b'P', *rng.pick(PORTALS)),
                };
                let (message, letter) = match n {
                    6 => (describe(kind, name), 'D'),
                    _ => (close(kind, name), 'C'),
                };
                messages.push(message);
                text.push(format!("{letter}({}{})", kind as char, show(name)));
            }
            _ => {
                messages.push(flush());
                text.push("H".into());
            }
        }
    }
    messages.push(sync());
    text.push("S".into());
    Request {
        messages,
        text: text.join(" "),
    }
}

/// What may legitimately differ: nothing but the server's process id in
/// messages that name it (none of these statements do), so the summaries
/// are compared as they are.
fn same(direct: &[String], proxied: &[String]) -> bool {
    direct == proxied
}

/// A client's turn: which client, and its request.
type Step = (usize, Request);

/// Where the requests come from: a seed's generator, or a list (to replay
/// a shorter history when hunting).
enum Steps<'a> {
    Random { rng: Rng, count: usize },
    Fixed(&'a [Step]),
}

/// The first difference: the steps played up to it, and what differed.
struct Difference {
    played: Vec<Step>,
    what: String,
}

impl Difference {
    fn report(&self, seed: u64) -> String {
        let history: Vec<String> = self
            .played
            .iter()
            .enumerate()
            .map(|(i, (c, r))| format!("  {i:>3} client {c}: {}", r.text))
            .collect();
        format!(
            "seed {seed}, {}:\n{}\n{}",
            self.played.len() - 1,
            history.join("\n"),
            self.what
        )
    }
}

/// Plays `steps` on two fresh clients directly and through the proxy.
async fn play(proxy_port: u16, pg_port: u16, mut steps: Steps<'_>) -> Result<(), Difference> {
    let mut direct = Vec::new();
    let mut proxied = Vec::new();
    for _ in 0..2 {
        direct.push(Raw::connect(pg_port, "postgres", SUPERUSER_PASSWORD, "app").await);
        proxied.push(Raw::connect(proxy_port, "alice@example.com", PW, "app").await);
    }
    let probe = std::env::var_os("DIFF_PROBE").is_some();
    let failed_requests = std::env::var_os("DIFF_FAILED_REQUESTS").is_some();
    // Whether each client is inside a transaction block (from the server's
    // own answers): the other one does not take a turn meanwhile, since
    // with one backend connection it would wait for this one.
    let mut in_block = [false, false];
    let mut failed = [false, false];
    let mut client = 0;
    let mut played: Vec<Step> = Vec::new();
    loop {
        let req = match &mut steps {
            Steps::Random { rng, count } => {
                if played.len() == *count {
                    return Ok(());
                }
                if !in_block[client] && rng.below(2) == 0 {
                    client = 1 - client;
                }
                match failed[client] && !failed_requests {
                    false => random_request(rng),
                    true => Request {
                        messages: vec![query("ROLLBACK")],
                        text: "Q \"ROLLBACK\" (failed transaction)".into(),
                    },
                }
            }
            Steps::Fixed(list) => {
                let Some((c, r)) = list.get(played.len()) else {
                    return Ok(());
                };
                client = *c;
                r.clone()
            }
        };
        direct[client].send(&req.messages).await;
        let want = direct[client].read_until(0, 1).await;
        proxied[client].send(&req.messages).await;
        let got = proxied[client].read_until(0, 1).await;
        played.push((client, req));
        if !same(&want, &got) {
            let what = format!("  direct:  {want:?}\n  proxied: {got:?}");
            return Err(Difference { played, what });
        }
        in_block[client] = matches!(want.last().map(String::as_str), Some("Z(T)" | "Z(E)"));
        failed[client] = want.last().map(String::as_str) == Some("Z(E)");
        if probe && !failed[client] {
            // Hunting: the settings after every step, so that a difference
            // shows at the step that made it.
            let show = [query(STATEMENTS[2])];
            direct[client].send(&show).await;
            proxied[client].send(&show).await;
            let (want, got) = (
                direct[client].read_until(0, 1).await,
                proxied[client].read_until(0, 1).await,
            );
            if want != got {
                let what =
                    format!("  then the settings differ:\n  direct:  {want:?}\n  proxied: {got:?}");
                return Err(Difference { played, what });
            }
        }
    }
}

/// Runs `count` requests of seed `seed`; the first difference, with the
/// history that led to it (shortened, with `DIFF_MINIMIZE`, to the steps
/// it needs: each is dropped in turn while a difference remains).
async fn run_seed(proxy_port: u16, pg_port: u16, seed: u64, count: usize) -> Option<String> {
    let rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut d = play(proxy_port, pg_port, Steps::Random { rng, count })
        .await
        .err()?;
    if std::env::var_os("DIFF_MINIMIZE").is_some() {
        let mut i = d.played.len() - 1;
        while i > 0 {
            i -= 1;
            let mut fewer = d.played.clone();
            fewer.remove(i);
            if let Err(e) = play(proxy_port, pg_port, Steps::Fixed(&fewer)).await {
                if !e.what.contains("<timeout/eof>") {
                    i = i.min(e.played.len() - 1);
                    d = e;
                }
            }
        }
    }
    Some(d.report(seed))
}

fn seeds() -> (std::ops::Range<u64>, usize) {
    let range = std::env::var("DIFF_SEEDS")
        .ok()
        .and_then(|s| {
            let (a, b) = s.split_once("..")?;
            Some(a.parse().ok()?..b.parse().ok()?)
        })
        .unwrap_or(1..13);
    let steps = std::env::var("DIFF_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    (range, steps)
}

#[test]
fn random_requests_get_the_same_answers_through_the_proxy_as_directly() {
    let (app, proxy) = passthrough_with_items(PW, "[pool]\nsize = 1\n", &[]);
    let (range, steps) = seeds();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut failures = Vec::new();
    for seed in range {
        if let Some(f) = rt.block_on(run_seed(proxy.port, app.port, seed, steps)) {
            failures.push(f);
        }
    }
    assert!(
        !proxy.log_text().contains("panicked"),
        "{}",
        proxy.log_text()
    );
    if !failures.is_empty() && std::env::var_os("DIFF_LOG").is_some() {
        eprintln!("{}", proxy.log_text());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
