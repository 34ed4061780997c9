//! What the attached backend still owes us, in order.
//!
//! Every message sent to a backend produces a known sequence of responses.
//! Tracking them tells the session (a) when the backend is idle and can be
//! given back, (b) which responses belong to messages the proxy injected
//! (re-preparing a statement, replaying settings) and must be swallowed, and
//! (c) when to emit responses the proxy answers itself (a client's Parse or
//! Close that never reached this backend), in the position the client expects.

use super::undo::{BlockChanges, RequestUndo};
use crate::protocol::backend::tag;
use crate::protocol::FrameRef;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::Arc;

/// What a backend message told us about statements, for the session to record.
pub enum Undone {
    /// An injected Parse an error skipped: the statement is not on the connection.
    Parse(Arc<str>),
    /// An injected Close an error skipped: the statement is still on the connection.
    Close(Arc<str>),
    /// An error answered a message whose failure the session must record.
    Failed(OnError),
    /// An injected Parse of this server statement failed (its text no longer
    /// prepares): the client's statements with that text are forgotten, as
    /// PostgreSQL would never have created them.
    ParseFailed(Arc<str>),
    /// A change to the client's statements the proxy answered for itself,
    /// for a message an error made the backend skip.
    Map(MapUndo),
    /// ParameterDescription of the client statement named here (parameter type OIDs),
    /// needed to read binary-format tenant parameters at Bind.
    Described(Arc<str>, Vec<u32>),
    /// The client's SET recorded for replay (by its `Settings::key`) ran
    /// inside a transaction block: it stands only if the block commits.
    SettingInTransaction(u64),
    /// The Query or batch that changed the session tenant, or ran a RESET
    /// ALL, outside a block failed: PostgreSQL undid those with it.
    Request(Box<RequestUndo>),
    /// The client's RESET ALL ran inside a transaction block: it stands
    /// only if the block commits (the recorded settings before it).
    ResetInTransaction(Box<super::undo::ResetUndo>),
    /// What a request holding transaction control changed, to decide at
    /// its ReadyForQuery (`BlockChanges`).
    Block(Box<BlockChanges>),
    /// The client's unnamed Parse failed: PostgreSQL dropped the unnamed
    /// statement before parsing, so there is none now.
    UnnamedParseFailed,
    /// An error made the backend skip the client's unnamed Parse: the
    /// unnamed statement is still the one from before it.
    UnnamedParseSkipped(UnnamedBefore),
}

/// The client's unnamed statement before one of its unnamed Parses, kept
/// until the server answers that Parse (`Undone::UnnamedParseSkipped`).
#[derive(Debug)]
pub enum UnnamedBefore {
    /// The Parse sent the same statement again: nothing changed.
    Same,
    /// The statement it replaced (`None`: there was none).
    Was(Option<super::Prepared>),
}

/// What an error in answer to a simple Query means for the session's
/// bookkeeping (`ExpectQueue::push_setup_settings`, `on_error_of_last`).
#[derive(Debug, Clone, Copy)]
pub enum OnError {
    /// The setup Query replaying the session's settings failed, as a whole:
    /// what settings the connection has is unknown.
    SettingsUnknown,
    /// The client's SET, recorded for replay on other connections, failed:
    /// it must not be replayed. (The statement by its `Settings::key`: a
    /// plain value keeps entries free of anything to drop.)
    ForgetSetting(u64),
    /// The error is the point of the Query (`Session::enter_failed_transaction`):
    /// the client saw its own already, so this one is swallowed.
    Expected,
}

/// How to take back a change to the client's statements (its Parse or
/// Close answered by the proxy) that PostgreSQL would not have made: an
/// earlier error in the batch made it skip the message.
#[derive(Debug)]
pub enum MapUndo {
    /// The client's Parse of this name registered a statement (of this
    /// generation).
    Forget(String, u64),
    /// The client's Close of this name removed this statement.
    Restore(String, Box<super::Prepared>),
}

/// What `ExpectQueue::take_plain` made of a backend message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plain {
    /// Not plain: `on_backend_message` must account for it.
    No,
    /// Forwarded; the entry in front still waits.
    PassedThrough,
    /// Forwarded; it completed the entry in front, which is gone.
    Completed,
}

