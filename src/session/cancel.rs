//! Cancel keys: the client sees a proxy-minted (pid, secret); a CancelRequest
//! for it reaches the backend serving that client at that moment, and nothing else.

use crate::pool::DataSourcePool;
use dashmap::DashMap;
use std::sync::Arc;
use tokio::sync::Notify;

/// The backend a client is using right now, if any.
#[derive(Clone)]
pub struct CancelTarget {
    pub pool: Arc<DataSourcePool>,
    pub key: (i32, i32),
}

/// One client's slot: the backend to cancel, if the client is using one.
///
/// The session sets it on attach and clears it *before* giving the
/// connection back; clearing waits for cancels being delivered from the slot
/// to finish, so a cancel can never reach a connection another client got.
/// Setting and clearing take a plain mutex (twice per transaction, never
/// contended in practice); only a clear racing a delivery waits.
#[derive(Default)]
pub struct CancelSlot {
    state: std::sync::Mutex<SlotState>,
    /// Signalled when the last in-flight delivery ends.
    delivered: Notify,
}

#[derive(Default)]
struct SlotState {
    target: Option<CancelTarget>,
    /// Cancels read from this slot and not yet delivered.
    delivering: usize,
}

impl CancelSlot {
    /// The client now uses `target`'s backend.
    pub fn set(&self, target: CancelTarget) {
        self.lock().target = Some(target);
    }

    /// The client no longer uses a backend: returns once no cancel for the
    /// previous one can still be on its way.
    pub async fn clear(&self) {
        {
            let mut st = self.lock();
            st.target = None;
            if st.delivering == 0 {
                return;
            }
        }
        // A cancel is on its way to the connection we are about to give back.
        loop {
            let delivered = self.delivered.notified();
            tokio::pin!(delivered);
            // Registered before checking, so a delivery ending in between still wakes us.
            delivered.as_mut().enable();
            if self.lock().delivering == 0 {
                return;
            }
            delivered.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        // The critical sections cannot panic; recover the state regardless.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a cancel for the current target, if any.
    async fn deliver(&self) {
        let target = {
            let mut st = self.lock();
            let Some(t) = st.target.clone() else {
                return;
            };
            st.delivering += 1;
            t
        };
        // Counts the delivery done even if this future is dropped midway.
        struct Done<'a>(&'a CancelSlot);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                let mut st = self.0.lock();
                st.delivering -= 1;
                if st.delivering == 0 {
                    self.0.delivered.notify_waiters();
                }
            }
        }
        let _done = Done(self);
        if let Err(e) = crate::pool::connect::send_cancel(&target.pool.url, target.key).await {
            tracing::warn!(backend = %target.pool.name, error = %e, "cancel delivery failed");
        }
    }
}

/// All live clients' cancel keys.
#[derive(Default)]
pub struct CancelRegistry {
    slots: DashMap<i32, (i32, Arc<CancelSlot>)>,
}

impl CancelRegistry {
    /// Mints a unique key for a new client and returns its slot.
    pub fn register(&self) -> ((i32, i32), Arc<CancelSlot>) {
        loop {
            let pid: i32 = rand::random::<i32>() & 0x7fff_ffff;
            if pid == 0 {
                continue;
            }
            let secret: i32 = rand::random();
            let slot = Arc::new(CancelSlot::default());
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
        slot.deliver().await;
    }
}
