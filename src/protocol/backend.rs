//! Messages in the server → client direction: encoders for the ones the
//! proxy answers itself (auth, errors, ReadyForQuery, admin result sets) and
//! decoders for the few backend fields it must read (transaction status,
//! SQLSTATE, ParameterStatus, BackendKeyData).

use bytes::{BufMut, Bytes, BytesMut};

/// Server message type bytes.
pub mod tag {
    pub const AUTHENTICATION: u8 = b'R';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const BIND_COMPLETE: u8 = b'2';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    pub const DATA_ROW: u8 = b'D';
    pub const EMPTY_QUERY: u8 = b'I';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
    pub const NO_DATA: u8 = b'n';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const NOTIFICATION: u8 = b'A';
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const PORTAL_SUSPENDED: u8 = b's';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ROW_DESCRIPTION: u8 = b'T';
}

/// Transaction status reported in ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    Idle,
    InTransaction,
    Failed,
}

impl TxStatus {
    pub fn from_byte(b: u8) -> Option<TxStatus> {
        match b {
            b'I' => Some(TxStatus::Idle),
            b'T' => Some(TxStatus::InTransaction),
            b'E' => Some(TxStatus::Failed),
            _ => None,
        }
    }
    pub fn byte(self) -> u8 {
        match self {
            TxStatus::Idle => b'I',
            TxStatus::InTransaction => b'T',
            TxStatus::Failed => b'E',
        }
    }
}

fn message(tag: u8, fill: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut out = BytesMut::with_capacity(64);
    out.put_u8(tag);
    out.put_i32(0);
    fill(&mut out);
    let len = (out.len() - 1) as i32;
    out[1..5].copy_from_slice(&len.to_be_bytes());
    out.freeze()
}

fn cstr(out: &mut BytesMut, s: &str) {
    // A NUL inside a field would corrupt framing; PostgreSQL never sends one.
    out.put_slice(s.replace('\0', "").as_bytes());
    out.put_u8(0);
}

/// An error the proxy reports itself, shaped like PostgreSQL's.
#[derive(Debug, Clone)]
pub struct PgError {
    /// `ERROR` or `FATAL` (FATAL means the proxy closes the connection after it).
    pub severity: &'static str,
    pub code: &'static str,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl PgError {
    pub fn error(code: &'static str, message: impl Into<String>) -> PgError {
        PgError {
            severity: "ERROR",
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }
    pub fn fatal(code: &'static str, message: impl Into<String>) -> PgError {
        PgError {
            severity: "FATAL",
            ..PgError::error(code, message)
        }
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> PgError {
        self.hint = Some(hint.into());
        self
    }
    pub fn with_detail(mut self, detail: impl Into<String>) -> PgError {
        self.detail = Some(detail.into());
        self
    }
    /// The ErrorResponse bytes.
    pub fn encode(&self) -> Bytes {
        message(tag::ERROR_RESPONSE, |o| {
            o.put_u8(b'S');
            cstr(o, self.severity);
            o.put_u8(b'V');
            cstr(o, self.severity);
            o.put_u8(b'C');
            cstr(o, self.code);
            o.put_u8(b'M');
            cstr(o, &self.message);
            if let Some(d) = &self.detail {
                o.put_u8(b'D');
                cstr(o, d);
            }
            if let Some(h) = &self.hint {
                o.put_u8(b'H');
                cstr(o, h);
            }
            o.put_u8(0);
        })
    }
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)
    }
}

