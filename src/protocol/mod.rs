//! The PostgreSQL v3 wire protocol, as far as the proxy needs it: framing of
//! tagged messages, the untagged startup packets, decoding of the few client
//! messages routing looks at, and encoding of the messages the proxy itself
//! answers with. No sockets and no SQL here.
//!
//! The proxy forwards original bytes; decoding borrows from the frame so the
//! hot path neither copies nor re-encodes.

pub mod backend;
pub mod frame;
pub mod frontend;
pub mod startup;

pub use frame::{Frame, FrameBatch, FrameReader, FrameRef, ProtocolError};
