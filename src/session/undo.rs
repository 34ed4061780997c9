//! What the end of a transaction block undoes of the client's changes.
//!
//! PostgreSQL undoes a SET made inside a transaction block when the block
//! rolls back, or when a ROLLBACK TO goes back to a savepoint made before
//! it. The proxy keeps two such changes outside the server: the SETs it
//! records to replay on the session's next connections, and the session's
//! tenant. Both follow the block here, each from what it can see: the
//! recorded SETs from the backend's CommandComplete tags (in pass-through
//! the statements that end blocks are not parsed), the tenant from the
//! parsed statements before they are sent (routing parses every one).
//!
//! Outside a block, a request (a simple Query, or the extended batches up
//! to a Sync) runs as one implicit transaction: an error anywhere in it
//! undoes a tenant SET or a RESET ALL made earlier in it (`RequestTenant`,
//! `RequestUndo`). When the request also holds transaction control, where
//! the error came decides, and the proxy does not follow the request
//! statement by statement: it makes the tenant unknown instead of
//! guessing, and takes the RESET ALL to stand.

use crate::protocol::backend::TxStatus;
use crate::router::TxnControl;

/// The client's recorded SETs that ran inside the open transaction block,
/// and the recorded settings a RESET ALL in it cleared: they stand only if
/// the block commits.
#[derive(Default)]
pub(super) struct TxSettings {
    /// Their `Settings::key`s, in the order they ran.
    pub keys: Vec<u64>,
    /// The recorded settings before the block's first RESET ALL.
    reset: Option<Box<ResetUndo>>,
    /// How many of `keys` had run at that RESET ALL: those are in `reset`'s
    /// settings, the others were recorded after it.
    keys_at_reset: usize,
    /// How many of them had run at each SAVEPOINT made since the first.
    savepoints: Vec<usize>,
    /// A ROLLBACK (of the block, or to a savepoint) was answered since the
    /// last ReadyForQuery, whose status tells which.
    rolled_back: bool,
}

impl TxSettings {
    /// The block ran a RESET ALL (after the SETs in `keys`) that cleared
    /// the recorded settings `before`; only its first counts.
    pub fn reset_all(&mut self, before: Box<ResetUndo>) {
        if keep_first_reset(&mut self.reset, Some(before)) {
            self.keys_at_reset = self.keys.len();
        }
    }

    /// Follows the block's savepoints and rollbacks by their CommandComplete tags.
    pub fn on_command_complete(&mut self, tag: &[u8]) {
        if tag.starts_with(b"ROLLBACK\0") {
            self.rolled_back = true;
        } else if tag.starts_with(b"SAVEPOINT\0") {
            self.savepoints.push(self.keys.len());
        } else if tag.starts_with(b"RELEASE\0") {
            // Releases its savepoint and those made after it, which are
            // not told apart here: only the innermost goes. One left behind
            // can make a later ROLLBACK TO undecidable, never wrongly decided.
            self.savepoints.pop();
        }
    }

    /// At ReadyForQuery with `status`: the SETs PostgreSQL has just undone,
    /// and the settings to restore if it undid a RESET ALL.
    pub fn undone_at_ready(&mut self, status: TxStatus, session: u64) -> SettingsUndone {
        if !std::mem::take(&mut self.rolled_back) {
            return SettingsUndone::default();
        }
        // Out of the block: it rolled back. Still in it: a ROLLBACK TO, to
        // a savepoint made before every change here unless one was made since.
        if status == TxStatus::Idle || self.savepoints.is_empty() {
            let mut keys = std::mem::take(&mut self.keys);
            let reset = self.reset.take();
            let before_reset = match reset {
                Some(_) => keys.drain(..self.keys_at_reset.min(keys.len())).collect(),
                None => Vec::new(),
            };
            return SettingsUndone {
                keys,
                reset,
                before_reset,
            };
        }
        // Which savepoint it went back to, and so which SETs stand, is not
        // known without its name: they stay recorded.
        tracing::warn!(
            session,
            "ROLLBACK TO a savepoint after a SET in the same transaction: \
             the SET stays recorded for replay on other connections"
        );
        SettingsUndone::default()
    }
}

