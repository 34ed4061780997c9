//! Framing: splitting a byte stream into whole messages (without copying),
//! and holding the ones acted on as a group (`FrameBatch`).

use bytes::{Buf, Bytes, BytesMut};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncRead;

/// A protocol violation by the peer. Always answered with SQLSTATE 08P01 and a
/// closed connection: after a framing error the byte stream cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("invalid message length {0}")]
    BadLength(i64),
    #[error("message of {0} bytes exceeds the limit of {1} bytes")]
    TooLarge(usize, usize),
    #[error("malformed {0} message")]
    Malformed(&'static str),
    #[error("unexpected message type '{0}'")]
    Unexpected(char),
}

/// One whole tagged message: tag byte, length, body — the original bytes.
#[derive(Debug, Clone)]
pub struct Frame {
    bytes: Bytes,
}

impl Frame {
    /// Wraps bytes already known to hold exactly one message.
    pub fn from_bytes(bytes: Bytes) -> Frame {
        Frame { bytes }
    }
    /// The message type byte.
    pub fn tag(&self) -> u8 {
        self.bytes[0]
    }
    /// The payload after tag and length.
    pub fn body(&self) -> &[u8] {
        &self.bytes[5..]
    }
    /// The full original bytes, for forwarding unchanged.
    pub fn raw(&self) -> &Bytes {
        &self.bytes
    }
    pub fn into_raw(self) -> Bytes {
        self.bytes
    }
}

/// A whole message still inside a [`FrameReader`]'s buffer, for messages
/// the proxy only looks at and copies on (every backend response): cheaper
/// than a [`Frame`], which costs a reference count per message.
#[derive(Debug, Clone, Copy)]
pub struct FrameRef<'a> {
    bytes: &'a [u8],
}

impl<'a> FrameRef<'a> {
    /// The message type byte.
    pub fn tag(&self) -> u8 {
        self.bytes[0]
    }
    /// The payload after tag and length.
    pub fn body(&self) -> &'a [u8] {
        &self.bytes[5..]
    }
    /// The full original bytes, for forwarding unchanged.
    pub fn raw(&self) -> &'a [u8] {
        self.bytes
    }
    /// A view of one whole message, for unit tests of its consumers.
    #[cfg(test)]
    pub(crate) fn from_raw(bytes: &'a [u8]) -> FrameRef<'a> {
        FrameRef { bytes }
    }
}

/// The messages of a [`FrameBatch`], in order. A plain cursor rather
/// than a chain of iterator adapters: a batch is walked several times per
/// request, and the adapters cost several times as much per message.
pub struct FrameBatchIter<'a> {
    bytes: &'a [u8],
    ends: std::slice::Iter<'a, usize>,
    start: usize,
}

impl<'a> Iterator for FrameBatchIter<'a> {
    type Item = FrameRef<'a>;
    #[inline]
    fn next(&mut self) -> Option<FrameRef<'a>> {
        let end = *self.ends.next()?;
        let bytes = &self.bytes[self.start..end];
        self.start = end;
        Some(FrameRef { bytes })
    }
}

/// The most a [`FrameBatch`] keeps allocated between batches.
const KEPT_BATCH: usize = 64 * 1024;

/// Whole messages held together until the proxy acts on them as a group
/// (the extended-protocol messages before a Sync or Flush; a Query, as a
/// batch of one), copied into one reused buffer: cheaper than a [`Frame`]
/// per message, which costs a reference count to take and another to drop.
#[derive(Debug, Default)]
pub struct FrameBatch {
    bytes: Vec<u8>,
    /// Where each message ends in `bytes`.
    ends: Vec<usize>,
}

