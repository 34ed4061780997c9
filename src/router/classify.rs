//! Table classification: decides which database a table name belongs to.

use crate::router::{RouterConfig, TableClass};

/// Classifies a (possibly schema-qualified) table reference against the
/// configured application tables; public so the session layer and tests can
/// classify names outside of a statement.
///
/// Unqualified config entries match unqualified references and references in
/// `public` (the default search_path); entries qualified with `public` also
/// match unqualified references for the same reason. Other qualified entries
/// only match that exact schema.
pub fn classify_table(schema: Option<&str>, name: &str, cfg: &RouterConfig) -> TableClass {
    match schema {
        Some("pg_catalog") | Some("information_schema") | Some("pg_toast") => {
            return TableClass::Catalog
        }
        None if name.starts_with("pg_") => return TableClass::Catalog,
        _ => {}
    }
    let is_app = cfg.app_tables.iter().any(|entry| {
        let (e_schema, e_name) = match entry.split_once('.') {
            Some((s, n)) => (Some(s), n),
            None => (None, entry.as_str()),
        };
        if !glob(e_name, name) {
            return false;
        }
        match (e_schema, schema) {
            (None, None) | (None, Some("public")) => true,
            (None, Some(_)) => false,
            (Some(es), None) => es == "public",
            (Some(es), Some(s)) => glob(es, s),
        }
    });
    if is_app {
        TableClass::App
    } else {
        TableClass::Tenant
    }
}

/// `*`-only glob; config patterns are few and short, so a simple recursive
/// matcher is plenty.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((prefix, rest)) => {
            let Some(tail) = text.strip_prefix(prefix) else {
                return false;
            };
            (0..=tail.len())
                .filter(|i| tail.is_char_boundary(*i))
                .any(|i| glob(rest, &tail[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(entries: &[&str]) -> RouterConfig {
        RouterConfig {
            app_tables: entries.iter().map(|s| s.to_string()).collect(),
            ..RouterConfig::default()
        }
    }

    #[test]
    fn patterns() {
        let c = cfg(&[
            "users",
            "auth.*",
            "app_*",
            "public.tenants",
            "billing.plans",
        ]);
        assert_eq!(classify_table(None, "users", &c), TableClass::App);
        assert_eq!(classify_table(Some("public"), "users", &c), TableClass::App);
        assert_eq!(classify_table(Some("crm"), "users", &c), TableClass::Tenant);
        assert_eq!(
            classify_table(Some("auth"), "sessions", &c),
            TableClass::App
        );
        assert_eq!(classify_table(None, "sessions", &c), TableClass::Tenant);
        assert_eq!(classify_table(None, "app_flags", &c), TableClass::App);
        assert_eq!(classify_table(None, "apps", &c), TableClass::Tenant);
        assert_eq!(classify_table(None, "tenants", &c), TableClass::App);
        assert_eq!(
            classify_table(Some("public"), "tenants", &c),
            TableClass::App
        );
        assert_eq!(classify_table(None, "plans", &c), TableClass::Tenant);
        assert_eq!(
            classify_table(Some("billing"), "plans", &c),
            TableClass::App
        );
        assert_eq!(classify_table(None, "pg_class", &c), TableClass::Catalog);
        assert_eq!(
            classify_table(Some("information_schema"), "tables", &c),
            TableClass::Catalog
        );
        assert_eq!(classify_table(Some("crm"), "pg_x", &c), TableClass::Tenant);
        assert_eq!(classify_table(None, "Users", &c), TableClass::Tenant);
    }

    #[test]
    fn glob_edges() {
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXbYc"));
        assert!(!glob("a*b", "ab_"));
        assert!(glob("ü*", "über"));
    }
}
