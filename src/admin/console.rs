//! The admin console: `psql -U <admin user> pgtenant`, simple protocol only.
//!
//! PgBouncer's SHOW commands answer with PgBouncer's column names (and int8
//! columns where PgBouncer has numbers) so tools written for PgBouncer's
//! console — prometheus-pgbouncer-exporter among them — work unchanged. A
//! "database" in PgBouncer's sense is a pgtenant pool: one data source
//! (`user@host:port/db`), shared by every tenant whose data lives there.

use crate::config::Config;
use crate::net::Stream;
use crate::pool::{DataSourcePool, PoolTotals};
use crate::protocol::backend::{self as be, PgError, TxStatus};
use crate::protocol::frontend;
use crate::protocol::FrameReader;
use crate::server::Shared;
use bytes::{BufMut, BytesMut};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Instant, SystemTime};
use tokio::io::AsyncWriteExt;

/// The commands the console understands (shown in hints and SHOW HELP).
pub const COMMANDS: &[(&str, &str)] = &[
    (
        "SHOW POOLS",
        "pools (data sources): clients and server connections",
    ),
    (
        "SHOW STATS",
        "per-pool totals and averages (PgBouncer columns)",
    ),
    ("SHOW STATS_TOTALS", "per-pool totals"),
    (
        "SHOW STATS_AVERAGES",
        "per-pool averages over the last period",
    ),
    ("SHOW CLIENTS", "connected clients"),
    ("SHOW SERVERS", "server connections per pool"),
    ("SHOW DATABASES", "pools with their settings"),
    ("SHOW USERS", "backend users"),
    ("SHOW LISTS", "counts of internal lists"),
    ("SHOW CONFIG", "effective configuration (secrets redacted)"),
    ("SHOW VERSION", "pgtenant version"),
    (
        "SHOW TENANTS",
        "tenants: status, data source, pool, clients, last error",
    ),
    ("SHOW ROUTES", "routing targets with their traffic counts"),
    (
        "EXPLAIN ROUTE [TENANT <id>] <sql>",
        "how a statement would be routed",
    ),
    ("RELOAD", "re-read the configuration file and environment"),
    (
        "PAUSE [tenant]",
        "hold new server work (all pools, or one tenant)",
    ),
    ("RESUME [tenant]", "undo PAUSE"),
    (
        "KILL <tenant>",
        "drop a tenant's connections (not available yet)",
    ),
    ("SHUTDOWN", "drain client sessions and stop the process"),
];

const INT8: u32 = 20;
const TEXT: u32 = 25;

/// A result set: typed columns, text values.
struct Table {
    cols: Vec<(String, u32)>,
    rows: Vec<Vec<Option<String>>>,
    tag: String,
}

impl Table {
    fn new(cols: &[(&str, u32)]) -> Table {
        Table {
            cols: cols.iter().map(|(n, t)| (n.to_string(), *t)).collect(),
            rows: Vec::new(),
            tag: "SHOW".into(),
        }
    }
    fn push(&mut self, row: Vec<Val>) {
        debug_assert_eq!(row.len(), self.cols.len());
        self.rows.push(row.into_iter().map(|v| v.0).collect());
    }
    fn encode(&self, out: &mut BytesMut) {
        out.extend_from_slice(&row_description(&self.cols));
        for r in &self.rows {
            out.extend_from_slice(&be::data_row(r));
        }
        out.extend_from_slice(&be::command_complete(&self.tag));
    }
}

/// One cell.
struct Val(Option<String>);
fn s(v: impl Into<String>) -> Val {
    Val(Some(v.into()))
}
fn n(v: impl std::fmt::Display) -> Val {
    Val(Some(v.to_string()))
}
fn null() -> Val {
    Val(None)
}

fn row_description(cols: &[(String, u32)]) -> bytes::Bytes {
    let mut body = BytesMut::new();
    body.put_i16(cols.len() as i16);
    for (name, oid) in cols {
        body.put_slice(name.replace('\0', "").as_bytes());
        body.put_u8(0);
        body.put_i32(0);
        body.put_i16(0);
        body.put_u32(*oid);
        body.put_i16(if *oid == INT8 { 8 } else { -1 });
        body.put_i32(-1);
        body.put_i16(0);
    }
    framed(b'T', &body)
}

fn framed(tag: u8, body: &[u8]) -> bytes::Bytes {
    let mut out = BytesMut::with_capacity(body.len() + 5);
    out.put_u8(tag);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
    out.freeze()
}

