//! Routing decision: combines an [`Analysis`] with bind parameters, session
//! state and the tenant directory.

use crate::router::{
    Analysis, ResolvedBy, RouteDecision, RouteError, SessionEffect, SessionRouting, StatementInfo,
    TableClass, TableRef, Target, TenantDirectory, TenantPlacement, TenantValue, TxnControl,
};

/// Hint text for the "no tenant" error, listing every way to name one.
const NO_TENANT_HINT: &str = "name the tenant in one of these ways: \
a comment hint /* tenant_id='<id>' */; a tenant_id = '<id>' filter (or the tenant_id column of an INSERT); \
SET app.tenant_id = '<id>', the startup option options=-c app.tenant_id=<id>, or connecting to the database named after the tenant's subdomain; \
or use a user that is allowed exactly one tenant";

/// The refusal of a statement that needs the session's tenant while it is
/// unknown (`SessionRouting::session_tenant_unknown`).
pub fn tenant_unknown() -> RouteError {
    RouteError::new(
        "55000",
        "the session's tenant is unknown: a failed request changed it and also held transaction control, so it cannot be told whether PostgreSQL kept the change",
    )
    .with_hint("SET app.tenant_id (or RESET it) again before the next statement")
}

/// Routing state simulated across the statements of one query string, so
/// `SET app.tenant_id='a'; SELECT ...` routes the SELECT to tenant a.
struct Sim {
    session: Option<String>,
    local: Option<String>,
    /// `SessionRouting::session_tenant_unknown`, until a SET or RESET; and
    /// after a ROLLBACK that may undo a SET of the string (which one it
    /// undoes depends on blocks and COMMITs not followed here).
    unknown: bool,
    /// The string set or reset the session tenant.
    changed: bool,
}

struct Ctx<'a, 'b> {
    session: &'a SessionRouting<'b>,
    params: &'a dyn Fn(u16) -> Option<String>,
    dir: &'a dyn TenantDirectory,
}

/// Decides where a query string goes. Pure: the caller supplies parameter
/// values (at Bind time; `None` for a missing/NULL parameter) and the
/// tenant directory. All statements of the string must agree on one target
/// or the whole string is refused before anything runs.
pub fn decide(
    analysis: &Analysis,
    session: &SessionRouting,
    params: &dyn Fn(u16) -> Option<String>,
    dir: &dyn TenantDirectory,
) -> Result<RouteDecision, RouteError> {
    let ctx = Ctx {
        session,
        params,
        dir,
    };
    let mut sim = Sim {
        session: session.session_tenant.map(str::to_string),
        local: session.local_tenant.map(str::to_string),
        unknown: session.session_tenant_unknown,
        changed: false,
    };
    let mut chosen: Option<(Target, Option<(String, ResolvedBy)>)> = None;
    let mut rls: Vec<TableRef> = Vec::new();
    let mut tableless_hints: Vec<String> = Vec::new();

    for st in &analysis.statements {
        // Iterators, not lists: routing a statement allocates for its
        // outcome only; the lists are built for error messages.
        let app = || st.tables.iter().filter(|t| t.class == TableClass::App);
        let tenant = || st.tables.iter().filter(|t| t.class == TableClass::Tenant);
        let has_app = app().next().is_some();
        let has_tenant = tenant().next().is_some();
        if has_app && (has_tenant || st.assume_tenant_tables) {
            let tenant_side = if !has_tenant {
                "tables of a DO block that cannot be listed".to_string()
            } else {
                list(tenant())
            };
            return Err(RouteError::new(
                "0A000",
                format!(
                    "statement touches application tables ({}) and tenant tables ({}), which live in different databases",
                    list(app()),
                    tenant_side
                ),
            )
            .with_hint("split the query into one statement for the application tables and one for the tenant tables"));
        }
        let this = if has_app {
            Some((Target::App, None))
        } else if has_tenant || st.assume_tenant_tables {
            let Some((id, by)) = resolve(st, &sim, &ctx)? else {
                let what = if !has_tenant {
                    "a DO block whose tables cannot be listed".to_string()
                } else {
                    format!("tenant tables ({})", list(tenant()))
                };
                return Err(RouteError::new(
                    "55000",
                    format!("no tenant could be determined for a statement touching {what}"),
                )
                .with_hint(NO_TENANT_HINT));
            };
            let place = placement(&ctx, &id)?;
            if place.shared && !matches!(by, ResolvedBy::Hint | ResolvedBy::Statement) {
                if st.assume_tenant_tables {
                    return Err(RouteError::new(
                        "42501",
                        format!("tenant \"{id}\" shares its data source and row-level security cannot be verified for a DO block whose tables cannot be listed"),
                    )
                    .with_hint("name the tenant with a /* tenant_id='<id>' */ comment in the DO statement"));
                }
                for t in tenant() {
                    if !rls.contains(t) {
                        rls.push(t.clone());
                    }
                }
            }
            Some((
                Target::Tenant {
                    tenant_id: id.clone(),
                    data_source: place.data_source,
                },
                Some((id, by)),
            ))
        } else {
            if let Some(h) = &st.hint_tenant {
                tableless_hints.push(h.clone());
            }
            None
        };
        if let Some(this) = this {
            match &chosen {
                None => chosen = Some(this),
                Some(prev) if prev.0 == this.0 => {}
                Some(prev) => {
                    return Err(RouteError::new(
                        "0A000",
                        format!(
                            "query string mixes statements for {} and {}",
                            describe(&prev.0),
                            describe(&this.0)
                        ),
                    )
                    .with_hint("send statements for different databases as separate queries"))
                }
            }
        }
        apply_effects(st, &mut sim, &ctx)?;
    }

    let (target, tenant) = match chosen {
        Some(c) => c,
        None => {
            // Table-less (or catalog-only) string: go where the session
            // currently points, after this string's own effects.
            tableless_hints.dedup();
            if tableless_hints.len() > 1 {
                return Err(RouteError::new(
                    "0A000",
                    format!(
                        "statement spans several tenants: comment hints name {}",
                        tableless_hints.join(", ")
                    ),
                ));
            }
            let hint = tableless_hints.pop();
            if hint.is_none() && sim.unknown && sim.local.is_none() {
                // Where the session points is not known: the session
                // decides (the connection of its open transaction, which a
                // ROLLBACK must reach, or else a refusal).
                return Ok(RouteDecision {
                    target: Target::Current,
                    tenant: None,
                    rls_required: rls,
                });
            }
            match resolve_sources(hint, None, &[], &sim, &ctx)? {
                Some((id, by)) => {
                    let place = placement(&ctx, &id)?;
                    (
                        Target::Tenant {
                            tenant_id: id.clone(),
                            data_source: place.data_source,
                        },
                        Some((id, by)),
                    )
                }
                None => (Target::App, None),
            }
        }
    };
    Ok(RouteDecision {
        target,
        tenant,
        rls_required: rls,
    })
}

