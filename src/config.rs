//! Configuration: a TOML file overlaid by `PGTENANT_*` environment variables.
//!
//! Every key has a default except `app_db.url`, so a minimal file (or just the
//! environment) is enough to start. Errors name the offending key so operators
//! can fix them from the one-line message alone.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The whole configuration, as deserialized from file + environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the proxy listens on for PostgreSQL clients.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The proxy's own connection to the application database.
    pub app_db: AppDbConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub pool: PoolDefaults,
    #[serde(default)]
    pub routing: RoutingConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Seconds SIGTERM waits for in-flight transactions before closing.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout_secs: u64,
    /// Session workers (threads, each one event loop running whole sessions);
    /// default one per core.
    #[serde(default)]
    pub workers: Option<usize>,
    /// Largest client message accepted, in bytes; bigger ones are a protocol error.
    #[serde(default = "default_max_message")]
    pub max_message_bytes: usize,
}

/// Connection to the application database (metadata tables, auth query, registry).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppDbConfig {
    /// `postgres://user:password@host:port/db?sslmode=…`; host may be a Unix socket directory.
    pub url: String,
}

/// How clients are authenticated.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// SQL run on the app DB with `$1` = login name; returns `password` and `tenants`.
    #[serde(default = "default_auth_query")]
    pub query: String,
    /// Logins allowed into the virtual `pgtenant` admin database.
    #[serde(default)]
    pub admin_users: Vec<String>,
    /// bcrypt verifiers need the cleartext password; only allowed over TLS unless this is set.
    #[serde(default)]
    pub allow_cleartext_without_tls: bool,
    /// Failed logins per user or address within `throttle_window_secs` before throttling.
    #[serde(default = "default_throttle_failures")]
    pub throttle_failures: u32,
    #[serde(default = "default_throttle_window")]
    pub throttle_window_secs: u64,
}

/// TLS towards clients.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Refuse clients that do not negotiate TLS.
    #[serde(default)]
    pub require: bool,
}

/// Defaults for every data-source pool; a tenant's `connection_pool_config` overrides them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolDefaults {
    #[serde(default = "default_pool_size")]
    pub size: usize,
    /// `transaction` (default) or `session`.
    #[serde(default = "default_pool_mode")]
    pub mode: String,
    #[serde(default = "default_checkout_timeout_ms")]
    pub checkout_timeout_ms: u64,
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    #[serde(default = "default_max_lifetime_ms")]
    pub max_lifetime_ms: u64,
    /// Server-side prepared statements kept per backend connection before the oldest is closed.
    #[serde(default = "default_prepared_per_conn")]
    pub prepared_statements_per_connection: usize,
}

/// Which tables live where and how a tenant is named.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// `false` sends everything to the app DB (pass-through).
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_app_tables")]
    pub app_tables: Vec<String>,
    #[serde(default = "default_tenant_column")]
    pub tenant_column: String,
    #[serde(default = "default_tenant_setting")]
    pub tenant_setting: String,
    #[serde(default = "default_cache_capacity")]
    pub parse_cache_capacity: usize,
}

/// Prometheus / health HTTP endpoint.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    pub listen: Option<String>,
}

/// Logging output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    #[serde(default = "default_log_format")]
    pub format: String,
    /// tracing filter directive, e.g. `info` or `pgtenant=debug`.
    #[serde(default = "default_log_level")]
    pub level: String,
}

