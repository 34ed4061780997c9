//! The authentication dialogue with a client, after the StartupMessage.

use super::verifier::Verifier;
use crate::net::Stream;
use crate::protocol::backend::{self as be, PgError};
use crate::protocol::frontend::tag;
use crate::protocol::FrameReader;
use pgwire::api::auth::sasl::scram::{ScramSecret, ScramServerAuth};
use tokio::io::AsyncWriteExt;

/// How an exchange ended. Failures carry the error to send (always the same
/// 28P01 text for wrong password and unknown user).
#[derive(Debug)]
pub enum AuthOutcome {
    Ok {
        method: &'static str,
    },
    Failed {
        method: &'static str,
        error: PgError,
    },
}

/// The one message every failed login gets, whatever the reason.
pub fn password_failed(user: &str) -> PgError {
    PgError::fatal(
        "28P01",
        format!("password authentication failed for user \"{user}\""),
    )
}

/// What the exchange needs to know about the connection.
pub struct ExchangeContext<'a> {
    pub user: &'a str,
    pub tls: bool,
    /// PEM of the server certificate, for SCRAM-SHA-256-PLUS channel binding.
    pub tls_cert_pem: Option<&'a [u8]>,
    pub allow_cleartext_without_tls: bool,
}

/// Runs the exchange for `verifier` (a mock one for unknown users).
pub async fn authenticate(
    stream: &mut Stream,
    reader: &mut FrameReader,
    verifier: &Verifier,
    ctx: &ExchangeContext<'_>,
) -> std::io::Result<AuthOutcome> {
    match verifier {
        Verifier::Scram(secret) => scram(stream, reader, clone_secret(secret), ctx).await,
        Verifier::Md5(_) => {
            let salt: [u8; 4] = rand::random();
            stream.write_all(&be::auth_md5(salt)).await?;
            let Some(resp) = read_password(stream, reader).await? else {
                return Ok(failed("md5", ctx.user));
            };
            let resp = std::str::from_utf8(resp.strip_suffix(b"\0").unwrap_or(&resp)).unwrap_or("");
            Ok(if verifier.check_md5(resp, salt) {
                AuthOutcome::Ok { method: "md5" }
            } else {
                failed("md5", ctx.user)
            })
        }
        Verifier::Bcrypt(_) => {
            if !ctx.tls && !ctx.allow_cleartext_without_tls {
                return Ok(AuthOutcome::Failed {
                    method: "password",
                    error: PgError::fatal(
                        "28000",
                        format!(
                            "password authentication for user \"{}\" requires an SSL connection",
                            ctx.user
                        ),
                    )
                    .with_hint("Connect with sslmode=require, or set auth.allow_cleartext_without_tls = true on trusted networks."),
                });
            }
            stream.write_all(&be::auth_cleartext()).await?;
            let Some(resp) = read_password(stream, reader).await? else {
                return Ok(failed("password", ctx.user));
            };
            let pw = std::str::from_utf8(resp.strip_suffix(b"\0").unwrap_or(&resp)).unwrap_or("");
            // bcrypt is deliberately slow: keep it off the async workers.
            let v = match verifier {
                Verifier::Bcrypt(h) => h.clone(),
                _ => unreachable!(),
            };
            let pw = pw.to_string();
            let ok = tokio::task::spawn_blocking(move || bcrypt::verify(pw, &v).unwrap_or(false))
                .await
                .unwrap_or(false);
            Ok(if ok {
                AuthOutcome::Ok { method: "password" }
            } else {
                failed("password", ctx.user)
            })
        }
    }
}

/// `ScramSecret` is not `Clone`; the verifier is reused across logins.
fn clone_secret(s: &ScramSecret) -> ScramSecret {
    match s {
        ScramSecret::Verifier {
            salt,
            iterations,
            stored_key,
            server_key,
        } => ScramSecret::Verifier {
            salt: salt.clone(),
            iterations: *iterations,
            stored_key: stored_key.clone(),
            server_key: server_key.clone(),
        },
        ScramSecret::SaltedPassword {
            salt,
            salted_password,
        } => ScramSecret::SaltedPassword {
            salt: salt.clone(),
            salted_password: salted_password.clone(),
        },
    }
}

fn failed(method: &'static str, user: &str) -> AuthOutcome {
    AuthOutcome::Failed {
        method,
        error: password_failed(user),
    }
}

/// Reads one PasswordMessage / SASLResponse body; `None` if the client sent
/// something else or hung up (both count as a failed login).
async fn read_password(
    stream: &mut Stream,
    reader: &mut FrameReader,
) -> std::io::Result<Option<Vec<u8>>> {
    stream.flush().await?;
    match reader.read_frame(stream).await {
        Ok(Some(f)) if f.tag() == tag::PASSWORD => Ok(Some(f.body().to_vec())),
        Ok(_) => Ok(None),
        Err(crate::protocol::frame::ReadError::Io(e)) => Err(e),
        Err(_) => Ok(None),
    }
}

async fn scram(
    stream: &mut Stream,
    reader: &mut FrameReader,
    secret: ScramSecret,
    ctx: &ExchangeContext<'_>,
) -> std::io::Result<AuthOutcome> {
    const METHOD: &str = "scram-sha-256";
    let mut server = ScramServerAuth::new();
    let mut mechanisms = vec!["SCRAM-SHA-256"];
    if ctx.tls {
        if let Some(pem) = ctx.tls_cert_pem {
            if server.configure_certificate(pem).is_ok() {
                mechanisms.insert(0, "SCRAM-SHA-256-PLUS");
            }
        }
    }
    stream.write_all(&be::auth_sasl(&mechanisms)).await?;
    let Some(initial) = read_password(stream, reader).await? else {
        return Ok(failed(METHOD, ctx.user));
    };
    // SASLInitialResponse: mechanism name, then int32 length + client-first.
    let Some(end) = initial.iter().position(|&b| b == 0) else {
        return Ok(failed(METHOD, ctx.user));
    };
    let mechanism = &initial[..end];
    if !mechanisms.iter().any(|m| m.as_bytes() == mechanism) {
        return Ok(failed(METHOD, ctx.user));
    }
    let rest = &initial[end + 1..];
    if rest.len() < 4 {
        return Ok(failed(METHOD, ctx.user));
    }
    let client_first = &rest[4..];
    let Ok((server_first, waiting)) =
        server.on_client_first_message_with_secret(client_first, secret)
    else {
        return Ok(failed(METHOD, ctx.user));
    };
    stream
        .write_all(&be::auth_sasl_continue(server_first.as_bytes()))
        .await?;
    let Some(client_final) = read_password(stream, reader).await? else {
        return Ok(failed(METHOD, ctx.user));
    };
    match waiting.on_client_final_message(&client_final) {
        Ok(server_final) => {
            stream
                .write_all(&be::auth_sasl_final(server_final.as_bytes()))
                .await?;
            Ok(AuthOutcome::Ok { method: METHOD })
        }
        Err(_) => Ok(failed(METHOD, ctx.user)),
    }
}
