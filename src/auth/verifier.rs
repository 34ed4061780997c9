//! Password verifiers as stored in the users table, and the checks each allows.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use pgwire::api::auth::sasl::scram::ScramSecret;

/// A stored password verifier. Never holds a cleartext password.
pub enum Verifier {
    /// `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>` (pg_authid format).
    Scram(ScramSecret),
    /// `md5` + hex(md5(password || username)).
    Md5(String),
    /// `$2a$` / `$2b$` / `$2y$` bcrypt hash: needs the cleartext password.
    Bcrypt(String),
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verifier::Scram(_) => "Verifier::Scram(<redacted>)",
            Verifier::Md5(_) => "Verifier::Md5(<redacted>)",
            Verifier::Bcrypt(_) => "Verifier::Bcrypt(<redacted>)",
        })
    }
}

impl Verifier {
    /// Recognizes a stored verifier; `None` for anything else (including plaintext).
    pub fn parse(stored: &str) -> Option<Verifier> {
        if let Some(rest) = stored.strip_prefix("SCRAM-SHA-256$") {
            let (iter_salt, keys) = rest.split_once('$')?;
            let (iter, salt) = iter_salt.split_once(':')?;
            let (stored_key, server_key) = keys.split_once(':')?;
            return Some(Verifier::Scram(ScramSecret::Verifier {
                salt: STANDARD.decode(salt).ok()?,
                iterations: iter.parse().ok()?,
                stored_key: STANDARD.decode(stored_key).ok()?,
                server_key: STANDARD.decode(server_key).ok()?,
            }));
        }
        if let Some(hex) = stored.strip_prefix("md5") {
            if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Some(Verifier::Md5(hex.to_ascii_lowercase()));
            }
            return None;
        }
        if ["$2a$", "$2b$", "$2y$"]
            .iter()
            .any(|p| stored.starts_with(p))
        {
            return Some(Verifier::Bcrypt(stored.to_string()));
        }
        None
    }

    /// A verifier no password matches, for unknown users (mock authentication).
    pub fn mock(user: &str) -> Verifier {
        use sha2::Digest;
        // Deterministic per user so repeated probes see the same salt.
        let salt = sha2::Sha256::digest(format!("pgtenant-mock-{user}").as_bytes())[..16].to_vec();
        Verifier::Scram(ScramSecret::Verifier {
            salt,
            iterations: 4096,
            stored_key: vec![0; 32],
            server_key: vec![0; 32],
        })
    }

    /// Checks an MD5 response (`md5` + hex(md5(hex_verifier || salt))).
    pub fn check_md5(&self, response: &str, salt: [u8; 4]) -> bool {
        let Verifier::Md5(hex) = self else {
            return false;
        };
        use md5::Digest;
        let mut h = md5::Md5::new();
        h.update(hex.as_bytes());
        h.update(salt);
        let expected = format!("md5{}", hex::encode(h.finalize()));
        constant_time_eq(expected.as_bytes(), response.as_bytes())
    }

    /// Checks a cleartext password against a bcrypt hash.
    pub fn check_cleartext(&self, password: &str) -> bool {
        match self {
            Verifier::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            _ => false,
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A SCRAM-SHA-256 verifier for `password`, for `pgtenant passwd`.
pub fn scram_verifier(password: &str) -> String {
    postgres_protocol::password::scram_sha_256(password.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_each_kind_and_rejects_plaintext() {
        assert!(matches!(
            Verifier::parse(&scram_verifier("pw")),
            Some(Verifier::Scram(_))
        ));
        let md5 = postgres_protocol::password::md5(b"pw", "bob");
        assert!(matches!(Verifier::parse(&md5), Some(Verifier::Md5(_))));
        let bc = bcrypt::hash("pw", 4).unwrap();
        assert!(Verifier::parse(&bc).unwrap().check_cleartext("pw"));
        assert!(!Verifier::parse(&bc).unwrap().check_cleartext("nope"));
        assert!(Verifier::parse("hunter2").is_none());
        assert!(Verifier::parse("SCRAM-SHA-256$x").is_none());
    }

    #[test]
    fn md5_response_matches_libpq_computation() {
        let v = Verifier::parse(&postgres_protocol::password::md5(b"pw", "bob")).unwrap();
        let salt = [1, 2, 3, 4];
        let resp = postgres_protocol::authentication::md5_hash(b"bob", b"pw", salt);
        assert!(v.check_md5(&resp, salt));
        assert!(!v.check_md5(&resp, [0, 0, 0, 0]));
    }

    #[test]
    fn debug_never_prints_the_hash() {
        let v = Verifier::parse(&bcrypt::hash("pw", 4).unwrap()).unwrap();
        assert!(!format!("{v:?}").contains("$2"));
    }
}