/// What a rollback undid of the recorded settings (`TxSettings::undone_at_ready`).
#[derive(Default, Debug, PartialEq)]
pub(super) struct SettingsUndone {
    /// The SETs it undid, by `Settings::key`: with `reset`, those that ran
    /// after the RESET ALL, to forget before its settings come back.
    pub keys: Vec<u64>,
    /// The recorded settings a RESET ALL it undid had cleared.
    pub reset: Option<Box<ResetUndo>>,
    /// The SETs it undid that ran before that RESET ALL: among `reset`'s
    /// settings, forgotten once they are back.
    pub before_reset: Vec<u64>,
}

/// A session's recorded settings as they were before a RESET ALL (or
/// DISCARD ALL) cleared them: what an undone one gives back. (The startup
/// settings stay: PostgreSQL resets to them.)
#[derive(Debug, PartialEq)]
pub(super) struct ResetUndo {
    pub settings: std::collections::HashMap<String, super::Settings>,
}

impl ResetUndo {
    /// Gives the session back the recorded settings the RESET ALL cleared.
    pub fn restore(self, settings: &mut std::collections::HashMap<String, super::Settings>) {
        *settings = self.settings;
    }
}

/// The session tenant before the open transaction block first changed it,
/// and at each SAVEPOINT made since (by name, in order): what a ROLLBACK,
/// or a ROLLBACK TO, brings back.
pub(super) struct TenantUndo {
    before: Option<String>,
    savepoints: Vec<(String, Option<String>)>,
}

impl TenantUndo {
    /// Starts following a block whose session tenant is `tenant` before
    /// its first change.
    pub fn new(tenant: Option<String>) -> Box<TenantUndo> {
        Box::new(TenantUndo {
            before: tenant,
            savepoints: Vec::new(),
        })
    }

    /// Follows the block through statement `txn` (about to be sent, or
    /// answered for a block the proxy holds), restoring `tenant` where
    /// PostgreSQL would undo it; `failed`: the block failed before `txn`.
    /// `undo` is the session's (`None` while the block changed no tenant);
    /// returns whether a block is open after `txn`.
    pub fn follow(
        undo: &mut Option<Box<TenantUndo>>,
        tenant: &mut Option<String>,
        txn: &TxnControl,
        in_block: bool,
        failed: bool,
    ) -> bool {
        match txn {
            TxnControl::None => in_block,
            TxnControl::Begin => {
                *undo = None;
                true
            }
            TxnControl::Commit | TxnControl::Rollback | TxnControl::PrepareTransaction(_) => {
                // COMMIT of a failed block rolls it back.
                let rolled_back = matches!(txn, TxnControl::Rollback)
                    || (matches!(txn, TxnControl::Commit) && failed);
                if let Some(u) = undo.take() {
                    if rolled_back {
                        *tenant = u.before;
                    }
                }
                false
            }
            TxnControl::Savepoint(name) => {
                if let Some(u) = undo.as_mut() {
                    u.savepoints.push((name.clone(), tenant.clone()));
                }
                in_block
            }
            TxnControl::ReleaseSavepoint(name) => {
                if let Some(u) = undo.as_mut() {
                    // Releases the ones made after it too; one made before
                    // the first change, all of them.
                    let i = u.savepoints.iter().rposition(|(n, _)| n == name);
                    u.savepoints.truncate(i.unwrap_or(0));
                }
                in_block
            }
            TxnControl::RollbackToSavepoint(name) => {
                if let Some(u) = undo.as_mut() {
                    // The savepoint stays; those made after it go.
                    match u.savepoints.iter().rposition(|(n, _)| n == name) {
                        Some(i) => {
                            *tenant = u.savepoints[i].1.clone();
                            u.savepoints.truncate(i + 1);
                        }
                        // Made before the first change.
                        None => {
                            *tenant = u.before.clone();
                            u.savepoints.clear();
                        }
                    }
                }
                in_block
            }
            TxnControl::CommitPrepared(_) | TxnControl::RollbackPrepared(_) => in_block,
        }
    }
}

/// The tenant changes of the request in hand made outside a transaction
/// block: what its failure undoes. A request ends at its Sync (or is a
/// simple Query): an extended batch ended by Flush leaves its record open
/// for the batches that follow, since PostgreSQL's implicit transaction
/// runs on to the Sync.
#[derive(Default)]
pub(super) struct RequestTenant {
    /// The session tenant before the request first changed it.
    before: Option<Option<String>>,
    /// The request holds transaction control (BEGIN, COMMIT…): its
    /// implicit transaction is not the whole request, so an error no
    /// longer tells whether the change stands.
    txn_control: bool,
}

