//! The extended query protocol in transaction pooling.
//!
//! Messages are held until Sync or Flush, then the batch is routed as a
//! whole and translated for the connection it lands on: a client's statement
//! names become content-addressed server names (`pgt_<hash>`), a statement
//! missing on that connection is prepared there first (its ParseComplete
//! swallowed), and the client's own Parse and Close-statement are answered by
//! the proxy in their place in the response stream. Identical statements from
//! different clients share one server-side statement per connection.

use super::expect::{Await, MapUndo, UnnamedBefore};
use super::{Prepared, Resumed, Session};
use crate::protocol::backend::{self as be, PgError, TxStatus};
use crate::protocol::frontend::{self as fe, tag};
use crate::protocol::FrameBatch;
use bytes::{Bytes, BytesMut};
use std::sync::Arc;

fn malformed(e: crate::protocol::ProtocolError) -> PgError {
    PgError::fatal("08P01", e.to_string())
}

/// Whether anything in `batch` needs a server connection: anything but
/// Parses, Closes of statements, Sync and Flush (libpq's PQprepare sends
/// only those).
fn needs_backend(batch: &FrameBatch) -> Result<bool, PgError> {
    for f in batch.iter() {
        match f.tag() {
            tag::PARSE | tag::SYNC | tag::FLUSH => {}
            tag::CLOSE => {
                if fe::describe_or_close(f.body()).map_err(malformed)?.kind == b'P' {
                    return Ok(true);
                }
            }
            _ => return Ok(true),
        }
    }
    Ok(false)
}

/// The portal name that begins an Execute or Close body (the bytes before
/// its NUL; all of them if there is none, which `describe_or_close`
/// refuses before this is read).
fn portal_name(body: &[u8]) -> &[u8] {
    body.split(|b| *b == 0).next().unwrap_or_default()
}

/// `pgt_` + 128 bits of SHA-256 over the text and declared types.
fn server_name(query: &[u8], param_types: &[u8]) -> Arc<str> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(query);
    h.update([0]);
    h.update(param_types);
    let d = h.finalize();
    format!("pgt_{}", hex::encode(&d[..16])).into()
}

impl Session {
    /// Routes and sends (or answers) the batch of held extended-protocol messages.
    pub(super) async fn dispatch_batch(&mut self) -> Result<(), PgError> {
        // The batch and wire buffers are reused across requests: no allocation
        // per request once warm.
        let mut batch = std::mem::take(&mut self.pending);
        let result = self.dispatch(&batch).await;
        if result.is_err() {
            // Not sent, or the session ends: either way nothing to follow.
            self.request_refused();
        }
        batch.clear();
        self.pending = batch;
        result
    }

