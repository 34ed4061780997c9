//! Error types for the registry. None of them may carry a secret.

use crate::registry::crypto::CryptoError;

/// Why one tenant's data source is unusable.
///
/// Kept separate from [`RegistryError`] and `Clone` so it can live inside a
/// cached [`crate::registry::TenantRecord`]: a tenant with a broken secret
/// stays listed, with the reason, instead of vanishing from the registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataSourceError {
    /// `data_source_url` is NULL/empty: the tenant was never pointed at a data DB.
    #[error("no data source configured (data_source_url is empty)")]
    NotConfigured,
    /// The URL does not parse or is not a postgres URL; the reason never
    /// includes the URL itself, since it may embed a password.
    #[error("invalid data_source_url: {0}")]
    InvalidUrl(String),
    /// `data_source_password` could not be decrypted.
    #[error("data_source_password: {0}")]
    Decrypt(#[from] CryptoError),
}

/// Errors from loading, changing or testing tenants.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A database call failed. Displayed without the server's DETAIL line,
    /// because DETAIL can quote whole rows ("Failing row contains ...").
    #[error("database error: {}", db_summary(.0))]
    Db(#[source] tokio_postgres::Error),
    /// Key handling or a decryption failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// A tenant's data source is unusable.
    #[error("tenant {id}: {source}")]
    DataSource {
        /// Tenant id.
        id: String,
        /// Cause.
        source: DataSourceError,
    },
    /// No tenant with this id.
    #[error("tenant {0} not found")]
    NotFound(String),
    /// Caller input rejected before touching the database.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The app DB could not be reached (message names host and database, never the password).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// A connection test or operation exceeded its time limit.
    #[error("timed out: {0}")]
    Timeout(String),
}

impl From<tokio_postgres::Error> for RegistryError {
    fn from(e: tokio_postgres::Error) -> Self {
        RegistryError::Db(e)
    }
}

/// Short, row-free rendering of a driver error.
pub(crate) fn db_summary(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// Result alias used across the registry.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