/// The response that completes a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Await {
    ParseComplete,
    BindComplete,
    CloseComplete,
    /// RowDescription or NoData (after an optional ParameterDescription).
    Describe,
    /// CommandComplete, EmptyQueryResponse or PortalSuspended.
    Execute,
    /// ReadyForQuery closing an extended-protocol batch.
    Sync,
    /// ReadyForQuery closing a simple Query or FunctionCall (errors do not end it).
    Query,
    /// As `Query`, for the proxy's setup Query whose ParameterStatus
    /// messages are the client's: the first after the client reset its
    /// settings (see `Session::report_next_setup`).
    ReportingQuery,
}

#[derive(Debug)]
enum Entry {
    /// `stmt` names the server-side statement an injected Parse/Close acts on,
    /// so the connection's statement list can be corrected if it never ran.
    Wait {
        awaits: Await,
        swallow: bool,
        stmt: Option<Arc<str>>,
        on_error: Option<OnError>,
        /// What a failure of this Query or batch undoes of the session's
        /// records (its tenant change, a RESET ALL).
        undo: Option<Box<RequestUndo>>,
    },
    /// A response the proxy sends itself when its turn comes; `true` when
    /// a change to undo if it never comes waits in `ExpectQueue::undos`.
    Local(Bytes, bool),
    /// Consecutive client messages forwarded unchanged (Bind, Describe or
    /// Close of a portal, Execute, the unnamed Parse) whose responses are
    /// the client's and record nothing: one entry counts their
    /// completions, rather than one entry per message (a driver's batch
    /// is mostly these). `unnamed_parse`: the first of them is the
    /// client's unnamed Parse, still unanswered, which an error would
    /// make the backend skip (`Undone::Parse`).
    Forwarded { count: u32, unnamed_parse: bool },
}

#[derive(Default)]
pub struct ExpectQueue {
    q: VecDeque<Entry>,
    /// An error left the backend skipping messages until a Sync that is
    /// not sent yet (the batch ended with Flush): until it is, messages
    /// get no response, so nothing is queued for them.
    skipping: bool,
    /// The changes behind `Entry::Local(_, true)` entries, in queue order:
    /// kept apart so that entries stay cheap to move and to drop.
    undos: VecDeque<MapUndo>,
    /// What each unanswered unnamed Parse (`Entry::Forwarded` with
    /// `unnamed_parse`) replaced, in queue order, kept apart likewise.
    unnamed_before: VecDeque<UnnamedBefore>,
    /// What the Syncs a COPY made the backend ignore carried (`on_error`,
    /// `undo`): the request's implicit transaction now ends at the Sync
    /// the client sends after the copy, which takes them over.
    after_copy: Option<Box<Failure>>,
}

/// What the failure of a Query or batch means: a Query or Sync entry's
/// `on_error` and `undo`.
type Failure = (Option<OnError>, Option<Box<RequestUndo>>);

impl ExpectQueue {
    /// See `skipping`: the session skips its own work up to Sync too.
    pub fn is_skipping(&self) -> bool {
        self.skipping
    }