/// A NoticeResponse with `severity` (WARNING, NOTICE, INFO).
fn notice(severity: &str, code: &str, text: &str) -> bytes::Bytes {
    let mut body = BytesMut::new();
    for (f, v) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', text),
    ] {
        body.put_u8(f);
        body.put_slice(v.replace('\0', "").as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    framed(b'N', &body)
}

/// What one command produced.
enum Outcome {
    Table(Table, Vec<bytes::Bytes>),
    Done(String, Vec<bytes::Bytes>),
    /// Answer, then close the connection (SHUTDOWN).
    Close(String),
}

/// The greeting an admin client gets right after authentication.
fn greeting(key: (i32, i32)) -> BytesMut {
    let mut out = BytesMut::new();
    out.extend_from_slice(&be::auth_ok());
    for (k, v) in [
        (
            "server_version",
            format!("{}/pgtenant", env!("CARGO_PKG_VERSION")),
        ),
        ("server_encoding", "UTF8".into()),
        ("client_encoding", "UTF8".into()),
        ("DateStyle", "ISO".into()),
        ("integer_datetimes", "on".into()),
        ("standard_conforming_strings", "on".into()),
        ("application_name", "".into()),
    ] {
        out.extend_from_slice(&be::parameter_status(k, &v));
    }
    out.extend_from_slice(&be::backend_key_data(key.0, key.1));
    out.extend_from_slice(&be::ready_for_query(TxStatus::Idle));
    out
}

/// Serves one authenticated admin client until it leaves.
pub async fn run(
    stream: &mut Stream,
    reader: &mut FrameReader,
    shared: &Arc<Shared>,
    user: &str,
    key: (i32, i32),
) {
    tracing::info!(user = %user, "admin console session started");
    if stream.write_all(&greeting(key)).await.is_err() {
        return;
    }
    // Extended-protocol messages are refused once per batch, up to Sync.
    let mut refused_batch = false;
    loop {
        let frame = match reader.read_frame(stream).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "admin console read failed");
                let err = PgError::fatal("08P01", format!("protocol violation: {e}"));
                let _ = stream.write_all(&err.encode()).await;
                break;
            }
        };
        let mut out = BytesMut::new();
        let mut close = false;
        match frame.tag() {
            b'Q' => {
                refused_batch = false;
                match frontend::query_text(frame.body()) {
                    Ok(sql) => close = execute_query(sql, shared, user, &mut out),
                    Err(e) => out.extend_from_slice(
                        &PgError::error("08P01", format!("malformed Query message: {e}")).encode(),
                    ),
                }
                out.extend_from_slice(&be::ready_for_query(TxStatus::Idle));
            }
            b'X' => break,
            b'S' => {
                if !refused_batch {
                    out.extend_from_slice(&extended_refusal().encode());
                }
                refused_batch = false;
                out.extend_from_slice(&be::ready_for_query(TxStatus::Idle));
            }
            b'H' => {}
            b'P' | b'B' | b'D' | b'E' | b'C' => {
                if !refused_batch {
                    refused_batch = true;
                    out.extend_from_slice(&extended_refusal().encode());
                }
            }
            other => {
                out.extend_from_slice(
                    &PgError::fatal(
                        "08P01",
                        format!("unexpected message type {:?}", other as char),
                    )
                    .encode(),
                );
                close = true;
            }
        }
        if !out.is_empty() && stream.write_all(&out).await.is_err() {
            break;
        }
        if close {
            break;
        }
    }
    let _ = stream.shutdown().await;
    tracing::info!(user = %user, "admin console session ended");
}

fn extended_refusal() -> PgError {
    PgError::error(
        "0A000",
        "the pgtenant admin console supports only the simple query protocol",
    )
    .with_hint("Use psql, or a driver in simple-query mode.")
}

/// Runs every statement of a Query message; true when the connection must close.
fn execute_query(sql: &str, shared: &Arc<Shared>, user: &str, out: &mut BytesMut) -> bool {
    let statements = split_statements(sql);
    if statements.is_empty() {
        out.extend_from_slice(&be::empty_query());
        return false;
    }
    for stmt in statements {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            execute(&stmt, shared, user)
        }))
        .unwrap_or_else(|_| {
            Err(PgError::error(
                "XX000",
                "internal error while running the admin command",
            ))
        });
        match result {
            Ok(Outcome::Table(t, notices)) => {
                for n in notices {
                    out.extend_from_slice(&n);
                }
                t.encode(out);
            }
            Ok(Outcome::Done(tag, notices)) => {
                for n in notices {
                    out.extend_from_slice(&n);
                }
                out.extend_from_slice(&be::command_complete(&tag));
            }
            Ok(Outcome::Close(tag)) => {
                out.extend_from_slice(&be::command_complete(&tag));
                return true;
            }
            Err(e) => {
                out.extend_from_slice(&e.encode());
                // Like PostgreSQL: an error ends the rest of the Query message.
                return false;
            }
        }
    }
    false
}