impl FrameBatch {
    /// Appends one whole message (as [`FrameRef::raw`] gives it) and
    /// returns it, as held in the batch.
    pub fn push(&mut self, raw: &[u8]) -> FrameRef<'_> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(raw);
        self.ends.push(self.bytes.len());
        FrameRef {
            bytes: &self.bytes[start..],
        }
    }
    /// Appends whole messages that lie back to back in `run` (each checked
    /// by [`FrameReader::len_at`]), with one copy.
    pub fn push_run(&mut self, run: &[u8]) {
        let base = self.bytes.len();
        self.bytes.extend_from_slice(run);
        let mut at = 0;
        while let Some(h) = run.get(at + 1..at + 5) {
            let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize + 1;
            // A length below the header's would not advance: not a whole
            // message (callers pass checked frames; never loop on bad input).
            if len < 5 || at + len > run.len() {
                break;
            }
            at += len;
            self.ends.push(base + at);
        }
        debug_assert_eq!(at, run.len(), "push_run takes whole messages");
        self.bytes.truncate(base + at);
    }
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
    /// Empties the batch, keeping its buffers for the next one, unless a
    /// large message (a Bind with a big parameter) grew them past
    /// `KEPT_BATCH`: a one-off must not stay allocated for the session's life.
    pub fn clear(&mut self) {
        if self.bytes.capacity() > KEPT_BATCH {
            *self = FrameBatch::default();
        }
        self.bytes.clear();
        self.ends.clear();
    }
    /// The messages in order.
    pub fn iter(&self) -> FrameBatchIter<'_> {
        FrameBatchIter {
            bytes: &self.bytes,
            ends: self.ends.iter(),
            start: 0,
        }
    }
    pub fn last(&self) -> Option<FrameRef<'_>> {
        let end = *self.ends.last()?;
        let start = self.ends.len().checked_sub(2).map_or(0, |i| self.ends[i]);
        Some(FrameRef {
            bytes: &self.bytes[start..end],
        })
    }
}

/// Buffers reads from a stream and yields complete frames.
///
/// Each frame is split off the shared buffer (`BytesMut::split_to`), so
/// forwarding a frame costs no copy and no allocation once the buffer is warm.
pub struct FrameReader {
    buf: BytesMut,
    max_len: usize,
    /// The last `poll_fill` returned `Pending` (see `FrameReader::waiting`).
    waiting: bool,
}

impl FrameReader {
    pub fn new(max_len: usize) -> FrameReader {
        FrameReader {
            buf: BytesMut::with_capacity(16 * 1024),
            max_len,
            waiting: false,
        }
    }

    /// Bytes read but not yet framed (e.g. a pipelined message after TLS
    /// negotiation must not be lost).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame already in the buffer, if any.
    pub fn try_frame(&mut self) -> Result<Option<Frame>, ProtocolError> {
        Ok(self.next_len()?.map(|total| self.take_front(total)))
    }

    /// Splits the complete front frame of `len` bytes (from `next_len`) off
    /// the buffer, for a caller that first looked at it with `front`.
    pub fn take_front(&mut self, len: usize) -> Frame {
        Frame {
            bytes: self.buf.split_to(len).freeze(),
        }
    }

    /// The length of the next frame if the buffer holds all of it; read it
    /// with [`FrameReader::front`], then drop it with [`FrameReader::consume`].
    pub fn next_len(&mut self) -> Result<Option<usize>, ProtocolError> {
        self.len_at(0)
    }

    /// [`FrameReader::next_len`] for the frame starting `pos` bytes into the
    /// unconsumed input, for a caller that reads several frames in place
    /// before consuming them together.
    pub fn len_at(&mut self, pos: usize) -> Result<Option<usize>, ProtocolError> {
        let Some(h) = self.buf.get(pos..pos + 5) else {
            return Ok(None);
        };
        let len = i32::from_be_bytes([h[1], h[2], h[3], h[4]]) as i64;
        if len < 4 {
            return Err(ProtocolError::BadLength(len));
        }
        let total = len as usize + 1;
        if total > self.max_len {
            return Err(ProtocolError::TooLarge(total, self.max_len));
        }
        let have = self.buf.len() - pos;
        if have < total {
            self.buf.reserve(total - have);
            return Ok(None);
        }
        Ok(Some(total))
    }

