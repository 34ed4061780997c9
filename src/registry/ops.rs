//! The operations behind `pgtenant tenant ...`, `encrypt` and `rotate-key`.
//!
//! They return data and leave printing to the CLI, so the same code can back
//! an admin API later. Every write runs in one transaction that first sets
//! `pgtenant.actor`, which the audit trigger records as "who".
//!
//! The functions take `&Client` and issue BEGIN/COMMIT themselves, so the
//! client must not be shared with concurrent work during a call.

use std::fmt;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use crate::registry::crypto::{KeySlot, SecretBox};
use crate::registry::error::{RegistryError, Result};
use crate::registry::model::{
    merge_pool_json, DataSourceSpec, PoolMode, PoolSettings, TenantRecord, TenantStatus,
};
use crate::registry::store;
use crate::secret::Secret;

/// How long `test` waits for a data DB before giving up, so a firewalled
/// host fails fast instead of hanging the CLI.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Input to [`add`].
///
/// The URL is a [`Secret`] because operators paste it with the password
/// inside; `add` splits it so only the encrypted column ever holds it.
#[derive(Debug, Clone)]
pub struct NewTenant {
    /// Tenant id (text; cast to the column's type, so uuid tables work).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Routing subdomain: lowercase letters, digits and '-'.
    pub subdomain: String,
    /// `postgres://user:password@host:port/db?sslmode=...`.
    pub url_with_password: Secret,
    /// Initial `pool_size`, default when `None`.
    pub pool_size: Option<u32>,
    /// Initial pool mode, default (transaction) when `None`.
    pub mode: Option<PoolMode>,
    /// `data_source_region`.
    pub region: Option<String>,
    /// `data_source_notes`.
    pub notes: Option<String>,
    /// `tenant_id_in_data_source`, when it differs from `id`.
    pub tenant_id_in_data_source: Option<String>,
}

/// Input to [`set`]; `None` leaves a field alone.
///
/// For the optional text fields, `Some("")` clears the column.
#[derive(Debug, Clone, Default)]
pub struct TenantChanges {
    /// New display name.
    pub name: Option<String>,
    /// New subdomain.
    pub subdomain: Option<String>,
    /// New URL. If it embeds a password, that password replaces the stored
    /// one; otherwise the stored password is kept.
    pub url: Option<Secret>,
    /// New password alone (wins over one embedded in `url`).
    pub password: Option<Secret>,
    /// Keys merged into `connection_pool_config`; a JSON null removes a key.
    pub pool: Map<String, Value>,
    /// New region (`Some("")` clears).
    pub region: Option<String>,
    /// New notes (`Some("")` clears).
    pub notes: Option<String>,
    /// New id inside the data DB (`Some("")` clears).
    pub tenant_id_in_data_source: Option<String>,
}

/// Whether and how a tenant's password is stored, for `show`, which must
/// confirm a password exists without ever printing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordState {
    /// Column is NULL/empty.
    NotSet,
    /// Stored and decryptable with the current key.
    Set,
    /// Stored and decryptable, but only with the previous key: run rotate-key.
    SetWithPreviousKey,
    /// Stored but unreadable; the reason never includes the value.
    Unreadable(String),
}

impl fmt::Display for PasswordState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordState::NotSet => f.write_str("not set"),
            PasswordState::Set => f.write_str("set (encrypted)"),
            PasswordState::SetWithPreviousKey => {
                f.write_str("set (encrypted with the previous key; run rotate-key)")
            }
            PasswordState::Unreadable(e) => write!(f, "set (encrypted) but unreadable: {e}"),
        }
    }
}

/// Everything `tenant show` displays.
#[derive(Debug, Clone)]
pub struct TenantDetails {
    /// The decoded record (its password is a redacted [`Secret`]).
    pub record: TenantRecord,
    /// Password presence, never its value.
    pub password: PasswordState,
    /// Raw `connection_pool_config` JSON, including keys pgtenant ignores.
    pub pool_config_raw: Option<String>,
    /// `created_at` as PostgreSQL renders it.
    pub created_at: Option<String>,
    /// `updated_at` as PostgreSQL renders it.
    pub updated_at: Option<String>,
}

