//! SQL routing for pgtenant.
//!
//! Every statement a client sends must land either on the application
//! database (metadata tables) or on one tenant's data database (business
//! tables). This module decides which, using only the SQL text, the
//! session's routing state and a tenant directory. It performs no I/O so it
//! can be tested exhaustively and shared by every session task.
//!
//! The flow is: [`analyze`] (or the cached [`ParseCache::analyze`]) turns SQL
//! into value-agnostic facts ([`Analysis`]); [`decide`] combines those facts
//! with bind parameters and session state into a [`RouteDecision`].

mod analysis;
mod cache;
mod classify;
mod decision;
mod explain;
mod lexer;
#[cfg(test)]
mod tests;

use std::fmt;

pub use analysis::{analyze, grammar_error};
pub use cache::{CacheStats, ParseCache};
pub use classify::classify_table;
pub use decision::{decide, tenant_unknown};
pub use explain::explain;

/// Routing configuration; kept separate from the proxy config so the router
/// can be unit-tested without loading files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    /// Tables that live in the application database. Entries are compared
    /// with parser-normalised names (unquoted identifiers are lower case),
    /// may be schema-qualified (`public.users`) and may use `*` globs
    /// (`auth.*`, `app_*`).
    pub app_tables: Vec<String>,
    /// Column that holds the tenant id in tenant tables; used for comment
    /// hints and statement filters.
    pub tenant_column: String,
    /// Custom GUC through which clients select a tenant for the session.
    pub tenant_setting: String,
    /// Maximum number of entries in each level of the parse cache.
    pub cache_capacity: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            app_tables: [
                "tenants",
                "users",
                "roles",
                "permissions",
                "audit_log",
                "tenant_users",
                "tenant_roles",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            tenant_column: "tenant_id".into(),
            tenant_setting: "app.tenant_id".into(),
            cache_capacity: 4096,
        }
    }
}

/// Which database a table lives in; the core input of routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableClass {
    /// Application metadata table: lives in the application database.
    App,
    /// Business table: lives in the tenant's data database.
    Tenant,
    /// System catalog: present everywhere, so it never forces a target.
    Catalog,
}

/// A table referenced by a statement, with its classification, so errors and
/// RLS checks can name exactly what was touched.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableRef {
    /// Schema as written (None when unqualified).
    pub schema: Option<String>,
    /// Table name after identifier normalisation (quoted names keep case).
    pub name: String,
    /// Where this table lives.
    pub class: TableClass,
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn ident(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
            let plain = !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && !s.starts_with(|c: char| c.is_ascii_digit());
            if plain {
                f.write_str(s)
            } else {
                write!(f, "\"{}\"", s.replace('"', "\"\""))
            }
        }
        if let Some(s) = &self.schema {
            ident(f, s)?;
            f.write_str(".")?;
        }
        ident(f, &self.name)
    }
}

/// A tenant id named by SQL: either a literal or a bind parameter whose value
/// is only known at Bind time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TenantValue {
    /// Literal value, already unquoted, as text.
    Literal(String),
    /// 1-based `$n` parameter.
    Param(u16),
}

/// Change a statement makes to the session's routing state; reported rather
/// than applied because the session layer owns that state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEffect {
    /// `SET [SESSION|LOCAL] <tenant_setting> = v` or `set_config(...)`.
    SetTenant {
        /// The new tenant.
        value: TenantValue,
        /// True for `SET LOCAL` / `set_config(..., true)`: ends with the
        /// transaction.
        local: bool,
    },
    /// `RESET <tenant_setting>` or `SET <tenant_setting> TO DEFAULT`.
    ResetTenant,
    /// `RESET ALL` / `DISCARD ALL`: every setting, including the tenant.
    ResetAll,
    /// `DEALLOCATE <name>`, or `DEALLOCATE ALL` (`None`): the client's
    /// prepared statements, which the proxy keeps under names of its own
    /// on the server.
    Deallocate(Option<String>),
    /// Any other SET/RESET/DISCARD; kept so the session layer can track
    /// state it must replay on a backend switch.
    Other,
    /// `SET LOCAL` or `set_config(…, true)` of another setting: it ends
    /// with the transaction, so there is nothing to replay or reset.
    LocalSetting,
    /// State on the server connection that the proxy can neither replay
    /// nor reset for the next session there: LISTEN, SQL-level PREPARE,
    /// a cursor WITH HOLD, a temporary table.
    Untracked,
}

/// Transaction control, needed by the session layer to scope `SET LOCAL`
/// and to pin backends for the duration of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnControl {
    /// Not a transaction-control statement.
    None,
    /// `BEGIN` / `START TRANSACTION`.
    Begin,
    /// `COMMIT` / `END`.
    Commit,
    /// `ROLLBACK` / `ABORT`.
    Rollback,
    /// `SAVEPOINT name`.
    Savepoint(String),
    /// `RELEASE [SAVEPOINT] name`.
    ReleaseSavepoint(String),
    /// `ROLLBACK TO [SAVEPOINT] name`.
    RollbackToSavepoint(String),
    /// `PREPARE TRANSACTION 'gid'`: ends the transaction like a commit.
    PrepareTransaction(String),
    /// `COMMIT PREPARED 'gid'`.
    CommitPrepared(String),
    /// `ROLLBACK PREPARED 'gid'`.
    RollbackPrepared(String),
}

