//! The admin console: `psql -U <admin user> pgtenant`, simple protocol only.

use crate::net::Stream;
use crate::protocol::backend::{self as be, PgError, TxStatus};
use crate::protocol::FrameReader;
use crate::server::Shared;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// Serves one authenticated admin client until it leaves.
pub async fn run(
    stream: &mut Stream,
    reader: &mut FrameReader,
    shared: &Arc<Shared>,
    user: &str,
    key: (i32, i32),
) {
    let _ = (reader, shared, user);
    let mut out = Vec::new();
    out.extend_from_slice(&be::auth_ok());
    out.extend_from_slice(&be::backend_key_data(key.0, key.1));
    out.extend_from_slice(
        &PgError::fatal("0A000", "the admin console is not available yet").encode(),
    );
    let _ = stream.write_all(&out).await;
    let _ = TxStatus::Idle;
}
