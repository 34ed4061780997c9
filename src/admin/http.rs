//! HTTP endpoints for Prometheus and orchestrators: a deliberately small
//! HTTP/1.1 server (GET/HEAD, one request per connection, no dependencies).
//!
//! - `/metrics`: Prometheus text exposition (pool/registry/parser values are
//!   read at scrape time).
//! - `/healthz`: 200 while the process runs.
//! - `/readyz`: 200 only when the app DB answers `SELECT 1`, the tenant
//!   registry is loaded (or no ENCRYPTION_KEY is configured, so there is
//!   nothing to load), and the process is not draining; 503 otherwise.

use crate::server::Shared;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_REQUEST_HEAD: usize = 16 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(10);
const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// Serves /metrics, /healthz and /readyz on `listen` until the process ends.
pub async fn serve(listen: String, shared: Arc<Shared>) {
    crate::metrics::mark_start();
    let listener = match TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listen = %listen, error = %e, "cannot listen for metrics/health HTTP");
            return;
        }
    };
    tracing::info!(listen = %listen, "metrics and health endpoints ready");
    serve_on(listener, shared).await;
}

/// Serves on an already bound listener (tests, embedding).
pub async fn serve_on(listener: TcpListener, shared: Arc<Shared>) {
    spawn_drain_watch();
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                crate::clock::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = handle(tcp, &shared).await;
        });
    }
}

/// SIGTERM starts the drain in run.rs; readiness must fail from that moment
/// so load balancers stop sending new clients while sessions finish.
fn spawn_drain_watch() {
    use tokio::signal::unix::{signal, SignalKind};
    if let Ok(mut term) = signal(SignalKind::terminate()) {
        tokio::spawn(async move {
            if term.recv().await.is_some() {
                crate::admin::set_draining();
            }
        });
    }
}

struct Request {
    method: String,
    path: String,
}

async fn read_request(tcp: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n").or_else(|| find(&buf, b"\n\n")) {
            buf.truncate(end);
            break;
        }
        if buf.len() > MAX_REQUEST_HEAD {
            return None;
        }
        let n = crate::clock::timeout(READ_TIMEOUT, tcp.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let line = head.lines().next()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?;
    let path = target.split('?').next().unwrap_or("/").to_string();
    Some(Request { method, path })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn handle(mut tcp: TcpStream, shared: &Arc<Shared>) -> std::io::Result<()> {
    let Some(req) = read_request(&mut tcp).await else {
        return respond(&mut tcp, 400, "text/plain", b"bad request\n", false).await;
    };
    let head_only = req.method == "HEAD";
    if req.method != "GET" && !head_only {
        return respond(&mut tcp, 405, "text/plain", b"method not allowed\n", false).await;
    }
    match req.path.as_str() {
        "/metrics" => {
            let body = crate::metrics::render_all(shared);
            respond(
                &mut tcp,
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                body.as_bytes(),
                head_only,
            )
            .await
        }
        "/healthz" | "/livez" => respond(&mut tcp, 200, "text/plain", b"ok\n", head_only).await,
        "/readyz" => {
            let (ok, text) = readiness(shared).await;
            let code = if ok { 200 } else { 503 };
            respond(&mut tcp, code, "text/plain", text.as_bytes(), head_only).await
        }
        "/" => {
            respond(
                &mut tcp,
                200,
                "text/plain",
                b"pgtenant: /metrics /healthz /readyz\n",
                head_only,
            )
            .await
        }
        _ => respond(&mut tcp, 404, "text/plain", b"not found\n", head_only).await,
    }
}

/// Whether this replica should receive new clients, and why (one line per check).
pub async fn readiness(shared: &Shared) -> (bool, String) {
    let mut ok = true;
    let mut text = String::new();
    if crate::admin::is_draining() {
        ok = false;
        text.push_str("draining: shutting down\n");
    }
    let app = crate::clock::timeout(READY_TIMEOUT, async {
        let client = shared.app_db.client().await.map_err(|e| e.to_string())?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| e.to_string())?;
        Ok::<(), String>(())
    })
    .await
    .unwrap_or_else(|_| Err(format!("no answer within {READY_TIMEOUT:?}")));
    match app {
        Ok(()) => text.push_str("app_db: ok\n"),
        Err(e) => {
            ok = false;
            text.push_str(&format!("app_db: unreachable: {e}\n"));
        }
    }
    if shared.registry.is_loaded() {
        text.push_str(&format!(
            "registry: loaded ({} tenants)\n",
            shared.registry.len()
        ));
    } else if shared.secrets.is_none() {
        text.push_str("registry: not used (no ENCRYPTION_KEY)\n");
    } else {
        ok = false;
        text.push_str("registry: not loaded yet\n");
    }
    (ok, text)
}

async fn respond(
    tcp: &mut TcpStream,
    code: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Unknown",
    };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    tcp.write_all(&out).await?;
    tcp.shutdown().await
}