impl RequestTenant {
    /// Notes one statement of the request before its effects apply:
    /// `changes_tenant` when it sets or resets the session tenant while no
    /// block is open, `tenant` the session tenant before it.
    pub fn note(&mut self, txn: &TxnControl, changes_tenant: bool, tenant: &Option<String>) {
        self.txn_control |= *txn != TxnControl::None;
        if changes_tenant && self.before.is_none() {
            self.before = Some(tenant.clone());
        }
    }

    /// Whether statement `txn` may roll back a tenant change this request
    /// made outside a block: a ROLLBACK ends the implicit block the change
    /// ran in (or the block a later BEGIN of the request folded it into),
    /// unless a COMMIT came between, which the proxy does not follow. The
    /// caller makes the tenant unknown.
    pub fn rolls_back_change(&self, txn: &TxnControl) -> bool {
        self.before.is_some()
            && matches!(
                txn,
                TxnControl::Rollback | TxnControl::RollbackToSavepoint(_)
            )
    }

    /// The request was refused before any of it ran: its changes go.
    pub fn refused(&mut self, tenant: &mut Option<String>) {
        if let Some(before) = self.take() {
            *tenant = before;
        }
    }

    /// The request failed before its end was sent (an error in a batch
    /// ended by Flush): its change is undone, as `TenantChange::undo` does.
    pub fn failed(&mut self, tenant: &mut Option<String>) {
        let txn_control = self.txn_control;
        if let Some(before) = self.take() {
            TenantChange {
                after: tenant.clone(),
                before,
                unknown_if_failed: txn_control,
            }
            .undo(tenant);
        }
    }

    /// The request went out, up to its end when `ends_request`: the change
    /// an error in it must undo, if it made one. Clears the record for the
    /// next request once the request has ended.
    pub fn sent(&mut self, tenant: &Option<String>, ends_request: bool) -> Option<TenantChange> {
        if !ends_request {
            return None;
        }
        let txn_control = self.txn_control;
        let before = self.take()?;
        (before != *tenant).then(|| TenantChange {
            before,
            after: tenant.clone(),
            unknown_if_failed: txn_control,
        })
    }

    /// Whether a statement of the request so far controls transactions.
    pub fn holds_txn_control(&self) -> bool {
        self.txn_control
    }

    fn take(&mut self) -> Option<Option<String>> {
        self.txn_control = false;
        self.before.take()
    }
}

/// What a request outside a transaction block changed of the session's
/// own records, and its failure undoes with the implicit transaction.
#[derive(Debug, Default, PartialEq)]
pub struct RequestUndo {
    pub tenant: Option<TenantChange>,
    /// The recorded settings before its RESET ALL.
    pub reset: Option<Box<ResetUndo>>,
    /// The SETs recorded from its batches ended by Flush (`Settings::key`s,
    /// in the order they ran; `Session::request_settings`): the request's
    /// Sync entry carries them, as it carries a Sync-ended batch's own
    /// (`OnError::ForgetSetting`).
    pub settings: Vec<u64>,
    /// What the request changed that its error does not decide, because
    /// it holds transaction control (`BlockChanges`).
    pub block: Option<Box<BlockChanges>>,
}

/// What a request holding transaction control (its BEGIN, COMMIT or
/// ROLLBACK) changed of the recorded settings. An error in it does not
/// tell whether they stand (it may come after a COMMIT that kept them):
/// they are decided at the request's ReadyForQuery instead. Still in a
/// block, they join it (`TxSettings`), to stand only if it commits; out of
/// one, they stand unless the backend reported a ROLLBACK in the request
/// (`Attached::rolled_back_since_ready`).
#[derive(Debug, Default, PartialEq)]
pub struct BlockChanges {
    /// Its recorded SETs (`Settings::key`s, in the order they ran).
    pub keys: Vec<u64>,
    /// The recorded settings before its RESET ALL.
    pub reset: Option<Box<ResetUndo>>,
}

impl BlockChanges {
    /// Adds what a later part of the same request changed.
    fn merge(&mut self, later: BlockChanges) {
        self.keys.extend(later.keys);
        keep_first_reset(&mut self.reset, later.reset);
    }
}

/// Joins a later RESET ALL's saved settings to a stretch that may have had
/// one already: only the first counts, since undoing the stretch goes back
/// to what that one cleared (a later one saved the settings after it).
/// Returns whether `later` was taken.
fn keep_first_reset(first: &mut Option<Box<ResetUndo>>, later: Option<Box<ResetUndo>>) -> bool {
    let taken = first.is_none() && later.is_some();
    if first.is_none() {
        *first = later;
    }
    taken
}

