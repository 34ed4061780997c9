//! Opening one backend connection: socket, optional TLS, StartupMessage and
//! the client side of PostgreSQL authentication (SCRAM, MD5, cleartext).

use super::url::{BackendUrl, SslMode};
use crate::net::Stream;
use crate::protocol::backend::{self as be, tag};
use crate::protocol::{Frame, FrameReader};
use bytes::{BufMut, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// Why a backend connection could not be made. Messages never include the password.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot reach {0}: {1}")]
    Io(String, std::io::Error),
    #[error("TLS to {0} failed: {1}")]
    Tls(String, String),
    #[error("{0} refused the login: {1}")]
    Rejected(String, String),
    #[error("{0} requires a password and none is configured")]
    NoPassword(String),
    #[error("{0} sent an unexpected message during login")]
    Protocol(String),
}

/// A freshly authenticated backend: its stream, the reader holding any bytes
/// already received, its cancel key and reported parameters.
pub struct Connected {
    pub stream: Stream,
    pub reader: FrameReader,
    pub backend_key: (i32, i32),
    pub params: Vec<(String, String)>,
}

pub async fn connect(url: &BackendUrl) -> Result<Connected, ConnectError> {
    let who = url.display();
    let io = |e| ConnectError::Io(who.clone(), e);
    let mut stream = if url.is_unix_socket() {
        let path = format!("{}/.s.PGSQL.{}", url.host, url.port);
        Stream::Unix(UnixStream::connect(path).await.map_err(io)?)
    } else {
        let tcp = TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(io)?;
        tcp.set_nodelay(true).map_err(io)?;
        negotiate_tls(tcp, url).await?
    };

    let mut startup = BytesMut::new();
    startup.put_i32(0);
    startup.put_i32(crate::protocol::startup::PROTOCOL_V3);
    // No application_name unless the URL gives one: the server's default is
    // what a client that sets none must see (SHOW, RESET ALL's
    // ParameterStatus), as it would connecting directly.
    let app_name = url
        .application_name
        .as_deref()
        .map(|v| ("application_name", v));
    for (k, v) in [
        ("user", url.user.as_str()),
        ("database", url.dbname.as_str()),
        ("client_encoding", "UTF8"),
    ]
    .into_iter()
    .chain(app_name)
    {
        startup.put_slice(k.as_bytes());
        startup.put_u8(0);
        startup.put_slice(v.as_bytes());
        startup.put_u8(0);
    }
    startup.put_u8(0);
    let len = startup.len() as i32;
    startup[0..4].copy_from_slice(&len.to_be_bytes());
    stream.write_all(&startup).await.map_err(io)?;

    let mut reader = FrameReader::new(1 << 30);
    let mut key = (0, 0);
    let mut params = Vec::new();
    let mut scram: Option<ScramSha256> = None;
    loop {
        let frame = next(&mut stream, &mut reader, &who).await?;
        match frame.tag() {
            tag::AUTHENTICATION => {
                let body = frame.body();
                if body.len() < 4 {
                    return Err(ConnectError::Protocol(who));
                }
                let code = i32::from_be_bytes(body[..4].try_into().unwrap());
                let password = || {
                    url.password
                        .as_ref()
                        .map(|p| p.expose().as_bytes().to_vec())
                        .ok_or_else(|| ConnectError::NoPassword(who.clone()))
                };
                match code {
                    0 => {}
                    3 => {
                        let mut p = password()?;
                        p.push(0);
                        send(&mut stream, b'p', &p).await.map_err(io)?;
                    }
                    5 => {
                        let salt: [u8; 4] = body
                            .get(4..8)
                            .and_then(|s| s.try_into().ok())
                            .ok_or_else(|| ConnectError::Protocol(who.clone()))?;
                        let hash = postgres_protocol::authentication::md5_hash(
                            url.user.as_bytes(),
                            &password()?,
                            salt,
                        );
                        let mut p = hash.into_bytes();
                        p.push(0);
                        send(&mut stream, b'p', &p).await.map_err(io)?;
                    }
                    10 => {
                        let mechs = &body[4..];
                        if !mechs.split(|&b| b == 0).any(|m| m == b"SCRAM-SHA-256") {
                            return Err(ConnectError::Rejected(
                                who,
                                "no supported SASL mechanism".into(),
                            ));
                        }
                        // Channel binding is not used towards backends; TLS
                        // certificate checks (verify-full) protect that hop.
                        let s = ScramSha256::new(&password()?, ChannelBinding::unsupported());
                        let mut msg = Vec::new();
                        msg.extend_from_slice(b"SCRAM-SHA-256\0");
                        msg.extend_from_slice(&(s.message().len() as i32).to_be_bytes());
                        msg.extend_from_slice(s.message());
                        send(&mut stream, b'p', &msg).await.map_err(io)?;
                        scram = Some(s);
                    }
                    11 => {
                        let s = scram
                            .as_mut()
                            .ok_or_else(|| ConnectError::Protocol(who.clone()))?;
                        s.update(&body[4..])
                            .map_err(|e| ConnectError::Rejected(who.clone(), e.to_string()))?;
                        let m = s.message().to_vec();
                        send(&mut stream, b'p', &m).await.map_err(io)?;
                    }
                    12 => {
                        let s = scram
                            .as_mut()
                            .ok_or_else(|| ConnectError::Protocol(who.clone()))?;
                        s.finish(&body[4..])
                            .map_err(|e| ConnectError::Rejected(who.clone(), e.to_string()))?;
                    }
                    _ => {
                        return Err(ConnectError::Rejected(
                            who,
                            format!("unsupported authentication method {code}"),
                        ))
                    }
                }
            }
            tag::ERROR_RESPONSE => {
                let msg = be::error_field(frame.body(), b'M')
                    .unwrap_or("error")
                    .to_string();
                return Err(ConnectError::Rejected(who, msg));
            }
            tag::BACKEND_KEY_DATA => {
                let b = frame.body();
                if b.len() >= 8 {
                    key = (
                        i32::from_be_bytes(b[0..4].try_into().unwrap()),
                        i32::from_be_bytes(b[4..8].try_into().unwrap()),
                    );
                }
            }
            tag::PARAMETER_STATUS => {
                if let Some((k, v)) = be::parameter_status_fields(frame.body()) {
                    params.push((k.to_string(), v.to_string()));
                }
            }
            tag::NOTICE_RESPONSE => {}
            tag::READY_FOR_QUERY => {
                return Ok(Connected {
                    stream,
                    reader,
                    backend_key: key,
                    params,
                })
            }
            _ => return Err(ConnectError::Protocol(who)),
        }
    }
}

