//! Tenant registry: which tenants exist, where each one's data lives, and
//! how to reach it — loaded from the application DB's `tenants` table,
//! cached in memory for the proxy's hot path, and kept fresh via
//! LISTEN/NOTIFY.
//!
//! Layout: [`crypto`] (Node-compatible AES-256-GCM), [`model`] (decoded
//! records), [`store`] (SQL loading), [`cache`] (the in-memory registry),
//! [`listener`] (background sync), [`ops`] (CLI operations).

pub mod cache;
pub mod crypto;
pub mod error;
pub mod listener;
pub mod model;
pub mod ops;

pub mod store;

pub use crate::secret::Secret;
pub use cache::{RegistryStats, TenantChange, TenantRegistry};
pub use crypto::{CryptoError, KeySlot, SecretBox};
pub use error::{DataSourceError, RegistryError, Result};
pub use listener::{spawn_registry_sync, NOTIFY_CHANNEL};
pub use model::{DataSourceSpec, PoolMode, PoolSettings, TenantRecord, TenantStatus};
pub use store::{load_all, load_one};
