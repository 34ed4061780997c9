//! Decoding of the client messages the proxy must look at (Query, Parse,
//! Bind, Describe, Close, Execute) and re-encoding of the only thing it ever
//! changes in them: a prepared statement's name.
//!
//! Decoders borrow from the frame; nothing is copied unless a name is rewritten.

use super::ProtocolError;
use bytes::{BufMut, Bytes, BytesMut};
use std::borrow::Cow;

/// Client message type bytes.
pub mod tag {
    pub const QUERY: u8 = b'Q';
    pub const PARSE: u8 = b'P';
    pub const BIND: u8 = b'B';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const CLOSE: u8 = b'C';
    pub const SYNC: u8 = b'S';
    pub const FLUSH: u8 = b'H';
    pub const TERMINATE: u8 = b'X';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    pub const PASSWORD: u8 = b'p';
}

/// A cursor over a message body with the two primitives the protocol uses.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Cursor { buf, pos: 0, what }
    }
    fn err(&self) -> ProtocolError {
        ProtocolError::Malformed(self.what)
    }
    /// A NUL-terminated string's bytes, in whatever encoding the client uses.
    fn cbytes(&mut self) -> Result<&'a [u8], ProtocolError> {
        let rest = &self.buf[self.pos..];
        // Every Query and Parse passes here: memchr searches 16 bytes at a
        // time. The empty string, every unnamed statement and portal, skips
        // the call.
        let len = if rest.first() == Some(&0) {
            0
        } else {
            memchr::memchr(0, rest).ok_or_else(|| self.err())?
        };
        self.pos += len + 1;
        Ok(&rest[..len])
    }
    /// A statement or portal name, in any client encoding. Names are opaque to the
    /// proxy (it only matches them), so bytes that are not UTF-8 are kept
    /// rather than refused (PostgreSQL accepts them from a LATIN1 client):
    /// they map one-to-one to chars behind a leading NUL, which no name on
    /// the wire can contain, so such a key never equals a UTF-8 name.
    fn name(&mut self) -> Result<Cow<'a, str>, ProtocolError> {
        let b = self.cbytes()?;
        if b.is_empty() {
            // The unnamed statement and portal: most names on the wire.
            return Ok(Cow::Borrowed(""));
        }
        Ok(match std::str::from_utf8(b) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => Cow::Owned(
                std::iter::once('\0')
                    .chain(b.iter().map(|&c| match c {
                        0..0x80 => c as char,
                        _ => char::from_u32(0x100 + c as u32).expect("below the surrogates"),
                    }))
                    .collect(),
            ),
        })
    }
    /// A NUL-terminated string the proxy must read as text (commands).
    fn cstr(&mut self) -> Result<&'a str, ProtocolError> {
        let s = self.cbytes()?;
        std::str::from_utf8(s).map_err(|_| self.err())
    }
    fn i16(&mut self) -> Result<i16, ProtocolError> {
        let b = self
            .buf
            .get(self.pos..self.pos + 2)
            .ok_or_else(|| self.err())?;
        self.pos += 2;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Result<i32, ProtocolError> {
        let b = self
            .buf
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.err())?;
        self.pos += 4;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        let b = self
            .buf
            .get(self.pos..self.pos + n)
            .ok_or_else(|| self.err())?;
        self.pos += n;
        Ok(b)
    }
    fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.bytes(1)?[0])
    }
}

/// A name key (`Cursor::name`) as text for messages: a key kept from
/// non-UTF-8 bytes shows those bytes as `\xNN` (the proxy does not know
/// the client's encoding, and a message in any encoding must be able to
/// carry it), and never its NUL marker (an ErrorResponse field cannot
/// contain NUL).
pub fn name_for_display(key: &str) -> Cow<'_, str> {
    match key.strip_prefix('\0') {
        None => Cow::Borrowed(key),
        Some(mapped) => Cow::Owned(
            mapped
                .chars()
                .map(|c| match c as u32 {
                    n @ 0..0x80 => (n as u8 as char).to_string(),
                    n => format!("\\x{:02X}", n.wrapping_sub(0x100) as u8),
                })
                .collect(),
        ),
    }
}

/// `Query`: the SQL text of a simple-protocol request.
pub fn query_text(body: &[u8]) -> Result<&str, ProtocolError> {
    Cursor::new(body, "Query").cstr()
}