    /// `dispatch_batch`'s work, on a batch taken out of the session so that
    /// its buffers go back whichever way this returns.
    async fn dispatch(&mut self, batch: &FrameBatch) -> Result<(), PgError> {
        let ends_with_sync = batch.last().is_some_and(|f| f.tag() == tag::SYNC);
        if self.tenant_outcome_pending() {
            if let Err(e) = self.drain_attached().await {
                return self.refuse_batch(e, ends_with_sync).await;
            }
        }
        let entered_failed = self.attached.is_none() && self.client_failed;
        if entered_failed {
            if let Err(e) = self.enter_failed_transaction().await {
                return self.refuse_batch(e, ends_with_sync).await;
            }
        }

        // The server skips to this batch's Sync (an error before a Flush):
        // nothing in it runs, so nothing is routed or refused, and only its
        // Sync goes out (`skip_until_sync`).
        let skipping = self
            .attached
            .as_ref()
            .is_some_and(|a| a.expect.is_skipping());
        let routed = if skipping {
            Ok(None)
        } else if self.shared.routing_enabled() {
            self.route_batch(batch).await
        } else {
            // Not through `route_batch`: an async call costs its future,
            // and this runs for every batch.
            self.check_passthrough_batch(batch).map(|()| None)
        };
        let target = match routed {
            Ok(t) => t,
            Err(refusal) => return self.refuse_batch(refusal, ends_with_sync).await,
        };
        let target = match target {
            Some(t) => t,
            // Only Parses and Closes of statements (libpq's PQprepare): the
            // server checks the statements where their tables live, as
            // PostgreSQL reports a bad one at Parse, on a connection free
            // now (or kept idle by another session: asked back, see
            // `DataSourcePool::try_checkout`). Queueing for one could wait
            // on the transactions of a client that multiplexes connections
            // in one thread behind this synchronous call (pgbench -M
            // prepared does): then, and when the statement's source is not
            // known before a Bind, the proxy answers, and the server checks
            // the statement at its first Bind.
            None if self.attached.is_none() && !needs_backend(batch)? => {
                let Some(t) = self.parse_only_target(batch).await else {
                    return self.answer_batch_locally(batch);
                };
                match self.attach(&t, super::Checkout::IfFree).await {
                    Ok(true) => t,
                    Ok(false) => return self.answer_batch_locally(batch),
                    Err(e) => return self.refuse_batch(e, ends_with_sync).await,
                }
            }
            None => self.current_target()?,
        };
        // `resume` first: the common case costs no future.
        let attached = match self.resume(&target) {
            Resumed::Ready => Ok(()),
            resumed => self.ensure_attached(&target, resumed).await,
        };
        if let Err(e) = attached {
            return self.refuse_batch(e, ends_with_sync).await;
        }

        // Which named Parses the server checks here, in batch order: all
        // of them without routing; with it, those whose statements belong
        // where this batch goes (`parse_check_target`). The others are
        // answered by the proxy and checked when first bound.
        let mut checked = None;
        let named = |f: &crate::protocol::FrameRef<'_>| {
            f.tag() == tag::PARSE && f.body().first() != Some(&0)
        };
        if self.shared.routing_enabled() && batch.iter().any(|f| named(&f)) {
            let mut here = Vec::new();
            for f in batch.iter().filter(|f| f.tag() == tag::PARSE) {
                let t = match named(&f) {
                    true => self.parse_check_target(f.body()).await,
                    false => None,
                };
                here.push(t.is_some_and(|t| t.same(&target)));
            }
            checked = Some(here);
        }
        let mut parses = 0;

