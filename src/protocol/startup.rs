//! The untagged packets that open a connection: StartupMessage, SSLRequest,
//! GSSENCRequest and CancelRequest.

use super::ProtocolError;

pub const PROTOCOL_V3: i32 = 196608;
pub const SSL_REQUEST: i32 = 80877103;
pub const GSSENC_REQUEST: i32 = 80877104;
pub const CANCEL_REQUEST: i32 = 80877102;

/// What the first packet on a connection asks for.
#[derive(Debug)]
pub enum StartupPacket {
    Ssl,
    GssEnc,
    Cancel { pid: i32, secret: i32 },
    Startup(StartupParams),
}

/// The key/value parameters of a StartupMessage, in order.
#[derive(Debug, Clone, Default)]
pub struct StartupParams {
    pub params: Vec<(String, String)>,
}

impl StartupParams {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    pub fn user(&self) -> Option<&str> {
        self.get("user")
    }
    /// The database, defaulting to the user name as PostgreSQL does.
    pub fn database(&self) -> Option<&str> {
        self.get("database").or_else(|| self.user())
    }
    /// `-c name=value` / `--name=value` pairs from the `options` parameter.
    pub fn options(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let Some(opts) = self.get("options") else {
            return out;
        };
        // Backslash escapes a space, as in libpq.
        let mut words = Vec::new();
        let mut cur = String::new();
        let mut chars = opts.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        cur.push(n)
                    }
                }
                ' ' | '\t' => {
                    if !cur.is_empty() {
                        words.push(std::mem::take(&mut cur))
                    }
                }
                _ => cur.push(c),
            }
        }
        if !cur.is_empty() {
            words.push(cur);
        }
        let mut it = words.into_iter();
        while let Some(w) = it.next() {
            let kv = if w == "-c" {
                it.next()
            } else if let Some(r) = w.strip_prefix("-c") {
                Some(r.to_string())
            } else {
                w.strip_prefix("--").map(str::to_string)
            };
            if let Some((k, v)) = kv.as_deref().and_then(|s| s.split_once('=')) {
                out.push((k.replace('-', "_"), v.to_string()));
            }
        }
        out
    }
}

/// Decodes a startup-phase packet body (after the length word).
pub fn decode(body: &[u8]) -> Result<StartupPacket, ProtocolError> {
    let bad = || ProtocolError::Malformed("startup");
    if body.len() < 4 {
        return Err(bad());
    }
    let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    match code {
        SSL_REQUEST => Ok(StartupPacket::Ssl),
        GSSENC_REQUEST => Ok(StartupPacket::GssEnc),
        CANCEL_REQUEST => {
            if body.len() != 12 {
                return Err(bad());
            }
            Ok(StartupPacket::Cancel {
                pid: i32::from_be_bytes(body[4..8].try_into().unwrap()),
                secret: i32::from_be_bytes(body[8..12].try_into().unwrap()),
            })
        }
        PROTOCOL_V3 => {
            let mut params = Vec::new();
            let mut rest = &body[4..];
            loop {
                let end = rest.iter().position(|&b| b == 0).ok_or_else(bad)?;
                if end == 0 {
                    break;
                }
                let key = std::str::from_utf8(&rest[..end]).map_err(|_| bad())?;
                rest = &rest[end + 1..];
                let vend = rest.iter().position(|&b| b == 0).ok_or_else(bad)?;
                let value = std::str::from_utf8(&rest[..vend]).map_err(|_| bad())?;
                rest = &rest[vend + 1..];
                params.push((key.to_string(), value.to_string()));
            }
            Ok(StartupPacket::Startup(StartupParams { params }))
        }
        _ => Err(ProtocolError::Malformed(
            "startup (unsupported protocol version)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_understand_dash_c_forms() {
        let p = StartupParams {
            params: vec![(
                "options".into(),
                "-c app.tenant_id=acme --search-path=x -cstatement_timeout=5".into(),
            )],
        };
        assert_eq!(
            p.options(),
            vec![
                ("app.tenant_id".to_string(), "acme".to_string()),
                ("search_path".to_string(), "x".to_string()),
                ("statement_timeout".to_string(), "5".to_string())
            ]
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode(&[0, 3, 0, 0, b'u', 0]).is_err());
        assert!(decode(&[1, 2]).is_err());
        assert!(decode(&[0, 0x12, 0x34, 0x56]).is_err());
    }
}
