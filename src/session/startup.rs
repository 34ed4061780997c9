//! A client's first seconds: TLS negotiation, the StartupMessage, the
//! authentication exchange, and the greeting (ParameterStatus, BackendKeyData,
//! ReadyForQuery).

use crate::auth::exchange::{password_failed, ExchangeContext};
use crate::auth::{AuthOutcome, Verifier};
use crate::net::Stream;
use crate::protocol::backend::{self as be, PgError};
use crate::protocol::frame::ReadError;
use crate::protocol::startup::{self, StartupPacket, StartupParams};
use crate::protocol::FrameReader;
use crate::server::Shared;
use std::net::SocketAddr;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A client that completed startup and authentication.
pub struct Authenticated {
    pub stream: Stream,
    pub reader: FrameReader,
    pub params: StartupParams,
    pub user: String,
    /// `None` = all tenants (a service account).
    pub allowed_tenants: Option<Vec<String>>,
    pub admin_console: bool,
}

/// Why a connection ended during startup. `Fatal` errors are sent to the client first.
pub enum StartupEnd {
    /// Cancel request handled, or the client left: nothing to report.
    Quiet,
    Fatal(Stream, PgError),
}

pub async fn handshake(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
) -> Result<Authenticated, StartupEnd> {
    let mut stream = Stream::Tcp(tcp);
    let mut reader = FrameReader::new(shared.config().max_message_bytes);
    let params = loop {
        let packet = match reader.read_startup_packet(&mut stream).await {
            Ok(Some(p)) => p,
            Ok(None) | Err(ReadError::Io(_)) => return Err(StartupEnd::Quiet),
            Err(ReadError::Protocol(e)) => {
                return Err(StartupEnd::Fatal(
                    stream,
                    PgError::fatal("08P01", e.to_string()),
                ))
            }
        };
        match startup::decode(&packet) {
            Err(e) => {
                return Err(StartupEnd::Fatal(
                    stream,
                    PgError::fatal("08P01", e.to_string()),
                ))
            }
            Ok(StartupPacket::Cancel { pid, secret }) => {
                shared.cancels.cancel(pid, secret).await;
                return Err(StartupEnd::Quiet);
            }
            Ok(StartupPacket::GssEnc) => {
                if stream.write_all(b"N").await.is_err() {
                    return Err(StartupEnd::Quiet);
                }
            }
            Ok(StartupPacket::Ssl) => {
                if stream.is_tls() {
                    return Err(StartupEnd::Fatal(
                        stream,
                        PgError::fatal("08P01", "SSLRequest received on an encrypted connection"),
                    ));
                }
                let Some(tls) = shared.tls() else {
                    // No certificate configured: 'N', and the client goes on in
                    // plaintext (sslmode=prefer) or hangs up (sslmode=require).
                    if stream.write_all(b"N").await.is_err() {
                        return Err(StartupEnd::Quiet);
                    }
                    continue;
                };
                if reader.buffered() > 0 {
                    // Bytes after SSLRequest before the handshake: a protocol
                    // violation that could smuggle plaintext (CVE-2021-23214).
                    return Err(StartupEnd::Fatal(
                        stream,
                        PgError::fatal("08P01", "unexpected data after SSL request"),
                    ));
                }
                let Stream::Tcp(mut tcp) = stream else {
                    unreachable!()
                };
                if tcp.write_all(b"S").await.is_err() {
                    return Err(StartupEnd::Quiet);
                }
                match tokio_rustls::TlsAcceptor::from(tls.config.clone())
                    .accept(tcp)
                    .await
                {
                    Ok(s) => stream = Stream::TlsServer(Box::new(s)),
                    Err(e) => {
                        tracing::info!(%peer, error = %e, "TLS handshake failed");
                        return Err(StartupEnd::Quiet);
                    }
                }
            }
            Ok(StartupPacket::Startup(p)) => break p,
        }
    };
    let cfg = shared.config();
    if cfg.tls.require && !stream.is_tls() {
        return Err(StartupEnd::Fatal(
            stream,
            PgError::fatal("28000", "SSL connection is required by this server")
                .with_hint("Connect with sslmode=require."),
        ));
    }
    let Some(user) = params.user().map(str::to_string) else {
        return Err(StartupEnd::Fatal(
            stream,
            PgError::fatal(
                "28000",
                "no PostgreSQL user name specified in startup packet",
            ),
        ));
    };
    let database = params.database().unwrap_or("").to_string();
    // `pgbouncer` too, so PgBouncer tooling (prometheus-pgbouncer-exporter)
    // works unchanged against the console.
    let admin_console = database == "pgtenant" || database == "pgbouncer";
    if admin_console && !cfg.auth.admin_users.iter().any(|u| u == &user) {
        return Err(StartupEnd::Fatal(
            stream,
            PgError::fatal(
                "42501",
                format!("user \"{user}\" may not use the pgtenant admin console"),
            )
            .with_hint("Add the login to auth.admin_users."),
        ));
    }

    let ip = peer.ip().to_string();
    let keys = [user.as_str(), ip.as_str()];
    let delay = shared.throttle.delay_for(&keys);
    if !delay.is_zero() {
        crate::clock::sleep(delay).await;
    }
    let record = match shared.auth_query.lookup(&user).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "auth query failed");
            return Err(StartupEnd::Fatal(
                stream,
                PgError::fatal(
                    "08006",
                    "cannot verify credentials: the application database is unavailable",
                ),
            ));
        }
    };
    let verifier = record
        .as_ref()
        .and_then(|r| Verifier::parse(&r.password))
        .unwrap_or_else(|| Verifier::mock(&user));
    let tls = shared.tls();
    let ctx = ExchangeContext {
        user: &user,
        tls: stream.is_tls(),
        tls_cert_pem: tls.as_ref().map(|t| t.cert_pem.as_slice()),
        allow_cleartext_without_tls: cfg.auth.allow_cleartext_without_tls,
    };
    let outcome = crate::auth::authenticate(&mut stream, &mut reader, &verifier, &ctx).await;
    let outcome = match outcome {
        Ok(o) => o,
        Err(_) => return Err(StartupEnd::Quiet),
    };
    // A mock verifier can never succeed, but be explicit: no record, no entry.
    let outcome = match (outcome, &record) {
        (AuthOutcome::Ok { method }, None) => AuthOutcome::Failed {
            method,
            error: password_failed(&user),
        },
        (o, _) => o,
    };
    match outcome {
        AuthOutcome::Ok { method } => {
            shared.throttle.record_success(&keys);
            crate::metrics::auth(method, true);
            tracing::info!(%peer, user = %user, method, database = %database, "client authenticated");
        }
        AuthOutcome::Failed { method, error } => {
            shared.throttle.record_failure(&keys);
            crate::metrics::auth(method, false);
            tracing::info!(%peer, user = %user, method, "authentication failed");
            return Err(StartupEnd::Fatal(stream, error));
        }
    }
    let record = record.expect("checked above");
    Ok(Authenticated {
        stream,
        reader,
        params,
        user,
        allowed_tenants: record.tenants,
        admin_console,
    })
}

/// AuthenticationOk, ParameterStatus for each backend parameter (the client's
/// own startup values win), BackendKeyData, ReadyForQuery.
pub fn greeting(
    server_params: &[(String, String)],
    client: &StartupParams,
    key: (i32, i32),
) -> bytes::BytesMut {
    let mut out = bytes::BytesMut::new();
    out.extend_from_slice(&be::auth_ok());
    for (k, v) in server_params {
        let v = match k.as_str() {
            "application_name" | "client_encoding" | "DateStyle" | "TimeZone" | "IntervalStyle" => {
                client.get(k).unwrap_or(v)
            }
            _ => v,
        };
        out.extend_from_slice(&be::parameter_status(k, v));
    }
    if !server_params.iter().any(|(k, _)| k == "application_name") {
        out.extend_from_slice(&be::parameter_status(
            "application_name",
            client.get("application_name").unwrap_or(""),
        ));
    }
    out.extend_from_slice(&be::backend_key_data(key.0, key.1));
    out.extend_from_slice(&be::ready_for_query(be::TxStatus::Idle));
    out
}