impl fmt::Display for TenantDetails {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.record;
        writeln!(f, "id: {}", r.id)?;
        writeln!(f, "name: {}", r.name)?;
        writeln!(f, "subdomain: {}", r.subdomain)?;
        writeln!(f, "status: {}", r.status)?;
        match &r.data_source {
            Ok(ds) => {
                writeln!(f, "url: {}", ds.url_without_password)?;
                writeln!(f, "pool key: {}", ds.pool_key())?;
                writeln!(f, "sslmode: {}", ds.sslmode)?;
            }
            Err(e) => writeln!(f, "data source error: {e}")?,
        }
        writeln!(f, "password: {}", self.password)?;
        let p = &r.pool;
        writeln!(
            f,
            "pool: size={} min_idle={} mode={} checkout_timeout_ms={} idle_timeout_ms={} max_lifetime_ms={} max_connections_per_tenant={}",
            p.pool_size,
            p.min_idle,
            p.mode.as_str(),
            p.checkout_timeout.as_millis(),
            p.idle_timeout.as_millis(),
            p.max_lifetime.as_millis(),
            p.max_connections_per_tenant
        )?;
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
        writeln!(f, "region: {}", opt(&r.region))?;
        writeln!(f, "tenant id in data source: {}", r.data_tenant_id())?;
        writeln!(f, "notes: {}", opt(&r.notes))?;
        writeln!(
            f,
            "created: {}  updated: {}",
            opt(&self.created_at),
            opt(&self.updated_at)
        )?;
        for w in &r.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

/// Result of a connectivity check against a tenant's data DB.
#[derive(Debug, Clone)]
pub struct TestReport {
    /// Connect plus `select version()` round trip.
    pub latency: Duration,
    /// `version()` output, to spot wrong servers and old majors.
    pub server_version: String,
}

/// Result of [`rotate_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RotateReport {
    /// Rows re-encrypted with the current key.
    pub rotated: usize,
    /// Of those, rows that were readable only with the previous key.
    pub were_on_previous_key: usize,
    /// Rows with no stored password (left alone).
    pub without_password: usize,
}

/// A default "who" for audit rows when the CLI is not told otherwise.
pub fn default_actor() -> String {
    let user = std::env::var("PGTENANT_ACTOR")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    format!("pgtenant-cli:{user}")
}

async fn begin(client: &Client, actor: &str) -> Result<()> {
    client.batch_execute("BEGIN").await?;
    if let Err(e) = client
        .execute("SELECT set_config('pgtenant.actor', $1, true)", &[&actor])
        .await
    {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(e.into());
    }
    Ok(())
}