/// Value-agnostic facts about one statement: everything routing needs
/// without re-parsing, so it can be cached and decided per Bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementInfo {
    /// Tables referenced (CTE names excluded), de-duplicated, in order.
    pub tables: Vec<TableRef>,
    /// Tenant named by a `/* tenant_id='…' */` comment.
    pub hint_tenant: Option<String>,
    /// Convenience copy of the first entry of `tenant_filters`.
    pub filter_tenant: Option<TenantValue>,
    /// Tenant values that constrain the whole statement (top-level AND
    /// conjuncts of WHERE, INSERT VALUES rows, IN lists). More than one
    /// distinct value means the statement spans tenants.
    pub tenant_filters: Vec<TenantValue>,
    /// Every tenant value mentioned anywhere (includes the filters); used to
    /// detect statements that name another tenant than the one routed to.
    pub tenant_mentions: Vec<TenantValue>,
    /// A tenant comparison under OR/NOT, a `<>`, or `= ANY(<array param>)`:
    /// the statement may span tenants whatever the values are.
    pub tenant_under_or: bool,
    /// Session-state changes, in order.
    pub effects: Vec<SessionEffect>,
    /// The setting (lower case) a `RESET <name>` or `SET <name> TO
    /// DEFAULT` puts back to its session default, the tenant's aside: the
    /// session layer replays it as the client's startup value when it has
    /// one, since a pooled connection's default is its own.
    pub resets: Option<String>,
    /// Transaction control kind.
    pub txn: TxnControl,
    /// The statement may touch tables that are not visible in its text
    /// (`EXECUTE`, `CALL`, unsupported utility statements): it is routed to
    /// the session's current target.
    pub unknown_tables: bool,
    /// The statement may touch tables that could not be listed and must be
    /// treated as touching tenant tables (a `DO` block with dynamic SQL or
    /// in another language): it needs a tenant.
    pub assume_tenant_tables: bool,
    pub(crate) slots: Vec<analysis::LiteralSlot>,
}

/// Result of analysing one SQL string (possibly several statements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    /// One entry per statement, in order.
    pub statements: Vec<StatementInfo>,
    /// False when literal values influence more than the tenant slots, so a
    /// level-2 (literal-insensitive) cache entry would be wrong.
    pub(crate) templatable: bool,
}

/// An error to send to the client as an ErrorResponse; carries only routing
/// facts (table and tenant names), never credentials or connection strings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (SQLSTATE {sqlstate})")]
pub struct RouteError {
    /// Five-character SQLSTATE.
    pub sqlstate: &'static str,
    /// Primary message.
    pub message: String,
    /// Optional HINT field.
    pub hint: Option<String>,
}

impl RouteError {
    pub(crate) fn new(sqlstate: &'static str, message: impl Into<String>) -> Self {
        RouteError {
            sqlstate,
            message: message.into(),
            hint: None,
        }
    }
    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// The session's routing inputs at the time a statement is decided; borrowed
/// so `decide` needs no allocation on the hot path.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionRouting<'a> {
    /// Tenant set with `SET [SESSION] <tenant_setting>` (or `set_config`).
    pub session_tenant: Option<&'a str>,
    /// Tenant set with `SET LOCAL` in the current transaction; wins over
    /// `session_tenant` until the transaction ends.
    pub local_tenant: Option<&'a str>,
    /// Tenant given as a startup parameter (`options=-c app.tenant_id=…`).
    pub startup_tenant: Option<&'a str>,
    /// Tenant derived from the database name (subdomain).
    pub database_tenant: Option<&'a str>,
    /// Tenants the user may access; None means all.
    pub allowed_tenants: Option<&'a [String]>,
    /// A failed request left the session tenant unknown (it changed the
    /// tenant and held transaction control, so where the error came
    /// decided whether PostgreSQL kept the change): a statement that needs
    /// the session's tenant is refused ([`tenant_unknown`]) until the
    /// tenant is set or reset again.
    pub session_tenant_unknown: bool,
}

/// Where a tenant's data lives; provided by the caller's catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantPlacement {
    /// Pool key of the data source (shared: copied into every decision).
    pub data_source: std::sync::Arc<str>,
    /// True when several tenants share the data source, so tenant isolation
    /// relies on filters or row-level security.
    pub shared: bool,
    /// False when the tenant is suspended.
    pub active: bool,
}

/// Lookup of tenant placements; a trait so `decide` stays free of I/O and
/// tests can use an in-memory map.
pub trait TenantDirectory {
    /// Placement of tenant `id`, or None when the tenant does not exist.
    fn tenant(&self, id: &str) -> Option<TenantPlacement>;
}

/// Where to send a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The application database.
    App,
    /// A tenant's data source.
    Tenant {
        /// The tenant id.
        tenant_id: String,
        /// Pool key of its data source.
        data_source: std::sync::Arc<str>,
    },
    /// Reserved for callers that want to keep the session's current backend;
    /// `decide` itself never returns it (table-less statements resolve to
    /// the session's tenant or to App).
    Current,
}

/// Which source produced the tenant, reported for auditing and because only
/// statement-level sources make RLS verification unnecessary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedBy {
    /// `/* tenant_id='…' */` comment.
    Hint,
    /// The statement's own tenant filter or INSERT value.
    Statement,
    /// `SET` / `SET LOCAL` / `set_config` in the session (or earlier in the
    /// same query string).
    Session,
    /// Startup parameter.
    StartupParameter,
    /// Database name equals the tenant's subdomain.
    DatabaseName,
    /// The user may access exactly one tenant.
    OnlyAllowedTenant,
}

/// The outcome of routing one query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteDecision {
    /// Where to send it.
    pub target: Target,
    /// The tenant and how it was found (None for App).
    pub tenant: Option<(String, ResolvedBy)>,
    /// Tenant tables whose row-level security the caller must verify before
    /// running the statement (shared data source, tenant not named by the
    /// statement itself).
    pub rls_required: Vec<TableRef>,
}
