//! Prometheus metrics. Names follow Prometheus conventions (`_total`,
//! `_seconds`, base units). Labels are bounded: SQLSTATE *class* (2 chars),
//! refusal reason, auth method, pool name — never tenant ids on per-query
//! series, so 10k tenants do not explode cardinality.

use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
use std::sync::LazyLock;

/// Everything pgtenant exports, registered once.
pub struct Metrics {
    pub registry: Registry,
    pub clients: IntGauge,
    pub auth: IntCounterVec,
    pub refused: IntCounterVec,
    pub backend_errors: IntCounterVec,
    pub bytes_received: IntCounter,
    pub bytes_sent: IntCounter,
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
    let bytes_received = IntCounter::new(
        "pgtenant_client_received_bytes_total",
        "Bytes received from clients",
    )
    .unwrap();
    let bytes_sent =
        IntCounter::new("pgtenant_client_sent_bytes_total", "Bytes sent to clients").unwrap();
    for c in [
        Box::new(clients.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(auth.clone()),
        Box::new(refused.clone()),
        Box::new(backend_errors.clone()),
        Box::new(bytes_received.clone()),
        Box::new(bytes_sent.clone()),
    ] {
        registry.register(c).unwrap();
    }
    Metrics {
        registry,
        clients,
        auth,
        refused,
        backend_errors,
        bytes_received,
        bytes_sent,
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
pub fn bytes_received(n: usize) {
    METRICS.bytes_received.inc_by(n as u64);
}
pub fn bytes_sent(n: usize) {
    METRICS.bytes_sent.inc_by(n as u64);
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

/// The text exposition of every metric.
pub fn render() -> String {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&METRICS.registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}
