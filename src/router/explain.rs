//! Human-readable routing explanation, for an admin command and for
//! debugging routing complaints without reading logs.

use std::fmt::Write;

use crate::router::{
    analyze, decide, ResolvedBy, RouteError, RouterConfig, SessionEffect, SessionRouting,
    TableClass, Target, TenantDirectory, TenantValue, TxnControl,
};

fn class_name(c: TableClass) -> &'static str {
    match c {
        TableClass::App => "app",
        TableClass::Tenant => "tenant",
        TableClass::Catalog => "catalog",
    }
}

fn value_text(v: &TenantValue) -> String {
    match v {
        TenantValue::Literal(s) => format!("'{s}'"),
        TenantValue::Param(n) => format!("${n}"),
    }
}

fn by_text(b: ResolvedBy) -> &'static str {
    match b {
        ResolvedBy::Hint => "comment hint",
        ResolvedBy::Statement => "the statement's tenant filter",
        ResolvedBy::Session => "the session setting",
        ResolvedBy::StartupParameter => "the startup parameter",
        ResolvedBy::DatabaseName => "the database name",
        ResolvedBy::OnlyAllowedTenant => "the user's only allowed tenant",
    }
}

fn error_text(out: &mut String, e: &RouteError) {
    let _ = writeln!(out, "error: {} {}", e.sqlstate, e.message);
    if let Some(h) = &e.hint {
        let _ = writeln!(out, "hint: {h}");
    }
}

/// Explains, in several lines of plain text, how `sql` would be routed for a
/// user with `allowed` tenants (None = all) in a session set to
/// `session_tenant`: tables and their class, tenant sources, the resolved
/// tenant and its source, the target — or the error a client would get.
/// Parameters are treated as unbound.
pub fn explain(
    sql: &str,
    allowed: Option<&[String]>,
    session_tenant: Option<&str>,
    cfg: &RouterConfig,
    dir: &dyn TenantDirectory,
) -> String {
    let mut out = String::new();
    let analysis = match analyze(sql, cfg) {
        Ok(a) => a,
        Err(e) => {
            error_text(&mut out, &e);
            return out;
        }
    };
    for (i, st) in analysis.statements.iter().enumerate() {
        let _ = writeln!(out, "statement {}:", i + 1);
        if st.tables.is_empty() {
            let _ = writeln!(out, "  tables: none");
        } else {
            let t: Vec<String> = st
                .tables
                .iter()
                .map(|t| format!("{} ({})", t, class_name(t.class)))
                .collect();
            let _ = writeln!(out, "  tables: {}", t.join(", "));
        }
        if let Some(h) = &st.hint_tenant {
            let _ = writeln!(out, "  comment hint: '{h}'");
        }
        if !st.tenant_filters.is_empty() {
            let f: Vec<String> = st.tenant_filters.iter().map(value_text).collect();
            let _ = writeln!(out, "  tenant filter: {}", f.join(", "));
        }
        if st.tenant_under_or {
            let _ = writeln!(out, "  tenant condition may match several tenants");
        }
        for e in &st.effects {
            let text = match e {
                SessionEffect::SetTenant { value, local } => format!(
                    "sets the tenant to {}{}",
                    value_text(value),
                    if *local { " for the transaction" } else { "" }
                ),
                SessionEffect::ResetTenant => "resets the tenant".into(),
                SessionEffect::ResetAll => "resets all settings (tenant included)".into(),
                SessionEffect::Deallocate(Some(name)) => {
                    format!("deallocates prepared statement \"{name}\"")
                }
                SessionEffect::Deallocate(None) => "deallocates every prepared statement".into(),
                SessionEffect::Other => "changes another setting".into(),
                SessionEffect::LocalSetting => "changes another setting for the transaction".into(),
                SessionEffect::Untracked => {
                    "leaves state on the connection (closed after the transaction)".into()
                }
            };
            let _ = writeln!(out, "  effect: {text}");
        }
        if st.txn != TxnControl::None {
            let _ = writeln!(out, "  transaction control: {:?}", st.txn);
        }
        if st.assume_tenant_tables {
            let _ = writeln!(
                out,
                "  tables cannot all be listed: treated as touching tenant tables"
            );
        } else if st.unknown_tables {
            let _ = writeln!(
                out,
                "  tables not visible in the text: routed to the current target"
            );
        }
    }
    let session = SessionRouting {
        session_tenant,
        allowed_tenants: allowed,
        ..SessionRouting::default()
    };
    match decide(&analysis, &session, &|_| None, dir) {
        Ok(d) => {
            if let Some((id, by)) = &d.tenant {
                let _ = writeln!(out, "tenant: {id} (from {})", by_text(*by));
            }
            let target = match &d.target {
                Target::App => "application database".to_string(),
                Target::Tenant {
                    tenant_id,
                    data_source,
                } => format!("tenant {tenant_id} on data source {data_source}"),
                Target::Current => "the session's current target".to_string(),
            };
            let _ = writeln!(out, "route: {target}");
            if !d.rls_required.is_empty() {
                let t: Vec<String> = d.rls_required.iter().map(|t| t.to_string()).collect();
                let _ = writeln!(
                    out,
                    "row-level security must be verified on: {}",
                    t.join(", ")
                );
            }
        }
        Err(e) => error_text(&mut out, &e),
    }
    out
}