fn default_listen() -> String {
    "127.0.0.1:6432".into()
}
fn default_shutdown_timeout() -> u64 {
    30
}
fn default_max_message() -> usize {
    64 * 1024 * 1024
}
/// The default auth query matches the demo schema (`users.email`,
/// `users.password_hash`, `users.is_service_account`, tenants from
/// `tenant_users`); a NULL `tenants` means a service account with all tenants.
pub fn default_auth_query() -> String {
    "SELECT password_hash AS password, CASE WHEN is_service_account THEN NULL \
     ELSE ARRAY(SELECT tenant_id FROM tenant_users tu WHERE tu.user_id = users.id) END AS tenants \
     FROM users WHERE email = $1"
        .into()
}
fn default_throttle_failures() -> u32 {
    5
}
fn default_throttle_window() -> u64 {
    60
}
fn default_pool_size() -> usize {
    20
}
fn default_pool_mode() -> String {
    "transaction".into()
}
fn default_checkout_timeout_ms() -> u64 {
    5_000
}
fn default_idle_timeout_ms() -> u64 {
    600_000
}
fn default_max_lifetime_ms() -> u64 {
    3_600_000
}
fn default_prepared_per_conn() -> usize {
    200
}
fn default_true() -> bool {
    true
}
fn default_app_tables() -> Vec<String> {
    crate::router::RouterConfig::default().app_tables
}
fn default_tenant_column() -> String {
    "tenant_id".into()
}
fn default_tenant_setting() -> String {
    "app.tenant_id".into()
}
fn default_cache_capacity() -> usize {
    4096
}
fn default_log_format() -> String {
    "text".into()
}
fn default_log_level() -> String {
    "info".into()
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            query: default_auth_query(),
            admin_users: Vec::new(),
            allow_cleartext_without_tls: false,
            throttle_failures: default_throttle_failures(),
            throttle_window_secs: default_throttle_window(),
        }
    }
}
impl Default for PoolDefaults {
    fn default() -> Self {
        PoolDefaults {
            size: default_pool_size(),
            mode: default_pool_mode(),
            checkout_timeout_ms: default_checkout_timeout_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
            max_lifetime_ms: default_max_lifetime_ms(),
            prepared_statements_per_connection: default_prepared_per_conn(),
        }
    }
}
impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            enabled: true,
            app_tables: default_app_tables(),
            tenant_column: default_tenant_column(),
            tenant_setting: default_tenant_setting(),
            parse_cache_capacity: default_cache_capacity(),
        }
    }
}
impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: default_log_format(),
            level: default_log_level(),
        }
    }
}

/// Top-level keys, for telling config variables from other `PGTENANT_*` ones.
const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "app_db",
    "auth",
    "tls",
    "pool",
    "routing",
    "metrics",
    "log",
    "shutdown_timeout_secs",
    "workers",
    "max_message_bytes",
];

/// A configuration problem, phrased for a one-line error naming the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Loads `path` (if given) and overlays `PGTENANT_*` environment variables
    /// (`__` separates nesting levels: `PGTENANT_APP_DB__URL`).
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            builder = builder.add_source(config::File::from(path.to_path_buf()));
        }
        // Only variables naming a config section are config; PGTENANT_CONFIG,
        // PGTENANT_ACTOR and friends belong to the CLI.
        let env: std::collections::HashMap<String, String> = std::env::vars()
            .filter(|(k, _)| {
                k.strip_prefix("PGTENANT_").is_some_and(|rest| {
                    let top = rest.split("__").next().unwrap_or("").to_ascii_lowercase();
                    TOP_LEVEL_KEYS.contains(&top.as_str())
                })
            })
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("PGTENANT")
                .source(Some(env))
                .prefix_separator("_")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("auth.admin_users")
                .with_list_parse_key("routing.app_tables")
                .try_parsing(true),
        );
        let raw = builder
            .build()
            .map_err(|e| ConfigError(format!("invalid configuration: {e}")))?;
        let cfg: Config = raw.try_deserialize().map_err(|e| {
            let msg = e.to_string();
            if msg.contains("app_db") || msg.contains("missing field `url`") {
                ConfigError(
                    "missing key app_db.url (set it in the config file or PGTENANT_APP_DB__URL)"
                        .into(),
                )
            } else {
                ConfigError(format!("invalid configuration: {msg}"))
            }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError(format!(
                "invalid key listen: {:?} is not host:port",
                self.listen
            )));
        }
        if let Err(e) = crate::pool::BackendUrl::parse(&self.app_db.url) {
            return Err(ConfigError(format!("invalid key app_db.url: {e}")));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(ConfigError(
                "invalid keys tls.cert/tls.key: set both or neither".into(),
            ));
        }
        if self.tls.require && self.tls.cert.is_none() {
            return Err(ConfigError(
                "invalid key tls.require: requires tls.cert and tls.key".into(),
            ));
        }
        if !matches!(self.pool.mode.as_str(), "transaction" | "session") {
            return Err(ConfigError(format!(
                "invalid key pool.mode: {:?} (expected transaction or session)",
                self.pool.mode
            )));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(ConfigError(format!(
                "invalid key log.format: {:?} (expected text or json)",
                self.log.format
            )));
        }
        if !self.auth.query.contains("$1") {
            return Err(ConfigError(
                "invalid key auth.query: must use $1 for the login name".into(),
            ));
        }
        Ok(())
    }
}