pub fn auth_ok() -> Bytes {
    message(tag::AUTHENTICATION, |o| o.put_i32(0))
}
pub fn auth_cleartext() -> Bytes {
    message(tag::AUTHENTICATION, |o| o.put_i32(3))
}
pub fn auth_md5(salt: [u8; 4]) -> Bytes {
    message(tag::AUTHENTICATION, |o| {
        o.put_i32(5);
        o.put_slice(&salt);
    })
}
pub fn auth_sasl(mechanisms: &[&str]) -> Bytes {
    message(tag::AUTHENTICATION, |o| {
        o.put_i32(10);
        for m in mechanisms {
            cstr(o, m);
        }
        o.put_u8(0);
    })
}
pub fn auth_sasl_continue(data: &[u8]) -> Bytes {
    message(tag::AUTHENTICATION, |o| {
        o.put_i32(11);
        o.put_slice(data);
    })
}
pub fn auth_sasl_final(data: &[u8]) -> Bytes {
    message(tag::AUTHENTICATION, |o| {
        o.put_i32(12);
        o.put_slice(data);
    })
}
pub fn parameter_status(name: &str, value: &str) -> Bytes {
    message(tag::PARAMETER_STATUS, |o| {
        cstr(o, name);
        cstr(o, value);
    })
}
pub fn backend_key_data(pid: i32, secret: i32) -> Bytes {
    message(tag::BACKEND_KEY_DATA, |o| {
        o.put_i32(pid);
        o.put_i32(secret);
    })
}
pub fn ready_for_query(status: TxStatus) -> Bytes {
    message(tag::READY_FOR_QUERY, |o| o.put_u8(status.byte()))
}
pub fn command_complete(command_tag: &str) -> Bytes {
    message(tag::COMMAND_COMPLETE, |o| cstr(o, command_tag))
}
pub fn close_complete() -> Bytes {
    Bytes::from_static(b"3\0\0\0\x04")
}
pub fn empty_query() -> Bytes {
    Bytes::from_static(b"I\0\0\0\x04")
}
pub fn notice(code: &'static str, text: &str) -> Bytes {
    message(tag::NOTICE_RESPONSE, |o| {
        o.put_u8(b'S');
        cstr(o, "NOTICE");
        o.put_u8(b'V');
        cstr(o, "NOTICE");
        o.put_u8(b'C');
        cstr(o, code);
        o.put_u8(b'M');
        cstr(o, text);
        o.put_u8(0);
    })
}

/// RowDescription for an all-text result set (admin console answers).
pub fn row_description(columns: &[&str]) -> Bytes {
    message(tag::ROW_DESCRIPTION, |o| {
        o.put_i16(columns.len() as i16);
        for c in columns {
            cstr(o, c);
            o.put_i32(0); // table oid
            o.put_i16(0); // attnum
            o.put_i32(25); // text
            o.put_i16(-1);
            o.put_i32(-1);
            o.put_i16(0);
        }
    })
}
/// DataRow of text values (`None` = NULL).
pub fn data_row(values: &[Option<String>]) -> Bytes {
    message(tag::DATA_ROW, |o| {
        o.put_i16(values.len() as i16);
        for v in values {
            match v {
                None => o.put_i32(-1),
                Some(s) => {
                    o.put_i32(s.len() as i32);
                    o.put_slice(s.as_bytes());
                }
            }
        }
    })
}

/// The SQLSTATE of an ErrorResponse/NoticeResponse body.
pub fn error_code(body: &[u8]) -> Option<&str> {
    error_field(body, b'C')
}

/// One field of an ErrorResponse/NoticeResponse body.
pub fn error_field(body: &[u8], field: u8) -> Option<&str> {
    let mut rest = body;
    while let Some((&f, tail)) = rest.split_first() {
        if f == 0 {
            return None;
        }
        let end = tail.iter().position(|&b| b == 0)?;
        if f == field {
            return std::str::from_utf8(&tail[..end]).ok();
        }
        rest = &tail[end + 1..];
    }
    None
}

/// Name and value of a ParameterStatus body.
pub fn parameter_status_fields(body: &[u8]) -> Option<(&str, &str)> {
    let end = body.iter().position(|&b| b == 0)?;
    let name = std::str::from_utf8(&body[..end]).ok()?;
    let rest = &body[end + 1..];
    let end2 = rest.iter().position(|&b| b == 0)?;
    let value = std::str::from_utf8(&rest[..end2]).ok()?;
    Some((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_round_trips_its_fields() {
        let e = PgError::error("42501", "no").with_hint("do this");
        let bytes = e.encode();
        assert_eq!(bytes[0], b'E');
        assert_eq!(error_code(&bytes[5..]), Some("42501"));
        assert_eq!(error_field(&bytes[5..], b'H'), Some("do this"));
        assert_eq!(error_field(b"Cx", b'C'), None);
    }
}