impl RequestUndo {
    /// Adds what a later part of the same implicit transaction changed:
    /// the earlier record of each kind is the state to go back to.
    pub fn merge(&mut self, later: RequestUndo) {
        self.tenant = match (self.tenant.take(), later.tenant) {
            (Some(earlier), Some(later)) => Some(TenantChange {
                before: earlier.before,
                after: later.after,
                unknown_if_failed: earlier.unknown_if_failed || later.unknown_if_failed,
            }),
            (earlier, later) => earlier.or(later),
        };
        keep_first_reset(&mut self.reset, later.reset);
        self.settings.extend(later.settings);
        match (self.block.as_mut(), later.block) {
            (Some(earlier), Some(later)) => earlier.merge(*later),
            (None, later) => self.block = later,
            (Some(_), None) => {}
        }
    }
}

/// A request's change of the session tenant, undone if the request fails.
#[derive(Debug, PartialEq)]
pub struct TenantChange {
    before: Option<String>,
    after: Option<String>,
    /// The request also held transaction control: whether its failure
    /// undid the change depends on where, relative to the COMMIT or BEGIN,
    /// the error came. The proxy does not guess: the tenant becomes
    /// [`UNKNOWN_TENANT`].
    unknown_if_failed: bool,
}

impl TenantChange {
    /// Undoes the change after its request failed, unless a later request
    /// (pipelined behind it) changed the tenant again.
    pub fn undo(self, tenant: &mut Option<String>) {
        if *tenant == self.after {
            *tenant = match self.unknown_if_failed {
                true => Some(UNKNOWN_TENANT.to_string()),
                false => self.before,
            };
        }
    }
}