fn list<'a>(tables: impl Iterator<Item = &'a TableRef>) -> String {
    tables.map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
}

fn describe(t: &Target) -> String {
    match t {
        Target::App => "the application database".into(),
        Target::Tenant { tenant_id, .. } => format!("tenant \"{tenant_id}\""),
        Target::Current => "the current target".into(),
    }
}

fn value(v: &TenantValue, ctx: &Ctx) -> Option<String> {
    match v {
        TenantValue::Literal(s) => Some(s.clone()),
        TenantValue::Param(n) => (ctx.params)(*n),
    }
}

fn check_allowed(id: &str, ctx: &Ctx) -> Result<(), RouteError> {
    match ctx.session.allowed_tenants {
        Some(allowed) if !allowed.iter().any(|a| a == id) => Err(RouteError::new(
            "42501",
            format!("permission denied for tenant \"{id}\""),
        )),
        _ => Ok(()),
    }
}

fn placement(ctx: &Ctx, id: &str) -> Result<TenantPlacement, RouteError> {
    match ctx.dir.tenant(id) {
        None => Err(RouteError::new(
            "3D000",
            format!("tenant \"{id}\" is not known"),
        )),
        Some(p) if !p.active => Err(RouteError::new(
            "08004",
            format!("tenant \"{id}\" is suspended"),
        )),
        Some(p) => Ok(p),
    }
}