        let mut wire = std::mem::take(&mut self.wire);
        let out = &mut self.out;
        let a = self.attached.as_mut().expect("attached above");
        let cap = a.conn.pool().settings.prepared_per_connection;
        let mut sent_extended = false;
        // Statements executed in this batch that the proxy must read
        // afterwards for session-state bookkeeping (usually none: no
        // allocation).
        let routing = self.shared.routing_enabled();
        let mut bound: Vec<std::sync::Arc<[u8]>> = Vec::new();
        // In a failed transaction PostgreSQL refuses a Parse (25P02) unless
        // its statement ends the transaction, and creates no statement. The
        // proxy answers named Parses itself, so there the server raises that
        // error in their place. Known only until a statement runs.
        let mut aborted = entered_failed || (a.status == TxStatus::Failed && a.expect.is_empty());
        for f in batch.iter() {
            match f.tag() {
                tag::PARSE => {
                    let check = checked.as_ref().is_none_or(|c: &Vec<bool>| c[parses]);
                    parses += 1;
                    if self.skip_until_sync {
                        continue;
                    }
                    // The unnamed Parse goes to the server, which fails it
                    // exactly as it would; the proxy answers named ones.
                    if aborted
                        && named(&f)
                        && !accepted_in_failed_transaction(&self.shared, f.body())
                    {
                        raise_in_batch(
                            a,
                            &mut wire,
                            out,
                            &parse_error_in_failed_transaction(f.body()),
                            true,
                        );
                        sent_extended = true;
                        self.skip_until_sync = true;
                        continue;
                    }
                    match record_parse(&mut self.prepared, &mut self.next_generation, f.body())? {
                        Ok(before) if !named(&f) => {
                            // The unnamed statement needs no renaming: forward the
                            // client's own Parse (its ParseComplete is the client's).
                            wire.extend_from_slice(f.raw());
                            // Skipped by the backend already (an error
                            // before a Flush): the statement stays as it was.
                            if let Err(UnnamedBefore::Was(p)) = a.expect.push_unnamed_parse(before)
                            {
                                self.prepared.restore_unnamed(p);
                            }
                            a.conn.unnamed_owner = Some((self.id, self.next_generation - 1));
                            sent_extended = true;
                        }
                        Ok(_) => {
                            if check {
                                // Prepared on the connection now: an error
                                // answers the Parse, and the queued
                                // ParseComplete below is never sent.
                                let name = fe::parse(f.body()).map_err(malformed)?.name;
                                if let Some(stmt) = self.prepared.get(&name) {
                                    let before = wire.len();
                                    ensure_on_connection(a, self.id, stmt, cap, &mut wire);
                                    sent_extended |= wire.len() > before;
                                }
                            }
                            let undo = || {
                                fe::parse(f.body()).ok().map(|p| {
                                    MapUndo::Forget(p.name.into_owned(), self.next_generation - 1)
                                })
                            };
                            a.expect.push_local_undoable(
                                Bytes::from_static(PARSE_COMPLETE),
                                undo,
                                out,
                            )
                        }
                        Err(err) => {
                            raise_in_batch(a, &mut wire, out, &err, aborted);
                            sent_extended = true;
                            self.skip_until_sync = true;
                        }
                    }
                }
                tag::BIND => {
                    if self.skip_until_sync {
                        continue;
                    }
                    let b = fe::bind(f.body()).map_err(malformed)?;
                    match self.prepared.get(&b.statement) {
                        Some(stmt) => {
                            ensure_on_connection(a, self.id, stmt, cap, &mut wire);
                            if *stmt.server_name == *b.statement {
                                wire.extend_from_slice(f.raw());
                            } else {
                                fe::rename_bind(&mut wire, f.body(), &b, &stmt.server_name);
                            }
                            // Only these can have a session effect to note
                            // (the text check is conservative), when an
                            // Execute runs the portal: a Bind runs nothing.
                            if !self.setting_portals.is_empty() {
                                self.setting_portals.retain(|(p, _)| **p != *b.portal);
                            }
                            if stmt.changes_session_state {
                                self.setting_portals
                                    .push((b.portal.into(), stmt.query.clone()));
                            }
                        }
                        // Never forwarded: on the server, the name could be
                        // another session's statement.
                        None => {
                            raise_in_batch(
                                a,
                                &mut wire,
                                out,
                                &no_such_statement(&b.statement),
                                aborted,
                            );
                            sent_extended = true;
                            self.skip_until_sync = true;
                            continue;
                        }
                    }
                    a.expect.push_forwarded();
                    sent_extended = true;
                }
                tag::DESCRIBE => {
                    if self.skip_until_sync {
                        continue;
                    }
                    let d = fe::describe_or_close(f.body()).map_err(malformed)?;
                    let stmt = match d.kind {
                        b'S' => self.prepared.get(&d.name),
                        _ => None,
                    };
                    match stmt {
                        Some(stmt) => {
                            ensure_on_connection(a, self.id, stmt, cap, &mut wire);
                            fe::encode_describe_or_close(
                                &mut wire,
                                tag::DESCRIBE,
                                b'S',
                                &stmt.server_name,
                            );
                            a.expect.push_describe((&*d.name).into());
                        }
                        None if d.kind == b'S' => {
                            // As for Bind: never another session's statement.
                            raise_in_batch(a, &mut wire, out, &no_such_statement(&d.name), aborted);
                            self.skip_until_sync = true;
                        }
                        None => {
                            wire.extend_from_slice(f.raw());
                            a.expect.push_forwarded();
                        }
                    }
                    sent_extended = true;
                }
                tag::EXECUTE => {
                    if self.skip_until_sync {
                        continue;
                    }
                    // It may end the transaction: the server decides from here.
                    aborted = false;
                    if !self.setting_portals.is_empty() {
                        let portal = portal_name(f.body());
                        if let Some((_, query)) =
                            self.setting_portals.iter().find(|(p, _)| **p == *portal)
                        {
                            bound.push(query.clone());
                        }
                    }
                    wire.extend_from_slice(f.raw());
                    a.expect.push_forwarded();
                    sent_extended = true;
                }
                tag::CLOSE => {
                    if self.skip_until_sync {
                        continue;
                    }
                    let c = fe::describe_or_close(f.body()).map_err(malformed)?;
                    if c.kind == b'S' {
                        // Server statements are shared and evicted by LRU; the
                        // client's name simply stops existing.
                        let removed = self.prepared.remove(&c.name);
                        let undo =
                            || removed.map(|p| MapUndo::Restore(c.name.to_string(), Box::new(p)));
                        a.expect
                            .push_local_undoable(be::close_complete(), undo, out);
                    } else {
                        let portal = portal_name(&f.body()[1..]);
                        self.setting_portals.retain(|(p, _)| **p != *portal);
                        wire.extend_from_slice(f.raw());
                        a.expect.push_forwarded();
                        sent_extended = true;
                    }
                }
                tag::SYNC => {
                    self.skip_until_sync = false;
                    wire.extend_from_slice(f.raw());
                    a.expect.push(Await::Sync, false);
                    sent_extended = true;
                }
                tag::FLUSH => {
                    wire.extend_from_slice(f.raw());
                }
                _ => unreachable!("only extended-protocol messages are batched"),
            }
        }
        if sent_extended {
            a.since_sync = true;
        }
        if !wire.is_empty() {
            a.note_request(wire.len());
            a.conn
                .stream
                .send_all(&wire)
                .await
                .map_err(|_| super::backend_lost())?;
        }
        wire.clear();
        self.wire = wire;
        // The batch's settings are recorded as one, so that they are
        // forgotten together when the batch fails (`on_error_of_last`
        // holds one): PostgreSQL undoes them together.
        let mut settings = String::new();
        for query in bound {
            // Not UTF-8 here means no session state: `route_batch` refused those at Parse.
            let Ok(sql) = super::route::analysis_text(&query) else {
                continue;
            };
            if let Ok(Some(analysis)) = self.shared.analyze(sql) {
                if !routing {
                    // Routing noted them at Bind (`apply_effects`).
                    for st in &analysis.statements {
                        self.request_tenant
                            .note(&st.txn, false, &self.session_tenant);
                    }
                }
                match self.note_session_effects(&analysis, sql) {
                    super::Replay::Whole => super::push_statement(&mut settings, sql),
                    // One statement per Parse: never part of one.
                    super::Replay::Part { settings: part, .. } => {
                        super::push_statement(&mut settings, &part)
                    }
                    // Its SETs before it in the batch are cleared too.
                    super::Replay::Nothing if super::route::resets_all(&analysis) => {
                        settings.clear()
                    }
                    super::Replay::Nothing => {}
                }
            }
        }
        if !settings.is_empty() {
            self.record_setting(&target, &settings, false);
        }
        self.request_sent(ends_with_sync);
        Ok(())
    }

    /// The one target where the server can check every Parse of a batch
    /// of only Parses and Closes of statements (`parse_check_target`);
    /// `None` when there is none, or no Parse.
    async fn parse_only_target(&self, batch: &FrameBatch) -> Option<super::Target> {
        if self.held_begin.is_some() && self.shared.routing_enabled() {
            // The transaction's data source is chosen by its first
            // statement that runs, not by a statement being prepared.
            return None;
        }
        let mut chosen: Option<super::Target> = None;
        for f in batch.iter().filter(|f| f.tag() == tag::PARSE) {
            let t = self.parse_check_target(f.body()).await?;
            match &chosen {
                Some(c) if !c.same(&t) => return None,
                Some(_) => {}
                None => chosen = Some(t),
            }
        }
        chosen
    }

    /// A batch of only Parse / Close-statement / Sync whose statements no
    /// server can check before a Bind: the proxy answers it.
    fn answer_batch_locally(&mut self, batch: &FrameBatch) -> Result<(), PgError> {
        for f in batch.iter() {
            match f.tag() {
                tag::PARSE => {
                    if self.skip_until_sync {
                        continue;
                    }
                    match record_parse(&mut self.prepared, &mut self.next_generation, f.body())? {
                        Ok(_) => self.out.extend_from_slice(PARSE_COMPLETE),
                        Err(err) => {
                            self.out.extend_from_slice(&err.encode());
                            self.skip_until_sync = true;
                            if self.held_begin.is_some() {
                                // The transaction the proxy holds fails, as on PostgreSQL.
                                self.client_failed = true;
                            }
                        }
                    }
                }
                tag::CLOSE => {
                    if self.skip_until_sync {
                        continue;
                    }
                    let c = fe::describe_or_close(f.body()).map_err(malformed)?;
                    self.prepared.remove(&c.name);
                    self.out.extend_from_slice(&be::close_complete());
                }
                tag::SYNC => {
                    self.skip_until_sync = false;
                    let status = self.client_status();
                    self.out.extend_from_slice(&be::ready_for_query(status));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Refuses a whole batch: the error now, ReadyForQuery at its Sync.
    async fn refuse_batch(&mut self, err: PgError, ends_with_sync: bool) -> Result<(), PgError> {
        // Nothing of the batch ran.
        self.request_refused();
        if self.in_backend_transaction() && ends_with_sync {
            // Make the backend's transaction fail exactly like PostgreSQL would.
            return self.fail_backend_transaction(&err).await;
        }
        if self.in_backend_transaction() || self.attached.as_ref().is_some_and(|a| a.since_sync) {
            // Failed where it runs, the extended way: a batch ended by
            // Flush in a block gets no ReadyForQuery before the client's
            // Sync (a Query's would be one too many). And batches of this
            // request ended by Flush ran in an implicit transaction the
            // backend holds open: it must fail there too, or the request's
            // Sync would commit them.
            return self.raise_in_request(&err, ends_with_sync).await;
        }
        if self.held_begin.is_some() {
            self.client_failed = true;
        }
        self.refuse(&err, ends_with_sync);
        if !ends_with_sync {
            self.skip_until_sync = true;
        }
        Ok(())
    }

    /// Raises `err` on the attached backend, in the extended-protocol
    /// request it is in the middle of (`raise_in_batch`), and sends the
    /// request's Sync if the refused batch ended with it: the backend
    /// fails the implicit transaction, and the client gets the error and,
    /// at its Sync, ReadyForQuery, as from PostgreSQL.
    async fn raise_in_request(
        &mut self,
        err: &PgError,
        ends_with_sync: bool,
    ) -> Result<(), PgError> {
        crate::metrics::refused(err.code);
        tracing::info!(session = self.id, user = %self.user, code = err.code, message = %err.message, "statement refused inside a request");
        let mut wire = std::mem::take(&mut self.wire);
        let a = self.attached.as_mut().expect("checked by the caller");
        raise_in_batch(a, &mut wire, &mut self.out, err, false);
        if ends_with_sync {
            wire.extend_from_slice(&fe::encode_sync());
            a.expect.push(Await::Sync, false);
        } else {
            // The server skips to the client's Sync: so does the session.
            self.skip_until_sync = true;
        }
        a.note_request(wire.len());
        let sent = a.conn.stream.send_all(&wire).await;
        wire.clear();
        self.wire = wire;
        sent.map_err(|_| super::backend_lost())
    }
}

const PARSE_COMPLETE: &[u8] = b"1\0\0\0\x04";

/// PostgreSQL's error for a statement name the client never prepared.
fn no_such_statement(name: &str) -> PgError {
    let message = if name.is_empty() {
        "unnamed prepared statement does not exist".to_string()
    } else {
        format!(
            "prepared statement \"{}\" does not exist",
            fe::name_for_display(name)
        )
    };
    PgError::error("26000", message)
}

/// Makes the server itself fail with `err` at this point of the batch
/// (an unnamed statement raising it, whose ParseComplete and BindComplete
/// are swallowed): it then skips the rest of the batch up to Sync and fails
/// the transaction, explicit or implicit, as when PostgreSQL finds the
/// error. An error the proxy only answered itself would let the rest of the
/// batch run, and commit. The caller skips its own work to Sync.
///
/// In a transaction known to have failed (`aborted`), the server would
/// refuse the injected statement itself (25P02) and runs nothing anyway:
/// the proxy answers `err` in its place. So does it for text that would
/// break the statement's quoting (`raise_sql`), the one difference left.
fn raise_in_batch(
    a: &mut super::Attached,
    wire: &mut BytesMut,
    out: &mut BytesMut,
    err: &PgError,
    aborted: bool,
) {
    let sql = match super::route::raise_sql(err) {
        Some(sql) if !aborted => sql,
        _ => {
            a.expect.push_local(err.encode(), out);
            return;
        }
    };
    fe::encode_parse(wire, "", sql.as_bytes(), &[0, 0]);
    fe::encode_bind_execute_unnamed(wire);
    // The unnamed statement is the proxy's now, whatever happens.
    a.conn.unnamed_owner = None;
    a.expect
        .push_statement_op(Await::ParseComplete, Arc::from(""));
    a.expect.push(Await::BindComplete, true);
    a.expect.push(Await::Execute, true);
}

/// PostgreSQL's error for Parse message `body` in a failed transaction:
/// its grammar's (`grammar_error`), which the parser reports first, else
/// 25P02.
fn parse_error_in_failed_transaction(body: &[u8]) -> PgError {
    fe::parse(body)
        .ok()
        .and_then(|p| grammar_error(p.query))
        .unwrap_or_else(super::route::transaction_aborted)
}

/// `router::grammar_error` of a Parse's query text; `None` for text that
/// is not UTF-8, which the server then judges.
fn grammar_error(query: &[u8]) -> Option<PgError> {
    let sql = std::str::from_utf8(query).ok()?;
    crate::router::grammar_error(sql).map(PgError::from)
}

/// Whether PostgreSQL accepts the Parse message `body` in a failed
/// transaction: its statement ends the transaction (COMMIT, ROLLBACK [TO
/// SAVEPOINT], PREPARE TRANSACTION), or it has none (an empty text).
fn accepted_in_failed_transaction(shared: &crate::server::Shared, body: &[u8]) -> bool {
    use crate::router::TxnControl;
    let Ok(p) = fe::parse(body) else {
        return false;
    };
    let Ok(sql) = std::str::from_utf8(p.query) else {
        return false;
    };
    let Ok(Some(a)) = shared.analyze(sql) else {
        return false;
    };
    match &a.statements[..] {
        [] => true,
        [st] => matches!(
            st.txn,
            TxnControl::Commit
                | TxnControl::Rollback
                | TxnControl::RollbackToSavepoint(_)
                | TxnControl::PrepareTransaction(_)
        ),
        _ => false,
    }
}

/// Records a client's Parse (`body`, the message's body): `Ok`, or the
/// error PostgreSQL would report (42P05) for the client; `Err` when the
/// message is malformed.
fn record_parse(
    prepared: &mut super::PreparedMap,
    next_generation: &mut u64,
    body: &[u8],
) -> Result<Result<UnnamedBefore, PgError>, PgError> {
    let generation = *next_generation;
    if let Some(old) = prepared.unnamed_parsed_from(body) {
        // Drivers re-send the same unnamed statement on every execution:
        // recognised by its bytes, it is neither decoded nor allocated
        // again; only its generation changes.
        *next_generation += 1;
        old.generation = generation;
        set_declared_oids(&mut old.param_oids, &old.param_types);
        return Ok(Ok(UnnamedBefore::Same));
    }
    let p = fe::parse(body).map_err(malformed)?;
    Ok(register_parse(prepared, next_generation, &p).map(UnnamedBefore::Was))
}

/// Records a decoded Parse; a named statement that already exists is 42P05,
/// as in PostgreSQL (the unnamed one is simply replaced: it is returned),
/// after the errors PostgreSQL finds first, in the statement's grammar.
fn register_parse(
    prepared: &mut super::PreparedMap,
    next_generation: &mut u64,
    p: &fe::Parse<'_>,
) -> Result<Option<Prepared>, PgError> {
    if !p.name.is_empty() && prepared.contains_key(&p.name) {
        if let Some(e) = grammar_error(p.query) {
            return Err(e);
        }
        return Err(PgError::error(
            "42P05",
            format!(
                "prepared statement \"{}\" already exists",
                fe::name_for_display(&p.name)
            ),
        ));
    }
    let generation = *next_generation;
    *next_generation += 1;
    let name: Arc<str> = if p.name.is_empty() {
        "".into()
    } else {
        server_name(p.query, p.param_types)
    };
    Ok(prepared.insert(
        p.name.to_string(),
        Prepared {
            query: p.query.into(),
            param_types: Bytes::copy_from_slice(p.param_types),
            server_name: name,
            generation,
            param_oids: {
                let mut oids = Vec::new();
                set_declared_oids(&mut oids, p.param_types);
                oids
            },
            changes_session_state: super::may_change_session_state(p.query),
        },
    ))
}

/// Sets `oids` to the OIDs a Parse declared (0 = let the server infer),
/// reusing its buffer: drivers re-send the unnamed statement on every
/// execution.
fn set_declared_oids(oids: &mut Vec<u32>, param_types: &[u8]) {
    oids.clear();
    oids.extend(
        param_types
            .get(2..)
            .unwrap_or(&[])
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])),
    );
}