/// Splits on `;` outside quotes; EXPLAIN ROUTE keeps the rest of the text.
fn split_statements(sql: &str) -> Vec<String> {
    let trimmed = sql.trim_start();
    if starts_with_words(trimmed, &["EXPLAIN", "ROUTE"]) {
        let t = trimmed.trim_end().trim_end_matches(';').trim_end();
        return vec![t.to_string()];
    }
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for c in sql.chars() {
        match (quote, c) {
            (None, ';') => {
                if !cur.trim().is_empty() {
                    out.push(cur.trim().to_string());
                }
                cur.clear();
                continue;
            }
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

fn starts_with_words(text: &str, words: &[&str]) -> bool {
    let mut it = text.split_whitespace();
    words
        .iter()
        .all(|w| it.next().is_some_and(|t| t.eq_ignore_ascii_case(w)))
}

fn unknown(what: &str) -> PgError {
    let list: Vec<&str> = COMMANDS.iter().map(|(c, _)| *c).collect();
    PgError::error("42601", format!("unknown admin console command: {what}"))
        .with_hint(format!("Commands: {}.", list.join(", ")))
}

/// Strips one level of quotes from an identifier-ish argument.
fn unquote(arg: &str) -> String {
    let a = arg.trim();
    for q in ['\'', '"'] {
        if a.len() >= 2 && a.starts_with(q) && a.ends_with(q) {
            return a[1..a.len() - 1].replace(&format!("{q}{q}"), &q.to_string());
        }
    }
    a.to_string()
}

fn execute(stmt: &str, shared: &Arc<Shared>, user: &str) -> Result<Outcome, PgError> {
    let words: Vec<&str> = stmt.split_whitespace().collect();
    let verb = words
        .first()
        .map(|w| w.to_ascii_uppercase())
        .unwrap_or_default();
    match verb.as_str() {
        "SHOW" => {
            let Some(what) = words.get(1) else {
                return Ok(Outcome::Table(help(), vec![]));
            };
            if words.len() > 2 {
                return Err(unknown(stmt));
            }
            show(&what.to_ascii_uppercase(), shared).map(|t| Outcome::Table(t, vec![]))
        }
        "EXPLAIN"
            if words
                .get(1)
                .is_some_and(|w| w.eq_ignore_ascii_case("ROUTE")) =>
        {
            explain_route(stmt, shared)
        }
        "RELOAD" if words.len() == 1 => reload(shared, user),
        "PAUSE" | "RESUME" if words.len() <= 2 => {
            let tenant = words.get(1).map(|t| unquote(t));
            pause_resume(&verb, tenant.as_deref(), shared, user)
        }
        "KILL" if words.len() == 2 => {
            let tenant = unquote(words[1]);
            if shared.registry.get(&tenant).is_none() {
                return Err(no_tenant(&tenant));
            }
            let data_id = shared
                .registry
                .get(&tenant)
                .map(|r| r.data_tenant_id().to_string())
                .unwrap_or_else(|| tenant.clone());
            let sessions = super::kill_tenant_sessions(&shared.clients, &data_id);
            let conns: usize = shared
                .pools
                .all()
                .iter()
                .map(|p| p.close_idle_for_tenant(&data_id))
                .sum();
            tracing::warn!(admin = %user, tenant = %tenant, sessions, conns, "KILL");
            Ok(Outcome::Done(format!("KILL {sessions}"), Vec::new()))
        }
        "SHUTDOWN" if words.len() <= 2 => {
            if let Some(mode) = words.get(1) {
                if !mode.eq_ignore_ascii_case("WAIT_FOR_CLIENTS") {
                    return Err(unknown(stmt));
                }
            }
            tracing::warn!(user = %user, "SHUTDOWN requested from the admin console");
            crate::admin::set_draining();
            terminate_self();
            Ok(Outcome::Close("SHUTDOWN".into()))
        }
        "HELP" => Ok(Outcome::Table(help(), vec![])),
        "SET" => Err(
            PgError::error("0A000", "settings cannot be changed from the admin console")
                .with_hint("Edit the configuration file (or PGTENANT_* variables) and run RELOAD."),
        ),
        "BEGIN" | "COMMIT" | "ROLLBACK" | "START" | "END" | "ABORT" => {
            Ok(Outcome::Done(verb, vec![]))
        }
        _ => Err(unknown(stmt)),
    }
}

fn no_tenant(id: &str) -> PgError {
    PgError::error("3D000", format!("tenant \"{id}\" does not exist"))
        .with_hint("SHOW TENANTS lists them.")
}

/// SIGTERM to ourselves: run.rs drains sessions and exits, as for `kill`.
fn terminate_self() {
    // Give the console a moment to flush its answer first.
    std::thread::spawn(|| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        // SAFETY: kill(2) on our own pid with a valid signal number.
        unsafe {
            libc::kill(std::process::id() as libc::pid_t, libc::SIGTERM);
        }
    });
}

fn help() -> Table {
    let mut t = Table::new(&[("command", TEXT), ("description", TEXT)]);
    for (c, d) in COMMANDS {
        t.push(vec![s(*c), s(*d)]);
    }
    t
}

fn show(what: &str, shared: &Arc<Shared>) -> Result<Table, PgError> {
    match what {
        "POOLS" => Ok(show_pools(shared)),
        "STATS" => Ok(show_stats(shared, true, true, true)),
        "STATS_TOTALS" => Ok(show_stats(shared, false, true, false)),
        "STATS_AVERAGES" => Ok(show_stats(shared, false, false, true)),
        "CLIENTS" => Ok(show_clients(shared)),
        "SERVERS" => Ok(show_servers(shared)),
        "DATABASES" => Ok(show_databases(shared)),
        "USERS" => Ok(show_users(shared)),
        "LISTS" => Ok(show_lists(shared)),
        "CONFIG" => Ok(show_config(shared)),
        "VERSION" => {
            let mut t = Table::new(&[("version", TEXT)]);
            t.push(vec![s(format!("pgtenant {}", env!("CARGO_PKG_VERSION")))]);
            Ok(t)
        }
        "TENANTS" => Ok(show_tenants(shared)),
        "ROUTES" => Ok(show_routes(shared)),
        "HELP" => Ok(help()),
        _ => Err(unknown(&format!("SHOW {what}"))),
    }
}

/// Pools sorted by name, the app DB's first.
fn pools(shared: &Shared) -> Vec<Arc<DataSourcePool>> {
    let app = shared.app_target().pool.name.clone();
    let mut all = shared.pools.all();
    all.sort_by(|a, b| (a.name != app, &a.name).cmp(&(b.name != app, &b.name)));
    all
}

fn show_pools(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("database", TEXT),
        ("user", TEXT),
        ("cl_active", INT8),
        ("cl_waiting", INT8),
        ("cl_active_cancel_req", INT8),
        ("cl_waiting_cancel_req", INT8),
        ("sv_active", INT8),
        ("sv_active_cancel", INT8),
        ("sv_being_canceled", INT8),
        ("sv_idle", INT8),
        ("sv_used", INT8),
        ("sv_tested", INT8),
        ("sv_login", INT8),
        ("maxwait", INT8),
        ("maxwait_us", INT8),
        ("pool_mode", TEXT),
    ]);
    for p in pools(shared) {
        let st = &p.stats;
        let active = st.active();
        // PgBouncer's maxwait is the oldest waiter's wait; pgtenant keeps the
        // longest completed wait, reported while anyone is waiting.
        let max_wait = if st.waiting.load(Relaxed) > 0 {
            st.max_wait_us.load(Relaxed)
        } else {
            0
        };
        t.push(vec![
            s(&p.name),
            s(&p.url.user),
            n(active),
            n(st.waiting.load(Relaxed)),
            n(0),
            n(0),
            n(active),
            n(0),
            n(0),
            n(p.idle_count()),
            n(0),
            n(0),
            n(0),
            n(max_wait / 1_000_000),
            n(max_wait % 1_000_000),
            s(p.settings.mode.as_str()),
        ]);
    }
    t
}