/// Resolves the tenant of a statement touching tenant tables, refusing
/// statements whose tenant conditions can match several tenants.
fn resolve(
    st: &StatementInfo,
    sim: &Sim,
    ctx: &Ctx,
) -> Result<Option<(String, ResolvedBy)>, RouteError> {
    let filters: Vec<String> = st
        .tenant_filters
        .iter()
        .filter_map(|v| value(v, ctx))
        .collect();
    let mut named: Vec<String> = Vec::new();
    for v in st
        .tenant_mentions
        .iter()
        .filter_map(|v| value(v, ctx))
        .chain(filters.iter().cloned())
    {
        if !named.contains(&v) {
            named.push(v);
        }
    }
    if st.tenant_under_or {
        return Err(RouteError::new(
            "0A000",
            "statement spans several tenants: the tenant_id condition is not a plain equality that constrains the whole statement",
        )
        .with_hint("restrict the statement to one tenant with a top-level tenant_id = '<id>' condition"));
    }
    if named.len() > 1 {
        return Err(RouteError::new(
            "0A000",
            format!(
                "statement spans several tenants: {}",
                named
                    .iter()
                    .map(|n| format!("\"{n}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .with_hint("send one statement per tenant"));
    }
    resolve_sources(
        st.hint_tenant.clone(),
        filters.first().cloned(),
        &named,
        sim,
        ctx,
    )
}

/// First-match-wins over hint, statement filter, session (SET LOCAL, SET,
/// startup parameter, database name) and the only allowed tenant; a
/// disagreement between statement-level and session-level sources is an
/// error rather than a choice.
fn resolve_sources(
    hint: Option<String>,
    filter: Option<String>,
    named: &[String],
    sim: &Sim,
    ctx: &Ctx,
) -> Result<Option<(String, ResolvedBy)>, RouteError> {
    if let Some(h) = &hint {
        if let Some(other) = named.iter().find(|n| *n != h) {
            return Err(RouteError::new(
                "0A000",
                format!(
                    "tenant hint \"{h}\" conflicts with tenant \"{other}\" named in the statement"
                ),
            ));
        }
    }
    if sim.unknown && sim.local.is_none() {
        // Not even a tenant the statement names: it cannot be checked
        // against the session's.
        return Err(tenant_unknown());
    }
    let s = ctx.session;
    if let (Some(a), Some(b)) = (s.startup_tenant, s.database_tenant) {
        if a != b && sim.local.is_none() && sim.session.is_none() {
            return Err(RouteError::new(
                "42501",
                format!("startup parameter names tenant \"{a}\" but the database name belongs to tenant \"{b}\""),
            ));
        }
    }
    let session_level: Option<(String, ResolvedBy)> = sim
        .local
        .clone()
        .or_else(|| sim.session.clone())
        .map(|t| (t, ResolvedBy::Session))
        .or_else(|| {
            s.startup_tenant
                .map(|t| (t.to_string(), ResolvedBy::StartupParameter))
        })
        .or_else(|| {
            s.database_tenant
                .map(|t| (t.to_string(), ResolvedBy::DatabaseName))
        });
    let statement_named = hint.clone().or_else(|| named.first().cloned());
    if let (Some(n), Some((cur, _))) = (&statement_named, &session_level) {
        if n != cur {
            return Err(RouteError::new(
                "42501",
                format!(
                    "statement names tenant \"{n}\" but the session is set to tenant \"{cur}\""
                ),
            )
            .with_hint(
                "change the session's tenant first, or drop the tenant from the statement",
            ));
        }
    }
    for n in hint.iter().chain(named) {
        check_allowed(n, ctx)?;
    }
    let resolved = hint
        .map(|h| (h, ResolvedBy::Hint))
        .or_else(|| filter.map(|f| (f, ResolvedBy::Statement)))
        .or(session_level)
        .or_else(|| match s.allowed_tenants {
            Some([only]) => Some((only.clone(), ResolvedBy::OnlyAllowedTenant)),
            _ => None,
        });
    if let Some((id, _)) = &resolved {
        check_allowed(id, ctx)?;
    }
    Ok(resolved)
}

fn apply_effects(st: &StatementInfo, sim: &mut Sim, ctx: &Ctx) -> Result<(), RouteError> {
    for e in &st.effects {
        match e {
            SessionEffect::SetTenant { value: v, local } => {
                let Some(id) = value(v, ctx) else {
                    return Err(RouteError::new(
                        "22023",
                        "the tenant setting was given a parameter without a value",
                    ));
                };
                check_allowed(&id, ctx)?;
                if *local {
                    sim.local = Some(id);
                } else {
                    sim.session = Some(id);
                    sim.local = None;
                    sim.unknown = false;
                    sim.changed = true;
                }
            }
            SessionEffect::ResetTenant | SessionEffect::ResetAll => {
                sim.session = None;
                sim.local = None;
                sim.unknown = false;
                sim.changed = true;
            }
            SessionEffect::Deallocate(_)
            | SessionEffect::Other
            | SessionEffect::LocalSetting
            | SessionEffect::Untracked => {}
        }
    }
    if matches!(
        st.txn,
        TxnControl::Commit | TxnControl::Rollback | TxnControl::PrepareTransaction(_)
    ) {
        sim.local = None;
    }
    if sim.changed
        && matches!(
            st.txn,
            TxnControl::Rollback | TxnControl::RollbackToSavepoint(_)
        )
    {
        sim.unknown = true;
    }
    Ok(())
}