/// `Query`: the SQL's bytes as sent, in the client's encoding (LATIN1 text
/// is not UTF-8 and must still be relayed unchanged).
pub fn query_bytes(body: &[u8]) -> Result<&[u8], ProtocolError> {
    Cursor::new(body, "Query").cbytes()
}

/// `Parse`: statement name, SQL text and declared parameter types.
#[derive(Debug)]
pub struct Parse<'a> {
    /// The statement's name as a key (see `Cursor::name`).
    pub name: Cow<'a, str>,
    /// The SQL's bytes, in the client's encoding.
    pub query: &'a [u8],
    /// The raw parameter-type section (count + OIDs), kept for re-encoding.
    pub param_types: &'a [u8],
}

pub fn parse(body: &[u8]) -> Result<Parse<'_>, ProtocolError> {
    let mut c = Cursor::new(body, "Parse");
    let name = c.name()?;
    let query = c.cbytes()?;
    let start = c.pos;
    let n = c.i16()?;
    if n < 0 {
        return Err(c.err());
    }
    c.bytes(n as usize * 4)?;
    Ok(Parse {
        name,
        query,
        param_types: &body[start..c.pos],
    })
}

/// `Bind`: portal, statement and the parameter values routing may need.
#[derive(Debug)]
pub struct Bind<'a> {
    /// The portal's name as sent (only forwarded).
    pub portal: &'a [u8],
    /// The statement's name as a key (see `Cursor::name`).
    pub statement: Cow<'a, str>,
    /// The parameter format codes, two bytes each.
    formats: &'a [u8],
    /// The parameter values section (length-prefixed values), validated by
    /// `bind` and walked only when routing reads a parameter: decoding every
    /// Bind into vectors cost an allocation per execution.
    values: &'a [u8],
    /// Offset of the bytes after the statement name, for renaming.
    rest_offset: usize,
}

impl<'a> Bind<'a> {
    /// Parameter `i` (0-based): `None` when absent, `Some(None)` for NULL.
    fn value(&self, i: usize) -> Option<Option<&'a [u8]>> {
        let mut rest = self.values;
        let mut k = 0;
        loop {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let len = i32::from_be_bytes(*len);
            let value = if len < 0 {
                None
            } else {
                Some(tail.get(..len as usize)?)
            };
            if k == i {
                return Some(value);
            }
            rest = &tail[value.map_or(0, <[u8]>::len)..];
            k += 1;
        }
    }

    /// Whether parameter `n` (1-based) was sent as NULL (or not at all).
    pub fn param_is_null(&self, n: u16) -> bool {
        (n as usize)
            .checked_sub(1)
            .and_then(|i| self.value(i))
            .is_none_or(|v| v.is_none())
    }

    /// Parameter `n` (1-based) as text. Binary values are read by their type
    /// OID (`oids`, from Parse or the backend's ParameterDescription); a binary
    /// value of an unknown or unsupported type gives `None` rather than a guess.
    pub fn param_text(&self, n: u16, oids: &[u32]) -> Option<String> {
        let i = (n as usize).checked_sub(1)?;
        let value = self.value(i)??;
        let code = |k: usize| {
            self.formats
                .get(2 * k..2 * k + 2)
                .map(|b| i16::from_be_bytes([b[0], b[1]]))
        };
        let format = match self.formats.len() / 2 {
            0 => 0,
            1 => code(0)?,
            _ => code(i)?,
        };
        if format == 0 {
            return std::str::from_utf8(value).ok().map(str::to_owned);
        }
        match oids.get(i).copied().unwrap_or(0) {
            21 => Some(i16::from_be_bytes(value.try_into().ok()?).to_string()),
            23 => Some(i32::from_be_bytes(value.try_into().ok()?).to_string()),
            20 => Some(i64::from_be_bytes(value.try_into().ok()?).to_string()),
            // text, varchar, bpchar, name, unknown: the bytes are the text.
            25 | 1043 | 1042 | 19 | 705 => std::str::from_utf8(value).ok().map(str::to_owned),
            2950 if value.len() == 16 => Some(uuid_text(value)),
            _ => None,
        }
    }
}

