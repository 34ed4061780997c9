//! Where each request goes: the bridge between the pure router
//! (`crate::router`) and the session's connections.
//!
//! Decisions happen here, before any byte is sent: a request the router
//! refuses never reaches a backend, and a transaction stays on the backend
//! its first deciding statement picked.

use super::expect::Await;
use super::undo::TenantUndo;
use super::{Replay, Resumed, Session, Target};
use crate::protocol::backend::{self as be, PgError, TxStatus};
use crate::protocol::frontend::{self as fe, tag};
use crate::protocol::FrameBatch;
use crate::router::{self, Analysis, RouteDecision, SessionEffect, TenantValue, TxnControl};
use std::sync::Arc;

impl From<router::RouteError> for PgError {
    fn from(e: router::RouteError) -> PgError {
        let mut p = PgError::error(e.sqlstate, e.message);
        p.hint = e.hint;
        p
    }
}

impl Session {
    /// Whether `sql` must be analysed: always when routing; in pass-through
    /// only for session state, and a statement whose text names none of it
    /// cannot change it (a function doing so would be invisible to the
    /// analysis too).
    pub(super) fn needs_analysis(&self, sql: &[u8]) -> bool {
        self.shared.routing_enabled() || super::may_change_session_state(sql)
    }

    pub(super) fn routing(&self) -> router::SessionRouting<'_> {
        let tenant = self.session_tenant.as_deref();
        let unknown = tenant == Some(super::undo::UNKNOWN_TENANT);
        router::SessionRouting {
            session_tenant: tenant.filter(|_| !unknown),
            local_tenant: self.local_tenant.as_deref(),
            startup_tenant: self.startup_tenant.as_deref(),
            database_tenant: self.database_tenant.as_deref(),
            allowed_tenants: self.allowed_tenants.as_deref(),
            session_tenant_unknown: unknown,
        }
    }

    /// The target of table-less statements: the session's tenant if one is
    /// set (by any session-level means), else (or while it is unknown) the
    /// app DB.
    pub(super) fn current_target(&self) -> Result<Target, PgError> {
        if let Some(a) = &self.attached {
            return Ok(a.target.clone());
        }
        if !self.shared.routing_enabled() {
            return Ok(self.shared.app_target());
        }
        let r = self.routing();
        if r.session_tenant_unknown && r.local_tenant.is_none() {
            // As for a session without a tenant: table-less statements (a
            // driver's ROLLBACK after an error, say) reach no tenant's data.
            return Ok(self.shared.app_target());
        }
        let tenant = r
            .local_tenant
            .or(r.session_tenant)
            .or(r.startup_tenant)
            .or(r.database_tenant)
            .or(match r.allowed_tenants {
                Some([only]) => Some(only.as_str()),
                _ => None,
            });
        match tenant {
            Some(t) => self.shared.tenant_target(t),
            None => Ok(self.shared.app_target()),
        }
    }

    /// Turns a router decision into a target, checking row-level security
    /// where the router asks for it.
    async fn target_of(&self, d: &RouteDecision) -> Result<Target, PgError> {
        match &d.target {
            router::Target::App => Ok(self.shared.app_target()),
            router::Target::Current => self.current_target(),
            router::Target::Tenant { tenant_id, .. } => {
                let target = self.shared.tenant_target(tenant_id)?;
                if !d.rls_required.is_empty() {
                    self.shared.check_rls(&target, &d.rls_required).await?;
                }
                Ok(target)
            }
        }
    }

    fn decide(
        &self,
        analysis: &Analysis,
        params: &dyn Fn(u16) -> Option<String>,
    ) -> Result<RouteDecision, PgError> {
        let dir = self.shared.directory();
        router::decide(analysis, &self.routing(), params, &dir).map_err(PgError::from)
    }

    /// True while the attached backend is inside a transaction block.
    pub(super) fn in_backend_transaction(&self) -> bool {
        self.attached
            .as_ref()
            .is_some_and(|a| a.status != TxStatus::Idle)
    }

    /// Reports `err` *through* the transaction's backend so that it fails
    /// there too: the client then sees 25P02 until ROLLBACK, exactly as
    /// PostgreSQL behaves after any error.
    pub(super) async fn fail_backend_transaction(&mut self, err: &PgError) -> Result<(), PgError> {
        crate::metrics::refused(err.code);
        tracing::info!(session = self.id, user = %self.user, code = err.code, message = %err.message, "statement refused inside a transaction");
        let Some(sql) = raise_sql(err) else {
            // Cannot happen with our own messages; refuse locally rather than guess.
            self.refuse(err, true);
            return Ok(());
        };
        self.skip_until_sync = false;
        self.send_to_backend(&fe::encode_query(&sql), Await::Query, false)
            .await
    }

    /// The transaction the proxy holds (its BEGIN not sent yet) failed, and
    /// an extended-protocol batch arrives: PostgreSQL would answer it from
    /// the failed transaction (25P02, or ROLLBACK for a COMMIT). A backend
    /// transaction made to fail the same way, quietly (the client saw its
    /// error already), gives exactly those answers.
    pub(super) async fn enter_failed_transaction(&mut self) -> Result<(), PgError> {
        let target = self.current_target()?;
        let resumed = self.resume(&target);
        self.ensure_attached(&target, resumed).await?;
        self.client_failed = false;
        let sql = raise_sql(&transaction_aborted()).expect("the proxy's own message");
        self.send_to_backend(&fe::encode_query(&sql), Await::Query, true)
            .await?;
        if let Some(a) = self.attached.as_mut() {
            a.expect.on_error_of_last(super::expect::OnError::Expected);
        }
        Ok(())
    }

    /// Attaches `target`, refusing a switch inside a transaction; `resumed`
    /// is what `Session::resume` made of `target` just before.
    pub(super) async fn ensure_attached(
        &mut self,
        target: &Target,
        resumed: Resumed,
    ) -> Result<(), PgError> {
        match resumed {
            Resumed::Ready => return Ok(()),
            Resumed::Setup(setup) => return self.send_setup(setup).await,
            Resumed::Wait => {}
        }
        if let Some(a) = &self.attached {
            // Responses still in flight (a pipelined COMMIT, say): finish
            // them before deciding, the status they end with decides.
            if !a.expect.is_empty() {
                self.drain_attached().await?;
            }
            if self.in_backend_transaction() {
                let a = self.attached.as_ref().expect("still attached");
                return Err(cross_target(&a.target, target));
            }
            self.switching = true;
            self.maybe_detach().await;
            self.switching = false;
        }
        self.attach(target, super::Checkout::Wait).await.map(|_| ())
    }

    /// Reads and forwards backend responses until nothing is outstanding.
    /// They reach the client as they come, so a large result is never held
    /// here; a client that leaves meanwhile ends the wait, and the session
    /// (which cancels the statement), as in a checkout's wait.
    pub(super) async fn drain_attached(&mut self) -> Result<(), PgError> {
        loop {
            self.backend_messages()?;
            if self.flush_client().await.is_err() {
                self.client_gone = true;
                return Err(super::closed());
            }
            let Some(a) = self.attached.as_mut() else {
                return Ok(());
            };
            if a.expect.is_empty() {
                return Ok(());
            }
            let conn = &mut *a.conn;
            let room = self.creader.buffered() < super::CLIENT_READ_AHEAD;
            let signal = self.signal.clone();
            let (backend_open, client_open) = tokio::select! {
                biased;
                () = signal.fired() => return Err(super::killed()),
                r = conn.reader.fill(&mut conn.stream) => (matches!(r, Ok(true)), true),
                r = self.creader.fill(&mut self.client), if room => (true, matches!(r, Ok(true))),
            };
            if !backend_open {
                self.attached = None;
                return Err(super::backend_lost());
            }
            if !client_open {
                self.client_gone = true;
                return Err(super::closed());
            }
        }
    }

    /// What pass-through asks of an extended-protocol batch: the statements
    /// it must read because they change session state (their effects are
    /// replayed) must be UTF-8. A message all ASCII, the common case, is
    /// neither decoded nor scanned.
    #[inline]
    pub(super) fn check_passthrough_batch(&self, batch: &FrameBatch) -> Result<(), PgError> {
        for f in batch.iter().filter(|f| f.tag() == tag::PARSE) {
            if f.body().is_ascii() {
                continue;
            }
            let p = fe::parse(f.body()).map_err(|e| PgError::fatal("08P01", e.to_string()))?;
            if !p.query.is_ascii() && self.needs_analysis(p.query) {
                analysis_text(p.query)?;
            }
        }
        Ok(())
    }

    /// Routes the targets of an extended-protocol batch (routing on).
    /// `Ok(None)`: nothing in it decides (the session's current target
    /// applies).
    pub(super) async fn route_batch(
        &mut self,
        batch: &FrameBatch,
    ) -> Result<Option<Target>, PgError> {
        // The session's list, emptied after each batch: no allocation per batch.
        let mut parsed = std::mem::take(&mut self.parsed_in_batch);
        let routed = self.route_batch_with(batch, &mut parsed).await;
        parsed.clear();
        self.parsed_in_batch = parsed;
        routed
    }

    /// `route_batch`, with `parsed` (empty) to hold the analyses of the
    /// batch's Parses, by statement name, for its Binds and Describes.
    async fn route_batch_with(
        &mut self,
        batch: &FrameBatch,
        parsed: &mut Vec<(String, Arc<Analysis>)>,
    ) -> Result<Option<Target>, PgError> {
        let mut chosen: Option<Target> = None;
        let mut weak: Option<RouteDecision> = None;
        for f in batch.iter() {
            let decision = match f.tag() {
                tag::PARSE => {
                    let p =
                        fe::parse(f.body()).map_err(|e| PgError::fatal("08P01", e.to_string()))?;
                    if let Some(a) = self.shared.analyze(analysis_text(p.query)?)? {
                        parsed.retain(|(n, _)| *n != p.name);
                        parsed.push((p.name.to_string(), a));
                    }
                    None
                }
                tag::BIND => {
                    let b =
                        fe::bind(f.body()).map_err(|e| PgError::fatal("08P01", e.to_string()))?;
                    let analysis = self.statement_analysis(parsed, &b.statement)?;
                    let oids = self
                        .prepared
                        .get(&b.statement)
                        .map(|p| p.param_oids.clone())
                        .unwrap_or_default();
                    match analysis {
                        Some(a) => {
                            for n in tenant_params(&a) {
                                if !b.param_is_null(n) && b.param_text(n, &oids).is_none() {
                                    return Err(PgError::error(
                                        "22023",
                                        format!("cannot read the tenant from parameter ${n}: binary format of an unsupported type"),
                                    )
                                    .with_hint("Send tenant parameters as text, int, or uuid."));
                                }
                            }
                            let read = |n| b.param_text(n, &oids);
                            let d = self.decide(&a, &read)?;
                            self.apply_effects(&a, &read)?;
                            Some((d, table_less(&a)))
                        }
                        None => None,
                    }
                }
                tag::DESCRIBE => {
                    let d = fe::describe_or_close(f.body())
                        .map_err(|e| PgError::fatal("08P01", e.to_string()))?;
                    if d.kind != b'S' || batch.iter().any(|m| m.tag() == tag::BIND) {
                        None
                    } else {
                        let analysis = self.statement_analysis(parsed, &d.name)?;
                        match analysis {
                            Some(a) => Some((self.describe_decision(&a)?, table_less(&a))),
                            None => None,
                        }
                    }
                }
                _ => None,
            };
            if let Some((d, table_less)) = decision {
                if table_less {
                    // SELECT 1, SET, BEGIN: they follow the open transaction or
                    // whatever else the batch decides; alone, their own
                    // decision (a hint, the session tenant) applies.
                    if self.attached.is_none() && weak.is_none() {
                        weak = Some(d);
                    }
                    continue;
                }
                let t = self.target_of(&d).await?;
                match &chosen {
                    Some(c) if !c.same(&t) => return Err(cross_target(c, &t)),
                    Some(_) => {}
                    None => chosen = Some(t),
                }
            }
        }
        match (chosen, weak) {
            (Some(t), _) => Ok(Some(t)),
            (None, Some(d)) => Ok(Some(self.target_of(&d).await?)),
            (None, None) => Ok(None),
        }
    }

    /// Where the server should check the statement of Parse message
    /// `body` (PostgreSQL reports a bad statement at Parse, not at its first
    /// Bind): the target its tables decide without parameters. `None` when
    /// that cannot be told before a Bind (the tenant is a parameter): then
    /// the proxy answers the Parse itself, and the server checks the
    /// statement when it is first bound. No tenant is probed as for a
    /// Describe: a Parse must not choose where a transaction runs.
    pub(super) async fn parse_check_target(&self, body: &[u8]) -> Option<Target> {
        if !self.shared.routing_enabled() {
            return Some(self.shared.app_target());
        }
        let p = fe::parse(body).ok()?;
        let a = self.shared.analyze(analysis_text(p.query).ok()?).ok()??;
        let d = self.decide(&a, &|_| None).ok()?;
        self.target_of(&d).await.ok()
    }

    /// The analysis of statement `name`: parsed earlier in this batch, or
    /// prepared before (its text re-analyzed through the cache). A prepared
    /// statement that cannot be read as UTF-8 (prepared while routing was
    /// off) is refused rather than sent where the session happens to be.
    fn statement_analysis(
        &self,
        parsed: &[(String, Arc<Analysis>)],
        name: &str,
    ) -> Result<Option<Arc<Analysis>>, PgError> {
        if let Some((_, a)) = parsed.iter().rev().find(|(n, _)| n == name) {
            return Ok(Some(a.clone()));
        }
        match self.prepared.get(name) {
            Some(p) => Ok(self.shared.analyze(analysis_text(&p.query)?).ok().flatten()),
            None => Ok(None),
        }
    }

    /// Describing a statement whose tenant only arrives at Bind (`tenant_id =
    /// $1`) needs *a* tenant data source for its column types. Any the user may
    /// use has the same schema, and Describe reads no rows, so the first allowed
    /// tenant serves; with no tenant at all the normal refusal stands.
    fn describe_decision(&self, a: &Analysis) -> Result<RouteDecision, PgError> {
        match self.decide(a, &|_| None) {
            Ok(d) => Ok(d),
            Err(e) => {
                let probe = match self.allowed_tenants.as_deref() {
                    Some(list) => list.first().cloned(),
                    None => self.shared.any_active_tenant(),
                };
                let Some(probe) = probe else {
                    return Err(e);
                };
                self.decide(a, &move |_| Some(probe.clone())).map_err(|_| e)
            }
        }
    }

    /// Applies the session effects of a statement about to be sent (SET of
    /// the tenant setting, RESET); a tenant the user may not use is refused.
    fn apply_effects(
        &mut self,
        a: &Analysis,
        params: &dyn Fn(u16) -> Option<String>,
    ) -> Result<(), PgError> {
        let mut in_block = self.client_status() != TxStatus::Idle;
        for st in &a.statements {
            in_block = self.follow_tenant_block(&st.txn, in_block);
            let changes_tenant = st.effects.iter().any(|e| {
                matches!(
                    e,
                    SessionEffect::SetTenant { local: false, .. }
                        | SessionEffect::ResetTenant
                        | SessionEffect::ResetAll
                )
            });
            if in_block && changes_tenant && self.tenant_undo.is_none() {
                self.tenant_undo = Some(TenantUndo::new(self.session_tenant.clone()));
            }
            if self.request_tenant.rolls_back_change(&st.txn) {
                self.session_tenant = Some(super::undo::UNKNOWN_TENANT.to_string());
            }
            self.request_tenant
                .note(&st.txn, changes_tenant && !in_block, &self.session_tenant);
            for e in &st.effects {
                match e {
                    SessionEffect::SetTenant { value, local } => {
                        let v = match value {
                            TenantValue::Literal(s) => Some(s.clone()),
                            TenantValue::Param(n) => params(*n),
                        };
                        let Some(v) = v else {
                            return Err(PgError::error(
                                "22023",
                                "the tenant setting needs a value",
                            ));
                        };
                        if v.is_empty() {
                            if *local {
                                self.local_tenant = None
                            } else {
                                self.session_tenant = None
                            }
                            continue;
                        }
                        if let Some(allowed) = &self.allowed_tenants {
                            if !allowed.contains(&v) {
                                return Err(PgError::error(
                                    "42501",
                                    format!("user \"{}\" may not use tenant \"{v}\"", self.user),
                                )
                                .with_hint(
                                    "Ask an administrator to grant the tenant to this user.",
                                ));
                            }
                        }
                        self.shared.tenant_target(&v)?;
                        if *local {
                            self.local_tenant = Some(v);
                        } else {
                            self.session_tenant = Some(v);
                        }
                    }
                    SessionEffect::ResetTenant => {
                        self.session_tenant = None;
                        self.local_tenant = None;
                    }
                    SessionEffect::ResetAll => {
                        self.session_tenant = None;
                        self.local_tenant = None;
                        self.reset_settings();
                    }
                    // After sending (`note_session_effects`), or answered
                    // by the proxy (`deallocate_locally`).
                    SessionEffect::Deallocate(_)
                    | SessionEffect::Other
                    | SessionEffect::LocalSetting
                    | SessionEffect::Untracked => {}
                }
            }
        }
        Ok(())
    }

    /// Whether requests pipelined ahead are in flight whose outcome may undo
    /// a tenant change: one that changed the session tenant outside a block
    /// (`RequestTenant`), or any inside a block that changed it (a failure
    /// there turns a later COMMIT into a rollback, `TenantUndo`). The
    /// request in hand must then wait for them (`drain_attached`, which
    /// forwards their responses): it must be routed by the tenant
    /// PostgreSQL will have. A plain function, run for every request.
    pub(super) fn tenant_outcome_pending(&self) -> bool {
        self.shared.routing_enabled()
            && self.attached.as_ref().is_some_and(|a| {
                !a.expect.is_empty()
                    && (self.tenant_undo.is_some() || a.expect.tenant_change_pending())
            })
    }

    /// Follows the transaction block through statement `txn` to undo its
    /// tenant changes as PostgreSQL undoes the setting (`TenantUndo::follow`);
    /// returns whether a block is open after it.
    fn follow_tenant_block(&mut self, txn: &TxnControl, in_block: bool) -> bool {
        if *txn == TxnControl::None {
            // Nearly every statement: nothing to follow.
            return in_block;
        }
        let failed = self.client_status() == TxStatus::Failed;
        TenantUndo::follow(
            &mut self.tenant_undo,
            &mut self.session_tenant,
            txn,
            in_block,
            failed,
        )
    }

    /// A simple-protocol Query: hold BEGIN, route, refuse, or forward.
    /// `raw` is the original Query message, forwarded unchanged; `text` its
    /// SQL in the client's encoding.
    pub(super) async fn simple_query(&mut self, raw: &[u8], text: &[u8]) -> Result<(), PgError> {
        if self.tenant_outcome_pending() {
            if let Err(e) = self.drain_attached().await {
                return self.refuse_query(e).await;
            }
        }
        // `sql` is the text as UTF-8, read only where `analysis` is Some.
        let (analysis, sql) = if self.needs_analysis(text) {
            match analysis_text(text).and_then(|sql| Ok((self.shared.analyze(sql)?, sql))) {
                Ok(a) => a,
                Err(e) => {
                    self.refuse_query(e).await?;
                    return Ok(());
                }
            }
        } else {
            (None, "")
        };
        let attached = self.attached.is_some();
        if let Some(a) = analysis.as_deref() {
            // Transaction control while no backend is involved yet.
            if !attached && a.statements.len() == 1 && self.shared.routing_enabled() {
                match (
                    &a.statements[0].txn,
                    self.held_begin.is_some() || self.client_failed,
                ) {
                    (TxnControl::Begin, false) => {
                        self.follow_tenant_block(&TxnControl::Begin, false);
                        self.held_begin = Some(sql.to_string());
                        self.out.extend_from_slice(&be::command_complete("BEGIN"));
                        self.out
                            .extend_from_slice(&be::ready_for_query(TxStatus::InTransaction));
                        return Ok(());
                    }
                    (TxnControl::Commit | TxnControl::Rollback, true) => {
                        self.follow_tenant_block(&a.statements[0].txn, true);
                        let failed = self.client_failed;
                        self.held_begin = None;
                        self.client_failed = false;
                        self.local_tenant = None;
                        let tag = if failed || matches!(a.statements[0].txn, TxnControl::Rollback) {
                            "ROLLBACK"
                        } else {
                            "COMMIT"
                        };
                        self.out.extend_from_slice(&be::command_complete(tag));
                        self.out
                            .extend_from_slice(&be::ready_for_query(TxStatus::Idle));
                        return Ok(());
                    }
                    _ => {}
                }
            }
            if !attached && self.client_failed {
                self.refuse(&transaction_aborted(), true);
                return Ok(());
            }
            if self.deallocate_locally(a) {
                return Ok(());
            }
        }
        let target = match &analysis {
            Some(a) if self.shared.routing_enabled() => {
                let decided = self.decide(a, &|_| None);
                let decided = match decided {
                    // Table-less statements stay on the transaction's backend.
                    Ok(_) if table_less(a) && self.attached.is_some() => self.current_target(),
                    Ok(d) => self.target_of(&d).await,
                    Err(e) => Err(e),
                };
                match decided {
                    Ok(t) => t,
                    Err(e) => return self.refuse_query(e).await,
                }
            }
            _ => self.current_target()?,
        };
        if let Some(a) = analysis.as_deref() {
            if let Err(e) = self.apply_effects(a, &|_| None) {
                return self.refuse_query(e).await;
            }
        }
        // `resume` first: the common case costs no future.
        let attached = match self.resume(&target) {
            Resumed::Ready => Ok(()),
            resumed => self.ensure_attached(&target, resumed).await,
        };
        if let Err(e) = attached {
            return self.refuse_query(e).await;
        }
        self.send_to_backend(raw, Await::Query, false).await?;
        // PostgreSQL drops the unnamed statement at every simple Query.
        self.prepared.forget_unnamed();
        if let Some(a) = self.attached.as_mut() {
            a.conn.unnamed_owner = None;
        }
        if let Some(a) = analysis.as_deref() {
            match self.note_session_effects(a, sql) {
                Replay::Nothing => {}
                Replay::Whole => self.record_setting(&target, sql, false),
                Replay::Part {
                    settings,
                    txn_control,
                } => self.record_setting(&target, &settings, txn_control),
            }
        }
        self.request_sent(true);
        Ok(())
    }

    /// Answers a Query that is only `DEALLOCATE <name>` of one of the
    /// client's prepared statements: on the server it has another name
    /// (shared with other sessions), so the proxy forgets the client's name
    /// and answers as PostgreSQL would. Only when no response is still due
    /// (the answer would overtake it, and the transaction's status is not
    /// known yet; waiting for them would also stall a pipelined COPY), and
    /// not in a failed transaction: PostgreSQL refuses the statement there,
    /// and the server will too. Otherwise it is forwarded, and the server
    /// answers 26000.
    fn deallocate_locally(&mut self, a: &Analysis) -> bool {
        let [st] = &a.statements[..] else {
            return false;
        };
        let [SessionEffect::Deallocate(Some(name))] = &st.effects[..] else {
            return false;
        };
        let in_flight = self.attached.as_ref().is_some_and(|a| !a.expect.is_empty());
        if in_flight || !self.prepared.contains_key(name) {
            return false;
        }
        let status = self.client_status();
        if status == TxStatus::Failed {
            return false;
        }
        self.prepared.remove(name);
        self.out
            .extend_from_slice(&be::command_complete("DEALLOCATE"));
        self.out.extend_from_slice(&be::ready_for_query(status));
        true
    }

    async fn refuse_query(&mut self, err: PgError) -> Result<(), PgError> {
        // Nothing of the Query ran.
        self.request_refused();
        if self.in_backend_transaction() {
            return self.fail_backend_transaction(&err).await;
        }
        if self.held_begin.is_some() {
            self.client_failed = true;
        }
        self.refuse(&err, true);
        Ok(())
    }
}

