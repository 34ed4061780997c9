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
//! Outside a block, a request (a simple Query, or an extended batch up to
//! its Sync) runs as one implicit transaction: an error anywhere in it
//! undoes a tenant SET made earlier in it (`RequestTenant`).

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
    pub reset: Option<Box<ResetUndo>>,
    /// How many of them had run at each SAVEPOINT made since the first.
    savepoints: Vec<usize>,
    /// A ROLLBACK (of the block, or to a savepoint) was answered since the
    /// last ReadyForQuery, whose status tells which.
    rolled_back: bool,
}

impl TxSettings {
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
            return SettingsUndone {
                keys: std::mem::take(&mut self.keys),
                reset: self.reset.take(),
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
    /// The SETs it undid, by `Settings::key`.
    pub keys: Vec<u64>,
    /// The recorded settings a RESET ALL it undid had cleared.
    pub reset: Option<Box<ResetUndo>>,
}

/// A session's recorded settings as they were before a RESET ALL (or
/// DISCARD ALL) cleared them: what an undone one gives back.
#[derive(Debug, PartialEq)]
pub(super) struct ResetUndo {
    pub settings: std::collections::HashMap<String, super::Settings>,
    pub startup: super::Settings,
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
/// block: what its failure undoes.
#[derive(Default)]
pub(super) struct RequestTenant {
    /// The session tenant before the request first changed it.
    before: Option<Option<String>>,
    /// The request holds transaction control (BEGIN, COMMIT…): its
    /// implicit transaction is not the whole request, so an error no
    /// longer tells what was undone.
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

    /// The request was refused before any of it ran: its changes go.
    pub fn refused(&mut self, tenant: &mut Option<String>) {
        if let Some(before) = self.take() {
            *tenant = before;
        }
    }

    /// The request went out: the change an error in it must undo, if it
    /// made one that an error undoes whole. Clears the record for the next
    /// request either way.
    pub fn sent(&mut self, tenant: &Option<String>) -> Option<Box<TenantChange>> {
        let txn_control = self.txn_control;
        let before = self.take()?;
        (!txn_control && before != *tenant).then(|| {
            Box::new(TenantChange {
                before,
                after: tenant.clone(),
            })
        })
    }

    fn take(&mut self) -> Option<Option<String>> {
        self.txn_control = false;
        self.before.take()
    }
}

/// A request's change of the session tenant, undone if the request fails.
#[derive(Debug, PartialEq)]
pub struct TenantChange {
    before: Option<String>,
    after: Option<String>,
}

impl TenantChange {
    /// Undoes the change after its request failed, unless a later request
    /// (pipelined behind it) changed the tenant again.
    pub fn undo(self, tenant: &mut Option<String>) {
        if *tenant == self.after {
            *tenant = self.before;
        }
    }
}

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

    #[test]
    fn a_failed_request_undoes_its_tenant_change_unless_a_later_one_changed_it() {
        // SET acme→globex; SELECT 1/0 as one Query: the error undoes it.
        let mut r = RequestTenant::default();
        let mut tenant = some("acme");
        r.note(&TxnControl::None, true, &tenant);
        tenant = some("globex");
        r.note(&TxnControl::None, false, &tenant);
        let change = r.sent(&tenant).expect("a change to undo");
        change.undo(&mut tenant);
        assert_eq!(tenant, some("acme"));

        // A request pipelined behind it set the tenant again: that one stands.
        let mut r = RequestTenant::default();
        let mut tenant = some("acme");
        r.note(&TxnControl::None, true, &tenant);
        tenant = some("globex");
        let change = r.sent(&tenant).unwrap();
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
        assert!(r.sent(&tenant).is_none());

        // Transaction control in the request, or no change in the end:
        // nothing for an error to undo.
        let mut r = RequestTenant::default();
        r.note(&TxnControl::None, true, &some("acme"));
        r.note(&TxnControl::Commit, false, &some("globex"));
        assert!(r.sent(&some("globex")).is_none());
        r.note(&TxnControl::None, true, &some("acme"));
        assert!(r.sent(&some("acme")).is_none());
        assert!(
            r.sent(&some("globex")).is_none(),
            "cleared by the last request"
        );
    }
}