/// PgBouncer's stats period: averages cover the time since the previous
/// period started (at least one full period once one has passed).
const STATS_PERIOD: std::time::Duration = std::time::Duration::from_secs(60);

struct Snapshots {
    previous: Option<(Instant, HashMap<String, PoolTotals>)>,
    current: (Instant, HashMap<String, PoolTotals>),
}

static SNAPSHOTS: LazyLock<Mutex<Option<Snapshots>>> = LazyLock::new(|| Mutex::new(None));

/// Per-second rates and per-event averages since the reference snapshot.
fn averages(pools: &[Arc<DataSourcePool>]) -> HashMap<String, [u64; 8]> {
    let now = Instant::now();
    let current: HashMap<String, PoolTotals> = pools
        .iter()
        .map(|p| (p.name.clone(), p.stats.totals()))
        .collect();
    let mut guard = SNAPSHOTS.lock().unwrap_or_else(|e| e.into_inner());
    let snaps = guard.get_or_insert_with(|| Snapshots {
        previous: None,
        current: (crate::admin::console::process_start(), HashMap::new()),
    });
    if now.duration_since(snaps.current.0) >= STATS_PERIOD {
        let cur = std::mem::replace(&mut snaps.current, (now, current.clone()));
        snaps.previous = Some(cur);
    }
    let (since, base) = snaps.previous.as_ref().unwrap_or(&snaps.current);
    let secs = now.duration_since(*since).as_secs_f64().max(1.0);
    current
        .iter()
        .map(|(name, c)| {
            let b = base.get(name).copied().unwrap_or_default();
            let d = |x: u64, y: u64| x.saturating_sub(y);
            let per_sec = |x: u64| (x as f64 / secs).round() as u64;
            let xacts = d(c.xacts, b.xacts);
            let queries = d(c.queries, b.queries);
            let assignments = d(c.checkouts, b.checkouts);
            let avg = |total: u64, count: u64| total.checked_div(count).unwrap_or(0);
            (
                name.clone(),
                [
                    per_sec(assignments),
                    per_sec(xacts),
                    per_sec(queries),
                    per_sec(d(c.bytes_received, b.bytes_received)),
                    per_sec(d(c.bytes_sent, b.bytes_sent)),
                    avg(d(c.xact_us, b.xact_us), xacts),
                    avg(d(c.query_us, b.query_us), queries),
                    avg(d(c.wait_us, b.wait_us), assignments),
                ],
            )
        })
        .collect()
}

static PROCESS_START: LazyLock<Instant> = LazyLock::new(Instant::now);

pub(crate) fn process_start() -> Instant {
    *PROCESS_START
}