async fn finish<T>(client: &Client, res: Result<T>) -> Result<T> {
    match res {
        Ok(v) => {
            client.batch_execute("COMMIT").await?;
            Ok(v)
        }
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// SQL type of `tenants.id`, so text input can be cast to uuid (or
/// whatever legacy type) explicitly; the name comes from the catalog, not
/// from user input.
async fn id_type(client: &Client) -> Result<String> {
    let row = client
        .query_one(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = 'tenants'::regclass AND attname = 'id'",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

fn check_subdomain(s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(RegistryError::Invalid(
            "subdomain must be 1-63 lowercase letters, digits or '-', not starting or ending with '-'"
                .into(),
        ))
    }
}

fn nonempty(field: &str, v: &str) -> Result<()> {
    if v.trim().is_empty() {
        Err(RegistryError::Invalid(format!("{field} must not be empty")))
    } else {
        Ok(())
    }
}

/// Splits an operator-supplied URL into its stored form and an optional
/// encrypted password.
fn split_url(secrets: &SecretBox, url: &Secret) -> Result<(String, Option<String>)> {
    let parsed = DataSourceSpec::parse_url(url.expose())
        .map_err(|e| RegistryError::Invalid(e.to_string()))?;
    let enc = parsed
        .spec
        .password
        .as_ref()
        .map(|p| secrets.encrypt(p.expose()))
        .transpose()?;
    Ok((parsed.spec.url_without_password.clone(), enc))
}

fn opt_text(v: &Option<String>) -> Option<String> {
    v.as_ref()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Registers a tenant. The password embedded in the URL is encrypted here
/// and stored in `data_source_password`; the URL is stored without it.
pub async fn add(
    client: &Client,
    secrets: &SecretBox,
    new: NewTenant,
    actor: &str,
) -> Result<TenantRecord> {
    nonempty("id", &new.id)?;
    nonempty("name", &new.name)?;
    check_subdomain(&new.subdomain)?;
    let (url, enc_password) = split_url(secrets, &new.url_with_password)?;
    let mut pool = Map::new();
    if let Some(n) = new.pool_size {
        pool.insert("pool_size".into(), Value::from(n));
    }
    if let Some(m) = new.mode {
        pool.insert("mode".into(), Value::from(m.as_str()));
    }
    let pool = Value::Object(pool);
    PoolSettings::validate_json(&pool).map_err(RegistryError::Invalid)?;
    let pool_text = pool.to_string();
    let region = opt_text(&new.region);
    let notes = opt_text(&new.notes);
    let tid = opt_text(&new.tenant_id_in_data_source);

    let idt = id_type(client).await?;
    begin(client, actor).await?;
    let res = async {
        client
            .execute(
                &format!(
                    "INSERT INTO tenants (id, name, subdomain, status, data_source_url, \
                     data_source_password, connection_pool_config, data_source_region, \
                     data_source_notes, tenant_id_in_data_source) \
                     VALUES ($1::text::{idt}, $2, $3, 'active', $4, $5, $6::text::jsonb, $7, $8, $9)"
                ),
                &[&new.id, &new.name, &new.subdomain, &url, &enc_password, &pool_text, &region, &notes, &tid],
            )
            .await?;
        Ok(())
    }
    .await;
    finish(client, res).await?;
    store::load_one(client, secrets, &new.id)
        .await?
        .ok_or_else(|| RegistryError::NotFound(new.id.clone()))
}

/// All tenants, including ones whose data source is broken.
pub async fn list(client: &Client, secrets: &SecretBox) -> Result<Vec<TenantRecord>> {
    store::load_all(client, secrets).await
}

/// One tenant with password *status* only.
pub async fn show(client: &Client, secrets: &SecretBox, id: &str) -> Result<TenantDetails> {
    let row = client
        .query_opt(
            "SELECT data_source_password, connection_pool_config::text, created_at::text, updated_at::text \
             FROM tenants WHERE id::text = $1",
            &[&id],
        )
        .await?
        .ok_or_else(|| RegistryError::NotFound(id.to_string()))?;
    let stored: Option<String> = row.get(0);
    let password = match stored.filter(|s| !s.trim().is_empty()) {
        None => PasswordState::NotSet,
        Some(s) => match secrets.decrypt_with_slot(&s) {
            Ok((_, KeySlot::Current)) => PasswordState::Set,
            Ok((_, KeySlot::Previous)) => PasswordState::SetWithPreviousKey,
            Err(e) => PasswordState::Unreadable(e.to_string()),
        },
    };
    let record = store::load_one(client, secrets, id)
        .await?
        .ok_or_else(|| RegistryError::NotFound(id.to_string()))?;
    Ok(TenantDetails {
        record,
        password,
        pool_config_raw: row.get(1),
        created_at: row.get(2),
        updated_at: row.get(3),
    })
}

/// Applies [`TenantChanges`] in one transaction and returns the new record.
pub async fn set(
    client: &Client,
    secrets: &SecretBox,
    id: &str,
    changes: TenantChanges,
    actor: &str,
) -> Result<TenantRecord> {
    let mut sets: Vec<String> = Vec::new();
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let mut push = |col: &str, cast: &str, v: Option<String>| {
        params.push(Box::new(v));
        sets.push(format!("{col} = ${}{cast}", params.len()));
    };
    if let Some(n) = &changes.name {
        nonempty("name", n)?;
        push("name", "", Some(n.trim().to_string()));
    }
    if let Some(s) = &changes.subdomain {
        check_subdomain(s)?;
        push("subdomain", "", Some(s.clone()));
    }
    let mut new_password = None;
    if let Some(u) = &changes.url {
        let (url, enc) = split_url(secrets, u)?;
        push("data_source_url", "", Some(url));
        new_password = enc;
    }
    if let Some(p) = &changes.password {
        new_password = if p.is_empty() {
            None
        } else {
            Some(secrets.encrypt(p.expose())?)
        };
        if p.is_empty() {
            // An explicit empty password means "remove it" (trust auth).
            push("data_source_password", "", None);
        }
    }
    if let Some(enc) = new_password {
        push("data_source_password", "", Some(enc));
    }
    for (col, v) in [
        ("data_source_region", &changes.region),
        ("data_source_notes", &changes.notes),
        (
            "tenant_id_in_data_source",
            &changes.tenant_id_in_data_source,
        ),
    ] {
        if v.is_some() {
            push(col, "", opt_text(v));
        }
    }
    if sets.is_empty() && changes.pool.is_empty() {
        return Err(RegistryError::Invalid("nothing to change".into()));
    }

    begin(client, actor).await?;
    let res = async {
        let row = client
            .query_opt(
                "SELECT connection_pool_config::text FROM tenants WHERE id::text = $1 FOR UPDATE",
                &[&id],
            )
            .await?
            .ok_or_else(|| RegistryError::NotFound(id.to_string()))?;
        if !changes.pool.is_empty() {
            let existing: Option<String> = row.get(0);
            let existing = existing.and_then(|t| serde_json::from_str(&t).ok());
            let merged = merge_pool_json(existing, &changes.pool);
            PoolSettings::validate_json(&merged).map_err(RegistryError::Invalid)?;
            params.push(Box::new(Some(merged.to_string())));
            sets.push(format!(
                "connection_pool_config = ${}::text::jsonb",
                params.len()
            ));
        }
        params.push(Box::new(id.to_string()));
        let sql = format!(
            "UPDATE tenants SET {} WHERE id::text = ${}",
            sets.join(", "),
            params.len()
        );
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
        client.execute(&sql, &refs).await?;
        Ok(())
    }
    .await;
    finish(client, res).await?;
    store::load_one(client, secrets, id)
        .await?
        .ok_or_else(|| RegistryError::NotFound(id.to_string()))
}

async fn set_status(client: &Client, id: &str, status: TenantStatus, actor: &str) -> Result<()> {
    begin(client, actor).await?;
    let res = async {
        let n = client
            .execute(
                "UPDATE tenants SET status = $1 WHERE id::text = $2",
                &[&status.as_str(), &id],
            )
            .await?;
        if n == 0 {
            return Err(RegistryError::NotFound(id.to_string()));
        }
        Ok(())
    }
    .await;
    finish(client, res).await
}

/// Stops routing a tenant; the NOTIFY trigger makes proxies react at once.
pub async fn suspend(client: &Client, id: &str, actor: &str) -> Result<()> {
    set_status(client, id, TenantStatus::Suspended, actor).await
}

/// Re-enables a suspended tenant.
pub async fn resume(client: &Client, id: &str, actor: &str) -> Result<()> {
    set_status(client, id, TenantStatus::Active, actor).await
}

/// Deletes a tenant row (its data DB is untouched).
pub async fn remove(client: &Client, id: &str, actor: &str) -> Result<()> {
    begin(client, actor).await?;
    let res = async {
        let n = client
            .execute("DELETE FROM tenants WHERE id::text = $1", &[&id])
            .await?;
        if n == 0 {
            return Err(RegistryError::NotFound(id.to_string()));
        }
        Ok(())
    }
    .await;
    finish(client, res).await
}

/// Connects to the tenant's data DB with its decrypted credentials and runs
/// `select version()`: proves URL, password and network path end to end.
pub async fn test(record: &TenantRecord) -> Result<TestReport> {
    let spec = record
        .data_source
        .as_ref()
        .map_err(|e| RegistryError::DataSource {
            id: record.id.clone(),
            source: e.clone(),
        })?;
    test_spec(spec).await
}

/// [`fn@test`] for a bare spec (e.g. before the tenant is saved).
pub async fn test_spec(spec: &DataSourceSpec) -> Result<TestReport> {
    let url = spec.backend_url();
    let started = Instant::now();
    let work = async {
        let (client, connection) = crate::pool::control::connect_url(&url)
            .await
            .map_err(RegistryError::Connect)?;
        crate::pool::control::spawn_driver(connection);
        let row = client.query_one("select version()", &[]).await;
        drop(client);
        Ok::<_, RegistryError>(row?.get::<_, String>(0))
    };
    let server_version = crate::clock::timeout(TEST_TIMEOUT, work)
        .await
        .map_err(|_| RegistryError::Timeout(format!("connecting to {}", spec.pool_key())))??;
    Ok(TestReport {
        latency: started.elapsed(),
        server_version,
    })
}

/// `pgtenant encrypt`: produces a value for `data_source_password` in the
/// Node-compatible format, for operators writing rows by hand.
pub fn encrypt(secrets: &SecretBox, plaintext: &Secret) -> Result<String> {
    Ok(secrets.encrypt(plaintext.expose())?)
}

/// Re-encrypts every stored password with the current key, in one
/// transaction: either every row moves to the new key or none does, so the
/// previous key can be retired safely afterwards. Any row that cannot be
/// decrypted with either key aborts the whole rotation.
pub async fn rotate_key(client: &Client, secrets: &SecretBox, actor: &str) -> Result<RotateReport> {
    begin(client, actor).await?;
    let res = async {
        let rows = client
            .query(
                "SELECT id::text, data_source_password FROM tenants ORDER BY id::text FOR UPDATE",
                &[],
            )
            .await?;
        let mut report = RotateReport::default();
        let mut updates = Vec::new();
        let mut failures = Vec::new();
        for row in &rows {
            let id: String = row.get(0);
            let stored: Option<String> = row.get(1);
            let Some(stored) = stored.filter(|s| !s.trim().is_empty()) else {
                report.without_password += 1;
                continue;
            };
            match secrets.decrypt_with_slot(&stored) {
                Ok((plain, slot)) => {
                    if slot == KeySlot::Previous {
                        report.were_on_previous_key += 1;
                    }
                    updates.push((id, secrets.encrypt(plain.expose())?));
                }
                Err(e) => failures.push(format!("{id}: {e}")),
            }
        }
        if !failures.is_empty() {
            return Err(RegistryError::Invalid(format!(
                "rotation aborted, nothing changed; fix these tenants first: {}",
                failures.join("; ")
            )));
        }
        let stmt = client
            .prepare("UPDATE tenants SET data_source_password = $1 WHERE id::text = $2")
            .await?;
        for (id, enc) in &updates {
            client.execute(&stmt, &[enc, id]).await?;
        }
        report.rotated = updates.len();
        Ok(report)
    }
    .await;
    finish(client, res).await
}
