//! The in-memory tenant cache the proxy consults on every new session.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::broadcast;

use crate::registry::error::DataSourceError;
use crate::registry::model::TenantRecord;

/// What happened to a tenant; sent to subscribers so the pool layer can,
/// for example, close a suspended tenant's idle connections or drop a pool
/// whose URL changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantChange {
    /// The tenant is new or any of its fields changed.
    Upserted {
        /// Tenant id.
        id: String,
    },
    /// The tenant no longer exists.
    Removed {
        /// Tenant id.
        id: String,
    },
}

impl TenantChange {
    /// The affected tenant id.
    pub fn id(&self) -> &str {
        match self {
            TenantChange::Upserted { id } | TenantChange::Removed { id } => id,
        }
    }
}

/// Point-in-time counters for `/metrics` and health output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegistryStats {
    /// Tenants currently cached.
    pub tenants_loaded: u64,
    /// Full reloads completed.
    pub reloads: u64,
    /// NOTIFY messages received.
    pub notifications: u64,
    /// Records whose password failed to decrypt, counted per load.
    pub decrypt_failures: u64,
    /// Failed connects/queries against the app DB by the sync task.
    pub sync_errors: u64,
    /// Bumped on every change; cheap staleness check for callers.
    pub generation: u64,
}

#[derive(Default)]
struct Maps {
    by_id: HashMap<String, Arc<TenantRecord>>,
    /// Lower-cased subdomain -> id. Subdomains are host names, which are
    /// case-insensitive.
    by_subdomain: HashMap<String, String>,
}

/// Shared, concurrently readable cache of all tenants.
///
/// A plain `RwLock<HashMap>` is enough: reads take an uncontended read lock
/// and clone an `Arc`, writes are rare (admin changes) and short. A full
/// reload swaps both maps under one write lock so readers never see a
/// half-replaced registry.
pub struct TenantRegistry {
    maps: RwLock<Maps>,
    generation: AtomicU64,
    loaded: AtomicBool,
    reloads: AtomicU64,
    notifications: AtomicU64,
    decrypt_failures: AtomicU64,
    sync_errors: AtomicU64,
    changes: broadcast::Sender<TenantChange>,
}

impl Default for TenantRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for TenantRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantRegistry")
            .field("stats", &self.stats())
            .field("loaded", &self.is_loaded())
            .finish_non_exhaustive()
    }
}

fn is_decrypt_failure(r: &TenantRecord) -> bool {
    matches!(r.data_source, Err(DataSourceError::Decrypt(_)))
}

fn sub_key(s: &str) -> String {
    s.trim().to_ascii_lowercase()
}

