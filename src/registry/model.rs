//! The in-memory shape of a tenant row, decoded and validated once at load
//! time so the proxy's hot path never parses JSON, URLs or ciphertext.

use serde_json::{Map, Value};
use std::time::Duration;

use crate::registry::error::DataSourceError;
use crate::secret::Secret;

/// Whether the proxy should route a tenant's traffic at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TenantStatus {
    /// Route normally.
    Active,
    /// Refuse new sessions; the pool layer should also close idle ones.
    Suspended,
}

impl TenantStatus {
    /// The value stored in `tenants.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
        }
    }

    /// Maps a stored status. NULL means the column default ('active');
    /// anything unrecognised (legacy values like 'inactive') fails closed to
    /// `Suspended` and is reported, so a typo never opens access.
    pub fn from_db(value: Option<&str>) -> (TenantStatus, Option<String>) {
        match value.map(str::trim) {
            None | Some("active") => (TenantStatus::Active, None),
            Some("suspended") => (TenantStatus::Suspended, None),
            Some(other) => (
                TenantStatus::Suspended,
                Some(format!("unknown status {other:?}; treated as suspended")),
            ),
        }
    }
}

impl std::fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How server connections are shared between client sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolMode {
    /// A server connection is held only for one transaction (pgbouncer-style).
    Transaction,
    /// A server connection is held for the whole client session; needed by
    /// apps using session state (prepared statements, advisory locks, SET).
    Session,
}

impl PoolMode {
    /// The value stored in `connection_pool_config.mode`.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Transaction => "transaction",
            PoolMode::Session => "session",
        }
    }

    /// Parses the stored/CLI spelling (case-insensitive).
    pub fn parse(s: &str) -> Option<PoolMode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "transaction" => Some(PoolMode::Transaction),
            "session" => Some(PoolMode::Session),
            _ => None,
        }
    }
}

/// Per-tenant pool limits, decoded from `connection_pool_config`.
///
/// Exists so one noisy tenant cannot exhaust a shared data DB: the pool
/// layer sizes each tenant's pool from these values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Maximum server connections in this tenant's pool.
    pub pool_size: u32,
    /// Connections kept open even when idle.
    pub min_idle: u32,
    /// Transaction or session pooling.
    pub mode: PoolMode,
    /// How long a client waits for a free connection before an error.
    pub checkout_timeout: Duration,
    /// Idle connections older than this are closed.
    pub idle_timeout: Duration,
    /// Connections are recycled after this age regardless of use.
    pub max_lifetime: Duration,
    /// Hard cap on connections for this tenant across all pools it uses
    /// (defaults to `pool_size`).
    pub max_connections_per_tenant: u32,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            pool_size: 10,
            min_idle: 0,
            mode: PoolMode::Transaction,
            checkout_timeout: Duration::from_millis(5_000),
            idle_timeout: Duration::from_millis(600_000),
            max_lifetime: Duration::from_millis(1_800_000),
            max_connections_per_tenant: 10,
        }
    }
}

/// Keys of `connection_pool_config` that pgtenant understands.
pub const POOL_CONFIG_KEYS: &[&str] = &[
    "pool_size",
    "min_idle",
    "mode",
    "checkout_timeout_ms",
    "idle_timeout_ms",
    "max_lifetime_ms",
    "max_connections_per_tenant",
];

impl PoolSettings {
    /// Lenient decode used when loading: unknown keys are ignored (the Node
    /// app may store its own), and a bad value falls back to its default
    /// with a warning rather than taking the tenant offline.
    pub fn from_json(value: Option<&Value>) -> (PoolSettings, Vec<String>) {
        let mut s = PoolSettings::default();
        let mut warnings = Vec::new();
        let obj = match value {
            None | Some(Value::Null) => return (s, warnings),
            Some(Value::Object(o)) => o,
            Some(_) => {
                warnings.push("connection_pool_config is not a JSON object; using defaults".into());
                return (s, warnings);
            }
        };
        let mut explicit_max = None;
        for key in POOL_CONFIG_KEYS {
            let Some(v) = obj.get(*key) else { continue };
            if v.is_null() {
                continue;
            }
            if let Err(e) = apply_key(&mut s, &mut explicit_max, key, v) {
                warnings.push(format!("connection_pool_config.{key}: {e}; using default"));
            }
        }
        s.max_connections_per_tenant = explicit_max.unwrap_or(s.pool_size);
        if s.min_idle > s.pool_size {
            warnings.push(format!(
                "connection_pool_config.min_idle {} exceeds pool_size {}; clamped",
                s.min_idle, s.pool_size
            ));
            s.min_idle = s.pool_size;
        }
        (s, warnings)
    }

