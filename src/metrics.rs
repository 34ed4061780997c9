//! Prometheus metrics. Names follow Prometheus conventions (`_total`,
//! `_seconds`, base units). Labels are bounded: SQLSTATE *class* (2 chars),
//! refusal reason, auth method, pool name — never tenant ids on per-query
//! series, so 10k tenants do not explode cardinality.

use crate::workers::PerWorker;
use prometheus::{Encoder, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
use std::sync::atomic::AtomicU64;
use std::sync::LazyLock;

/// Everything pgtenant exports, registered once.
pub struct Metrics {
    pub registry: Registry,
    pub clients: IntGauge,
    pub auth: IntCounterVec,
    pub refused: IntCounterVec,
    pub backend_errors: IntCounterVec,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let registry = Registry::new();
    let clients = IntGauge::new(
        "pgtenant_client_connections",
        "Client connections currently open",
    )
    .unwrap();
    let auth = IntCounterVec::new(
        Opts::new(
            "pgtenant_auth_attempts_total",
            "Client authentication attempts",
        ),
        &["method", "result"],
    )
    .unwrap();
    let refused = IntCounterVec::new(
        Opts::new(
            "pgtenant_refused_statements_total",
            "Statements refused by the proxy, by SQLSTATE",
        ),
        &["sqlstate"],
    )
    .unwrap();
    let backend_errors = IntCounterVec::new(
        Opts::new(
            "pgtenant_backend_errors_total",
            "ErrorResponses from backends, by SQLSTATE class",
        ),
        &["class"],
    )
    .unwrap();
    for c in [
        Box::new(clients.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(auth.clone()),
        Box::new(refused.clone()),
        Box::new(backend_errors.clone()),
    ] {
        registry.register(c).unwrap();
    }
    Metrics {
        registry,
        clients,
        auth,
        refused,
        backend_errors,
    }
});

pub fn auth(method: &str, ok: bool) {
    METRICS
        .auth
        .with_label_values(&[method, if ok { "success" } else { "failure" }])
        .inc();
}
pub fn refused(sqlstate: &str) {
    METRICS.refused.with_label_values(&[sqlstate]).inc();
}
pub fn backend_error(sqlstate: &str) {
    let class = sqlstate.get(..2).unwrap_or("XX");
    METRICS.backend_errors.with_label_values(&[class]).inc();
}

/// Client traffic, bumped per message: per worker, summed at scrape time.
#[derive(Default)]
struct ClientBytes {
    received: AtomicU64,
    sent: AtomicU64,
}
static CLIENT_BYTES: LazyLock<PerWorker<ClientBytes>> = LazyLock::new(PerWorker::default);

pub fn bytes_received(n: usize) {
    let bytes = CLIENT_BYTES.here();
    bytes.add(&bytes.received, n as u64);
}
pub fn bytes_sent(n: usize) {
    let bytes = CLIENT_BYTES.here();
    bytes.add(&bytes.sent, n as u64);
}

/// Counts a client connection for as long as it lives.
pub struct ClientGuard;
impl ClientGuard {
    pub fn new() -> ClientGuard {
        METRICS.clients.inc();
        ClientGuard
    }
}
impl Default for ClientGuard {
    fn default() -> Self {
        Self::new()
    }
}
impl Drop for ClientGuard {
    fn drop(&mut self) {
        METRICS.clients.dec();
    }
}

static STARTED: LazyLock<f64> = LazyLock::new(|| {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
});

/// Records the process start time (call early; `render_all` reports it).
pub fn mark_start() {
    LazyLock::force(&STARTED);
}

/// Every metric: the process-wide counters plus pool, registry and parser
/// values read at scrape time. Labels: `pool` (one per data source, i.e.
/// bounded by data sources, not tenants), `status`, `state`, `level`.
pub fn render_all(shared: &crate::server::Shared) -> String {
    let mut families = METRICS.registry.gather();
    families.extend(scrape_time_families(shared));
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&families, &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

fn scrape_time_families(shared: &crate::server::Shared) -> Vec<prometheus::proto::MetricFamily> {
    use prometheus::{CounterVec, Gauge, GaugeVec, IntCounter, IntGauge, IntGaugeVec};
    use std::sync::atomic::Ordering::Relaxed;
    let reg = Registry::new();
    macro_rules! reg {
        ($e:expr) => {{
            let m = $e.unwrap();
            reg.register(Box::new(m.clone())).unwrap();
            m
        }};
    }
    let gv = |name: &str, help: &str, labels: &[&str]| GaugeVec::new(Opts::new(name, help), labels);
    let igv =
        |name: &str, help: &str, labels: &[&str]| IntGaugeVec::new(Opts::new(name, help), labels);
    let icv =
        |name: &str, help: &str, labels: &[&str]| IntCounterVec::new(Opts::new(name, help), labels);
    let cv =
        |name: &str, help: &str, labels: &[&str]| CounterVec::new(Opts::new(name, help), labels);

    let build = reg!(igv(
        "pgtenant_build_info",
        "pgtenant version (always 1)",
        &["version"]
    ));
    build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    let start = reg!(Gauge::new(
        "pgtenant_start_time_seconds",
        "Unix time the process started"
    ));
    start.set(*STARTED);

    let pool_clients = reg!(igv(
        "pgtenant_pool_client_connections",
        "Client requests holding (active) or waiting for (waiting) a server connection, per pool",
        &["pool", "state"]
    ));
    let pool_servers = reg!(igv(
        "pgtenant_pool_server_connections",
        "Server connections per pool: checked out (active) or idle",
        &["pool", "state"]
    ));
    let pool_size = reg!(igv(
        "pgtenant_pool_size",
        "Maximum server connections of the pool",
        &["pool", "mode"]
    ));
    let checkouts = reg!(icv(
        "pgtenant_pool_checkouts_total",
        "Server connections handed to clients",
        &["pool"]
    ));
    let wait = reg!(cv(
        "pgtenant_pool_checkout_wait_seconds_total",
        "Time clients spent waiting for a server connection",
        &["pool"]
    ));
    let max_wait = reg!(gv(
        "pgtenant_pool_checkout_max_wait_seconds",
        "Longest wait for a server connection since start",
        &["pool"]
    ));
    let connect_errors = reg!(icv(
        "pgtenant_pool_connect_errors_total",
        "Failed attempts to open a server connection",
        &["pool"]
    ));
    let queries = reg!(icv(
        "pgtenant_pool_queries_total",
        "Requests answered by the pool's backends (PgBouncer total_query_count)",
        &["pool"]
    ));
    let xacts = reg!(icv(
        "pgtenant_pool_transactions_total",
        "Transactions completed on the pool's backends (PgBouncer total_xact_count)",
        &["pool"]
    ));
    let query_time = reg!(cv(
        "pgtenant_pool_query_seconds_total",
        "Time spent in queries on the pool's backends",
        &["pool"]
    ));
    let xact_time = reg!(cv(
        "pgtenant_pool_transaction_seconds_total",
        "Time spent in transactions on the pool's backends",
        &["pool"]
    ));
    let received = reg!(icv(
        "pgtenant_pool_received_bytes_total",
        "Bytes sent by clients to the pool's backends",
        &["pool"]
    ));
    let sent = reg!(icv(
        "pgtenant_pool_sent_bytes_total",
        "Bytes sent by the pool's backends to clients",
        &["pool"]
    ));
    let client_received = reg!(IntCounter::new(
        "pgtenant_client_received_bytes_total",
        "Bytes received from clients"
    ));
    let client_sent = reg!(IntCounter::new(
        "pgtenant_client_sent_bytes_total",
        "Bytes sent to clients"
    ));
    for w in CLIENT_BYTES.iter() {
        client_received.inc_by(w.received.load(Relaxed));
        client_sent.inc_by(w.sent.load(Relaxed));
    }

    let pools = reg!(IntGauge::new(
        "pgtenant_pools",
        "Pools (data sources) known"
    ));
    let all = shared.pools.all();
    pools.set(all.len() as i64);
    for p in &all {
        let l = [p.name.as_str()];
        let st = &p.stats;
        let t = st.totals();
        let active = t.active as i64;
        pool_clients
            .with_label_values(&[&p.name, "active"])
            .set(active);
        pool_clients
            .with_label_values(&[&p.name, "waiting"])
            .set(st.waiting.load(Relaxed) as i64);
        pool_servers
            .with_label_values(&[&p.name, "active"])
            .set(active);
        pool_servers
            .with_label_values(&[&p.name, "idle"])
            .set(p.idle_count() as i64);
        pool_size
            .with_label_values(&[&p.name, p.settings.mode.as_str()])
            .set(p.settings.size as i64);
        checkouts.with_label_values(&l).inc_by(t.checkouts);
        wait.with_label_values(&l).inc_by(t.wait_us as f64 / 1e6);
        max_wait
            .with_label_values(&l)
            .set(st.max_wait_us.load(Relaxed) as f64 / 1e6);
        connect_errors
            .with_label_values(&l)
            .inc_by(st.connect_errors.load(Relaxed));
        queries.with_label_values(&l).inc_by(t.queries);
        xacts.with_label_values(&l).inc_by(t.xacts);
        query_time
            .with_label_values(&l)
            .inc_by(t.query_us as f64 / 1e6);
        xact_time
            .with_label_values(&l)
            .inc_by(t.xact_us as f64 / 1e6);
        received.with_label_values(&l).inc_by(t.bytes_received);
        sent.with_label_values(&l).inc_by(t.bytes_sent);
    }

    let rs = shared.registry.stats();
    let loaded = reg!(IntGauge::new(
        "pgtenant_registry_loaded",
        "1 once the tenant registry has been loaded from the app DB"
    ));
    loaded.set(shared.registry.is_loaded() as i64);
    let tenants = reg!(igv(
        "pgtenant_registry_tenants",
        "Tenants in the in-memory registry, by status (unusable = data source cannot be decoded)",
        &["status"]
    ));
    let (mut active, mut suspended, mut unusable) = (0i64, 0i64, 0i64);
    for r in shared.registry.all() {
        if r.data_source.is_err() {
            unusable += 1;
        } else if r.status == crate::registry::TenantStatus::Active {
            active += 1;
        } else {
            suspended += 1;
        }
    }
    tenants.with_label_values(&["active"]).set(active);
    tenants.with_label_values(&["suspended"]).set(suspended);
    tenants.with_label_values(&["unusable"]).set(unusable);
    let loaded_total = reg!(IntGauge::new(
        "pgtenant_registry_tenants_loaded",
        "Tenants loaded by the last full registry load"
    ));
    loaded_total.set(rs.tenants_loaded as i64);
    for (name, help, v) in [
        (
            "pgtenant_registry_reloads_total",
            "Full registry loads from the app DB",
            rs.reloads,
        ),
        (
            "pgtenant_registry_notifications_total",
            "Tenant change notifications received (LISTEN/NOTIFY)",
            rs.notifications,
        ),
        (
            "pgtenant_registry_decrypt_failures_total",
            "Tenant secrets that could not be decrypted",
            rs.decrypt_failures,
        ),
        (
            "pgtenant_registry_sync_errors_total",
            "Failed registry synchronisations",
            rs.sync_errors,
        ),
    ] {
        let c = reg!(IntCounter::new(name, help));
        c.inc_by(v);
    }
    let generation = reg!(IntGauge::new(
        "pgtenant_registry_generation",
        "Registry generation (changes on every tenant change)"
    ));
    generation.set(rs.generation as i64);

    let cs = shared.parse_cache.stats();
    let hits = reg!(icv(
        "pgtenant_parse_cache_hits_total",
        "Statements whose analysis came from the parse cache, by level (exact text or literal-insensitive)",
        &["level"]
    ));
    hits.with_label_values(&["exact"]).inc_by(cs.l1_hits);
    hits.with_label_values(&["normalized"]).inc_by(cs.l2_hits);
    let misses = reg!(IntCounter::new(
        "pgtenant_parse_cache_misses_total",
        "Statements parsed because the cache did not hold them"
    ));
    misses.inc_by(cs.misses);
    let entries = reg!(IntGauge::new(
        "pgtenant_parse_cache_entries",
        "Entries held by the parse cache"
    ));
    entries.set(cs.size as i64);

    let worker_sessions = reg!(igv(
        "pgtenant_worker_sessions",
        "Client sessions running on each session worker (thread)",
        &["worker"]
    ));
    for (k, n) in crate::workers::sessions().into_iter().enumerate() {
        worker_sessions
            .with_label_values(&[&k.to_string()])
            .set(n as i64);
    }
    let admin_clients = reg!(IntGauge::new(
        "pgtenant_tracked_client_sessions",
        "Client sessions listed by SHOW CLIENTS (excludes admin console sessions)"
    ));
    admin_clients.set(shared.clients.len() as i64);
    let paused = reg!(IntGauge::new(
        "pgtenant_paused",
        "1 while PAUSE (all pools) is in effect"
    ));
    paused.set(crate::admin::paused().0 as i64);
    let draining = reg!(IntGauge::new(
        "pgtenant_draining",
        "1 once shutdown started (readiness fails)"
    ));
    draining.set(crate::admin::is_draining() as i64);
    reg.gather()
}
