//! A raw protocol client for tests that need exact control of the
//! messages a client sends (pipelining, Flush, unnamed statements) and see
//! every message that comes back, summarised as text: `D(row)`,
//! `E(code:message)`, `C(tag)`, `Z(status)`, a bare tag for the rest.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A frontend message: tag, length, then the parts of the body.
pub fn msg(tag: u8, body: &[&[u8]]) -> Vec<u8> {
    let body = body.concat();
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(&body);
    m
}
pub fn cstr(s: &[u8]) -> Vec<u8> {
    let mut v = s.to_vec();
    v.push(0);
    v
}
pub fn parse(name: &[u8], sql: &[u8]) -> Vec<u8> {
    msg(b'P', &[&cstr(name), &cstr(sql), &0i16.to_be_bytes()])
}
pub fn bind(portal: &[u8], stmt: &[u8]) -> Vec<u8> {
    msg(b'B', &[&cstr(portal), &cstr(stmt), &[0, 0, 0, 0, 0, 0]])
}
pub fn bind1(portal: &[u8], stmt: &[u8], p: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8, 0, 0, 1];
    v.extend_from_slice(&(p.len() as i32).to_be_bytes());
    v.extend_from_slice(p);
    v.extend_from_slice(&[0, 0]);
    msg(b'B', &[&cstr(portal), &cstr(stmt), &v])
}
pub fn execute(portal: &[u8]) -> Vec<u8> {
    msg(b'E', &[&cstr(portal), &0i32.to_be_bytes()])
}
pub fn describe(kind: u8, name: &[u8]) -> Vec<u8> {
    msg(b'D', &[&[kind], &cstr(name)])
}
pub fn close(kind: u8, name: &[u8]) -> Vec<u8> {
    msg(b'C', &[&[kind], &cstr(name)])
}
/// Parse, Bind and Execute of `sql` as the unnamed statement and portal:
/// one statement as drivers send it, before their Sync or Flush.
pub fn unnamed(sql: impl AsRef<[u8]>) -> Vec<Vec<u8>> {
    vec![parse(b"", sql.as_ref()), bind(b"", b""), execute(b"")]
}
pub fn sync() -> Vec<u8> {
    msg(b'S', &[])
}
pub fn flush() -> Vec<u8> {
    msg(b'H', &[])
}
pub fn query(sql: &str) -> Vec<u8> {
    msg(b'Q', &[&cstr(sql.as_bytes())])
}

pub struct Raw {
    s: tokio::net::TcpStream,
}

/// A logged-in client connection (SCRAM).
impl Raw {
    pub async fn connect(port: u16, user: &str, pw: &str, db: &str) -> Raw {
        Raw::connect_with(port, user, pw, db, &[]).await
    }

    /// `connect`, with more startup parameters (`application_name`,
    /// `options`…).
    pub async fn connect_with(
        port: u16,
        user: &str,
        pw: &str,
        db: &str,
        params: &[(&str, &str)],
    ) -> Raw {
        use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let mut startup = Vec::new();
        startup.extend_from_slice(&0i32.to_be_bytes());
        startup.extend_from_slice(&196608i32.to_be_bytes());
        let given = [("user", user), ("database", db)];
        for (k, v) in given.iter().chain(params) {
            startup.extend_from_slice(k.as_bytes());
            startup.push(0);
            startup.extend_from_slice(v.as_bytes());
            startup.push(0);
        }
        startup.push(0);
        let len = startup.len() as i32;
        startup[..4].copy_from_slice(&len.to_be_bytes());
        s.write_all(&startup).await.unwrap();
        let mut scram = ScramSha256::new(pw.as_bytes(), ChannelBinding::unsupported());
        loop {
            let mut head = [0u8; 5];
            s.read_exact(&mut head).await.unwrap();
            let len = i32::from_be_bytes(head[1..5].try_into().unwrap()) as usize - 4;
            let mut body = vec![0u8; len];
            s.read_exact(&mut body).await.unwrap();
            match head[0] {
                b'R' => {
                    let code = i32::from_be_bytes(body[..4].try_into().unwrap());
                    let m: Vec<u8> = match code {
                        10 => {
                            let mut m = b"SCRAM-SHA-256\0".to_vec();
                            m.extend_from_slice(&(scram.message().len() as i32).to_be_bytes());
                            m.extend_from_slice(scram.message());
                            m
                        }
                        11 => {
                            scram.update(&body[4..]).unwrap();
                            scram.message().to_vec()
                        }
                        _ => continue,
                    };
                    let mut out = vec![b'p'];
                    out.extend_from_slice(&((m.len() + 4) as i32).to_be_bytes());
                    out.extend_from_slice(&m);
                    s.write_all(&out).await.unwrap();
                }
                b'E' => panic!("login error {}", String::from_utf8_lossy(&body)),
                b'Z' => break,
                _ => {}
            }
        }
        Raw { s }
    }

    /// Sends `bytes`, then reads everything until the server closes the
    /// connection or 5 s pass, as text.
    pub async fn send_then_read_all(mut self, bytes: &[u8]) -> String {
        self.s.write_all(bytes).await.unwrap();
        let mut buf = Vec::new();
        let _ =
            pgtenant::clock::timeout(Duration::from_secs(5), self.s.read_to_end(&mut buf)).await;
        String::from_utf8_lossy(&buf).to_string()
    }

    pub async fn send(&mut self, parts: &[Vec<u8>]) {
        self.s.write_all(&parts.concat()).await.unwrap();
    }

    /// Reads messages until the `n`th ReadyForQuery, a message tagged
    /// `stop`, or 3 s of silence (`<timeout/eof>`).
    pub async fn read_until(&mut self, stop: u8, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut seen = 0;
        loop {
            let mut head = [0u8; 5];
            match pgtenant::clock::timeout(Duration::from_secs(3), self.s.read_exact(&mut head))
                .await
            {
                Ok(Ok(_)) => {}
                _ => {
                    out.push("<timeout/eof>".into());
                    return out;
                }
            }
            let len = i32::from_be_bytes(head[1..5].try_into().unwrap()) as usize - 4;
            let mut body = vec![0u8; len];
            self.s.read_exact(&mut body).await.unwrap();
            let t = head[0];
            let desc = match t {
                b'E' | b'N' => {
                    let code = body
                        .split(|b| *b == 0)
                        .find(|f| f.first() == Some(&b'C'))
                        .map(|f| String::from_utf8_lossy(&f[1..]).to_string())
                        .unwrap_or_default();
                    let m = body
                        .split(|b| *b == 0)
                        .find(|f| f.first() == Some(&b'M'))
                        .map(|f| String::from_utf8_lossy(&f[1..]).to_string())
                        .unwrap_or_default();
                    format!("{}({code}:{m})", t as char)
                }
                b'D' => format!(
                    "D({})",
                    String::from_utf8_lossy(&body[6..]).replace('\0', "")
                ),
                b'C' => format!("C({})", String::from_utf8_lossy(&body).replace('\0', "")),
                b'Z' => format!("Z({})", body[0] as char),
                b'S' => format!("S({})", String::from_utf8_lossy(&body).replace('\0', "=")),
                b'A' => "A(notify)".into(),
                _ => format!("{}", t as char),
            };
            out.push(desc);
            if t == b'Z' {
                seen += 1;
                if seen >= n {
                    return out;
                }
            }
            if t == stop {
                return out;
            }
        }
    }
}