    /// The complete frame of `len` bytes at the front (from `next_len`).
    pub fn front(&self, len: usize) -> FrameRef<'_> {
        self.at(0, len)
    }

    /// The complete frame of `len` bytes at `pos` (from `len_at(pos)`).
    pub fn at(&self, pos: usize, len: usize) -> FrameRef<'_> {
        FrameRef {
            bytes: &self.buf[pos..pos + len],
        }
    }

    /// Unconsumed input bytes in `range` (whole frames seen with `len_at`).
    pub fn unconsumed(&self, range: std::ops::Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// Drops the `len` bytes of the front frame.
    pub fn consume(&mut self, len: usize) {
        self.buf.advance(len);
    }

    /// Reads from `stream` until at least one more byte arrived.
    /// Returns `Ok(false)` on a clean EOF.
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, stream: &mut R) -> std::io::Result<bool> {
        std::future::poll_fn(|cx| self.poll_fill(cx, stream)).await
    }

    /// [`FrameReader::fill`] as a poll function, so that one hand-written
    /// future can wait on several streams (the relay loop waits on the
    /// client and the backend) without a future per stream and per wait.
    pub fn poll_fill<R: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut R,
    ) -> Poll<std::io::Result<bool>> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 * 1024);
        }
        let read = tokio_util::io::poll_read_buf(Pin::new(stream), cx, &mut self.buf);
        // A `Pending` for want of coop budget registered no waker with the
        // stream (tokio re-polls the task instead): not waiting on it. A
        // `Pending` of the stream gave its unit of budget back.
        self.waiting = read.is_pending() && tokio::task::coop::has_budget_remaining();
        read.map_ok(|n| n > 0)
    }

    /// Whether the last `poll_fill` returned `Pending`, so that the stream
    /// holds the waker of the task that polled it until its readiness
    /// changes: a task that always reads its stream through this reader,
    /// and finds the stream still not readable (`Stream::known_unreadable`),
    /// need not poll it again to be woken.
    pub fn waiting(&self) -> bool {
        self.waiting
    }

    /// Reads until one frame is complete; `Ok(None)` on EOF between messages.
    pub async fn read_frame<R: AsyncRead + Unpin>(
        &mut self,
        stream: &mut R,
    ) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(f) = self.try_frame()? {
                return Ok(Some(f));
            }
            if !self.fill(stream).await? {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Reads an untagged startup-phase packet (length first).
    pub async fn read_startup_packet<R: AsyncRead + Unpin>(
        &mut self,
        stream: &mut R,
    ) -> Result<Option<Bytes>, ReadError> {
        loop {
            if self.buf.len() >= 4 {
                let len =
                    i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as i64;
                if !(8..=10_000).contains(&len) {
                    return Err(ProtocolError::BadLength(len).into());
                }
                if self.buf.len() >= len as usize {
                    let mut packet = self.buf.split_to(len as usize);
                    packet.advance(4);
                    return Ok(Some(packet.freeze()));
                }
            }
            if !self.fill(stream).await? {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }
}

/// Reading a frame fails either on the socket or on the bytes.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_gives_back_its_messages_in_order_and_is_reused() {
        let mut b = FrameBatch::default();
        assert!(b.is_empty() && b.last().is_none());
        b.push(b"P\0\0\0\x08\0\0\0\0");
        b.push(b"S\0\0\0\x04");
        let tags: Vec<u8> = b.iter().map(|f| f.tag()).collect();
        assert_eq!(tags, b"PS");
        assert_eq!(b.iter().next().unwrap().body(), b"\0\0\0\0");
        assert_eq!(b.last().unwrap().raw(), b"S\0\0\0\x04");
        b.clear();
        assert!(b.is_empty() && b.iter().next().is_none());
        b.push(b"H\0\0\0\x04");
        assert_eq!(b.last().unwrap().tag(), b'H');
        assert_eq!(b.iter().count(), 1);
        // Messages back to back go in with one copy, each still its own.
        b.clear();
        b.push(b"H\0\0\0\x04");
        b.push_run(b"B\0\0\0\x06abE\0\0\0\x04S\0\0\0\x04");
        let got: Vec<&[u8]> = b.iter().map(|f| f.raw()).collect();
        assert_eq!(
            got,
            [
                &b"H\0\0\0\x04"[..],
                b"B\0\0\0\x06ab",
                b"E\0\0\0\x04",
                b"S\0\0\0\x04"
            ]
        );
        // A large message's buffer is not kept.
        b.push(&vec![b'B'; KEPT_BATCH + 1]);
        b.clear();
        assert!(b.bytes.capacity() <= KEPT_BATCH && b.is_empty());
    }

    #[test]
    fn splits_pipelined_frames_and_waits_for_partial_ones() {
        let mut r = FrameReader::new(1024);
        r.buf
            .extend_from_slice(b"Q\0\0\0\x0dSELECT 1\0S\0\0\0\x04Q\0\0");
        assert_eq!(r.try_frame().unwrap().unwrap().body(), b"SELECT 1\0");
        assert_eq!(r.try_frame().unwrap().unwrap().tag(), b'S');
        assert!(r.try_frame().unwrap().is_none());
    }

    #[test]
    fn borrowed_frames_are_the_same_messages() {
        let mut r = FrameReader::new(1024);
        r.buf
            .extend_from_slice(b"Z\0\0\0\x05IC\0\0\0\x0dSELECT 1\0D\0");
        let n = r.next_len().unwrap().unwrap();
        let f = r.front(n);
        assert_eq!((f.tag(), f.body(), f.raw().len()), (b'Z', &b"I"[..], 6));
        r.consume(n);
        let n = r.next_len().unwrap().unwrap();
        assert_eq!(r.front(n).body(), b"SELECT 1\0");
        r.consume(n);
        assert_eq!(r.next_len().unwrap(), None);
        assert_eq!(r.buffered(), 2);
    }

    /// `waiting` means the stream holds the task's waker: after a
    /// `Pending` of the stream, not after one of tokio's coop budget.
    #[tokio::test]
    async fn waiting_only_when_the_stream_itself_is_pending() {
        use tokio::io::AsyncWriteExt;
        // More than tokio's budget of reads (128) of at most 16 KiB each.
        const READY: usize = 4 << 20;
        let (mut tx, mut rx) = tokio::io::duplex(READY);
        let mut r = FrameReader::new(1 << 20);
        std::future::poll_fn(|cx| {
            assert!(r.poll_fill(cx, &mut rx).is_pending());
            Poll::Ready(())
        })
        .await;
        assert!(r.waiting());
        // Data always ready: one poll of this task reads until its budget
        // runs out, and that `Pending` is not the stream's.
        tx.write_all(&vec![0u8; READY]).await.unwrap();
        let mut reads = 0;
        std::future::poll_fn(|cx| {
            while r.poll_fill(cx, &mut rx).is_ready() {
                r.buf.clear();
                reads += 1;
            }
            Poll::Ready(())
        })
        .await;
        assert!(
            reads < READY / (16 << 10),
            "stopped by the budget, not the data"
        );
        assert!(!r.waiting(), "a coop budget's Pending is not the stream's");
    }

    #[test]
    fn rejects_bad_and_oversized_lengths() {
        let mut r = FrameReader::new(64);
        r.buf.extend_from_slice(b"Q\0\0\0\x02");
        assert!(matches!(r.try_frame(), Err(ProtocolError::BadLength(2))));
        let mut r = FrameReader::new(64);
        r.buf.extend_from_slice(b"Q\x7f\xff\xff\xff");
        assert!(matches!(r.try_frame(), Err(ProtocolError::TooLarge(..))));
    }
}