/// Only SET/RESET-like statements, with at least one setting other than the
/// tenant's: safe to replay on another connection (re-running anything else
/// could repeat its writes).
pub(super) fn replayable_settings(a: &Analysis) -> bool {
    a.statements.iter().all(replayable_statement)
        && a.statements
            .iter()
            .any(|s| s.effects.contains(&SessionEffect::Other))
}

/// One statement of `replayable_settings`: it only changes settings.
fn replayable_statement(s: &router::StatementInfo) -> bool {
    s.tables.is_empty()
        && !s.unknown_tables
        && !s.assume_tenant_tables
        && !s.effects.is_empty()
        && s.effects
            .iter()
            .all(|e| !matches!(e, SessionEffect::ResetAll))
}

/// The settings of a simple Query `sql` that mixes them with statements
/// that must not run twice (`SET search_path = x; SELECT …`), to replay
/// without the rest; `None` when they cannot be told apart or replayed.
///
/// `Some((settings, true))`: the text holds transaction control. It is
/// then taken only as a block that the text opens first (`BEGIN; SET …;
/// COMMIT`), its SETs all before any COMMIT or ROLLBACK in it, without
/// savepoints: every error in it then comes inside that block or after it
/// ended, so the block's outcome as the backend reports it decides the
/// SETs (`BlockChanges`). Without transaction control the text is one
/// implicit transaction, and an error anywhere in it undoes them.
///
/// `replacement` gives the statement to replay instead of one (a RESET of
/// a startup parameter: `Session::note_session_effects`); the text itself
/// is replayed otherwise.
pub(super) fn settings_part<'r>(
    a: &Analysis,
    sql: &str,
    replacement: &dyn Fn(&router::StatementInfo) -> Option<&'r str>,
) -> Option<(String, bool)> {
    let mut txn_control = false;
    let mut ended = false;
    for (i, s) in a.statements.iter().enumerate() {
        if s.effects.contains(&SessionEffect::ResetAll) {
            // Its order against the SETs matters: the whole-text path.
            return None;
        }
        match &s.txn {
            TxnControl::None if ended && s.effects.contains(&SessionEffect::Other) => return None,
            TxnControl::None => {}
            TxnControl::Begin if i == 0 => txn_control = true,
            TxnControl::Commit | TxnControl::Rollback if txn_control && !ended => ended = true,
            _ => return None,
        }
    }
    let texts = pg_query::split_with_parser(sql).ok()?;
    if texts.len() != a.statements.len() {
        return None;
    }
    let mut settings = String::new();
    for (s, text) in a.statements.iter().zip(texts) {
        if !s.effects.contains(&SessionEffect::Other) {
            continue;
        }
        // `$`: a parameter or a dollar quote, as for the whole text.
        if !replayable_statement(s) || text.contains('$') {
            return None;
        }
        super::push_statement(&mut settings, replacement(s).unwrap_or(text.trim()));
    }
    (!settings.is_empty()).then_some((settings, txn_control))
}

