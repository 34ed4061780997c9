//! Cancel keys: the client sees a proxy-minted (pid, secret); a CancelRequest
//! for it reaches the backend serving that client at that moment, and nothing else.

use crate::pool::DataSourcePool;
use dashmap::DashMap;
use std::sync::Arc;
use tokio::sync::Mutex;

/// The backend a client is using right now, if any.
#[derive(Clone)]
pub struct CancelTarget {
    pub pool: Arc<DataSourcePool>,
    pub key: (i32, i32),
}

/// One client's slot. The session sets it on attach and clears it *before*
/// giving the connection back, holding the lock; a cancel holds the same lock
/// while it is delivered, so it can never reach a connection another client got.
pub type CancelSlot = Arc<Mutex<Option<CancelTarget>>>;

/// All live clients' cancel keys.
#[derive(Default)]
pub struct CancelRegistry {
    slots: DashMap<i32, (i32, CancelSlot)>,
}

impl CancelRegistry {
    /// Mints a unique key for a new client and returns its slot.
    pub fn register(&self) -> ((i32, i32), CancelSlot) {
        loop {
            let pid: i32 = rand::random::<i32>() & 0x7fff_ffff;
            if pid == 0 {
                continue;
            }
            let secret: i32 = rand::random();
            let slot: CancelSlot = Arc::new(Mutex::new(None));
            match self.slots.entry(pid) {
                dashmap::mapref::entry::Entry::Occupied(_) => continue,
                dashmap::mapref::entry::Entry::Vacant(v) => {
                    v.insert((secret, slot.clone()));
                    return ((pid, secret), slot);
                }
            }
        }
    }

    pub fn unregister(&self, pid: i32) {
        self.slots.remove(&pid);
    }

    /// Delivers a client's CancelRequest; unknown keys are ignored silently,
    /// as PostgreSQL does.
    pub async fn cancel(&self, pid: i32, secret: i32) {
        let slot = match self.slots.get(&pid) {
            Some(e) if e.0 == secret => e.1.clone(),
            _ => {
                tracing::debug!(pid, "cancel request with unknown key ignored");
                return;
            }
        };
        let guard = slot.lock().await;
        if let Some(t) = guard.as_ref() {
            if let Err(e) = crate::pool::connect::send_cancel(&t.pool.url, t.key).await {
                tracing::warn!(backend = %t.pool.name, error = %e, "cancel delivery failed");
            }
        }
    }
}
