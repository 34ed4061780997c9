//! Backend addresses: `postgres://user[:password]@host[:port]/db?sslmode=…`.

use crate::secret::Secret;

/// How to use TLS towards a backend, after libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    /// verify-ca is treated as verify-full: we never accept a name mismatch.
    VerifyFull,
}

/// A parsed backend URL. The password is kept as a [`Secret`].
#[derive(Clone, PartialEq, Eq)]
pub struct BackendUrl {
    /// A hostname, an IP, or an absolute Unix-socket directory.
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<Secret>,
    pub dbname: String,
    pub sslmode: SslMode,
    /// CA file for verify-full (libpq's `sslrootcert`); system roots otherwise.
    pub sslrootcert: Option<String>,
    /// Sent at startup when given. Control-plane connections default to
    /// `pgtenant`; pooled ones send none unless given, so that a client
    /// sees the server's default, as connecting directly.
    pub application_name: Option<String>,
}

impl std::fmt::Debug for BackendUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.display())
    }
}

impl BackendUrl {
    pub fn parse(s: &str) -> Result<BackendUrl, String> {
        let url = url::Url::parse(s).map_err(|e| format!("not a postgres:// URL ({e})"))?;
        if url.scheme() != "postgres" && url.scheme() != "postgresql" {
            return Err(format!(
                "scheme must be postgres://, got {}://",
                url.scheme()
            ));
        }
        let decode = |v: &str| {
            percent_decode(v).ok_or_else(|| "invalid percent-encoding in URL".to_string())
        };
        let mut host = decode(url.host_str().unwrap_or(""))?;
        let mut port = url.port().unwrap_or(5432);
        let mut sslmode = SslMode::Prefer;
        let mut sslrootcert = None;
        let mut application_name = None;
        let mut user = decode(url.username())?;
        let mut dbname = decode(url.path().trim_start_matches('/'))?;
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "host" => host = v.to_string(),
                "port" => port = v.parse().map_err(|_| format!("invalid port {v:?}"))?,
                "user" => user = v.to_string(),
                "dbname" => dbname = v.to_string(),
                "sslrootcert" => sslrootcert = Some(v.to_string()),
                "application_name" => application_name = Some(v.to_string()),
                "sslmode" => {
                    sslmode = match v.as_ref() {
                        "disable" | "allow" => SslMode::Disable,
                        "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" | "verify-full" => SslMode::VerifyFull,
                        other => return Err(format!("unknown sslmode {other:?}")),
                    }
                }
                _ => {}
            }
        }
        if host.is_empty() {
            host = "localhost".into();
        }
        if user.is_empty() {
            return Err("URL has no user name".into());
        }
        if dbname.is_empty() {
            dbname = user.clone();
        }
        let password = match url.password() {
            Some(p) => Some(Secret::new(decode(p)?)),
            None => None,
        };
        Ok(BackendUrl {
            host,
            port,
            user,
            password,
            dbname,
            sslmode,
            sslrootcert,
            application_name,
        })
    }

    pub fn is_unix_socket(&self) -> bool {
        self.host.starts_with('/')
    }

    /// `user@host:port/db` — safe to log, and the identity of a pool.
    pub fn display(&self) -> String {
        format!("{}@{}:{}/{}", self.user, self.host, self.port, self.dbname)
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let h = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_socket_and_options() {
        let u =
            BackendUrl::parse("postgres://bob:p%40ss@db.example:6543/app?sslmode=require").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.dbname.as_str()),
            ("db.example", 6543, "app")
        );
        assert_eq!(u.password.as_ref().unwrap().expose(), "p@ss");
        assert_eq!(u.sslmode, SslMode::Require);
        let u = BackendUrl::parse("postgres://bob@%2Ftmp%2Fpg:5433/x").unwrap();
        assert!(u.is_unix_socket());
        assert!(!format!("{u:?}").contains("p@ss"));
        assert!(BackendUrl::parse("mysql://a@b/c").is_err());
        assert!(BackendUrl::parse("postgres://a@b/c?sslmode=bogus").is_err());
    }
}
