//! The proxy's own control-plane connection to the application database
//! (auth query, registry reads), made with tokio-postgres and re-established
//! on demand after the app DB restarts.

use std::sync::Arc;
use tokio::sync::Mutex;

/// A lazily (re)connected tokio-postgres client to the app DB.
pub struct AppDb {
    config: tokio_postgres::Config,
    client: Mutex<Option<Arc<tokio_postgres::Client>>>,
}

impl AppDb {
    pub fn new(url: &str) -> Result<AppDb, tokio_postgres::Error> {
        Ok(AppDb {
            config: url.parse()?,
            client: Mutex::new(None),
        })
    }

    /// A healthy client, connecting if there is none or the last one closed.
    pub async fn client(&self) -> Result<Arc<tokio_postgres::Client>, tokio_postgres::Error> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let (client, conn) = self.config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::warn!(error = %e, "app DB control connection closed");
            }
        });
        let client = Arc::new(client);
        *guard = Some(client.clone());
        Ok(client)
    }

    /// The connection settings (for tools that open their own connection, e.g. LISTEN).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }
}