    fn queue(&mut self, mut e: Entry) {
        if self.skipping {
            match e {
                Entry::Wait {
                    awaits: Await::Sync,
                    ..
                } => self.skipping = false,
                _ => return,
            }
        }
        if let Entry::Wait {
            awaits: Await::Sync,
            on_error,
            undo,
            ..
        } = &mut e
        {
            if let Some(carried) = self.after_copy.take() {
                let (carried_error, carried_undo) = *carried;
                *on_error = on_error.take().or(carried_error);
                *undo = carried_undo;
            }
        }
        self.q.push_back(e);
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// Records a message sent to the backend.
    pub fn push(&mut self, awaits: Await, swallow: bool) {
        self.queue(Entry::Wait {
            awaits,
            swallow,
            stmt: None,
            on_error: None,
            undo: None,
        });
    }

    /// Records a Describe of client statement `name`, to capture its parameter types.
    pub fn push_describe(&mut self, name: Arc<str>) {
        self.queue(Entry::Wait {
            awaits: Await::Describe,
            swallow: false,
            stmt: Some(name),
            on_error: None,
            undo: None,
        });
    }

    /// Records a client message forwarded unchanged whose response is
    /// simply the client's: a Bind, a Describe or Close of a portal, an
    /// Execute (`Entry::Forwarded`).
    pub fn push_forwarded(&mut self) {
        if self.skipping {
            return;
        }
        match self.q.back_mut() {
            Some(Entry::Forwarded { count, .. }) => *count += 1,
            _ => self.q.push_back(Entry::Forwarded {
                count: 1,
                unnamed_parse: false,
            }),
        }
    }

    /// Records the client's own unnamed Parse, forwarded as is, and the
    /// statement it replaced in the client's map: if an error skips it,
    /// that one is back. Gives `before` back when the backend skips the
    /// Parse already (an error before a Flush).
    pub fn push_unnamed_parse(&mut self, before: UnnamedBefore) -> Result<(), UnnamedBefore> {
        if self.skipping {
            return Err(before);
        }
        self.unnamed_before.push_back(before);
        // First of its entry: whether it was answered is then whether the
        // entry counted a completion.
        self.q.push_back(Entry::Forwarded {
            count: 1,
            unnamed_parse: true,
        });
        Ok(())
    }

    /// Records an injected Parse or Close of server statement `stmt` (swallowed).
    pub fn push_statement_op(&mut self, awaits: Await, stmt: Arc<str>) {
        self.queue(Entry::Wait {
            awaits,
            swallow: true,
            stmt: Some(stmt),
            on_error: None,
            undo: None,
        });
    }

    /// Records the setup Query that replays the session's settings
    /// (swallowed, but for its ParameterStatus messages when `report`; its
    /// failure is `OnError::SettingsUnknown`).
    pub fn push_setup_settings(&mut self, report: bool) {
        self.queue(Entry::Wait {
            awaits: match report {
                true => Await::ReportingQuery,
                false => Await::Query,
            },
            swallow: true,
            stmt: None,
            on_error: Some(OnError::SettingsUnknown),
            undo: None,
        });
    }

    /// Gives the simple Query, or the extended-protocol batch (its Sync),
    /// recorded last what its failure means: an error anywhere in it.
    /// Returns whether there was one: the last entry is anything else after
    /// a batch ended by Flush, whose request's Sync is still to come.
    pub fn on_error_of_last(&mut self, e: OnError) -> bool {
        if let Some(Entry::Wait {
            awaits: Await::Query | Await::Sync,
            on_error,
            ..
        }) = self.q.back_mut()
        {
            *on_error = Some(e);
            return true;
        }
        false
    }

    /// Gives the Query or batch recorded last what an error anywhere in it
    /// undoes of the session's records (`RequestUndo`); as with
    /// `on_error_of_last`, nothing when the last entry is not a Query or Sync.
    pub fn undo_on_error(&mut self, request: Box<RequestUndo>) {
        if let Some(Entry::Wait {
            awaits: Await::Query | Await::Sync,
            undo,
            ..
        }) = self.q.back_mut()
        {
            match undo {
                // Taken over from before a COPY: the same implicit transaction.
                Some(earlier) => earlier.merge(*request),
                None => *undo = Some(request),
            }
        }
    }

    /// What the simple Query, or the extended-protocol batch (its Sync),
    /// recorded last changed that its ReadyForQuery decides
    /// (`BlockChanges`); `None` when the last entry is not a Query or Sync.
    pub fn block_of_last(&mut self) -> Option<&mut BlockChanges> {
        match self.q.back_mut() {
            Some(Entry::Wait {
                awaits: Await::Query | Await::Sync,
                undo,
                ..
            }) => Some(
                undo.get_or_insert_with(Box::default)
                    .block
                    .get_or_insert_with(Box::default),
            ),
            _ => None,
        }
    }

    /// Whether a Query or batch that changed the session tenant is still
    /// waiting for its result (which may undo the change).
    pub fn tenant_change_pending(&self) -> bool {
        self.q.iter().any(|e| {
            matches!(
                e,
                Entry::Wait {
                    undo: Some(u),
                    ..
                } if u.tenant.is_some()
            )
        })
    }

    /// Queues a response the proxy answers itself; emitted at once if nothing is ahead of it.
    pub fn push_local(&mut self, bytes: Bytes, out: &mut BytesMut) {
        self.push_local_undoable(bytes, || None, out);
    }

    /// `push_local` for the answer to a change of the client's statements,
    /// with how to undo it if an error makes the backend skip its turn
    /// (built only when the answer has to wait for its turn).
    pub fn push_local_undoable(
        &mut self,
        bytes: Bytes,
        undo: impl FnOnce() -> Option<MapUndo>,
        out: &mut BytesMut,
    ) {
        if self.skipping {
            // PostgreSQL would not answer it either.
        } else if self.q.is_empty() {
            out.extend_from_slice(&bytes);
        } else {
            let undo = undo();
            let has_undo = undo.is_some();
            self.undos.extend(undo);
            self.q.push_back(Entry::Local(bytes, has_undo));
        }
    }

    /// Accounts for one backend message; returns whether to forward it.
    /// Answers of the proxy's own that become due after it are emitted by
    /// the caller, after the message (`local_answer_due`, `drain_locals`).
    pub fn on_backend_message(&mut self, f: FrameRef<'_>, undone: &mut Vec<Undone>) -> bool {
        let t = f.tag();
        let (awaits, swallow) = match self.q.front() {
            Some(Entry::Wait {
                awaits, swallow, ..
            }) => (*awaits, *swallow),
            // An error answering a forwarded message: the skip to Sync
            // below, as for any message but a Query or Sync.
            Some(Entry::Forwarded { .. }) if t == tag::ERROR_RESPONSE => (Await::Execute, false),
            // Asynchronous messages (notices, notifications, parameter changes)
            // can arrive while idle: always the client's. Whatever else
            // reaches here with forwarded messages in front is theirs.
            _ => return true,
        };
        let expected_error = t == tag::ERROR_RESPONSE
            && matches!(
                self.q.front(),
                Some(Entry::Wait {
                    on_error: Some(OnError::Expected),
                    ..
                })
            );
        if t == tag::PARAMETER_DESCRIPTION {
            if let Some(Entry::Wait {
                stmt: Some(name), ..
            }) = self.q.front()
            {
                let b = f.body();
                let n = b
                    .get(..2)
                    .map(|x| i16::from_be_bytes([x[0], x[1]]))
                    .unwrap_or(0)
                    .max(0) as usize;
                let oids = (0..n)
                    .filter_map(|i| b.get(2 + i * 4..6 + i * 4))
                    .map(|x| u32::from_be_bytes([x[0], x[1], x[2], x[3]]))
                    .collect();
                undone.push(Undone::Described(name.clone(), oids));
            }
        }
        let done = match t {
            tag::ERROR_RESPONSE => {
                if matches!(awaits, Await::Query | Await::ReportingQuery | Await::Sync) {
                    self.report_failure_of_front(undone);
                    false
                } else {
                    // The backend skips everything up to the next Sync, and so
                    // do the responses we would have answered locally. Errors
                    // are always the client's to see, even for injected
                    // messages: hiding one could hide a failed re-prepare.
                    // No Sync queued: the one that ends the skipping is
                    // still to come from the client.
                    self.skipping = !self.q.iter().any(|e| {
                        matches!(
                            e,
                            Entry::Wait {
                                awaits: Await::Sync,
                                ..
                            }
                        )
                    });
                    // The entry the error answers: an injected Parse whose
                    // text no longer prepares (a syntax or undefined-object
                    // error, not a failed transaction, a cancel or a lock).
                    if let Some(Entry::Wait {
                        awaits: Await::ParseComplete,
                        swallow: true,
                        stmt: Some(s),
                        ..
                    }) = self.q.front()
                    {
                        let code = crate::protocol::backend::error_code(f.body()).unwrap_or("");
                        if !s.is_empty() && (code.starts_with("42") || code == "0A000") {
                            undone.push(Undone::ParseFailed(s.clone()));
                        }
                    }
                    // The first entry is the one the error answers.
                    let mut answered = true;
                    while let Some(front) = self.q.front() {
                        if matches!(
                            front,
                            Entry::Wait {
                                awaits: Await::Sync,
                                ..
                            }
                        ) {
                            break;
                        }
                        match self.q.pop_front() {
                            Some(Entry::Local(_, true)) => {
                                undone.extend(self.undos.pop_front().map(Undone::Map))
                            }
                            Some(Entry::Wait {
                                awaits: Await::ParseComplete,
                                stmt: Some(s),
                                ..
                            }) => undone.push(Undone::Parse(s)),
                            Some(Entry::Wait {
                                awaits: Await::CloseComplete,
                                stmt: Some(s),
                                ..
                            }) => undone.push(Undone::Close(s)),
                            Some(Entry::Forwarded {
                                unnamed_parse: true,
                                ..
                            }) => {
                                let before = self.unnamed_before.pop_front();
                                undone.push(match (answered, before) {
                                    (false, Some(before)) => Undone::UnnamedParseSkipped(before),
                                    _ => Undone::UnnamedParseFailed,
                                });
                            }
                            _ => {}
                        }
                        answered = false;
                    }
                    // The batch failed: what its failure means applies now
                    // (its Sync only ends the skipping), and so does what a
                    // COPY's ignored Syncs carried (a failed COPY ends here).
                    self.report_failure_of_front(undone);
                    if let Some(carried) = self.after_copy.take() {
                        let (on_error, undo) = *carried;
                        undone.extend(undo.map(Undone::Request));
                        if let Some(e) = on_error.filter(|e| !matches!(e, OnError::Expected)) {
                            undone.push(Undone::Failed(e));
                        }
                    }
                    return true;
                }
            }
            _ => completes(awaits, t),
        };
        let forward = if expected_error {
            false
        } else if t == tag::NOTIFICATION
            || t == tag::ERROR_RESPONSE
            || (t == tag::PARAMETER_STATUS && awaits == Await::ReportingQuery)
        {
            true
        } else {
            !swallow
        };
        if done {
            if let Some(Entry::Wait { on_error, undo, .. }) = self.q.pop_front() {
                // Popped by its ReadyForQuery (an error takes `on_error`
                // and `undo`): inside a block, the request's SETs stand
                // only if the block commits. Reported last first, as the
                // caller applies them in reverse.
                let in_block = f.body().first() != Some(&b'I');
                // Most requests carry nothing: no work for them.
                let (reset, settings, block) = match undo {
                    None => (None, Vec::new(), None),
                    Some(u) => {
                        let u = *u;
                        (u.reset, u.settings, u.block)
                    }
                };
                if let Some(b) = block {
                    undone.push(Undone::Block(b));
                }
                if in_block {
                    if let Some(OnError::ForgetSetting(key)) = on_error {
                        undone.push(Undone::SettingInTransaction(key));
                    }
                    for key in settings.into_iter().rev() {
                        undone.push(Undone::SettingInTransaction(key));
                    }
                    // Applied first: the request's SETs ran after its
                    // RESET ALL (`reset_settings` took those before it).
                    if let Some(r) = reset {
                        undone.push(Undone::ResetInTransaction(r));
                    }
                } else if let Some(r) = reset {
                    // No error undid it; a ROLLBACK after it did, if the
                    // backend reported one (`BlockChanges`).
                    undone.push(Undone::Block(Box::new(BlockChanges {
                        keys: Vec::new(),
                        reset: Some(r),
                    })));
                }
            }
        }
        forward
    }

    /// The Query or batch in front failed: what that means for the session
    /// (`on_error`) is reported once.
    fn report_failure_of_front(&mut self, undone: &mut Vec<Undone>) {
        if let Some(Entry::Wait { on_error, undo, .. }) = self.q.front_mut() {
            // The caller undoes in reverse: a SET the request recorded after
            // its RESET ALL is forgotten before the RESET ALL's settings
            // come back, not among them. What the error does not decide
            // stays for the ReadyForQuery.
            let mut failed = undo.take();
            if let Some(block) = failed.as_mut().and_then(|u| u.block.take()) {
                *undo = Some(Box::new(RequestUndo {
                    block: Some(block),
                    ..RequestUndo::default()
                }));
            }
            undone.extend(failed.map(Undone::Request));
            match on_error.take() {
                Some(OnError::Expected) | None => {}
                Some(e) => undone.push(Undone::Failed(e)),
            }
        }
    }

    /// Takes a backend message tagged `t` that is simply the client's,
    /// without `on_backend_message`'s bookkeeping: one the entry in front
    /// does not swallow, and that is not a message that bookkeeping must
    /// look at (an error, a ParameterDescription, ReadyForQuery). Rows
    /// above all, and the completions of an extended batch's forwarded
    /// messages (ParseComplete, BindComplete, RowDescription,
    /// CommandComplete): the entry a completion pops carries nothing to
    /// report (`on_error` belongs to Query and Sync entries, which only
    /// ReadyForQuery completes, and `stmt` matters only on errors).
    pub fn take_plain(&mut self, t: u8) -> Plain {
        let awaits = match self.q.front_mut() {
            Some(Entry::Forwarded {
                count,
                unnamed_parse,
            }) if !matches!(
                t,
                tag::ERROR_RESPONSE | tag::READY_FOR_QUERY | tag::PARAMETER_DESCRIPTION
            ) =>
            {
                if !is_completion(t) {
                    return Plain::PassedThrough;
                }
                if *unnamed_parse {
                    // Its ParseComplete: the statement it replaced is gone.
                    *unnamed_parse = false;
                    self.unnamed_before.pop_front();
                }
                *count -= 1;
                if *count > 0 {
                    return Plain::PassedThrough;
                }
                self.q.pop_front();
                return Plain::Completed;
            }
            Some(Entry::Wait {
                awaits,
                swallow: false,
                ..
            }) if !matches!(
                t,
                tag::ERROR_RESPONSE | tag::READY_FOR_QUERY | tag::PARAMETER_DESCRIPTION
            ) =>
            {
                *awaits
            }
            _ => return Plain::No,
        };
        if completes(awaits, t) {
            self.q.pop_front();
            Plain::Completed
        } else {
            Plain::PassedThrough
        }
    }

    /// The backend entered copy-in: it ignores every Sync it reads until
    /// CopyDone/CopyFail, and those already sent behind the COPY's Execute
    /// (drivers pipeline Bind/Execute/Sync) will never be answered.
    pub fn on_copy_in(&mut self) {
        let mut first = true;
        let mut carried: Option<Failure> = None;
        self.q.retain_mut(|e| {
            let keep = first
                || !matches!(
                    e,
                    Entry::Wait {
                        awaits: Await::Sync,
                        ..
                    }
                );
            first = false;
            if let (false, Entry::Wait { on_error, undo, .. }) = (keep, e) {
                let (e0, u0) = carried.get_or_insert((None, None));
                *e0 = e0.take().or(on_error.take());
                match (u0.as_mut(), undo.take()) {
                    (Some(earlier), Some(later)) => earlier.merge(*later),
                    (None, later) => *u0 = later,
                    (Some(_), None) => {}
                }
            }
            keep
        });
        if let Some(c) = carried.filter(|(e, u)| e.is_some() || u.is_some()) {
            self.after_copy = Some(Box::new(c));
        }
    }

    /// Whether the proxy's own answers are next in line (after the message
    /// just accounted for).
    pub fn local_answer_due(&self) -> bool {
        matches!(self.q.front(), Some(Entry::Local(..)))
    }

    /// Emits the proxy's own answers that are next in line.
    pub fn drain_locals(&mut self, out: &mut BytesMut) {
        while let Some(Entry::Local(..)) = self.q.front() {
            if let Some(Entry::Local(b, has_undo)) = self.q.pop_front() {
                if has_undo {
                    // Answered: the change stands.
                    self.undos.pop_front();
                }
                out.extend_from_slice(&b);
            }
        }
    }
}

/// Whether a backend message tagged `t` completes an extended-protocol
/// message other than Sync (errors aside): what `Entry::Forwarded` counts.
fn is_completion(t: u8) -> bool {
    matches!(
        t,
        tag::PARSE_COMPLETE
            | tag::BIND_COMPLETE
            | tag::CLOSE_COMPLETE
            | tag::ROW_DESCRIPTION
            | tag::NO_DATA
            | tag::COMMAND_COMPLETE
            | tag::EMPTY_QUERY
            | tag::PORTAL_SUSPENDED
    )
}

/// Whether a backend message tagged `t` is the response that completes a
/// message awaiting `awaits` (errors aside).
fn completes(awaits: Await, t: u8) -> bool {
    match t {
        tag::READY_FOR_QUERY => {
            matches!(awaits, Await::Sync | Await::Query | Await::ReportingQuery)
        }
        tag::PARSE_COMPLETE => awaits == Await::ParseComplete,
        tag::BIND_COMPLETE => awaits == Await::BindComplete,
        tag::CLOSE_COMPLETE => awaits == Await::CloseComplete,
        tag::ROW_DESCRIPTION | tag::NO_DATA => awaits == Await::Describe,
        tag::COMMAND_COMPLETE | tag::EMPTY_QUERY | tag::PORTAL_SUSPENDED => {
            awaits == Await::Execute
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a forwarded unnamed batch queues: Parse, Bind, Describe of the
    /// portal, Execute, Sync (pgbench -M extended, most drivers).
    fn unnamed_batch() -> ExpectQueue {
        let mut q = ExpectQueue::default();
        q.push_unnamed_parse(UnnamedBefore::Same)
            .expect("not skipping");
        q.push_forwarded();
        q.push_forwarded();
        q.push_forwarded();
        q.push(Await::Sync, false);
        q
    }

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    /// Bind, Execute of a COPY FROM STDIN, Sync, the request's RESET ALL
    /// to undo if it fails; then the backend enters copy-in.
    fn copy_batch() -> ExpectQueue {
        let mut q = ExpectQueue::default();
        q.push_forwarded();
        q.push_forwarded();
        q.push(Await::Sync, false);
        q.undo_on_error(Box::new(RequestUndo {
            reset: Some(Box::new(super::super::undo::ResetUndo {
                settings: Default::default(),
            })),
            ..Default::default()
        }));
        let mut undone = Vec::new();
        q.on_backend_message(FrameRef::from_raw(&message(b'2', b"")), &mut undone);
        q.on_copy_in();
        q
    }

    #[test]
    fn what_a_sync_ignored_during_copy_carried_goes_with_the_copy() {
        let error = message(b'E', b"SERROR\0C57014\0Mcopy failed\0\0");
        let failed = |undone: &[Undone]| undone.iter().any(|u| matches!(u, Undone::Request(_)));
        // CopyFail: the error fails the request's implicit transaction.
        let mut q = copy_batch();
        let mut undone = Vec::new();
        q.on_backend_message(FrameRef::from_raw(&error), &mut undone);
        assert!(failed(&undone));

        // CopyDone, then the client's Sync: it ends the implicit
        // transaction and takes the undo over; an error there undoes.
        let mut q = copy_batch();
        let mut undone = Vec::new();
        q.on_backend_message(FrameRef::from_raw(&message(b'C', b"COPY 1\0")), &mut undone);
        q.push(Await::Sync, false);
        assert!(undone.is_empty());
        q.on_backend_message(FrameRef::from_raw(&error), &mut undone);
        assert!(failed(&undone));
    }

    #[test]
    fn a_reporting_setup_forwards_only_its_parameter_reports() {
        for report in [false, true] {
            let mut q = ExpectQueue::default();
            q.push_setup_settings(report);
            let mut undone = Vec::new();
            let mut forwarded =
                |raw: &[u8]| q.on_backend_message(FrameRef::from_raw(raw), &mut undone);
            let status = message(b'S', b"application_name\0start\0");
            assert!(!forwarded(&message(b'C', b"SET\0")));
            assert_eq!(forwarded(&status), report);
            assert!(!forwarded(b"Z\0\0\0\x05I"));
            assert!(q.is_empty() && undone.is_empty());
        }
    }

    #[test]
    fn plain_completions_pop_their_entries_without_the_bookkeeping() {
        let mut q = unnamed_batch();
        let taken: Vec<Plain> = [b'1', b'2', b'T', b'D', b'D', b'C']
            .iter()
            .map(|&t| q.take_plain(t))
            .collect();
        use Plain::*;
        // One entry for the four forwarded messages: gone with the last
        // completion, the Execute's CommandComplete.
        assert_eq!(
            taken,
            [
                PassedThrough,
                PassedThrough,
                PassedThrough,
                PassedThrough,
                PassedThrough,
                Completed
            ]
        );
        // ReadyForQuery is the bookkeeping's: it ends the batch.
        assert_eq!(q.take_plain(b'Z'), No);
        let mut undone = Vec::new();
        assert!(q.on_backend_message(FrameRef::from_raw(b"Z\0\0\0\x05I"), &mut undone));
        assert!(q.is_empty() && undone.is_empty());
    }

    #[test]
    fn errors_and_swallowed_responses_are_never_plain() {
        let mut q = unnamed_batch();
        assert_eq!(q.take_plain(b'E'), Plain::No);
        let mut undone = Vec::new();
        let error = b"E\0\0\0\x0cC42601\0\0";
        assert!(q.on_backend_message(FrameRef::from_raw(error), &mut undone));
        // The error answers the Parse: PostgreSQL has no unnamed statement now.
        assert!(matches!(&undone[..], [Undone::UnnamedParseFailed]));

        // Two unnamed statements in one batch, an error after the first's
        // ParseComplete: the second Parse was skipped, and the unnamed
        // statement is still what it was before it.
        let mut q = ExpectQueue::default();
        for before in [UnnamedBefore::Same, UnnamedBefore::Was(None)] {
            q.push_unnamed_parse(before).expect("not skipping");
            q.push_forwarded();
            q.push_forwarded();
        }
        q.push(Await::Sync, false);
        assert_eq!(q.take_plain(b'1'), Plain::PassedThrough);
        let mut undone = Vec::new();
        assert!(q.on_backend_message(FrameRef::from_raw(error), &mut undone));
        assert!(matches!(
            &undone[..],
            [Undone::UnnamedParseSkipped(UnnamedBefore::Was(None))]
        ));

        // An error after the ParseComplete (at Bind, say): the statement
        // is the client's.
        let mut q = unnamed_batch();
        assert_eq!(q.take_plain(b'1'), Plain::PassedThrough);
        let mut undone = Vec::new();
        assert!(q.on_backend_message(FrameRef::from_raw(error), &mut undone));
        assert!(undone.is_empty());
        // The backend skipped to the Sync: only its ReadyForQuery is due.
        assert!(q.on_backend_message(FrameRef::from_raw(b"Z\0\0\0\x05I"), &mut undone));
        assert!(q.is_empty());

        let mut q = ExpectQueue::default();
        q.push_statement_op(Await::ParseComplete, Arc::from("pgt_x"));
        assert_eq!(q.take_plain(b'1'), Plain::No);
        assert_eq!(q.take_plain(b'D'), Plain::No);
    }

    /// A request that ends inside a transaction block: its SETs, those of
    /// its batches ended by Flush (carried by the Sync's undo) before the
    /// Sync-ended batch's own, stand only if the block commits. Reported
    /// last first (the session applies them in reverse); at an idle
    /// ReadyForQuery, not at all.
    #[test]
    fn a_request_ending_in_a_block_reports_its_sets_in_reverse() {
        let request = || {
            let mut q = ExpectQueue::default();
            q.push(Await::Sync, false);
            assert!(q.on_error_of_last(OnError::ForgetSetting(3)));
            q.undo_on_error(Box::new(RequestUndo {
                settings: vec![1, 2],
                ..Default::default()
            }));
            q
        };
        let mut undone = Vec::new();
        request().on_backend_message(FrameRef::from_raw(b"Z\0\0\0\x05T"), &mut undone);
        let keys: Vec<u64> = undone
            .iter()
            .map(|u| match u {
                Undone::SettingInTransaction(k) => *k,
                _ => panic!("only SETs to keep with the block"),
            })
            .collect();
        assert_eq!(keys, [3, 2, 1]);

        let mut undone = Vec::new();
        request().on_backend_message(FrameRef::from_raw(b"Z\0\0\0\x05I"), &mut undone);
        assert!(undone.is_empty());
        // Nothing to carry on a Flush-ended batch's entries.
        let mut q = ExpectQueue::default();
        q.push_forwarded();
        assert!(!q.on_error_of_last(OnError::ForgetSetting(4)));
    }
}