async fn next(
    stream: &mut Stream,
    reader: &mut FrameReader,
    who: &str,
) -> Result<Frame, ConnectError> {
    match reader.read_frame(stream).await {
        Ok(Some(f)) => Ok(f),
        Ok(None) => Err(ConnectError::Io(
            who.to_string(),
            std::io::ErrorKind::UnexpectedEof.into(),
        )),
        Err(crate::protocol::frame::ReadError::Io(e)) => Err(ConnectError::Io(who.to_string(), e)),
        Err(_) => Err(ConnectError::Protocol(who.to_string())),
    }
}

async fn send(stream: &mut Stream, tag: u8, body: &[u8]) -> std::io::Result<()> {
    let mut m = Vec::with_capacity(body.len() + 5);
    m.push(tag);
    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(body);
    stream.write_all(&m).await
}

async fn negotiate_tls(mut tcp: TcpStream, url: &BackendUrl) -> Result<Stream, ConnectError> {
    let who = url.display();
    if url.sslmode == SslMode::Disable {
        return Ok(Stream::Tcp(tcp));
    }
    let mut req = [0u8; 8];
    req[0..4].copy_from_slice(&8i32.to_be_bytes());
    req[4..8].copy_from_slice(&crate::protocol::startup::SSL_REQUEST.to_be_bytes());
    tcp.write_all(&req)
        .await
        .map_err(|e| ConnectError::Io(who.clone(), e))?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer)
        .await
        .map_err(|e| ConnectError::Io(who.clone(), e))?;
    if answer[0] != b'S' {
        if url.sslmode == SslMode::Prefer {
            return Ok(Stream::Tcp(tcp));
        }
        return Err(ConnectError::Tls(who, "server does not support SSL".into()));
    }
    let config = client_tls_config(url).map_err(|e| ConnectError::Tls(who.clone(), e))?;
    let name = rustls::pki_types::ServerName::try_from(url.host.clone())
        .map_err(|e| ConnectError::Tls(who.clone(), e.to_string()))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| ConnectError::Tls(who.clone(), e.to_string()))?;
    Ok(Stream::TlsClient(Box::new(tls)))
}

pub(crate) fn client_tls_config(url: &BackendUrl) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = if url.sslmode == SslMode::VerifyFull {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(path) = &url.sslrootcert {
            let pem = std::fs::read(path).map_err(|e| format!("sslrootcert {path}: {e}"))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                roots
                    .add(cert.map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            }
        } else {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        // sslmode=require/prefer: encryption without identity, exactly libpq's meaning.
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// libpq's `sslmode=require`: encrypt, but do not check the certificate.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// How long a cancel may take to deliver. A session giving its connection
/// back waits for cancels in flight (`CancelSlot::clear`), so an unreachable
/// server must not hold it, its connection and its permit forever.
const CANCEL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Sends a CancelRequest for `key` to the backend at `url` on a new connection.
pub async fn send_cancel(url: &BackendUrl, key: (i32, i32)) -> std::io::Result<()> {
    crate::clock::timeout(CANCEL_TIMEOUT, send_cancel_now(url, key))
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

async fn send_cancel_now(url: &BackendUrl, key: (i32, i32)) -> std::io::Result<()> {
    let mut req = [0u8; 16];
    req[0..4].copy_from_slice(&16i32.to_be_bytes());
    req[4..8].copy_from_slice(&crate::protocol::startup::CANCEL_REQUEST.to_be_bytes());
    req[8..12].copy_from_slice(&key.0.to_be_bytes());
    req[12..16].copy_from_slice(&key.1.to_be_bytes());
    if url.is_unix_socket() {
        let mut s = UnixStream::connect(format!("{}/.s.PGSQL.{}", url.host, url.port)).await?;
        s.write_all(&req).await?;
        let _ = s.read(&mut [0u8; 1]).await;
    } else {
        let mut s = TcpStream::connect((url.host.as_str(), url.port)).await?;
        s.write_all(&req).await?;
        let _ = s.read(&mut [0u8; 1]).await;
    }
    Ok(())
}