/// The session tenant while it is unknown (see `TenantChange`): routing
/// refuses every statement that needs it until the client sets or resets
/// the tenant again. Kept as a value of the session tenant, not a flag
/// beside it, so that whatever saves and restores the tenant (a block's
/// rollback, a refused or failed request) carries it too. No SET can name
/// it: PostgreSQL text never holds a NUL.
pub(super) const UNKNOWN_TENANT: &str = "\0unknown";

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(tag: &str) -> Vec<u8> {
        format!("{tag}\0").into_bytes()
    }

    fn some(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    /// `TenantUndo::follow` for a statement inside a block that has not failed.
    fn follow_in_block(
        undo: &mut Option<Box<TenantUndo>>,
        tenant: &mut Option<String>,
        txn: &TxnControl,
    ) {
        TenantUndo::follow(undo, tenant, txn, true, false);
    }

    #[test]
    fn recorded_sets_fall_with_their_block_or_savepoint() {
        // ROLLBACK of the block: every SET in it.
        let mut t = TxSettings::default();
        t.keys.extend([1, 2]);
        t.on_command_complete(&cc("ROLLBACK"));
        assert_eq!(t.undone_at_ready(TxStatus::Idle, 0).keys, [1, 2]);

        // ROLLBACK TO a savepoint made before the SETs (not seen here).
        let mut t = TxSettings::default();
        t.keys.push(1);
        t.on_command_complete(&cc("ROLLBACK"));
        assert_eq!(t.undone_at_ready(TxStatus::InTransaction, 0).keys, [1]);

        // A savepoint made after a SET: undecidable, nothing undone.
        let mut t = TxSettings::default();
        t.keys.push(1);
        t.on_command_complete(&cc("SAVEPOINT"));
        t.keys.push(2);
        t.on_command_complete(&cc("ROLLBACK"));
        assert!(t
            .undone_at_ready(TxStatus::InTransaction, 0)
            .keys
            .is_empty());
        // …but the block's own rollback still undoes them all.
        t.on_command_complete(&cc("ROLLBACK"));
        assert_eq!(t.undone_at_ready(TxStatus::Idle, 0).keys, [1, 2]);

        // Released, the savepoint no longer matters.
        let mut t = TxSettings::default();
        t.keys.push(1);
        t.on_command_complete(&cc("SAVEPOINT"));
        t.on_command_complete(&cc("RELEASE"));
        t.on_command_complete(&cc("ROLLBACK"));
        assert_eq!(t.undone_at_ready(TxStatus::InTransaction, 0).keys, [1]);

        // Other tags and a ReadyForQuery without a rollback undo nothing.
        let mut t = TxSettings::default();
        t.keys.push(1);
        t.on_command_complete(&cc("SELECT 1"));
        t.on_command_complete(&cc("COMMIT"));
        assert!(t.undone_at_ready(TxStatus::Idle, 0).keys.is_empty());
    }

    #[test]
    fn a_rolled_back_reset_all_splits_the_sets_around_it() {
        let before = || {
            Box::new(ResetUndo {
                settings: Default::default(),
            })
        };
        // SET 1; RESET ALL; SET 2; (a second RESET ALL counts not); ROLLBACK.
        let mut t = TxSettings::default();
        t.keys.push(1);
        t.reset_all(before());
        t.keys.push(2);
        t.reset_all(before());
        t.on_command_complete(&cc("ROLLBACK"));
        let u = t.undone_at_ready(TxStatus::Idle, 0);
        assert_eq!((u.keys, u.before_reset), (vec![2], vec![1]));
        assert!(u.reset.is_some());
        // Without a RESET ALL every SET is simply undone.
        let mut t = TxSettings::default();
        t.keys.extend([1, 2]);
        t.on_command_complete(&cc("ROLLBACK"));
        let u = t.undone_at_ready(TxStatus::Idle, 0);
        assert_eq!((u.keys, u.before_reset), (vec![1, 2], vec![]));
    }

    #[test]
    fn the_tenant_comes_back_as_postgresql_brings_the_setting_back() {
        let sp = |s: &str| s.to_string();
        // BEGIN; SET acme→globex; SAVEPOINT a; SET initech; ROLLBACK TO a.
        let mut tenant = some("acme");
        let mut undo = None;
        assert!(TenantUndo::follow(
            &mut undo,
            &mut tenant,
            &TxnControl::Begin,
            false,
            false
        ));
        undo = Some(TenantUndo::new(tenant.clone()));
        tenant = some("globex");
        follow_in_block(&mut undo, &mut tenant, &TxnControl::Savepoint(sp("a")));
        tenant = some("initech");
        follow_in_block(
            &mut undo,
            &mut tenant,
            &TxnControl::RollbackToSavepoint(sp("a")),
        );
        assert_eq!(tenant, some("globex"), "back to savepoint a");
        // ROLLBACK TO a savepoint made before the first change.
        follow_in_block(
            &mut undo,
            &mut tenant,
            &TxnControl::RollbackToSavepoint(sp("early")),
        );
        assert_eq!(tenant, some("acme"));
        // COMMIT of a failed block rolls back; of a good one keeps.
        tenant = some("globex");
        assert!(!TenantUndo::follow(
            &mut undo,
            &mut tenant,
            &TxnControl::Commit,
            true,
            true
        ));
        assert_eq!(tenant, some("acme"));
        assert!(undo.is_none(), "the block is over");
        let mut undo = Some(TenantUndo::new(some("acme")));
        let mut tenant = some("globex");
        follow_in_block(&mut undo, &mut tenant, &TxnControl::Commit);
        assert_eq!(tenant, some("globex"));
        // RELEASE drops the savepoint and those after it.
        let mut undo = Some(TenantUndo::new(some("acme")));
        let mut tenant = some("globex");
        follow_in_block(&mut undo, &mut tenant, &TxnControl::Savepoint(sp("a")));
        follow_in_block(
            &mut undo,
            &mut tenant,
            &TxnControl::ReleaseSavepoint(sp("a")),
        );
        tenant = some("initech");
        follow_in_block(
            &mut undo,
            &mut tenant,
            &TxnControl::RollbackToSavepoint(sp("a")),
        );
        assert_eq!(
            tenant,
            some("acme"),
            "a released savepoint is one made before"
        );
    }

    /// A request that set the tenant from acme to globex outside a block.
    fn acme_to_globex() -> (RequestTenant, Option<String>) {
        let mut r = RequestTenant::default();
        r.note(&TxnControl::None, true, &some("acme"));
        (r, some("globex"))
    }

    #[test]
    fn a_failed_request_undoes_its_tenant_change_unless_a_later_one_changed_it() {
        // SET acme→globex; SELECT 1/0 as one Query: the error undoes it.
        let (mut r, mut tenant) = acme_to_globex();
        r.note(&TxnControl::None, false, &tenant);
        let change = r.sent(&tenant, true).expect("a change to undo");
        change.undo(&mut tenant);
        assert_eq!(tenant, some("acme"));

        // A request pipelined behind it set the tenant again: that one stands.
        let (mut r, mut tenant) = acme_to_globex();
        let change = r.sent(&tenant, true).unwrap();
        tenant = some("initech");
        change.undo(&mut tenant);
        assert_eq!(tenant, some("initech"));

        // Refused before it ran: undone at once, and nothing is left over.
        let mut r = RequestTenant::default();
        let mut tenant = some("acme");
        r.note(&TxnControl::None, true, &tenant);
        tenant = None;
        r.refused(&mut tenant);
        assert_eq!(tenant, some("acme"));
        assert!(r.sent(&tenant, true).is_none());

        // No change in the end: nothing for an error to undo.
        r.note(&TxnControl::None, true, &some("acme"));
        assert!(r.sent(&some("acme"), true).is_none());
        assert!(
            r.sent(&some("globex"), true).is_none(),
            "cleared by the last request"
        );
    }

    #[test]
    fn a_failed_request_with_transaction_control_leaves_the_tenant_unknown() {
        // SET …; COMMIT; SELECT 1/0: the COMMIT kept the SET, but an error
        // before it would not have. Not guessed.
        let (mut r, mut tenant) = acme_to_globex();
        r.note(&TxnControl::Commit, false, &tenant);
        let change = r.sent(&tenant, true).expect("a change to report");
        change.undo(&mut tenant);
        assert_eq!(tenant, some(UNKNOWN_TENANT));

        // Changed again by a later request: that one stands, known.
        let mut r = RequestTenant::default();
        r.note(&TxnControl::Begin, true, &some("acme"));
        let change = r.sent(&some("globex"), true).unwrap();
        let mut tenant = some("initech");
        change.undo(&mut tenant);
        assert_eq!(tenant, some("initech"));
    }

    #[test]
    fn a_rollback_after_the_requests_tenant_change_may_undo_it() {
        let mut r = RequestTenant::default();
        assert!(!r.rolls_back_change(&TxnControl::Rollback), "no change yet");
        r.note(&TxnControl::None, true, &some("acme"));
        assert!(r.rolls_back_change(&TxnControl::Rollback));
        assert!(r.rolls_back_change(&TxnControl::RollbackToSavepoint("s".into())));
        assert!(!r.rolls_back_change(&TxnControl::Commit));
    }

    #[test]
    fn parts_of_one_implicit_transaction_undo_to_its_start() {
        // acme→globex before a COPY, globex→initech after it: a failure
        // brings acme back.
        let change = |before: &str, after: &str| TenantChange {
            before: some(before),
            after: some(after),
            unknown_if_failed: false,
        };
        let mut earlier = RequestUndo {
            tenant: Some(change("acme", "globex")),
            settings: vec![1],
            ..Default::default()
        };
        earlier.merge(RequestUndo {
            tenant: Some(change("globex", "initech")),
            settings: vec![2],
            ..Default::default()
        });
        // The SETs of both parts, in the order they ran.
        assert_eq!(earlier.settings, [1, 2]);
        let mut tenant = some("initech");
        earlier.tenant.unwrap().undo(&mut tenant);
        assert_eq!(tenant, some("acme"));
    }

    #[test]
    fn a_batch_ended_by_flush_leaves_its_tenant_change_to_the_sync() {
        // SET globex, Flush; then SELECT 1/0, Sync: one implicit transaction.
        let (mut r, mut tenant) = acme_to_globex();
        assert!(r.sent(&tenant, false).is_none(), "not ended at the Flush");
        r.note(&TxnControl::None, false, &tenant);
        let change = r.sent(&tenant, true).expect("carried to the Sync");
        change.undo(&mut tenant);
        assert_eq!(tenant, some("acme"));

        // The error came before the Sync was sent: undone then.
        let (mut r, mut tenant) = acme_to_globex();
        assert!(r.sent(&tenant, false).is_none());
        r.failed(&mut tenant);
        assert_eq!(tenant, some("acme"));
        assert!(r.sent(&tenant, true).is_none(), "nothing left for the Sync");

        // With transaction control: unknown.
        let mut r = RequestTenant::default();
        let mut tenant = some("acme");
        r.note(&TxnControl::Commit, true, &tenant);
        tenant = some("globex");
        assert!(r.sent(&tenant, false).is_none());
        r.failed(&mut tenant);
        assert_eq!(tenant, some(UNKNOWN_TENANT));
    }
}
