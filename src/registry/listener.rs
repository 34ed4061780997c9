//! Keeps a [`TenantRegistry`] in step with the app DB: LISTEN/NOTIFY for
//! near-instant propagation of single changes, plus a periodic full reload
//! as a safety net for anything a notification could miss (e.g. changes
//! made while we were disconnected).

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client};

use crate::clock::Metronome;
use crate::registry::cache::TenantRegistry;
use crate::registry::crypto::SecretBox;
use crate::registry::error::{RegistryError, Result};
use crate::registry::store;

/// The channel the app DB trigger notifies on (payload: tenant id as text).
pub const NOTIFY_CHANNEL: &str = "pgtenant_tenants";

const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Starts the background task that loads and then continuously syncs the
/// registry. It never gives up: if the app DB goes away the cached tenants
/// keep serving and the task reconnects with exponential backoff. Abort the
/// returned handle to stop it.
pub fn spawn_registry_sync(
    app_db_url: String,
    registry: Arc<TenantRegistry>,
    secrets: Arc<SecretBox>,
    refresh_every: Duration,
) -> JoinHandle<()> {
    let refresh = Metronome::new(refresh_every.max(Duration::from_millis(100)));
    tokio::spawn(async move {
        let target = describe_target(&app_db_url);
        let mut backoff = MIN_BACKOFF;
        loop {
            let mut connected = false;
            let res =
                sync_session(&app_db_url, &registry, &secrets, &refresh, &mut connected).await;
            registry.record_sync_error();
            match res {
                Err(e) => {
                    tracing::warn!(%target, error = %e, "tenant registry sync lost the app database; keeping cached tenants")
                }
                Ok(()) => {
                    tracing::warn!(%target, "tenant registry sync connection closed; keeping cached tenants")
                }
            }
            if connected {
                backoff = MIN_BACKOFF;
            }
            tracing::info!(%target, retry_in_ms = backoff.as_millis() as u64, "reconnecting tenant registry sync");
            crate::clock::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    })
}

/// A loggable description of the app DB (user@host:port/db), never the
/// password, since the URL given to us usually contains one.
fn describe_target(url: &str) -> String {
    match tokio_postgres::Config::from_str(url) {
        Ok(c) => {
            let host = match c.get_hosts().first() {
                Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
                #[cfg(unix)]
                Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
                None => "localhost".to_string(),
            };
            let port = c.get_ports().first().copied().unwrap_or(5432);
            format!(
                "{}@{}:{}/{}",
                c.get_user().unwrap_or("?"),
                host,
                port,
                c.get_dbname().unwrap_or("?")
            )
        }
        Err(_) => "<unparseable app database URL>".to_string(),
    }
}

/// Aborts the connection driver when a session ends, whichever way.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One connected period. Returns when the connection dies or a query fails.
async fn sync_session(
    url: &str,
    registry: &TenantRegistry,
    secrets: &SecretBox,
    refresh: &Metronome,
    connected: &mut bool,
) -> Result<()> {
    let (client, connection) = crate::pool::control::connect(url)
        .await
        .map_err(RegistryError::Connect)?;
    *connected = true;
    // None = payload-less notification, which means "reload everything".
    let (tx, mut rx) = mpsc::unbounded_channel::<Option<String>>();
    let _driver = AbortOnDrop(tokio::spawn(async move {
        // tokio-postgres only surfaces notifications to whoever polls the
        // Connection directly, hence driving it as a stream ourselves.
        let mut messages = connection;
        while let Some(msg) = messages.next().await {
            match msg {
                Ok(AsyncMessage::Notification(n)) if n.channel() == NOTIFY_CHANNEL => {
                    let payload = n.payload().trim();
                    let item = (!payload.is_empty()).then(|| payload.to_string());
                    if tx.send(item).is_err() {
                        break;
                    }
                }
                Ok(AsyncMessage::Notice(n)) => {
                    tracing::debug!(notice = %n.message(), "app database notice")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "app database connection error");
                    break;
                }
            }
        }
        // Dropping tx tells the session the connection is gone.
    }));

    // LISTEN before the full load: a change committed in between is then
    // both in the snapshot and notified, never in neither.
    client
        .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
        .await?;
    full_reload(&client, registry, secrets).await?;
    tracing::info!(tenants = registry.len(), "tenant registry loaded");

    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some(first) = msg else { return Ok(()) };
                // Coalesce a burst (e.g. rotate-key touching every row) into
                // one pass with each id loaded once.
                let mut ids = BTreeSet::new();
                let mut reload_all = false;
                let mut next = Some(first);
                loop {
                    registry.record_notification();
                    match next {
                        Some(Some(id)) => { ids.insert(id); }
                        Some(None) => reload_all = true,
                        None => {}
                    }
                    match rx.try_recv() {
                        Ok(item) => next = Some(item),
                        Err(_) => break,
                    }
                }
                if reload_all || ids.len() > 64 {
                    full_reload(&client, registry, secrets).await?;
                } else {
                    for id in ids {
                        reload_one(&client, registry, secrets, &id).await?;
                    }
                }
            }
            // A beat kept from before a reconnect costs one extra reload.
            _ = refresh.tick() => full_reload(&client, registry, secrets).await?,
        }
    }
}

async fn full_reload(
    client: &Client,
    registry: &TenantRegistry,
    secrets: &SecretBox,
) -> Result<()> {
    let records = store::load_all(client, secrets).await?;
    for r in &records {
        if let Err(e) = &r.data_source {
            tracing::warn!(tenant = %r.id, error = %e, "tenant data source unusable");
        }
    }
    registry.replace_all(records);
    Ok(())
}

async fn reload_one(
    client: &Client,
    registry: &TenantRegistry,
    secrets: &SecretBox,
    id: &str,
) -> Result<(), RegistryError> {
    match store::load_one(client, secrets, id).await? {
        Some(rec) => {
            if let Err(e) = &rec.data_source {
                tracing::warn!(tenant = %rec.id, error = %e, "tenant data source unusable");
            }
            if registry.upsert(rec) {
                tracing::info!(tenant = %id, "tenant updated from notification");
            }
        }
        None => {
            if registry.remove(id).is_some() {
                tracing::info!(tenant = %id, "tenant removed from notification");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_description_hides_password() {
        let d = describe_target("postgres://admin:hunter2@db.internal:6432/app");
        assert_eq!(d, "admin@db.internal:6432/app");
        let d = describe_target("host=h user=u password=hunter2 dbname=d");
        assert!(!d.contains("hunter2"));
        assert_eq!(
            describe_target("::not a url::"),
            "<unparseable app database URL>"
        );
    }
}