fn uuid_text(b: &[u8]) -> String {
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub fn bind(body: &[u8]) -> Result<Bind<'_>, ProtocolError> {
    let mut c = Cursor::new(body, "Bind");
    let portal = c.cbytes()?;
    let statement = c.name()?;
    let rest_offset = c.pos;
    let nf = c.i16()?;
    if nf < 0 {
        return Err(c.err());
    }
    let formats = c.bytes(nf as usize * 2)?;
    let np = c.i16()?;
    if np < 0 {
        return Err(c.err());
    }
    let values_start = c.pos;
    for _ in 0..np {
        let len = c.i32()?;
        if len >= 0 {
            c.bytes(len as usize)?;
        }
    }
    let values = &body[values_start..c.pos];
    let nr = c.i16()?;
    if nr < 0 {
        return Err(c.err());
    }
    c.bytes(nr as usize * 2)?;
    Ok(Bind {
        portal,
        statement,
        formats,
        values,
        rest_offset,
    })
}

/// `Describe` / `Close`: a kind byte (`S` statement, `P` portal) and a name.
#[derive(Debug)]
pub struct Target<'a> {
    pub kind: u8,
    /// The statement's or portal's name as a key (see `Cursor::name`).
    pub name: Cow<'a, str>,
}

pub fn describe_or_close(body: &[u8]) -> Result<Target<'_>, ProtocolError> {
    let mut c = Cursor::new(body, "Describe/Close");
    let kind = c.u8()?;
    if kind != b'S' && kind != b'P' {
        return Err(c.err());
    }
    Ok(Target {
        kind,
        name: c.name()?,
    })
}

/// Appends one message to `out`: tag, length, then the `body_len` bytes
/// `fill` writes. The extended-protocol encoders append to the batch's wire
/// buffer this way: a message of its own would be an allocation per Bind.
fn frame_into(out: &mut BytesMut, tag: u8, body_len: usize, fill: impl FnOnce(&mut BytesMut)) {
    out.reserve(body_len + 5);
    let start = out.len();
    out.put_u8(tag);
    out.put_i32((body_len + 4) as i32);
    fill(out);
    debug_assert_eq!(out.len() - start, body_len + 5);
}

fn framed(tag: u8, body_len: usize, fill: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut out = BytesMut::new();
    frame_into(&mut out, tag, body_len, fill);
    out.freeze()
}

/// Appends a `Parse` with the statement renamed to `server_name`.
pub fn encode_parse(out: &mut BytesMut, server_name: &str, query: &[u8], param_types: &[u8]) {
    let len = server_name.len() + 1 + query.len() + 1 + param_types.len();
    frame_into(out, tag::PARSE, len, |o| {
        o.put_slice(server_name.as_bytes());
        o.put_u8(0);
        o.put_slice(query);
        o.put_u8(0);
        o.put_slice(param_types);
    })
}

/// Appends a Bind of the unnamed statement to the unnamed portal, without
/// parameters, and an Execute of that portal (all rows).
pub fn encode_bind_execute_unnamed(out: &mut BytesMut) {
    frame_into(out, tag::BIND, 8, |o| {
        o.put_slice(&[0, 0, 0, 0, 0, 0, 0, 0])
    });
    frame_into(out, tag::EXECUTE, 5, |o| o.put_slice(&[0, 0, 0, 0, 0]));
}

/// Appends the original `Bind` bytes with only the statement name replaced.
pub fn rename_bind(out: &mut BytesMut, body: &[u8], b: &Bind<'_>, server_name: &str) {
    let rest = &body[b.rest_offset..];
    let len = b.portal.len() + 1 + server_name.len() + 1 + rest.len();
    frame_into(out, tag::BIND, len, |o| {
        o.put_slice(b.portal);
        o.put_u8(0);
        o.put_slice(server_name.as_bytes());
        o.put_u8(0);
        o.put_slice(rest);
    })
}

/// Appends a `Describe` or `Close` of a statement under its server-side name.
pub fn encode_describe_or_close(out: &mut BytesMut, tag: u8, kind: u8, name: &str) {
    frame_into(out, tag, 1 + name.len() + 1, |o| {
        o.put_u8(kind);
        o.put_slice(name.as_bytes());
        o.put_u8(0);
    })
}

/// A simple `Query` message (used for the proxy's own statements on a backend).
pub fn encode_query(sql: &str) -> Bytes {
    framed(tag::QUERY, sql.len() + 1, |o| {
        o.put_slice(sql.as_bytes());
        o.put_u8(0);
    })
}

