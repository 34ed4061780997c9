//! Reading tenant rows from the application DB into [`TenantRecord`]s.

use tokio_postgres::{Client, Row};

use crate::registry::crypto::SecretBox;
use crate::registry::error::{DataSourceError, Result};
use crate::registry::model::{DataSourceSpec, PoolSettings, TenantRecord, TenantStatus};

/// Column list shared by every loader. `id::text` lets the same code serve
/// legacy uuid ids and new text ids; JSON comes back as text so we need no
/// driver serde feature and can warn on (rather than fail at) bad JSON.
pub(crate) const TENANT_COLUMNS: &str = "id::text, name, subdomain, status, data_source_url, \
     data_source_password, data_source_region, connection_pool_config::text, \
     data_source_notes, tenant_id_in_data_source";

/// Loads every tenant. A tenant whose secret or URL is broken is still
/// returned, carrying the error, so one bad row never hides the rest.
pub async fn load_all(client: &Client, secrets: &SecretBox) -> Result<Vec<TenantRecord>> {
    let rows = client
        .query(
            &format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY id::text"),
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| decode_row(r, secrets)).collect())
}

/// Loads one tenant by id (as text); `None` if it no longer exists, which
/// the listener turns into a removal.
pub async fn load_one(
    client: &Client,
    secrets: &SecretBox,
    id: &str,
) -> Result<Option<TenantRecord>> {
    let row = client
        .query_opt(
            &format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id::text = $1"),
            &[&id],
        )
        .await?;
    Ok(row.map(|r| decode_row(&r, secrets)))
}

/// Turns one row into a record. Never fails: every problem becomes either
/// the `data_source` error or a warning.
pub(crate) fn decode_row(row: &Row, secrets: &SecretBox) -> TenantRecord {
    let text = |i: usize| -> Option<String> {
        row.get::<_, Option<String>>(i)
            .filter(|s| !s.trim().is_empty())
    };
    let mut warnings = Vec::new();
    let (status, w) = TenantStatus::from_db(row.get::<_, Option<String>>(3).as_deref());
    warnings.extend(w);

    let pool_json = match text(7).map(|t| serde_json::from_str::<serde_json::Value>(&t)) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => {
            warnings.push("connection_pool_config is not valid JSON; using defaults".into());
            None
        }
    };
    let (pool, w) = PoolSettings::from_json(pool_json.as_ref());
    warnings.extend(w);

    let data_source = decode_data_source(text(4), text(5), secrets, &mut warnings);

    TenantRecord {
        id: row.get::<_, Option<String>>(0).unwrap_or_default(),
        name: row.get::<_, Option<String>>(1).unwrap_or_default(),
        subdomain: row.get::<_, Option<String>>(2).unwrap_or_default(),
        status,
        data_source,
        pool,
        warnings,
        region: text(6),
        notes: text(8),
        tenant_id_in_data_source: text(9),
    }
}

fn decode_data_source(
    url: Option<String>,
    stored_password: Option<String>,
    secrets: &SecretBox,
    warnings: &mut Vec<String>,
) -> Result<DataSourceSpec, DataSourceError> {
    let url = url.ok_or(DataSourceError::NotConfigured)?;
    let parsed = DataSourceSpec::parse_url(&url)?;
    let mut spec = parsed.spec;
    match stored_password {
        // The encrypted column always wins over a password left in the URL.
        Some(enc) => {
            if parsed.had_password {
                warnings.push(
                    "data_source_url embeds a password that is ignored in favour of the \
                     encrypted column; remove it from the URL"
                        .into(),
                );
            }
            spec.password = Some(secrets.decrypt(&enc)?);
        }
        None if parsed.had_password => warnings.push(
            "data_source_url embeds a plaintext password; move it to the encrypted column \
             with `pgtenant tenant set --url`"
                .into(),
        ),
        None => {}
    }
    Ok(spec)
}