    /// Strict check used by `tenant add/set`, so operators find mistakes
    /// when they make them instead of as a load-time warning.
    pub fn validate_json(value: &Value) -> Result<PoolSettings, String> {
        let (s, warnings) = PoolSettings::from_json(Some(value));
        if warnings.is_empty() {
            Ok(s)
        } else {
            Err(warnings.join("; "))
        }
    }
}

fn apply_key(
    s: &mut PoolSettings,
    explicit_max: &mut Option<u32>,
    key: &str,
    v: &Value,
) -> Result<(), String> {
    if key == "mode" {
        let m = v
            .as_str()
            .and_then(PoolMode::parse)
            .ok_or("expected \"transaction\" or \"session\"")?;
        s.mode = m;
        return Ok(());
    }
    // Accept integers given as JSON strings too: hand-edited JSON often has them.
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(t) => t.trim().parse::<u64>().ok(),
        _ => None,
    }
    .ok_or("expected a non-negative integer")?;
    let small = || u32::try_from(n).map_err(|_| "value too large".to_string());
    match key {
        "pool_size" => {
            if n == 0 {
                return Err("must be at least 1".into());
            }
            s.pool_size = small()?;
        }
        "min_idle" => s.min_idle = small()?,
        "max_connections_per_tenant" => {
            if n == 0 {
                return Err("must be at least 1".into());
            }
            *explicit_max = Some(small()?);
        }
        "checkout_timeout_ms" => s.checkout_timeout = Duration::from_millis(n),
        "idle_timeout_ms" => s.idle_timeout = Duration::from_millis(n),
        "max_lifetime_ms" => s.max_lifetime = Duration::from_millis(n),
        _ => {}
    }
    Ok(())
}

/// A decoded, ready-to-dial connection target for a tenant's data DB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSourceSpec {
    /// Host name or IP (IPv6 without brackets).
    pub host: String,
    /// TCP port, 5432 when the URL omits it.
    pub port: u16,
    /// Database name; defaults to the user name like libpq.
    pub dbname: String,
    /// Role to connect as.
    pub user: String,
    /// Decrypted password; `None` for trust/cert-auth data DBs (BYOD setups
    /// sometimes have no password at all).
    pub password: Option<Secret>,
    /// libpq sslmode from the URL query, default "prefer".
    pub sslmode: String,
    /// The URL as stored, guaranteed to hold no password; safe to log/show.
    pub url_without_password: String,
}

