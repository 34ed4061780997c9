//! One stream type for every socket the proxy holds: client or backend,
//! TCP or Unix, plain or TLS. An enum instead of `Box<dyn …>` keeps the
//! relay's reads and writes free of dynamic dispatch and allocation.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// A client that negotiated TLS with us.
    TlsServer(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// A backend we reached over TLS.
    TlsClient(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::TlsServer(_) | Stream::TlsClient(_))
    }

    /// Writes all of `buf`. A plain socket first gets one non-blocking
    /// write, which for a request or a response (the socket has room) is
    /// the whole job without a future and tokio's readiness polling; what
    /// it leaves, and TLS streams, go through `write_all`.
    pub async fn send_all(&mut self, buf: &[u8]) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        let tried = match self {
            Stream::Tcp(s) => s.try_write(buf),
            Stream::Unix(s) => s.try_write(buf),
            _ => Ok(0),
        };
        let sent = match tried {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        if sent < buf.len() {
            self.write_all(&buf[sent..]).await?;
        }
        Ok(())
    }

    /// Whether tokio knows the socket is not readable (no bytes, no EOF,
    /// no error since the last read found it empty), without a syscall or
    /// a waker registration: a read now would return `Pending`. Always
    /// `false` for TLS, whose own buffers may hold plaintext.
    pub fn known_unreadable(&self) -> bool {
        let unready =
            |r: io::Result<()>| matches!(r, Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        match self {
            // `try_io` runs the closure only when tokio holds the socket
            // readable; the closure does no I/O, so nothing is cleared.
            Stream::Tcp(s) => unready(s.try_io(tokio::io::Interest::READABLE, || Ok(()))),
            Stream::Unix(s) => unready(s.try_io(tokio::io::Interest::READABLE, || Ok(()))),
            _ => false,
        }
    }

    /// Whether the peer sent anything (bytes, EOF or an error) nobody has
    /// read: an idle backend connection must have nothing to say. Plain
    /// sockets use `try_read`, which costs no syscall while tokio knows the
    /// socket is not readable, and registers no waker; TLS streams are
    /// polled once.
    pub fn has_unread_input(&mut self) -> bool {
        let mut probe = [0u8; 1];
        let quiet =
            |r: io::Result<usize>| matches!(r, Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        match self {
            Stream::Tcp(s) => !quiet(s.try_read(&mut probe)),
            Stream::Unix(s) => !quiet(s.try_read(&mut probe)),
            tls => {
                use futures::FutureExt;
                use tokio::io::AsyncReadExt;
                tls.read(&mut probe).now_or_never().is_some()
            }
        }
    }

    /// Re-registers a plain socket with the calling thread's runtime, so its
    /// readiness wakes this thread directly (see `crate::workers`). TLS
    /// streams cannot be taken apart and rebuilt with tokio-rustls; they are
    /// returned unchanged and keep being served by the runtime that opened
    /// them, which is correct, only a wake-up dearer. `Err`: the socket is
    /// closed.
    pub fn into_current_runtime(self) -> io::Result<(Stream, bool)> {
        match self {
            Stream::Tcp(s) => Ok((Stream::Tcp(TcpStream::from_std(s.into_std()?)?), true)),
            Stream::Unix(s) => Ok((Stream::Unix(UnixStream::from_std(s.into_std()?)?), true)),
            tls => Ok((tls, false)),
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Tcp($s) => $e,
            Stream::Unix($s) => $e,
            Stream::TlsServer($s) => $e,
            Stream::TlsClient($s) => $e,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write(cx, buf))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Unix(s) => s.is_write_vectored(),
            Stream::TlsServer(s) => s.is_write_vectored(),
            Stream::TlsClient(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}