/// SHOW STATS (`legacy`: also the pre-1.8 total_requests/avg_req columns
/// older exporters read), SHOW STATS_TOTALS, SHOW STATS_AVERAGES.
fn show_stats(shared: &Shared, legacy: bool, totals: bool, avgs: bool) -> Table {
    let names = [
        "server_assignment_count",
        "xact_count",
        "query_count",
        if totals { "received" } else { "recv" },
        "sent",
        "xact_time",
        "query_time",
        "wait_time",
        "client_parse_count",
        "server_parse_count",
        "bind_count",
    ];
    let mut cols: Vec<(String, u32)> = vec![("database".into(), TEXT)];
    let prefix = |p: &str, n: &str| {
        if legacy {
            format!("{p}_{n}")
        } else if p == "total" {
            match n {
                "received" => "bytes_received".into(),
                "sent" => "bytes_sent".into(),
                _ => n.to_string(),
            }
        } else {
            match n {
                "recv" => "bytes_received".into(),
                "sent" => "bytes_sent".into(),
                _ => n.to_string(),
            }
        }
    };
    if totals {
        for nm in names {
            let nm = if nm == "recv" { "received" } else { nm };
            cols.push((prefix("total", nm), INT8));
        }
    }
    if avgs {
        for nm in names {
            let nm = if nm == "received" { "recv" } else { nm };
            cols.push((prefix("avg", nm), INT8));
        }
    }
    if legacy {
        cols.push(("total_requests".into(), INT8));
        cols.push(("avg_req".into(), INT8));
    }
    let all = pools(shared);
    let averages = averages(&all);
    let mut t = Table {
        cols,
        rows: Vec::new(),
        tag: "SHOW".into(),
    };
    for p in &all {
        let c = p.stats.totals();
        let a = averages.get(&p.name).copied().unwrap_or_default();
        let mut row = vec![s(&p.name)];
        if totals {
            row.extend([
                n(c.checkouts),
                n(c.xacts),
                n(c.queries),
                n(c.bytes_received),
                n(c.bytes_sent),
                n(c.xact_us),
                n(c.query_us),
                n(c.wait_us),
                n(0),
                n(0),
                n(0),
            ]);
        }
        if avgs {
            row.extend(a.iter().map(|v| n(*v)));
            row.extend([n(0), n(0), n(0)]);
        }
        if legacy {
            row.push(n(c.queries));
            row.push(n(a[2]));
        }
        t.push(row);
    }
    t
}

fn unix_time(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // YYYY-MM-DD HH:MM:SS UTC without a date library (civil-from-days).
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

const CONN_COLUMNS: &[(&str, u32)] = &[
    ("type", TEXT),
    ("user", TEXT),
    ("database", TEXT),
    ("state", TEXT),
    ("addr", TEXT),
    ("port", INT8),
    ("local_addr", TEXT),
    ("local_port", INT8),
    ("connect_time", TEXT),
    ("request_time", TEXT),
    ("wait", INT8),
    ("wait_us", INT8),
    ("close_needed", INT8),
    ("ptr", TEXT),
    ("link", TEXT),
    ("remote_pid", INT8),
    ("tls", TEXT),
    ("application_name", TEXT),
    ("prepared_statements", INT8),
];

fn listen_addr(shared: &Shared) -> (String, String) {
    let listen = shared.config().listen.clone();
    match listen.rsplit_once(':') {
        Some((h, p)) => (h.trim_matches(['[', ']']).to_string(), p.to_string()),
        None => (listen, "".into()),
    }
}

fn show_clients(shared: &Shared) -> Table {
    let mut t = Table::new(CONN_COLUMNS);
    let (laddr, lport) = listen_addr(shared);
    let mut clients: Vec<(u64, crate::admin::ClientInfo)> = shared
        .clients
        .iter()
        .map(|e| (*e.key(), e.value().clone()))
        .collect();
    clients.sort_by_key(|(id, _)| *id);
    for (id, c) in clients {
        t.push(vec![
            s("C"),
            s(&c.user),
            s(&c.database),
            s("active"),
            s(c.peer.ip().to_string()),
            n(c.peer.port()),
            s(&laddr),
            Val(lport.parse::<u16>().ok().map(|p| p.to_string())),
            s(unix_time(c.connected_at)),
            null(),
            n(0),
            n(0),
            n(0),
            s(format!("session-{id}")),
            null(),
            n(0),
            s(if c.tls { "TLS" } else { "" }),
            null(),
            n(0),
        ]);
    }
    t
}

/// pgtenant does not expose individual server connections; one row per
/// connection is synthesised from each pool's active/idle counts.
fn show_servers(shared: &Shared) -> Table {
    let mut t = Table::new(CONN_COLUMNS);
    for p in pools(shared) {
        // Clamped: a row per connection, and never more rows than the pool holds.
        let active = p.stats.active().min(p.settings.size);
        let idle = p.idle_count();
        for (state, count) in [("active", active), ("idle", idle)] {
            for i in 0..count {
                t.push(vec![
                    s("S"),
                    s(&p.url.user),
                    s(&p.name),
                    s(state),
                    s(&p.url.host),
                    n(p.url.port),
                    null(),
                    null(),
                    null(),
                    null(),
                    n(0),
                    n(0),
                    n(0),
                    s(format!("{}#{state}{i}", p.name)),
                    null(),
                    null(),
                    s(if matches!(p.url.sslmode, crate::pool::SslMode::Disable) {
                        ""
                    } else {
                        "TLS?"
                    }),
                    null(),
                    null(),
                ]);
            }
        }
    }
    t
}

fn show_databases(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("name", TEXT),
        ("host", TEXT),
        ("port", INT8),
        ("database", TEXT),
        ("force_user", TEXT),
        ("pool_size", INT8),
        ("min_pool_size", INT8),
        ("reserve_pool", INT8),
        ("server_lifetime", INT8),
        ("pool_mode", TEXT),
        ("max_connections", INT8),
        ("current_connections", INT8),
        ("max_client_connections", INT8),
        ("current_client_connections", INT8),
        ("paused", INT8),
        ("disabled", INT8),
    ]);
    let paused_all = crate::admin::paused().0;
    for p in pools(shared) {
        let current = p.stats.active() + p.idle_count();
        t.push(vec![
            s(&p.name),
            s(&p.url.host),
            n(p.url.port),
            s(&p.url.dbname),
            s(&p.url.user),
            n(p.settings.size),
            n(0),
            n(0),
            n(p.settings.max_lifetime.as_secs()),
            s(p.settings.mode.as_str()),
            n(p.settings.size),
            n(current),
            n(0),
            n(p.stats.active() + p.stats.waiting.load(Relaxed)),
            n(paused_all as u8),
            n(0),
        ]);
    }
    t
}