/// Whether a statement of `a` clears every setting (RESET ALL, DISCARD ALL).
pub(super) fn resets_all(a: &Analysis) -> bool {
    a.statements
        .iter()
        .any(|s| s.effects.contains(&SessionEffect::ResetAll))
}

/// PostgreSQL's error for a statement in a failed transaction.
pub(super) fn transaction_aborted() -> PgError {
    PgError::error(
        "25P02",
        "current transaction is aborted, commands ignored until end of transaction block",
    )
}

/// A statement that makes the server raise `err` (SQLSTATE, message, hint)
/// itself, so that the transaction it runs in fails as PostgreSQL would
/// fail it; `None` if the text would break out of its quoting (never with
/// the proxy's own messages).
pub(super) fn raise_sql(err: &PgError) -> Option<String> {
    let mut sql = format!(
        "DO $pgtenant$BEGIN RAISE EXCEPTION USING ERRCODE = {}, MESSAGE = {}",
        super::quote_literal(err.code),
        super::quote_literal(&err.message)
    );
    if let Some(h) = &err.hint {
        sql.push_str(&format!(", HINT = {}", super::quote_literal(h)));
    }
    sql.push_str("; END$pgtenant$");
    (sql.matches("$pgtenant$").count() == 2).then_some(sql)
}