/// Makes sure `stmt` exists on the attached connection, queueing a Parse
/// (and an LRU eviction Close) in `wire` when it does not.
fn ensure_on_connection(
    a: &mut super::Attached,
    session: u64,
    stmt: &Prepared,
    cap: usize,
    wire: &mut BytesMut,
) {
    if stmt.server_name.is_empty() {
        let owner = Some((session, stmt.generation));
        if a.conn.unnamed_owner != owner {
            fe::encode_parse(wire, "", &stmt.query, &stmt.param_types);
            a.expect
                .push_statement_op(Await::ParseComplete, stmt.server_name.clone());
            a.conn.unnamed_owner = owner;
        }
        return;
    }
    if let Some(pos) = a.conn.prepared.iter().position(|n| *n == stmt.server_name) {
        // Most recently used goes to the back.
        let n = a.conn.prepared.remove(pos).expect("position is valid");
        a.conn.prepared.push_back(n);
        return;
    }
    if a.conn.statements_unknown {
        // It may still be there after all (the DEALLOCATE ALL failed):
        // closing a statement that does not exist is not an error.
        fe::encode_describe_or_close(wire, tag::CLOSE, b'S', &stmt.server_name);
        a.expect.push(Await::CloseComplete, true);
    }
    while a.conn.prepared.len() >= cap {
        let oldest = a.conn.prepared.pop_front().expect("non-empty");
        fe::encode_describe_or_close(wire, tag::CLOSE, b'S', &oldest);
        a.expect.push_statement_op(Await::CloseComplete, oldest);
    }
    fe::encode_parse(wire, &stmt.server_name, &stmt.query, &stmt.param_types);
    a.expect
        .push_statement_op(Await::ParseComplete, stmt.server_name.clone());
    a.conn.prepared.push_back(stmt.server_name.clone());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::PreparedMap;

    /// A Parse message's body, as `fe::encode_parse` writes it.
    fn parse_body(name: &str, query: &str, types: &[u8]) -> Vec<u8> {
        let mut wire = BytesMut::new();
        fe::encode_parse(&mut wire, name, query.as_bytes(), types);
        wire[5..].to_vec()
    }

    fn record(map: &mut PreparedMap, generation: &mut u64, body: &[u8]) {
        record_parse(map, generation, body)
            .expect("well-formed")
            .expect("recorded");
    }

    #[test]
    fn the_unnamed_statement_is_recognised_only_when_parsed_again_unchanged() {
        let int4: &[u8] = &[0, 1, 0, 0, 0, 23];
        let (mut map, mut generation) = (PreparedMap::default(), 1);
        let first = parse_body("", "SELECT $1", int4);
        record(&mut map, &mut generation, &first);
        assert_eq!(&*map.get("").unwrap().server_name, "");
        let original = Arc::as_ptr(&map.get("").unwrap().query);
        assert_eq!(map.get("").unwrap().param_oids, [23]);

        // The same bytes again: the same entry, a new generation.
        map.get_mut("").unwrap().param_oids = vec![99];
        record(&mut map, &mut generation, &first);
        let again = map.get("").unwrap();
        assert_eq!((again.generation, Arc::as_ptr(&again.query)), (2, original));
        assert_eq!(again.param_oids, [23], "declared types are restored");

        // A longer text, another type, a named statement: never the same.
        for (name, query, types) in [
            ("", "SELECT $1 + 1", int4),
            ("", "SELECT $", int4),
            ("", "SELECT $1", &[0, 1, 0, 0, 0, 25][..]),
            ("", "SELECT $1", &[0, 0][..]),
        ] {
            record(&mut map, &mut generation, &parse_body(name, query, types));
            let p = map.get("").unwrap();
            assert_eq!(&*p.query, query.as_bytes());
            assert_eq!(&p.param_types[..], types);
        }
        record(
            &mut map,
            &mut generation,
            &parse_body("s1", "SELECT $1", int4),
        );
        assert!(map.get("s1").unwrap().server_name.starts_with("pgt_"));
        assert_eq!(&*map.get("").unwrap().query, b"SELECT $1");

        // Malformed: an error for the connection, not a recorded statement.
        assert!(record_parse(&mut map, &mut generation, b"\0SELECT 1").is_err());
    }

    #[test]
    fn a_name_in_use_is_reported_after_the_grammars_errors() {
        let (mut map, mut generation) = (PreparedMap::default(), 1);
        record(
            &mut map,
            &mut generation,
            &parse_body("s1", "SELECT 1", &[0, 0]),
        );
        let again = |map: &mut PreparedMap, generation: &mut u64, sql: &str| {
            let body = parse_body("s1", sql, &[0, 0]);
            let e = record_parse(map, generation, &body).expect("well-formed");
            match e {
                Err(e) => e.code,
                Ok(_) => panic!("{sql:?} was recorded under a name in use"),
            }
        };
        // PostgreSQL parses the text before it looks for the name.
        assert_eq!(again(&mut map, &mut generation, "SELEC 1"), "42601");
        assert_eq!(
            again(&mut map, &mut generation, "SELECT 1; SELECT 2"),
            "42601"
        );
        assert_eq!(again(&mut map, &mut generation, "SELECT 2"), "42P05");
    }
}