fn show_users(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("name", TEXT),
        ("pool_size", INT8),
        ("reserve_pool_size", INT8),
        ("pool_mode", TEXT),
        ("max_user_connections", INT8),
        ("current_connections", INT8),
        ("max_user_client_connections", INT8),
        ("current_client_connections", INT8),
    ]);
    let mut clients: BTreeMap<String, usize> = BTreeMap::new();
    for c in shared.clients.iter() {
        *clients.entry(c.user.clone()).or_default() += 1;
    }
    let mut servers: BTreeMap<String, usize> = BTreeMap::new();
    for p in shared.pools.all() {
        *servers.entry(p.url.user.clone()).or_default() += p.stats.active() + p.idle_count();
    }
    let mut names: Vec<String> = clients.keys().chain(servers.keys()).cloned().collect();
    names.sort();
    names.dedup();
    for name in names {
        t.push(vec![
            s(&name),
            null(),
            null(),
            null(),
            n(0),
            n(servers.get(&name).copied().unwrap_or(0)),
            n(0),
            n(clients.get(&name).copied().unwrap_or(0)),
        ]);
    }
    t
}

fn show_lists(shared: &Shared) -> Table {
    let all = shared.pools.all();
    let mut users: Vec<&str> = all.iter().map(|p| p.url.user.as_str()).collect();
    users.sort();
    users.dedup();
    let used_servers: usize = all.iter().map(|p| p.stats.active() + p.idle_count()).sum();
    let mut t = Table::new(&[("list", TEXT), ("items", INT8)]);
    for (k, v) in [
        ("databases", all.len()),
        ("users", users.len()),
        ("peers", 0),
        ("pools", all.len()),
        ("peer_pools", 0),
        ("free_clients", 0),
        ("used_clients", shared.clients.len()),
        ("login_clients", 0),
        ("free_servers", 0),
        ("used_servers", used_servers),
        ("dns_names", 0),
        ("dns_zones", 0),
        ("dns_queries", 0),
        ("dns_pending", 0),
    ] {
        t.push(vec![s(k), n(v)]);
    }
    t
}