/// No table and no hidden tables: the statement runs wherever the session is.
fn table_less(a: &Analysis) -> bool {
    a.statements
        .iter()
        .all(|s| s.tables.is_empty() && !s.assume_tenant_tables)
}

/// Bind parameters that can name a tenant in `a`.
fn tenant_params(a: &Analysis) -> Vec<u16> {
    let mut out = Vec::new();
    for s in &a.statements {
        for v in s.tenant_filters.iter().chain(&s.tenant_mentions) {
            if let TenantValue::Param(n) = v {
                out.push(*n);
            }
        }
        for e in &s.effects {
            if let SessionEffect::SetTenant {
                value: TenantValue::Param(n),
                ..
            } = e
            {
                out.push(*n);
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn cross_target(current: &Target, wanted: &Target) -> PgError {
    PgError::error(
        "0A000",
        format!(
            "this transaction runs on {}; the statement needs {}",
            current.describe(),
            wanted.describe()
        ),
    )
    .with_hint("A transaction cannot span databases: COMMIT or ROLLBACK first, then run the statement in its own transaction.")
}

/// The SQL of a statement the proxy must analyze, as UTF-8. Statements it
/// only relays may be in any client encoding (their bytes go on unchanged);
/// one it must read is refused when it is not UTF-8, rather than guessed at.
pub(super) fn analysis_text(text: &[u8]) -> Result<&str, PgError> {
    std::str::from_utf8(text).map_err(|_| {
        PgError::error(
            "22021",
            "pgtenant must read this statement to route it, and its text is not valid UTF-8",
        )
        .with_hint("Set client_encoding to UTF8, or keep non-UTF-8 text out of statements pgtenant routes (SET, BEGIN, tenant tables).")
    })
}