impl TenantRegistry {
    /// An empty, not-yet-loaded registry.
    pub fn new() -> Self {
        let (changes, _) = broadcast::channel(1024);
        TenantRegistry {
            maps: RwLock::new(Maps::default()),
            generation: AtomicU64::new(0),
            loaded: AtomicBool::new(false),
            reloads: AtomicU64::new(0),
            notifications: AtomicU64::new(0),
            decrypt_failures: AtomicU64::new(0),
            sync_errors: AtomicU64::new(0),
            changes,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Maps> {
        // A panic while holding the lock leaves the maps consistent (all
        // mutations are single inserts/swaps), so poisoning is ignored.
        self.maps.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Maps> {
        self.maps.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Hot-path lookup by tenant id.
    pub fn get(&self, id: &str) -> Option<Arc<TenantRecord>> {
        self.read().by_id.get(id).cloned()
    }

    /// Hot-path lookup by subdomain (case-insensitive).
    pub fn by_subdomain(&self, sub: &str) -> Option<Arc<TenantRecord>> {
        let maps = self.read();
        let id = maps.by_subdomain.get(&sub_key(sub))?;
        maps.by_id.get(id).cloned()
    }

    /// Every tenant, sorted by id, for listings and health checks.
    pub fn all(&self) -> Vec<Arc<TenantRecord>> {
        let mut v: Vec<_> = self.read().by_id.values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Number of cached tenants.
    pub fn len(&self) -> usize {
        self.read().by_id.len()
    }

    /// Whether no tenant is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Readiness: true once a full load has succeeded, so a proxy can refuse
    /// traffic rather than answer "unknown tenant" during startup.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Changes since process start; compare two readings to detect churn.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Receives a [`TenantChange`] for every tenant that actually changed.
    /// A lagging receiver gets `RecvError::Lagged` and should rescan `all()`.
    pub fn subscribe(&self) -> broadcast::Receiver<TenantChange> {
        self.changes.subscribe()
    }

    /// Swaps in a complete snapshot and notifies subscribers of the
    /// difference (only tenants that changed or vanished), so a periodic
    /// refresh that finds nothing new causes no pool churn.
    pub fn replace_all(&self, records: Vec<TenantRecord>) {
        let failures = records.iter().filter(|r| is_decrypt_failure(r)).count() as u64;
        let mut new_maps = Maps::default();
        for r in records {
            new_maps
                .by_subdomain
                .insert(sub_key(&r.subdomain), r.id.clone());
            new_maps.by_id.insert(r.id.clone(), Arc::new(r));
        }
        let mut events = Vec::new();
        {
            let mut maps = self.write();
            for (id, rec) in &mut new_maps.by_id {
                match maps.by_id.get(id) {
                    // Keep the old Arc when unchanged so holders compare equal by pointer too.
                    Some(old) if **old == **rec => *rec = old.clone(),
                    _ => events.push(TenantChange::Upserted { id: id.clone() }),
                }
            }
            for id in maps.by_id.keys() {
                if !new_maps.by_id.contains_key(id) {
                    events.push(TenantChange::Removed { id: id.clone() });
                }
            }
            *maps = new_maps;
            if !events.is_empty() {
                self.generation.fetch_add(1, Ordering::AcqRel);
            }
        }
        self.decrypt_failures.fetch_add(failures, Ordering::Relaxed);
        self.reloads.fetch_add(1, Ordering::Relaxed);
        self.loaded.store(true, Ordering::Release);
        for e in events {
            // No receivers is fine: nobody needs to react.
            let _ = self.changes.send(e);
        }
    }

    /// Inserts or replaces one tenant; returns whether anything changed.
    pub fn upsert(&self, record: TenantRecord) -> bool {
        if is_decrypt_failure(&record) {
            self.decrypt_failures.fetch_add(1, Ordering::Relaxed);
        }
        let id = record.id.clone();
        {
            let mut maps = self.write();
            if let Some(old) = maps.by_id.get(&id) {
                if **old == record {
                    return false;
                }
                let old_sub = sub_key(&old.subdomain);
                if maps.by_subdomain.get(&old_sub) == Some(&id) {
                    maps.by_subdomain.remove(&old_sub);
                }
            }
            maps.by_subdomain
                .insert(sub_key(&record.subdomain), id.clone());
            maps.by_id.insert(id.clone(), Arc::new(record));
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        let _ = self.changes.send(TenantChange::Upserted { id });
        true
    }

    /// Drops a tenant; returns the removed record if it was cached.
    pub fn remove(&self, id: &str) -> Option<Arc<TenantRecord>> {
        let removed = {
            let mut maps = self.write();
            let rec = maps.by_id.remove(id)?;
            let sub = sub_key(&rec.subdomain);
            if maps.by_subdomain.get(&sub).map(String::as_str) == Some(id) {
                maps.by_subdomain.remove(&sub);
            }
            self.generation.fetch_add(1, Ordering::AcqRel);
            rec
        };
        let _ = self
            .changes
            .send(TenantChange::Removed { id: id.to_string() });
        Some(removed)
    }

    /// Counts a received NOTIFY (called by the listener).
    pub fn record_notification(&self) {
        self.notifications.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed sync attempt (called by the listener).
    pub fn record_sync_error(&self) {
        self.sync_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Snapshot of the counters.
    pub fn stats(&self) -> RegistryStats {
        RegistryStats {
            tenants_loaded: self.len() as u64,
            reloads: self.reloads.load(Ordering::Relaxed),
            notifications: self.notifications.load(Ordering::Relaxed),
            decrypt_failures: self.decrypt_failures.load(Ordering::Relaxed),
            sync_errors: self.sync_errors.load(Ordering::Relaxed),
            generation: self.generation(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::model::{PoolSettings, TenantStatus};

    fn rec(id: &str, sub: &str) -> TenantRecord {
        TenantRecord {
            id: id.into(),
            name: id.into(),
            subdomain: sub.into(),
            status: TenantStatus::Active,
            data_source: Err(DataSourceError::NotConfigured),
            pool: PoolSettings::default(),
            warnings: vec![],
            region: None,
            notes: None,
            tenant_id_in_data_source: None,
        }
    }

    #[test]
    fn upsert_remove_and_events() {
        let reg = TenantRegistry::new();
        let mut rx = reg.subscribe();
        assert!(!reg.is_loaded());
        reg.replace_all(vec![rec("a", "Acme"), rec("b", "beta")]);
        assert!(reg.is_loaded());
        assert_eq!(reg.by_subdomain("acme").unwrap().id, "a");
        let g = reg.generation();
        reg.replace_all(vec![rec("a", "Acme"), rec("b", "beta")]);
        assert_eq!(reg.generation(), g, "identical reload is not a change");
        assert!(!reg.upsert(rec("a", "Acme")));
        assert!(reg.upsert(rec("a", "acme2")));
        assert!(reg.by_subdomain("acme").is_none());
        assert_eq!(reg.get("a").unwrap().subdomain, "acme2");
        assert!(reg.remove("b").is_some());
        assert!(reg.remove("b").is_none());
        reg.replace_all(vec![rec("c", "c")]);
        let mut got = vec![];
        while let Ok(e) = rx.try_recv() {
            got.push(e);
        }
        assert_eq!(got.len(), 2 + 1 + 1 + 2, "{got:?}");
        assert_eq!(got[2], TenantChange::Upserted { id: "a".into() });
        assert_eq!(got[3], TenantChange::Removed { id: "b".into() });
        assert_eq!(reg.stats().tenants_loaded, 1);
        assert_eq!(reg.stats().reloads, 3);
    }
}
