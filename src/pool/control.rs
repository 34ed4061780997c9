//! Control-plane connections (auth query, registry, LISTEN, RLS checks, CLI):
//! tokio-postgres over the same TLS policy as the data path, so a URL's
//! `sslmode` (including verify-full) means the same thing everywhere.

use super::url::{BackendUrl, SslMode};
use futures::StreamExt;
use tokio_postgres::{AsyncMessage, Client};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The connection half, as the stream of its asynchronous messages
/// (notifications, notices): polling it drives the connection.
pub type ControlConnection =
    futures::stream::BoxStream<'static, Result<AsyncMessage, tokio_postgres::Error>>;

/// Drives a connection nobody listens to, until it closes.
pub fn spawn_driver(mut conn: ControlConnection) {
    tokio::spawn(async move {
        while let Some(m) = conn.next().await {
            if let Err(e) = m {
                tracing::debug!(error = %e, "control connection closed");
                break;
            }
        }
    });
}

/// tokio-postgres settings for `url` (no secrets in errors). No
/// `connect_timeout`: tokio-postgres implements it with tokio's timers,
/// which pgtenant's event loops do not have (`clock::timers`).
pub fn pg_config(url: &BackendUrl) -> tokio_postgres::Config {
    let mut cfg = tokio_postgres::Config::new();
    if url.is_unix_socket() {
        cfg.host_path(&url.host);
    } else {
        cfg.host(&url.host);
    }
    cfg.port(url.port).user(&url.user).dbname(&url.dbname);
    if let Some(p) = &url.password {
        cfg.password(p.expose());
    }
    cfg.application_name(url.application_name.as_deref().unwrap_or("pgtenant"));
    cfg.ssl_mode(match url.sslmode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
    });
    cfg
}

/// Connects to `url` with TLS as its sslmode says.
pub async fn connect_url(url: &BackendUrl) -> Result<(Client, ControlConnection), String> {
    let tls = super::connect::client_tls_config(url)?;
    let make = MakeRustlsConnect::new((*tls).clone());
    let (client, mut connection) =
        pg_config(url)
            .connect(make)
            .await
            .map_err(|e| match e.as_db_error() {
                // "db error" alone says nothing; the server's message never holds the password.
                Some(db) => format!("{}: {} ({})", url.display(), db.message(), db.code().code()),
                None => format!("{}: {e}", url.display()),
            })?;
    let messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx)).boxed();
    Ok((client, messages))
}

/// Parses `url` and connects.
pub async fn connect(url: &str) -> Result<(Client, ControlConnection), String> {
    let url = BackendUrl::parse(url)?;
    connect_url(&url).await
}

/// Connects and drives the connection in the background.
pub async fn client(url: &str) -> Result<Client, String> {
    let (client, conn) = connect(url).await?;
    spawn_driver(conn);
    Ok(client)
}
