//! The proxy's own control-plane connection to the application database
//! (auth query, registry reads), made with tokio-postgres and re-established
//! on demand after the app DB restarts.

use std::sync::Arc;
use tokio::sync::Mutex;

/// A lazily (re)connected tokio-postgres client to the app DB.
pub struct AppDb {
    url: crate::pool::BackendUrl,
    client: Mutex<Option<Arc<tokio_postgres::Client>>>,
}

impl AppDb {
    pub fn new(url: &str) -> Result<AppDb, String> {
        Ok(AppDb {
            url: crate::pool::BackendUrl::parse(url)?,
            client: Mutex::new(None),
        })
    }

    /// A healthy client, connecting if there is none or the last one closed.
    pub async fn client(&self) -> Result<Arc<tokio_postgres::Client>, String> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let (client, conn) = crate::pool::control::connect_url(&self.url).await?;
        crate::pool::control::spawn_driver(conn);
        let client = Arc::new(client);
        *guard = Some(client.clone());
        Ok(client)
    }
}