/// sslmode values libpq accepts; anything else is rejected at parse time.
const SSLMODES: &[&str] = &[
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

/// A postgres URL split into its password and everything else.
///
/// Exists because the password must live only in the encrypted column while
/// the rest of the URL stays readable for operators and the audit log.
#[derive(Debug, Clone)]
pub struct ParsedUrl {
    /// The spec, with `password` taken from the URL (if it had one).
    pub spec: DataSourceSpec,
    /// Whether the URL itself embedded a password.
    pub had_password: bool,
}

impl DataSourceSpec {
    /// Parses `postgres://user[:password]@host[:port]/dbname[?sslmode=...]`.
    /// Error messages never include the URL, which may carry a password.
    pub fn parse_url(raw: &str) -> Result<ParsedUrl, DataSourceError> {
        let bad = |m: &str| DataSourceError::InvalidUrl(m.to_string());
        let mut url = url::Url::parse(raw.trim()).map_err(|e| bad(&format!("not a URL ({e})")))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(bad("scheme must be postgres:// or postgresql://"));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_string(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            None => return Err(bad("missing host")),
        };
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        let decode = percent_decode;
        let user = decode(url.username());
        if user.is_empty() {
            return Err(bad("missing user name"));
        }
        let password = url.password().map(decode);
        let path = url.path().trim_start_matches('/');
        let dbname = if path.is_empty() {
            user.clone()
        } else {
            decode(path)
        };
        if dbname.contains('/') {
            return Err(bad("database name must not contain '/'"));
        }
        let mut sslmode = "prefer".to_string();
        for (k, v) in url.query_pairs() {
            if k == "sslmode" {
                if !SSLMODES.contains(&v.as_ref()) {
                    return Err(bad("unsupported sslmode"));
                }
                sslmode = v.into_owned();
            }
        }
        let port = url.port().unwrap_or(5432);
        let had_password = password.is_some();
        url.set_password(None)
            .map_err(|_| bad("cannot strip password from URL"))?;
        Ok(ParsedUrl {
            spec: DataSourceSpec {
                host,
                port,
                dbname,
                user,
                password: password.filter(|p| !p.is_empty()).map(Secret::new),
                sslmode,
                url_without_password: url.to_string(),
            },
            had_password,
        })
    }

    /// Identity of the server-side pool: tenants with the same target and
    /// role share connections (the shared-data-DB case).
    pub fn pool_key(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{}@{}:{}/{}", self.user, host, self.port, self.dbname)
    }

    /// The address the pool and control-plane connections use: one
    /// conversion, so the data path and `tenant test` agree on host and TLS.
    pub fn backend_url(&self) -> crate::pool::BackendUrl {
        use crate::pool::SslMode;
        crate::pool::BackendUrl {
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            password: self.password.clone(),
            dbname: self.dbname.clone(),
            sslmode: match self.sslmode.as_str() {
                "disable" | "allow" => SslMode::Disable,
                "require" => SslMode::Require,
                "verify-ca" | "verify-full" => SslMode::VerifyFull,
                _ => SslMode::Prefer,
            },
            sslrootcert: None,
            application_name: None,
        }
    }
}

/// The url crate keeps userinfo and path percent-encoded; libpq decodes
/// them, so we must too or `p%40ss` would be sent literally.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One tenant as the proxy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRecord {
    /// `tenants.id` as text (uuid and text ids both work).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Routing key used by clients (e.g. `acme` in `acme.example.com`).
    pub subdomain: String,
    /// Whether traffic is allowed.
    pub status: TenantStatus,
    /// The decoded data source, or why it is unusable. An error here keeps
    /// the tenant visible to `list`/health checks instead of dropping it.
    pub data_source: Result<DataSourceSpec, DataSourceError>,
    /// Pool limits (defaults where the JSON is silent).
    pub pool: PoolSettings,
    /// Non-fatal problems found while decoding (bad pool keys, odd status).
    pub warnings: Vec<String>,
    /// `data_source_region`, informational.
    pub region: Option<String>,
    /// `data_source_notes`, for operators.
    pub notes: Option<String>,
    /// The tenant's id inside a shared data DB, when it differs from `id`.
    pub tenant_id_in_data_source: Option<String>,
}

impl TenantRecord {
    /// The id to use for row filtering/RLS inside the data DB.
    pub fn data_tenant_id(&self) -> &str {
        self.tenant_id_in_data_source.as_deref().unwrap_or(&self.id)
    }

    /// Whether the proxy may route new sessions to this tenant now.
    pub fn is_routable(&self) -> bool {
        self.status == TenantStatus::Active && self.data_source.is_ok()
    }
}