fn show_config(shared: &Shared) -> Table {
    let c = shared.config();
    let d_pool = crate::config::PoolDefaults::default();
    let d_routing = crate::config::RoutingConfig::default();
    let d_auth = crate::config::AuthConfig::default();
    let d_log = crate::config::LogConfig::default();
    let opt = |p: &Option<std::path::PathBuf>| {
        p.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    let rows: Vec<(&str, String, String, bool)> = vec![
        ("listen", c.listen.clone(), "127.0.0.1:6432".into(), false),
        (
            "app_db.url",
            crate::admin::redact_url(&c.app_db.url),
            "".into(),
            true,
        ),
        (
            "auth.query",
            c.auth.query.clone(),
            d_auth.query.clone(),
            true,
        ),
        (
            "auth.admin_users",
            c.auth.admin_users.join(","),
            d_auth.admin_users.join(","),
            true,
        ),
        (
            "auth.allow_cleartext_without_tls",
            c.auth.allow_cleartext_without_tls.to_string(),
            d_auth.allow_cleartext_without_tls.to_string(),
            true,
        ),
        (
            "auth.throttle_failures",
            c.auth.throttle_failures.to_string(),
            d_auth.throttle_failures.to_string(),
            false,
        ),
        (
            "auth.throttle_window_secs",
            c.auth.throttle_window_secs.to_string(),
            d_auth.throttle_window_secs.to_string(),
            false,
        ),
        ("tls.cert", opt(&c.tls.cert), "".into(), true),
        ("tls.key", opt(&c.tls.key), "".into(), true),
        (
            "tls.require",
            c.tls.require.to_string(),
            "false".into(),
            true,
        ),
        (
            "pool.size",
            c.pool.size.to_string(),
            d_pool.size.to_string(),
            false,
        ),
        ("pool.mode", c.pool.mode.clone(), d_pool.mode.clone(), false),
        (
            "pool.checkout_timeout_ms",
            c.pool.checkout_timeout_ms.to_string(),
            d_pool.checkout_timeout_ms.to_string(),
            false,
        ),
        (
            "pool.idle_timeout_ms",
            c.pool.idle_timeout_ms.to_string(),
            d_pool.idle_timeout_ms.to_string(),
            false,
        ),
        (
            "pool.max_lifetime_ms",
            c.pool.max_lifetime_ms.to_string(),
            d_pool.max_lifetime_ms.to_string(),
            false,
        ),
        (
            "pool.prepared_statements_per_connection",
            c.pool.prepared_statements_per_connection.to_string(),
            d_pool.prepared_statements_per_connection.to_string(),
            false,
        ),
        (
            "routing.enabled",
            c.routing.enabled.to_string(),
            d_routing.enabled.to_string(),
            true,
        ),
        (
            "routing.app_tables",
            c.routing.app_tables.join(","),
            d_routing.app_tables.join(","),
            true,
        ),
        (
            "routing.tenant_column",
            c.routing.tenant_column.clone(),
            d_routing.tenant_column.clone(),
            true,
        ),
        (
            "routing.tenant_setting",
            c.routing.tenant_setting.clone(),
            d_routing.tenant_setting.clone(),
            true,
        ),
        (
            "routing.parse_cache_capacity",
            c.routing.parse_cache_capacity.to_string(),
            d_routing.parse_cache_capacity.to_string(),
            false,
        ),
        (
            "metrics.listen",
            c.metrics.listen.clone().unwrap_or_default(),
            "".into(),
            false,
        ),
        (
            "log.format",
            c.log.format.clone(),
            d_log.format.clone(),
            false,
        ),
        ("log.level", c.log.level.clone(), d_log.level.clone(), false),
        (
            "shutdown_timeout_secs",
            c.shutdown_timeout_secs.to_string(),
            "".into(),
            true,
        ),
        (
            "max_message_bytes",
            c.max_message_bytes.to_string(),
            "".into(),
            false,
        ),
    ];
    let mut t = Table::new(&[
        ("key", TEXT),
        ("value", TEXT),
        ("default", TEXT),
        ("changeable", TEXT),
    ]);
    for (k, v, d, reloadable) in rows {
        t.push(vec![
            s(k),
            s(v),
            s(d),
            s(if reloadable { "yes" } else { "no" }),
        ]);
    }
    t
}

/// The pool name (`user@host:port/db`) a tenant's data source maps to.
fn tenant_pool_name(spec: &crate::registry::DataSourceSpec) -> String {
    format!("{}@{}:{}/{}", spec.user, spec.host, spec.port, spec.dbname)
}

fn show_tenants(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("id", TEXT),
        ("name", TEXT),
        ("subdomain", TEXT),
        ("status", TEXT),
        ("region", TEXT),
        ("host", TEXT),
        ("port", INT8),
        ("database", TEXT),
        ("user", TEXT),
        ("sslmode", TEXT),
        ("pool", TEXT),
        ("pool_mode", TEXT),
        ("pool_size", INT8),
        ("clients", INT8),
        ("sv_active", INT8),
        ("sv_idle", INT8),
        ("paused", TEXT),
        ("last_error", TEXT),
    ]);
    let mut clients: HashMap<String, usize> = HashMap::new();
    for c in shared.clients.iter() {
        *clients.entry(c.database.clone()).or_default() += 1;
    }
    let mut records = shared.registry.all();
    records.sort_by(|a, b| a.id.cmp(&b.id));
    for r in records {
        let (host, port, db, user, sslmode, pool_name) = match &r.data_source {
            Ok(spec) => (
                s(&spec.host),
                n(spec.port),
                s(&spec.dbname),
                s(&spec.user),
                s(&spec.sslmode),
                Some(tenant_pool_name(spec)),
            ),
            Err(_) => (null(), null(), null(), null(), null(), None),
        };
        let pool = pool_name.as_ref().and_then(|n| shared.pools.get(n));
        let mut errors: Vec<String> = Vec::new();
        if let Err(e) = &r.data_source {
            errors.push(e.to_string());
        }
        errors.extend(r.warnings.iter().cloned());
        let n_clients = clients.get(&r.subdomain).copied().unwrap_or(0)
            + if r.subdomain != r.id {
                clients.get(&r.id).copied().unwrap_or(0)
            } else {
                0
            };
        t.push(vec![
            s(&r.id),
            s(&r.name),
            s(&r.subdomain),
            s(r.status.as_str()),
            Val(r.region.clone()),
            host,
            port,
            db,
            user,
            sslmode,
            Val(pool_name.clone()),
            s(r.pool.mode.as_str()),
            n(r.pool.pool_size),
            n(n_clients),
            Val(pool.as_ref().map(|p| p.stats.active().to_string())),
            Val(pool.as_ref().map(|p| p.idle_count().to_string())),
            s(if crate::admin::is_paused(Some(&r.id)) {
                "yes"
            } else {
                "no"
            }),
            Val((!errors.is_empty()).then(|| errors.join("; "))),
        ]);
    }
    t
}