/// `Sync`.
pub fn encode_sync() -> Bytes {
    Bytes::from_static(b"S\0\0\0\x04")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind_body(stmt: &str, params: &[Option<&[u8]>], formats: &[i16]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"\0");
        b.extend_from_slice(stmt.as_bytes());
        b.push(0);
        b.extend_from_slice(&(formats.len() as i16).to_be_bytes());
        for f in formats {
            b.extend_from_slice(&f.to_be_bytes());
        }
        b.extend_from_slice(&(params.len() as i16).to_be_bytes());
        for p in params {
            match p {
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
            }
        }
        b.extend_from_slice(&0i16.to_be_bytes());
        b
    }

    #[test]
    fn bind_params_and_rename_keep_the_rest_of_the_bytes() {
        let body = bind_body("s1", &[Some(b"acme"), None], &[]);
        let b = bind(&body).unwrap();
        assert_eq!(b.statement, "s1");
        assert_eq!(b.param_text(1, &[]).as_deref(), Some("acme"));
        assert_eq!(b.param_text(2, &[]), None);
        assert!(b.param_is_null(2) && b.param_is_null(3) && !b.param_is_null(1));
        let mut renamed = BytesMut::from(&b"prefix"[..]);
        rename_bind(&mut renamed, &body, &b, "pgt_7");
        assert_eq!(&renamed[..6], b"prefix", "appended");
        let renamed = renamed.split_off(6);
        let again = bind(&renamed[5..]).unwrap();
        assert_eq!(again.statement, "pgt_7");
        assert_eq!(again.param_text(1, &[]).as_deref(), Some("acme"));
    }

    #[test]
    fn names_in_any_encoding_are_distinct_keys() {
        let parse_named = |name: &[u8]| {
            let mut body = name.to_vec();
            body.extend_from_slice(b"\0SELECT 1\0\0\0");
            parse(&body).unwrap().name.into_owned()
        };
        let latin1 = parse_named(b"caf\xe9");
        let utf8 = parse_named("café".as_bytes());
        assert_eq!(utf8, "café");
        assert_ne!(latin1, utf8);
        assert_ne!(latin1, parse_named(b"caf\xe8"));
        assert_eq!(
            latin1,
            parse_named(b"caf\xe9"),
            "the same bytes, the same key"
        );
        assert_eq!(name_for_display(&latin1), r"caf\xE9");
        assert_eq!(name_for_display(&utf8), "café");
        // Describe/Close and Bind give the same keys as Parse.
        assert_eq!(describe_or_close(b"Scaf\xe9\0").unwrap().name, latin1);
        let body = bind_body("", &[], &[]);
        let mut latin1_bind = b"p\xe9\0caf\xe9".to_vec();
        latin1_bind.extend_from_slice(&body[1..]);
        let b = bind(&latin1_bind).unwrap();
        assert_eq!(b.statement, latin1);
        assert_eq!(b.portal, b"p\xe9");
    }

    #[test]
    fn bind_values_after_nulls_and_per_parameter_formats() {
        let body = bind_body(
            "s",
            &[None, Some(b"x"), Some(&7i16.to_be_bytes()), Some(b"")],
            &[0, 0, 1, 0],
        );
        let b = bind(&body).unwrap();
        assert!(b.param_is_null(1));
        assert_eq!(b.param_text(2, &[]).as_deref(), Some("x"));
        assert_eq!(b.param_text(3, &[0, 0, 21]).as_deref(), Some("7"));
        assert_eq!(b.param_text(4, &[]).as_deref(), Some(""));
        assert!(b.param_is_null(5));
        // A value running past the message is malformed, not read.
        let mut short = bind_body("s", &[Some(b"abcdef")], &[]);
        short.truncate(short.len() - 5);
        assert!(bind(&short).is_err());
    }

    #[test]
    fn binary_int_params_read_as_numbers() {
        let body = bind_body("", &[Some(&42i32.to_be_bytes())], &[1]);
        assert_eq!(
            bind(&body).unwrap().param_text(1, &[23]).as_deref(),
            Some("42")
        );
        // Binary "acme" is 4 bytes: only its type says it is text, never its length.
        let body = bind_body("", &[Some(b"acme")], &[1]);
        assert_eq!(
            bind(&body).unwrap().param_text(1, &[25]).as_deref(),
            Some("acme")
        );
        assert_eq!(bind(&body).unwrap().param_text(1, &[0]), None);
    }

    #[test]
    fn truncated_messages_are_errors_not_panics() {
        for cut in 0..20 {
            let body = bind_body("stmt", &[Some(b"abc")], &[0]);
            let _ = bind(&body[..cut.min(body.len())]);
            let _ = parse(&body[..cut.min(body.len())]);
            let _ = describe_or_close(&body[..cut.min(body.len())]);
        }
        assert!(bind(b"\0\0\xff\xff").is_err());
    }
}