/// Sets/merges pool keys in a JSON object, keeping keys pgtenant does not
/// own so the Node app's settings survive a `tenant set`.
pub fn merge_pool_json(existing: Option<Value>, changes: &Map<String, Value>) -> Value {
    let mut obj = match existing {
        Some(Value::Object(o)) => o,
        _ => Map::new(),
    };
    for (k, v) in changes {
        if v.is_null() {
            obj.remove(k);
        } else {
            obj.insert(k.clone(), v.clone());
        }
    }
    Value::Object(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pool_defaults_and_overrides() {
        let (d, w) = PoolSettings::from_json(None);
        assert_eq!(d, PoolSettings::default());
        assert!(w.is_empty());
        let (s, w) = PoolSettings::from_json(Some(&json!({
            "pool_size": 4, "min_idle": "1", "mode": "Session",
            "checkout_timeout_ms": 250, "idle_timeout_ms": 1000, "max_lifetime_ms": 2000,
            "someNodeKey": {"x": 1}, "max": 99
        })));
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(s.pool_size, 4);
        assert_eq!(s.min_idle, 1);
        assert_eq!(s.mode, PoolMode::Session);
        assert_eq!(s.checkout_timeout, Duration::from_millis(250));
        assert_eq!(s.idle_timeout, Duration::from_secs(1));
        assert_eq!(s.max_lifetime, Duration::from_secs(2));
        assert_eq!(s.max_connections_per_tenant, 4, "defaults to pool_size");
        let (s, _) = PoolSettings::from_json(Some(
            &json!({"pool_size": 4, "max_connections_per_tenant": 6}),
        ));
        assert_eq!(s.max_connections_per_tenant, 6);
    }

    #[test]
    fn pool_bad_values_fall_back_with_warnings() {
        let (s, w) = PoolSettings::from_json(Some(&json!({
            "pool_size": 0, "mode": "statement", "idle_timeout_ms": -5, "min_idle": null
        })));
        assert_eq!(s.pool_size, 10);
        assert_eq!(s.mode, PoolMode::Transaction);
        assert_eq!(s.idle_timeout, PoolSettings::default().idle_timeout);
        assert_eq!(w.len(), 3, "{w:?}");
        let (_, w) = PoolSettings::from_json(Some(&json!([1, 2])));
        assert_eq!(w.len(), 1);
        let (s, w) = PoolSettings::from_json(Some(&json!({"pool_size": 2, "min_idle": 5})));
        assert_eq!((s.min_idle, w.len()), (2, 1));
        assert!(PoolSettings::validate_json(&json!({"mode": "bogus"})).is_err());
        assert!(PoolSettings::validate_json(&json!({"mode": "session", "extra": 1})).is_ok());
    }

    #[test]
    fn merge_keeps_foreign_keys() {
        let mut ch = Map::new();
        ch.insert("pool_size".into(), json!(3));
        ch.insert("mode".into(), Value::Null);
        let v = merge_pool_json(Some(json!({"mode": "session", "nodeKey": 1})), &ch);
        assert_eq!(v, json!({"pool_size": 3, "nodeKey": 1}));
    }

    #[test]
    fn url_parsing() {
        let p = DataSourceSpec::parse_url(
            "postgres://app%40x:p%3Ass@db.example.com:6543/tenant_a?sslmode=require",
        )
        .unwrap();
        assert!(p.had_password);
        let s = p.spec;
        assert_eq!(s.user, "app@x");
        assert_eq!(s.password.as_ref().unwrap().expose(), "p:ss");
        assert_eq!(
            (s.host.as_str(), s.port, s.dbname.as_str()),
            ("db.example.com", 6543, "tenant_a")
        );
        assert_eq!(s.sslmode, "require");
        assert_eq!(
            s.url_without_password,
            "postgres://app%40x@db.example.com:6543/tenant_a?sslmode=require"
        );
        assert_eq!(s.pool_key(), "app@x@db.example.com:6543/tenant_a");
        assert!(!format!("{s:?}").contains("p:ss"));

        let s = DataSourceSpec::parse_url("postgresql://bob@[::1]/")
            .unwrap()
            .spec;
        assert_eq!(
            (
                s.host.as_str(),
                s.port,
                s.dbname.as_str(),
                s.sslmode.as_str()
            ),
            ("::1", 5432, "bob", "prefer")
        );
        assert_eq!(s.pool_key(), "bob@[::1]:5432/bob");
        assert!(s.password.is_none());
    }

    #[test]
    fn url_errors_do_not_echo() {
        for bad in [
            "mysql://u:hunter2@h/db",
            "postgres://:hunter2@h/db",
            "postgres://u:hunter2@h/db?sslmode=hunter2",
            "hunter2",
        ] {
            let e = DataSourceSpec::parse_url(bad).unwrap_err();
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn status_mapping() {
        assert_eq!(TenantStatus::from_db(None).0, TenantStatus::Active);
        assert_eq!(
            TenantStatus::from_db(Some("suspended")).0,
            TenantStatus::Suspended
        );
        let (s, w) = TenantStatus::from_db(Some("inactive"));
        assert_eq!(s, TenantStatus::Suspended);
        assert!(w.is_some());
    }
}