fn show_routes(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("target", TEXT),
        ("pool", TEXT),
        ("tenants", INT8),
        ("cl_active", INT8),
        ("cl_waiting", INT8),
        ("checkouts", INT8),
        ("query_count", INT8),
        ("xact_count", INT8),
        ("connect_errors", INT8),
    ]);
    let app = shared.app_target().pool.name.clone();
    let mut tenants_per_pool: HashMap<String, usize> = HashMap::new();
    for r in shared.registry.all() {
        if let Ok(spec) = &r.data_source {
            *tenants_per_pool.entry(tenant_pool_name(spec)).or_default() += 1;
        }
    }
    for p in pools(shared) {
        let tenants = tenants_per_pool.get(&p.name).copied().unwrap_or(0);
        let target = if p.name == app {
            "app"
        } else if tenants > 1 {
            "tenant (shared data source)"
        } else if tenants == 1 {
            "tenant (dedicated data source)"
        } else {
            "unused"
        };
        let st = &p.stats;
        let totals = st.totals();
        t.push(vec![
            s(target),
            s(&p.name),
            n(tenants),
            n(totals.active),
            n(st.waiting.load(Relaxed)),
            n(totals.checkouts),
            n(totals.queries),
            n(totals.xacts),
            n(st.connect_errors.load(Relaxed)),
        ]);
    }
    t
}

/// `EXPLAIN ROUTE [TENANT <id>] <sql>`: the router's explanation, one row per line.
fn explain_route(stmt: &str, shared: &Shared) -> Result<Outcome, PgError> {
    let rest = skip_words(stmt, 2);
    let (tenant, sql) = if starts_with_words(rest, &["TENANT"]) {
        let after = skip_words(rest, 1);
        let id_end = after.find(char::is_whitespace).unwrap_or(after.len());
        (Some(unquote(&after[..id_end])), after[id_end..].trim())
    } else {
        (None, rest)
    };
    if sql.is_empty() {
        return Err(PgError::error("42601", "EXPLAIN ROUTE needs a statement")
            .with_hint("EXPLAIN ROUTE SELECT * FROM invoices WHERE tenant_id = 'acme'"));
    }
    let text = shared.explain(sql, None, tenant.as_deref());
    let mut t = Table::new(&[("route", TEXT)]);
    for line in text.lines() {
        t.push(vec![s(line)]);
    }
    t.tag = "EXPLAIN".into();
    Ok(Outcome::Table(t, vec![]))
}

/// The text after the first `n` whitespace-separated words.
fn skip_words(text: &str, n: usize) -> &str {
    let mut rest = text.trim_start();
    for _ in 0..n {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        rest = rest[end..].trim_start();
    }
    rest
}

fn reload(shared: &Shared, user: &str) -> Result<Outcome, PgError> {
    let path = crate::admin::config_path();
    let source = path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the environment".into());
    let config = Config::load(path.as_deref()).map_err(|e| {
        PgError::error("F0000", format!("reload rejected: {e}"))
            .with_detail("The previous configuration stays in effect.")
    })?;
    shared.reload(config).map_err(|e| {
        PgError::error("F0000", format!("reload rejected: {e}"))
            .with_detail("The previous configuration stays in effect.")
    })?;
    tracing::info!(user = %user, source = %source, "configuration reloaded from the admin console");
    Ok(Outcome::Done(
        "RELOAD".into(),
        vec![notice(
            "NOTICE",
            "00000",
            &format!("configuration reloaded from {source}"),
        )],
    ))
}

fn pause_resume(
    verb: &str,
    tenant: Option<&str>,
    shared: &Shared,
    user: &str,
) -> Result<Outcome, PgError> {
    if let Some(t) = tenant {
        if shared.registry.get(t).is_none() {
            return Err(no_tenant(t));
        }
    }
    let mut notices = Vec::new();
    if verb == "PAUSE" {
        crate::admin::pause(tenant);
        // Connections kept by idle clients between transactions come back,
        // and their next transaction waits at the gate like any other.
        for p in shared.pools.all() {
            p.recall_kept();
        }
        if !crate::admin::gate_consulted() {
            notices.push(notice(
                "WARNING",
                "01000",
                "no session has consulted the pause gate yet: running sessions may not honour PAUSE in this build",
            ));
        }
    } else {
        crate::admin::resume(tenant);
    }
    tracing::warn!(user = %user, tenant = tenant.unwrap_or("*"), "{verb} from the admin console");
    Ok(Outcome::Done(verb.to_string(), notices))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements_outside_quotes() {
        assert_eq!(split_statements("SHOW POOLS;"), vec!["SHOW POOLS"]);
        assert_eq!(
            split_statements("show pools; SHOW 'a;b' ;;"),
            vec!["show pools", "SHOW 'a;b'"]
        );
        assert!(split_statements("  ;  ").is_empty());
        assert_eq!(
            split_statements("EXPLAIN ROUTE SELECT 1; SELECT 2;"),
            vec!["EXPLAIN ROUTE SELECT 1; SELECT 2"]
        );
    }

    #[test]
    fn formats_unix_time() {
        assert_eq!(
            unix_time(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000)),
            "2023-11-14 22:13:20 UTC"
        );
    }

    #[test]
    fn skips_words_and_unquotes() {
        assert_eq!(skip_words("EXPLAIN  ROUTE SELECT 1", 2), "SELECT 1");
        assert_eq!(unquote("'acme'"), "acme");
        assert_eq!(unquote("\"a\"\"b\""), "a\"b");
    }
}
