//! The auth query: who a login is, which verifier it has, which tenants it may use.

use crate::appdb::AppDb;
use std::sync::Arc;

/// What the app DB says about a login.
#[derive(Clone)]
pub struct UserRecord {
    /// The stored verifier text (SCRAM / md5 / bcrypt).
    pub password: String,
    /// Tenant ids the user may use; `None` = every tenant (a service account).
    pub tenants: Option<Vec<String>>,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("password", &"<redacted>")
            .field("tenants", &self.tenants)
            .finish()
    }
}

/// Runs `auth.query` on the app DB.
pub struct AuthQuery {
    sql: String,
    app_db: Arc<AppDb>,
}

impl AuthQuery {
    pub fn new(sql: String, app_db: Arc<AppDb>) -> AuthQuery {
        AuthQuery { sql, app_db }
    }

    /// `Ok(None)` for an unknown login; `Err` when the app DB cannot answer.
    pub async fn lookup(&self, user: &str) -> Result<Option<UserRecord>, String> {
        let client = self.app_db.client().await?;
        let rows = client
            .query(self.sql.as_str(), &[&user])
            .await
            .map_err(|e| e.to_string())?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let password: Option<String> = row.try_get("password").map_err(|e| e.to_string())?;
        let tenants: Option<Vec<Option<String>>> =
            row.try_get("tenants").map_err(|e| e.to_string())?;
        Ok(password.map(|password| UserRecord {
            password,
            tenants: tenants.map(|t| t.into_iter().flatten().collect()),
        }))
    }
}
