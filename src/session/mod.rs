//! One client's life: startup, then the relay loop that decides, per
//! transaction, which backend serves it, and forwards bytes both ways.
//!
//! The session owns at most one *attached* backend connection at a time (the
//! one serving the current transaction). In transaction pooling it is given
//! back as soon as the backend reports ReadyForQuery 'I' with nothing else in
//! flight; in session pooling it is parked per target and reused. Routing is
//! decided in `route.rs`; the extended protocol's prepared-statement mapping in
//! `extended.rs`; response bookkeeping in `expect.rs`; what a transaction
//! block's rollback undoes in `undo.rs`.

pub mod cancel;
mod expect;
mod extended;
mod route;
pub mod signal;
pub mod startup;
mod state_scan;
mod undo;

use crate::clock::Tick;
use crate::net::Stream;
use crate::pool::{DataSourcePool, PoolMode, PooledConn};
use crate::protocol::backend::{self as be, PgError, TxStatus};
use crate::protocol::frontend::tag;
use crate::protocol::{Frame, FrameBatch, FrameReader};
use crate::server::Shared;
use bytes::{Bytes, BytesMut};
use cancel::{CancelSlot, CancelTarget};
use expect::{Await, ExpectQueue};
pub(crate) use state_scan::may_change_session_state;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use tokio::io::AsyncWriteExt;
use undo::{RequestTenant, ResetUndo, TenantUndo, TxSettings};

static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

/// How much a session reads ahead from its client while it waits on
/// something else (a pooled connection, the answers before a Terminate):
/// enough to see the client's EOF behind pipelined requests, bounded so a
/// client cannot make the proxy buffer without limit.
const CLIENT_READ_AHEAD: usize = 64 * 1024;

/// Where a transaction runs: a pool, and the tenant it runs for (`None` = app DB).
#[derive(Clone)]
pub struct Target {
    pub pool: Arc<DataSourcePool>,
    /// Shared, not copied: a target is cloned into every transaction.
    pub tenant: Option<Arc<str>>,
}

impl Target {
    fn same(&self, other: &Target) -> bool {
        Arc::ptr_eq(&self.pool, &other.pool) && self.tenant == other.tenant
    }
    /// For messages: "the app DB" or "tenant acme's data source (pool)".
    pub fn describe(&self) -> String {
        match &self.tenant {
            None => format!("the app DB ({})", self.pool.name),
            Some(t) => format!("tenant \"{t}\" data source ({})", self.pool.name),
        }
    }
}

/// What ended the relay loop's wait: bytes (`true`) or EOF/error
/// (`false`) from one side, a KILL, or a pool asking for its kept connection.
enum Woke {
    Backend(bool),
    Client(bool),
    Killed,
    GiveBack,
}

/// The backend connection serving the current transaction.
struct Attached {
    target: Target,
    conn: PooledConn,
    expect: ExpectQueue,
    /// Extended-protocol messages were sent since the last ReadyForQuery.
    since_sync: bool,
    status: TxStatus,
    copy_in: bool,
    /// When the current request and transaction began (for SHOW STATS times).
    query_started: Option<Tick>,
    xact_started: Option<Tick>,
    /// The clock at the last ReadyForQuery, reused when the connection goes
    /// back to the pool. With the checkout's reading, two clock reads per
    /// transaction serve every timer.
    last_ready: Tick,
    /// The client's recorded SETs that ran inside the open transaction
    /// block (rare: boxed, so `Attached` stays small to move).
    tx_settings: Option<Box<TxSettings>>,
    /// The backend answered a ROLLBACK (of a block, or to a savepoint)
    /// since its last ReadyForQuery: whether a request holding transaction
    /// control rolled back what it changed (`BlockChanges`).
    rolled_back_since_ready: bool,
    /// The same, after the last RESET or DISCARD it answered: whether a
    /// RESET ALL of the request was rolled back (a ROLLBACK before it was
    /// not its own). Pass-through reads no COMMIT or ROLLBACK sent with
    /// the extended protocol, so these tags are what tells.
    rolled_back_after_reset: bool,
}

impl Attached {
    /// Nothing in flight and no transaction open: no request has been sent
    /// that its Sync (or its Query's ReadyForQuery) has not ended. Only
    /// then may the connection change hands, or the proxy send a Query of
    /// its own on it (one between a client's Flush and Sync would end the
    /// implicit transaction of the client's request).
    fn is_idle(&self) -> bool {
        self.expect.is_empty() && !self.since_sync && !self.copy_in && self.status == TxStatus::Idle
    }

    /// Marks the start of a request (and of a transaction, if none is open).
    fn note_request(&mut self, bytes: usize) {
        if self.query_started.is_none() {
            let now = Tick::now();
            self.query_started = Some(now);
            self.xact_started.get_or_insert(now);
        }
        let stats = self.conn.pool().stats.counters.here();
        stats.add(&stats.bytes_received, bytes as u64);
    }

    /// Accounts a ReadyForQuery: one request done, maybe one transaction.
    fn note_ready(&mut self) {
        let stats = self.conn.pool().stats.counters.here();
        // One clock read serves both durations and the release.
        let now = Tick::now();
        self.last_ready = now;
        if let Some(t) = self.query_started.take() {
            stats.add(&stats.queries, 1);
            stats.add(&stats.query_us_total, now.micros_since(t));
        }
        if self.status == TxStatus::Idle {
            if let Some(t) = self.xact_started.take() {
                stats.add(&stats.xacts, 1);
                stats.add(&stats.xact_us_total, now.micros_since(t));
            }
        }
    }
}

/// Whether `Session::attach` may wait for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checkout {
    /// In the pool's queue (and behind a PAUSE), watching the client.
    Wait,
    /// Only if one is free now: for work that can as well be done later,
    /// which must not queue behind other sessions' transactions.
    IfFree,
}

/// A client's prepared statement, as the proxy remembers it for re-preparing
/// on whichever connection a later transaction lands on.
#[derive(Debug)]
pub struct Prepared {
    /// The SQL's bytes as the client sent them (any client encoding).
    pub query: Arc<[u8]>,
    pub param_types: Bytes,
    /// Content-addressed server-side name (`pgt_…`), shared by identical statements.
    pub server_name: Arc<str>,
    /// Distinguishes successive unnamed statements.
    pub generation: u64,
    /// Parameter types (declared in Parse, or reported by the backend), to
    /// read binary-format tenant parameters correctly.
    pub param_oids: Vec<u32>,
    /// `may_change_session_state(query)`, checked once at Parse rather than
    /// at every Bind.
    pub changes_session_state: bool,
}

/// The client's prepared statements by name. The unnamed statement, which
/// drivers re-parse for every execution, has a field of its own: looking it
/// up costs no hashing. Named ones are hashed with foldhash: they are looked
/// up on every Bind and Describe, SipHash cost more than the rest of the
/// lookup, and the keys only ever slow down their own session.
#[derive(Default)]
pub struct PreparedMap {
    unnamed: Option<Prepared>,
    named: HashMap<String, Prepared, foldhash::fast::RandomState>,
}

impl PreparedMap {
    pub fn get(&self, name: &str) -> Option<&Prepared> {
        if name.is_empty() {
            self.unnamed.as_ref()
        } else {
            self.named.get(name)
        }
    }
    /// The unnamed statement, when a Parse with body `parse_body` would
    /// create it again exactly (same text, same declared types).
    pub fn unnamed_parsed_from(&mut self, parse_body: &[u8]) -> Option<&mut Prepared> {
        let p = self.unnamed.as_mut()?;
        // The body: name (empty), NUL, query, NUL, the parameter types.
        let rest = parse_body.strip_prefix(b"\0")?;
        let rest = rest.strip_prefix(&*p.query)?.strip_prefix(b"\0")?;
        (rest == &p.param_types[..]).then_some(p)
    }
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Prepared> {
        if name.is_empty() {
            self.unnamed.as_mut()
        } else {
            self.named.get_mut(name)
        }
    }
    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
    /// Adds `p` as statement `name`; the unnamed statement it replaced.
    pub fn insert(&mut self, name: String, p: Prepared) -> Option<Prepared> {
        if name.is_empty() {
            self.unnamed.replace(p)
        } else {
            self.named.insert(name, p);
            None
        }
    }
    /// Makes `p` the unnamed statement again (a skipped Parse replaced it).
    pub fn restore_unnamed(&mut self, p: Option<Prepared>) {
        self.unnamed = p;
    }
    /// Forgets the unnamed statement (a simple Query destroys it), without
    /// moving it out: this runs for every simple Query.
    pub fn forget_unnamed(&mut self) {
        if self.unnamed.is_some() {
            self.unnamed = None;
        }
    }
    /// Forgets every named statement (DEALLOCATE ALL), not the unnamed one.
    pub fn clear_named(&mut self) {
        self.named.clear();
    }
    /// Forgets the named statements prepared as server statement `server_name`.
    pub fn forget_server_statement(&mut self, server_name: &str) {
        self.named.retain(|_, p| &*p.server_name != server_name);
    }
    pub fn remove(&mut self, name: &str) -> Option<Prepared> {
        if name.is_empty() {
            self.unnamed.take()
        } else {
            self.named.remove(name)
        }
    }
}

/// Session-level settings made by the client, replayed on a connection that
/// does not have them yet.
#[derive(Default, Clone, Debug, PartialEq)]
struct Settings {
    stmts: Vec<String>,
    fingerprint: u64,
}

/// A connection's fingerprint when its settings are not known (a setup
/// Query that replayed them failed): equal to no session's, which are odd
/// or 0, so the next transaction there resets and replays.
const SETTINGS_UNKNOWN: u64 = 2;

impl Settings {
    fn push(&mut self, stmt: String) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.fingerprint.hash(&mut h);
        stmt.hash(&mut h);
        self.fingerprint = h.finish() | 1;
        self.stmts.push(stmt);
    }

    /// Identifies a statement for `forget`.
    fn key(stmt: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        stmt.hash(&mut h);
        h.finish()
    }

    /// Forgets the statements `keys` (in the order they ran), each the
    /// latest recorded with its text: from the last.
    fn forget_each(&mut self, keys: &[u64]) {
        for &key in keys.iter().rev() {
            self.forget(key);
        }
    }

    /// Removes the last statement recorded with this `key` (it failed on
    /// the server).
    fn forget(&mut self, key: u64) {
        let Some(i) = self.stmts.iter().rposition(|s| Self::key(s) == key) else {
            return;
        };
        let mut stmts = std::mem::take(&mut self.stmts);
        stmts.remove(i);
        *self = Settings::default();
        for s in stmts {
            self.push(s);
        }
    }
}

pub struct Session {
    id: u64,
    shared: Arc<Shared>,
    client: Stream,
    creader: FrameReader,
    out: BytesMut,
    pub user: String,
    pub allowed_tenants: Option<Vec<String>>,
    pub startup_tenant: Option<String>,
    pub database_tenant: Option<String>,
    /// `SET app.tenant_id` at session level; `undo::UNKNOWN_TENANT` while
    /// a failed request left it unknown.
    pub session_tenant: Option<String>,
    /// `SET LOCAL app.tenant_id` inside the current transaction.
    pub local_tenant: Option<String>,
    /// How to undo the changes the open transaction block made to
    /// `session_tenant`, as PostgreSQL undoes the setting.
    tenant_undo: Option<Box<TenantUndo>>,
    /// The same outside a block, for the request in hand: its implicit
    /// transaction undoes the setting if it fails.
    request_tenant: RequestTenant,
    /// The recorded settings a RESET ALL in the request in hand cleared:
    /// back if the request is refused; kept with its block once sent, for
    /// the block's rollback (`TxSettings::reset`).
    reset_undo: Option<Box<ResetUndo>>,
    /// The SETs recorded from the request in hand's batches ended by Flush
    /// (`Settings::key`s): its implicit transaction undoes them if it fails,
    /// and its Sync, not sent yet, has no entry to carry them. Given to
    /// that entry by `request_sent`, forgotten at once when an error makes
    /// the backend skip to the Sync.
    request_settings: Vec<u64>,
    /// `route_batch`'s analyses of a batch's Parses, kept empty between
    /// batches so that its buffer is reused.
    parsed_in_batch: Vec<(String, Arc<crate::router::Analysis>)>,
    /// Boxed, as is `kept`: moving the connection between the two slots
    /// every transaction is then a pointer's swap, not `Attached`'s.
    attached: Option<Box<Attached>>,
    parked: HashMap<String, PooledConn>,
    cancel_slot: Arc<CancelSlot>,
    /// Extended-protocol messages waiting for Sync/Flush.
    pending: FrameBatch,
    /// The Query being handled, copied out of the read buffer (a batch of
    /// one, for its reused buffer).
    query: FrameBatch,
    /// Scratch buffer for a batch's bytes towards the backend.
    wire: BytesMut,
    /// The admin console's view of which tenant this session works for.
    tenant_slot: Arc<std::sync::Mutex<Option<Arc<str>>>>,
    /// What this session last wrote to `tenant_slot` (only it writes
    /// there): the lock is taken only when the tenant changes.
    slot_tenant: Option<Arc<str>>,
    /// The client closed its connection while the session waited for a
    /// backend connection: the statement in hand is dropped, the session ends.
    client_gone: bool,
    /// Client bytes read since the metric was last updated: it is updated
    /// once per loop turn, not per message (a shared counter's atomic add).
    unreported_in: u64,
    /// `KILL <tenant>` from the console, and pools asking for `kept` back.
    signal: Arc<signal::SessionSignal>,
    prepared: PreparedMap,
    /// Portals bound to a statement whose text may change session state,
    /// with that text: it is noted when an Execute runs the portal, since
    /// a Bind alone runs nothing. Rare, so usually empty.
    setting_portals: Vec<SettingPortal>,
    next_generation: u64,
    /// A BEGIN not yet sent: it goes to the backend the next statement picks.
    held_begin: Option<String>,
    /// The client saw an error inside a held or refused transaction.
    client_failed: bool,
    /// Set while changing target, so even a session-pooled connection is parked.
    switching: bool,
    /// An error was reported mid-batch: drop messages until the client's Sync.
    skip_until_sync: bool,
    settings: HashMap<String, Settings>,
    startup_settings: Settings,
    /// The names (lower case) of the startup parameters `startup_settings`
    /// sets, in its order.
    startup_names: Vec<String>,
    /// The client reset its settings (RESET ALL, DISCARD ALL) while it had
    /// startup ones. PostgreSQL resets to those, but the connection resets
    /// to its own, and tells the client so (ParameterStatus); the proxy
    /// sets them again before the next request (`reset_settings`). That
    /// setup runs even where the connection seems to match, and its
    /// ParameterStatus messages go to the client, whose view of the
    /// reported parameters (application_name, TimeZone, DateStyle,
    /// client_encoding…) then matches the server's again.
    report_next_setup: bool,
    /// The last detached connection's (empty) queue, kept so attaching
    /// does not allocate a new one every transaction.
    spare_expect: ExpectQueue,
    /// Transaction pooling's fast path: the connection of the last
    /// transaction, idle, kept while its pool has room, so that the next
    /// transaction to the same target skips a checkout, a release and the
    /// cancel slot's updates. Every decision sees the session as detached
    /// (`attached` is `None`); only `resume_kept` reuses it. Given back when the
    /// pool asks (`Keeper`), when the next transaction goes elsewhere, or
    /// when the connection is no longer fit for reuse.
    kept: Option<Box<Attached>>,
    /// The pool this session is registered with as a `Keeper`.
    keeper_of: Option<Arc<DataSourcePool>>,
}

impl Session {
    /// Runs a client connection to the end. Never panics on client or backend bytes.
    pub async fn run(tcp: tokio::net::TcpStream, peer: std::net::SocketAddr, shared: Arc<Shared>) {
        let auth = match startup::handshake(tcp, peer, &shared).await {
            Ok(a) => a,
            Err(startup::StartupEnd::Quiet) => return,
            Err(startup::StartupEnd::Fatal(mut stream, err)) => {
                let _ = stream.write_all(&err.encode()).await;
                let _ = stream.shutdown().await;
                return;
            }
        };
        let (key, cancel_slot) = shared.cancels.register();
        let id = NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed);
        let _guard = crate::metrics::ClientGuard::new();
        if auth.admin_console {
            let mut auth = auth;
            crate::admin::console::run(
                &mut auth.stream,
                &mut auth.reader,
                &shared,
                &auth.user,
                key,
            )
            .await;
            shared.cancels.unregister(key.0);
            return;
        }
        let info = crate::admin::ClientInfo {
            user: auth.user.clone(),
            database: auth.params.database().unwrap_or("").to_string(),
            peer,
            connected_at: std::time::SystemTime::now(),
            tls: auth.stream.is_tls(),
            tenant: Arc::new(std::sync::Mutex::new(None)),
            signal: Arc::default(),
        };
        let (tenant_slot, signal) = (info.tenant.clone(), info.signal.clone());
        shared.clients.insert(id, info);
        let client_params = auth.params.clone();
        let mut session = Session::new(id, shared.clone(), auth, cancel_slot);
        session.tenant_slot = tenant_slot;
        session.signal = signal;
        let result = session.start(key, &client_params).await;
        if let Err(e) = result {
            session.out.extend_from_slice(&e.encode());
            let _ = session.client.write_all(&session.out).await;
        }
        session.report_bytes_in();
        let _ = session.client.shutdown().await;
        shared.cancels.unregister(key.0);
        shared.clients.remove(&id);
        session.close_backends().await;
        tracing::debug!(session = id, "client session ended");
    }

    fn new(
        id: u64,
        shared: Arc<Shared>,
        a: startup::Authenticated,
        cancel_slot: Arc<CancelSlot>,
    ) -> Session {
        let tenant_setting = shared.config().routing.tenant_setting.clone();
        let startup_tenant = a
            .params
            .options()
            .into_iter()
            .find(|(k, _)| *k == tenant_setting)
            .map(|(_, v)| v);
        let database_tenant = a
            .params
            .database()
            .and_then(|db| shared.tenant_by_subdomain(db));
        // In PostgreSQL's order: `options` first, then the explicit
        // parameters, so that one given both ways takes the explicit value,
        // as on a direct connection. The setup runs them in this order, and
        // a RESET replays the last one of a name (`note_session_effects`).
        let mut startup_settings = Settings::default();
        let mut startup_names = Vec::new();
        for (k, v) in a.params.options() {
            if k != tenant_setting
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            {
                startup_settings.push(set_statement(&k, &v));
                startup_names.push(k.to_ascii_lowercase());
            }
        }
        for name in [
            "application_name",
            "DateStyle",
            "TimeZone",
            "IntervalStyle",
            "search_path",
            "extra_float_digits",
            "client_encoding",
        ] {
            if let Some(v) = a.params.get(name) {
                if name == "client_encoding" && v.eq_ignore_ascii_case("UTF8") {
                    continue;
                }
                startup_settings.push(set_statement(name, v));
                startup_names.push(name.to_ascii_lowercase());
            }
        }
        Session {
            id,
            shared,
            client: a.stream,
            creader: a.reader,
            out: BytesMut::with_capacity(16 * 1024),
            user: a.user,
            allowed_tenants: a.allowed_tenants,
            startup_tenant,
            database_tenant,
            session_tenant: None,
            local_tenant: None,
            tenant_undo: None,
            request_tenant: RequestTenant::default(),
            reset_undo: None,
            request_settings: Vec::new(),
            parsed_in_batch: Vec::new(),
            attached: None,
            parked: HashMap::new(),
            cancel_slot,
            pending: FrameBatch::default(),
            query: FrameBatch::default(),
            wire: BytesMut::new(),
            tenant_slot: Arc::default(),
            slot_tenant: None,
            client_gone: false,
            signal: Arc::default(),
            prepared: PreparedMap::default(),
            setting_portals: Vec::new(),
            next_generation: 1,
            held_begin: None,
            client_failed: false,
            skip_until_sync: false,
            switching: false,
            settings: HashMap::new(),
            startup_settings,
            startup_names,
            report_next_setup: false,
            spare_expect: ExpectQueue::default(),
            kept: None,
            keeper_of: None,
            unreported_in: 0,
        }
    }

    /// Greets the client (its own startup values echoed for the settings it
    /// chose) and runs the relay.
    async fn start(
        &mut self,
        key: (i32, i32),
        client_params: &crate::protocol::startup::StartupParams,
    ) -> Result<(), PgError> {
        let params = self.shared.server_params().await?;
        let greeting = startup::greeting(&params, client_params, key);
        self.out.extend_from_slice(&greeting);
        self.flush_client().await.map_err(|_| closed())?;
        self.relay().await
    }

    /// The relay loop: read whichever side has bytes, process whole messages,
    /// write what is due. Returns `Err` only for errors to send before closing.
    async fn relay(&mut self) -> Result<(), PgError> {
        let signal = self.signal.clone();
        let mut kill_signal = signal.fired();
        loop {
            // 1. Whole client messages already buffered.
            loop {
                if self.attached.as_ref().is_some_and(|a| a.copy_in) {
                    match self.creader.try_frame() {
                        Ok(Some(f)) => {
                            self.unreported_in += f.raw().len() as u64;
                            self.forward_copy_from_client(f).await?;
                            continue;
                        }
                        Ok(None) => break,
                        Err(e) => return Err(PgError::fatal("08P01", e.to_string())),
                    }
                }
                match self.creader.next_len() {
                    Ok(Some(len)) => {
                        if !self.client_message(len).await? || self.client_gone {
                            return Ok(());
                        }
                        if self.signal.is_fired() {
                            // KILLed while the message waited (a checkout, a drain).
                            return Err(killed());
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return Err(PgError::fatal("08P01", e.to_string())),
                }
            }
            self.report_bytes_in();
            // 2. Whole backend messages already buffered.
            self.backend_messages()?;
            // The connection goes back before the client reads the end of
            // its transaction, as PgBouncer releases its server at the
            // ReadyForQuery before sending it on: a client (or another
            // one it signals) that then asks for a connection finds this
            // one free, whatever thread serves it. Answered the other way
            // round, a PQprepare right after another client's transaction
            // could find the pool busy and be answered by the proxy.
            if self.detach_due() && !self.keep_attached() {
                self.release_attached().await;
            }
            // Guarded here: an async call costs its future even when it
            // has nothing to do, and this runs twice per transaction.
            if !self.out.is_empty() {
                self.flush_client().await.map_err(|_| closed())?;
            }

            // 3. Wait for more bytes from either side, or a KILL. One
            // hand-written future polls them in a fixed order, backend
            // first: a client that always has bytes ready must not keep us
            // from draining responses (the backend would block on its
            // output, then stop reading our writes).
            let Session {
                client,
                creader,
                attached,
                ..
            } = self;
            let woke = std::future::poll_fn(|cx| {
                if let Some(a) = attached.as_mut() {
                    let conn = &mut *a.conn;
                    if let Poll::Ready(r) = conn.reader.poll_fill(cx, &mut conn.stream) {
                        return Poll::Ready(Woke::Backend(matches!(r, Ok(true))));
                    }
                }
                // Not polled again while it still holds our waker from the
                // last wait and has nothing to read: once per transaction,
                // after the response went out, the poll would only find that.
                // (The client is read only through `creader`, by this task.)
                let quiet = creader.waiting() && client.known_unreadable();
                if !quiet {
                    if let Poll::Ready(r) = creader.poll_fill(cx, client) {
                        return Poll::Ready(Woke::Client(matches!(r, Ok(true))));
                    }
                }
                // Polling `fired` registers the waker that a give-back wakes.
                if Pin::new(&mut kill_signal).poll(cx).is_ready() {
                    return Poll::Ready(Woke::Killed);
                }
                if signal.take_give_back() {
                    return Poll::Ready(Woke::GiveBack);
                }
                Poll::Pending
            })
            .await;
            match woke {
                Woke::Backend(true) | Woke::Client(true) => {}
                Woke::Backend(false) => {
                    self.attached = None; // broken: dropped, never reused
                    self.cancel_slot.clear().await;
                    return Err(PgError::fatal(
                        "08006",
                        "the data source closed the connection unexpectedly",
                    ));
                }
                Woke::Client(false) => return Ok(()),
                Woke::GiveBack => {
                    // The pool dropped its registration when it asked.
                    self.keeper_of = None;
                    if let Some(k) = self.take_kept() {
                        self.give_back_kept(k).await;
                    }
                }
                Woke::Killed => return Err(killed()),
            }
        }
    }

    /// Handles the client message of `len` bytes at the front of the read
    /// buffer; `Ok(false)` ends the session (Terminate).
    async fn client_message(&mut self, len: usize) -> Result<bool, PgError> {
        self.unreported_in += len as u64;
        let held = self.creader.front(len);
        if is_extended(held.tag()) {
            // Held until Sync or Flush, copied out of the read buffer: this
            // message and the extended-protocol ones already behind it (a
            // driver sends Parse … Sync in one write) with one copy.
            let mut end = len;
            let mut dispatch = matches!(held.tag(), tag::SYNC | tag::FLUSH);
            while !dispatch {
                // Incomplete or malformed: left for its own turn of the loop.
                let Ok(Some(n)) = self.creader.len_at(end) else {
                    break;
                };
                let t = self.creader.at(end, n).tag();
                if !is_extended(t) {
                    break;
                }
                end += n;
                dispatch = matches!(t, tag::SYNC | tag::FLUSH);
            }
            self.unreported_in += (end - len) as u64;
            self.pending.push_run(self.creader.unconsumed(0..end));
            self.creader.consume(end);
            if dispatch {
                self.dispatch_batch().await?;
            }
            return Ok(true);
        }
        if held.tag() == tag::QUERY {
            // Copied out of the read buffer like the batch: cheaper than a
            // reference-counted `Frame`, and the buffer is reused.
            let mut query = std::mem::take(&mut self.query);
            let q = query.push(held.raw());
            self.creader.consume(len);
            let result = self.query_message(q.raw()).await;
            query.clear();
            self.query = query;
            result?;
            return Ok(true);
        }
        let f = self.creader.take_front(len);
        match f.tag() {
            tag::FUNCTION_CALL => {
                if !self.pending.is_empty() {
                    self.dispatch_batch().await?;
                }
                let target = self.current_target()?;
                self.attach(&target, Checkout::Wait).await?;
                self.send_to_backend(f.raw(), Await::Query, false).await?;
            }
            tag::TERMINATE => {
                self.answer_before_terminate().await?;
                return Ok(false);
            }
            tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL => {
                // Outside COPY these are ignored, as PostgreSQL does after a failed COPY.
            }
            other => {
                return Err(PgError::fatal(
                    "08P01",
                    format!("invalid frontend message type {}", other as char),
                ))
            }
        }
        Ok(true)
    }

    /// A simple-protocol Query (`raw`, the whole message).
    async fn query_message(&mut self, raw: &[u8]) -> Result<(), PgError> {
        if !self.pending.is_empty() {
            self.dispatch_batch().await?;
        }
        let text = crate::protocol::frontend::query_bytes(&raw[5..])
            .map_err(|e| PgError::fatal("08P01", e.to_string()))?;
        self.simple_query(raw, text).await
    }

    /// As PostgreSQL does, answers what the client sent before its
    /// Terminate (a pipelined `Query; Terminate` still gets its results),
    /// for as long as the client stays connected: one that closes its socket
    /// is gone, as anywhere else, and `close_backends` cancels what still
    /// runs. A COPY FROM STDIN the Terminate left open cannot finish, so
    /// the session ends at once; so does a KILL.
    async fn answer_before_terminate(&mut self) -> Result<(), PgError> {
        let signal = self.signal.clone();
        let mut kill_signal = signal.fired();
        loop {
            self.backend_messages()?;
            self.flush_client().await.map_err(|_| closed())?;
            let Some(a) = self.attached.as_mut() else {
                return Ok(());
            };
            if a.expect.is_empty() || a.copy_in {
                return Ok(());
            }
            let conn = &mut *a.conn;
            let room = self.creader.buffered() < CLIENT_READ_AHEAD;
            tokio::select! {
                biased;
                r = conn.reader.fill(&mut conn.stream) => {
                    if !matches!(r, Ok(true)) {
                        self.attached = None;
                        return Err(backend_lost());
                    }
                }
                r = self.creader.fill(&mut self.client), if room => {
                    if !matches!(r, Ok(true)) {
                        return Ok(());
                    }
                }
                _ = &mut kill_signal => return Ok(()),
            }
        }
    }

    async fn forward_copy_from_client(&mut self, f: Frame) -> Result<(), PgError> {
        let a = self.attached.as_mut().expect("copy_in implies attached");
        match f.tag() {
            tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL | tag::FLUSH | tag::SYNC => {
                // PostgreSQL ignores Flush/Sync during copy-in (libpq sends them
                // without knowing the command was COPY): forward, expect nothing.
                if f.tag() == tag::COPY_DONE || f.tag() == tag::COPY_FAIL {
                    a.copy_in = false;
                }
                a.conn
                    .stream
                    .send_all(f.raw())
                    .await
                    .map_err(|_| backend_lost())?;
                Ok(())
            }
            tag::TERMINATE => Err(PgError::fatal("08P01", "connection terminated during COPY")),
            other => Err(PgError::fatal(
                "08P01",
                format!(
                    "unexpected message type {} during COPY from stdin",
                    other as char
                ),
            )),
        }
    }

    /// Processes every whole message the attached backend has sent.
    fn backend_messages(&mut self) -> Result<(), PgError> {
        let Some(a) = self.attached.as_mut() else {
            return Ok(());
        };
        // Bytes forwarded, added to the pool's counter once per read rather
        // than once per message (a shared atomic is a contended cache line).
        let mut forwarded = 0u64;
        // Rarely filled (statements an error skipped): one buffer for the batch.
        let mut undone = Vec::new();
        // Messages are read in place at `pos` and consumed together at the
        // end; consecutive forwarded ones are copied to the client's buffer
        // as one run, `run`, rather than one copy per message.
        let mut pos = 0;
        let mut run = 0..0;
        loop {
            let len = match a.conn.reader.len_at(pos) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(pool = %a.target.pool.name, error = %e, "malformed backend message");
                    // What came before it is the client's.
                    copy_run(&mut self.out, &a.conn.reader, &mut run);
                    self.attached = None;
                    return Err(PgError::fatal(
                        "08P01",
                        "the data source sent a malformed message",
                    ));
                }
            };
            let f = a.conn.reader.at(pos, len);
            let t = f.tag();
            match t {
                be::tag::COPY_IN_RESPONSE | be::tag::COPY_BOTH_RESPONSE => {
                    a.copy_in = true;
                    a.expect.on_copy_in();
                }
                be::tag::READY_FOR_QUERY => {
                    a.status = f
                        .body()
                        .first()
                        .copied()
                        .and_then(TxStatus::from_byte)
                        .unwrap_or(TxStatus::Idle);
                    a.copy_in = false;
                }
                be::tag::ERROR_RESPONSE => {
                    a.copy_in = false;
                    crate::metrics::backend_error(be::error_code(f.body()).unwrap_or("XX000"));
                }
                be::tag::COMMAND_COMPLETE => {
                    if let Some(ts) = a.tx_settings.as_mut() {
                        ts.on_command_complete(f.body());
                    }
                    // First bytes first: most tags are neither.
                    let tag = f.body();
                    match tag.first() {
                        Some(b'R') if tag.starts_with(b"ROLLBACK\0") => {
                            a.rolled_back_since_ready = true;
                            a.rolled_back_after_reset = true;
                        }
                        Some(b'R') if tag.starts_with(b"RESET\0") => {
                            a.rolled_back_after_reset = false
                        }
                        Some(b'D') if tag.starts_with(b"DISCARD ALL\0") => {
                            a.rolled_back_after_reset = false
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
            match a.expect.take_plain(t) {
                expect::Plain::No => {}
                plain => {
                    forwarded += len as u64;
                    extend_run(&mut run, pos, len);
                    pos += len;
                    if plain == expect::Plain::Completed && a.expect.local_answer_due() {
                        // The proxy's own answers go after what came before them.
                        copy_run(&mut self.out, &a.conn.reader, &mut run);
                        a.expect.drain_locals(&mut self.out);
                    }
                    continue;
                }
            }
            let forward = a.expect.on_backend_message(f, &mut undone);
            if t == be::tag::ERROR_RESPONSE && a.expect.is_skipping() {
                // The backend skips to a Sync the client has yet to send:
                // so does the session (no Parse recorded, nothing sent).
                self.skip_until_sync = true;
                // The request's implicit transaction failed, and with it
                // the changes of its batches sent so far.
                if let Some(r) = self.reset_undo.take() {
                    if !self.request_tenant.holds_txn_control() {
                        reset_undone(*r, &mut self.settings, &mut a.conn.settings_fingerprint);
                    }
                }
                self.request_tenant.failed(&mut self.session_tenant);
                let keys = std::mem::take(&mut self.request_settings);
                forget_settings(&mut self.settings, a, &keys);
            }
            if forward {
                forwarded += len as u64;
                extend_run(&mut run, pos, len);
            } else {
                copy_run(&mut self.out, &a.conn.reader, &mut run);
            }
            if a.expect.local_answer_due() {
                // The proxy's own answers go after what came before them.
                copy_run(&mut self.out, &a.conn.reader, &mut run);
                a.expect.drain_locals(&mut self.out);
            }
            pos += len;
            if t == be::tag::READY_FOR_QUERY {
                a.note_ready();
                if let Some(ts) = a.tx_settings.as_mut() {
                    let undone = ts.undone_at_ready(a.status, self.id);
                    if a.status == TxStatus::Idle {
                        a.tx_settings = None;
                    }
                    // The SETs after its RESET ALL go first, then its
                    // settings come back, without the block's SETs before it.
                    forget_settings(&mut self.settings, a, &undone.keys);
                    if let Some(r) = undone.reset {
                        reset_undone(*r, &mut self.settings, &mut a.conn.settings_fingerprint);
                        forget_settings(&mut self.settings, a, &undone.before_reset);
                    }
                }
            }
            if !undone.is_empty() {
                // Undone in reverse: the queue applied them in order to the
                // connection's statement list (an eviction, then a Parse…).
                for u in undone.drain(..).rev() {
                    match u {
                        expect::Undone::Parse(name) if name.is_empty() => {
                            a.conn.unnamed_owner = None
                        }
                        expect::Undone::UnnamedParseFailed => {
                            a.conn.unnamed_owner = None;
                            self.prepared.forget_unnamed();
                        }
                        expect::Undone::UnnamedParseSkipped(before) => {
                            a.conn.unnamed_owner = None;
                            if let expect::UnnamedBefore::Was(p) = before {
                                self.prepared.restore_unnamed(p);
                            }
                        }
                        expect::Undone::Parse(name) => a.conn.prepared.retain(|n| *n != name),
                        expect::Undone::Close(name) => a.conn.prepared.push_back(name),
                        expect::Undone::Described(name, oids) => {
                            if let Some(p) = self.prepared.get_mut(&name) {
                                p.param_oids = oids;
                            }
                        }
                        expect::Undone::ParseFailed(name) => {
                            self.prepared.forget_server_statement(&name);
                        }
                        expect::Undone::Map(expect::MapUndo::Forget(name, generation)) => {
                            // Not a statement of that name parsed since.
                            if self
                                .prepared
                                .get(&name)
                                .is_some_and(|p| p.generation == generation)
                            {
                                self.prepared.remove(&name);
                            }
                        }
                        expect::Undone::Map(expect::MapUndo::Restore(name, p)) => {
                            if !self.prepared.contains_key(&name) {
                                self.prepared.insert(name, *p);
                            }
                        }
                        // Swallowed by the queue, never reported.
                        expect::Undone::Failed(expect::OnError::Expected) => {}
                        expect::Undone::Failed(expect::OnError::SettingsUnknown) => {
                            a.conn.settings_fingerprint = SETTINGS_UNKNOWN;
                        }
                        expect::Undone::Failed(expect::OnError::ForgetSetting(key)) => {
                            forget_settings(&mut self.settings, a, &[key]);
                        }
                        expect::Undone::SettingInTransaction(key) => {
                            a.tx_settings.get_or_insert_default().keys.push(key);
                        }
                        expect::Undone::ResetInTransaction(r) => {
                            a.tx_settings.get_or_insert_default().reset_all(r);
                        }
                        expect::Undone::Block(b) if a.status != TxStatus::Idle => {
                            let ts = a.tx_settings.get_or_insert_default();
                            if let Some(r) = b.reset {
                                ts.reset_all(r);
                            }
                            ts.keys.extend(b.keys);
                        }
                        expect::Undone::Block(b) => {
                            if a.rolled_back_since_ready {
                                forget_settings(&mut self.settings, a, &b.keys);
                            }
                            match b.reset {
                                Some(r) if a.rolled_back_after_reset => reset_undone(
                                    *r,
                                    &mut self.settings,
                                    &mut a.conn.settings_fingerprint,
                                ),
                                _ => {}
                            }
                        }
                        expect::Undone::Request(u) => {
                            if let Some(change) = u.tenant {
                                change.undo(&mut self.session_tenant);
                            }
                            // Recorded after its RESET ALL (`reset_settings`):
                            // forgotten before the settings it cleared return.
                            forget_settings(&mut self.settings, a, &u.settings);
                            if let Some(r) = u.reset {
                                reset_undone(
                                    *r,
                                    &mut self.settings,
                                    &mut a.conn.settings_fingerprint,
                                );
                            }
                        }
                    }
                }
            }
            if t == be::tag::READY_FOR_QUERY {
                a.rolled_back_since_ready = false;
                a.rolled_back_after_reset = false;
            }
            if t == be::tag::READY_FOR_QUERY && a.expect.is_empty() {
                a.since_sync = false;
                if a.status == TxStatus::Idle {
                    // SET LOCAL ends with its transaction, whatever the pooling
                    // mode, and so do the portals.
                    self.local_tenant = None;
                    self.setting_portals.clear();
                }
            }
        }
        copy_run(&mut self.out, &a.conn.reader, &mut run);
        a.conn.reader.consume(pos);
        if forwarded > 0 {
            let stats = a.conn.pool().stats.counters.here();
            stats.add(&stats.bytes_sent, forwarded);
        }
        Ok(())
    }

    /// Whether the attached connection is between transactions with
    /// nothing in flight: `maybe_detach`'s condition, checked before the
    /// call in the relay loop, which runs it twice per transaction.
    fn detach_due(&self) -> bool {
        self.attached
            .as_ref()
            .is_some_and(|a| a.is_idle() && self.pending.is_empty())
    }

    /// Gives the connection back once the backend is idle and nothing is in flight.
    async fn maybe_detach(&mut self) {
        if self.detach_due() && !self.keep_attached() {
            self.release_attached().await;
        }
    }

    /// The part of `maybe_detach` that needs no waiting, so that the relay
    /// loop, which detaches every transaction, runs it without a future:
    /// whether the connection stays the session's (session pooling), or
    /// was kept (`kept`). `false`: `release_attached` must give it back.
    fn keep_attached(&mut self) -> bool {
        let a = self.attached.as_ref().expect("checked by detach_due");
        // Session pooling: the connection is the client's until it leaves or
        // switches target (LISTEN, temp tables and session state stay put).
        if a.conn.pool().settings.mode == PoolMode::Session && !self.switching {
            return true;
        }
        self.client_failed = false;
        if !self.switching && self.may_keep() && self.register_keeper() {
            // Swapped with the (empty) kept slot rather than moved out and
            // in: `Attached` is large and this runs every transaction.
            debug_assert!(self.kept.is_none());
            std::mem::swap(&mut self.kept, &mut self.attached);
            self.signal.set_holding(true);
            return true;
        }
        false
    }

    /// Gives the attached connection back (`maybe_detach`, once
    /// `keep_attached` declined).
    async fn release_attached(&mut self) {
        self.cancel_slot.clear().await;
        let a = self.attached.as_mut().expect("checked");
        // Empty here; its buffer serves the next transaction.
        std::mem::swap(&mut self.spare_expect, &mut a.expect);
        if a.conn.pool().settings.mode == PoolMode::Session {
            let a = self.attached.take().expect("checked");
            self.parked.insert(park_key(&a.target), a.conn);
        } else {
            // Released in place, not moved out: see `attach`.
            a.conn.give_back(a.last_ready);
            self.attached = None;
        }
    }

    /// Makes `target`'s connection the attached one, checking out (or
    /// unparking) as needed and bringing its settings in line with the
    /// session. With `Checkout::IfFree`, `Ok(false)` when that would mean
    /// waiting for the pool (or a PAUSE).
    async fn attach(&mut self, target: &Target, checkout: Checkout) -> Result<bool, PgError> {
        if let Some(a) = &self.attached {
            if a.target.same(target) {
                return Ok(true);
            }
            // Only reachable when idle (routing refuses switches inside a transaction).
            self.switching = true;
            self.maybe_detach().await;
            self.switching = false;
            if self.attached.is_some() {
                return Err(PgError::error(
                    "0A000",
                    "cannot switch data source while a request is in flight",
                ));
            }
        }
        let setup = match self.resume_kept(target) {
            Some(setup) => setup,
            None => {
                self.let_go_of_kept().await;
                // Only session pooling parks connections: no key to build otherwise.
                let parked = if self.parked.is_empty() {
                    None
                } else {
                    self.parked.remove(&park_key(target))
                };
                // Before the checkout: a KILL of the tenant reaches a
                // session queued for its connection (or held by a PAUSE).
                if self.slot_tenant != target.tenant {
                    self.slot_tenant = target.tenant.clone();
                    *self.tenant_slot.lock().unwrap() = target.tenant.clone();
                }
                // A fresh checkout's clock reading starts the request's timers.
                let (mut conn, started) = match parked {
                    Some(c) => (c, None),
                    None => {
                        let c = match checkout {
                            Checkout::Wait => self.checkout_watching_client(target).await?,
                            Checkout::IfFree => {
                                let tenant = target.tenant.as_deref();
                                if crate::admin::pause_applies(tenant) {
                                    return Ok(false);
                                }
                                match target.pool.try_checkout(tenant, Tick::now()).await {
                                    Some(c) => c?,
                                    None => return Ok(false),
                                }
                            }
                        };
                        let at = c.checked_out;
                        (c, Some(at))
                    }
                };
                self.cancel_slot.set(CancelTarget {
                    pool: target.pool.clone(),
                    key: conn.backend_key,
                });
                let wanted = settings_for(
                    &self.settings,
                    &self.reset_undo,
                    &self.startup_settings,
                    target,
                );
                let setup = setup_sql(
                    wanted,
                    self.report_next_setup,
                    self.id,
                    &self.shared,
                    &mut conn,
                    target,
                );
                // One allocation per checkout; a kept connection's
                // transactions reuse it (`kept`).
                self.attached = Some(Box::new(Attached {
                    target: target.clone(),
                    conn,
                    expect: std::mem::take(&mut self.spare_expect),
                    since_sync: false,
                    status: TxStatus::Idle,
                    copy_in: false,
                    query_started: started,
                    xact_started: started,
                    last_ready: started.unwrap_or_else(Tick::now),
                    tx_settings: None,
                    rolled_back_since_ready: false,
                    rolled_back_after_reset: false,
                }));
                setup
            }
        };
        self.send_setup(setup).await?;
        Ok(true)
    }

    /// Sends what `setup_sql` found the attached connection needs, and a
    /// BEGIN the session held back, ahead of the client's request.
    async fn send_setup(&mut self, setup: Setup) -> Result<(), PgError> {
        let a = self.attached.as_mut().expect("attached by the caller");
        if !setup.is_empty() {
            // Two Queries: a failing setting (the implicit transaction rolls
            // back the whole Query) never keeps the tenant setting and the
            // lock release from being done.
            let mut q = BytesMut::new();
            if !setup.settings.is_empty() {
                q.extend_from_slice(&crate::protocol::frontend::encode_query(&setup.settings));
                a.expect.push_setup_settings(setup.report);
                if setup.report {
                    self.report_next_setup = false;
                }
            }
            if !setup.session.is_empty() {
                q.extend_from_slice(&crate::protocol::frontend::encode_query(&setup.session));
                a.expect.push(Await::Query, true);
            }
            if a.conn.stream.write_all(&q).await.is_err() {
                self.attached = None; // broken: dropped, never reused
                return Err(backend_lost());
            }
        }
        if let Some(begin) = self.held_begin.take() {
            self.send_to_backend(
                &crate::protocol::frontend::encode_query(&begin),
                Await::Query,
                true,
            )
            .await?;
        }
        Ok(())
    }

    /// Whether the connection of the transaction just ended may stay with
    /// this session (see `kept`).
    fn may_keep(&self) -> bool {
        let Some(a) = &self.attached else {
            return false;
        };
        let pool = a.conn.pool();
        let tenant = a.target.tenant.as_deref();
        pool.has_room_to_keep()
            && !a.conn.retire_after_use
            && !a.conn.expired(a.last_ready)
            && a.conn.reader.buffered() == 0
            && !self.signal.is_fired()
            && !crate::admin::pause_applies(tenant)
            && !pool.is_suspended(tenant)
    }

    /// Registers the session with the pool of the connection it is about
    /// to keep, so that the pool can ask for the connection back; `false`
    /// when the connection must not be kept after all. Once per pool, not
    /// per transaction: the registration lasts until the pool asks.
    ///
    /// A new registration is followed by a second look at `may_keep`: a
    /// pool that began to need its connections between the first look and
    /// the registration (a checkout started to wait, the pool was retired)
    /// asked before it could see this session, and it counts its waiter or
    /// marks itself retired before asking.
    fn register_keeper(&mut self) -> bool {
        let Some(a) = &self.attached else {
            return false;
        };
        let pool = &a.target.pool;
        if self
            .keeper_of
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(p, pool))
        {
            return true;
        }
        let pool = pool.clone();
        let me: Arc<dyn crate::pool::Keeper> = self.signal.clone();
        if let Some(old) = self.keeper_of.take() {
            old.remove_keeper(&me);
        }
        pool.add_keeper(me);
        self.keeper_of = Some(pool);
        self.may_keep()
    }

    /// `ensure_attached` without a future for what needs no waiting, which
    /// is every transaction's case once warm: the session is attached to
    /// `target` already, or its kept connection serves `target` again.
    /// The hot paths call it first, and `ensure_attached` with what it
    /// found unless `Resumed::Ready`.
    pub(super) fn resume(&mut self, target: &Target) -> Resumed {
        if let Some(a) = self.attached.as_mut() {
            if !a.target.same(target) {
                return Resumed::Wait;
            }
            // Still attached after a reset with nothing in flight: session
            // pooling, whose connection stays the client's. The startup
            // settings go back on before the next request, as a new
            // connection would get them (`report_next_setup`).
            if self.report_next_setup && a.is_idle() {
                let wanted = settings_for(
                    &self.settings,
                    &self.reset_undo,
                    &self.startup_settings,
                    target,
                );
                let setup = setup_sql(wanted, true, self.id, &self.shared, &mut a.conn, target);
                return Resumed::Setup(setup);
            }
            return Resumed::Ready;
        }
        match self.resume_kept(target) {
            Some(setup) if setup.is_empty() && self.held_begin.is_none() => Resumed::Ready,
            Some(setup) => Resumed::Setup(setup),
            None => Resumed::Wait,
        }
    }

    /// Attaches the kept connection again if it can serve `target` now,
    /// returning what it needs set up (`setup_sql`); `None`: it cannot (or
    /// there is none), and `let_go_of_kept` decides what becomes of it.
    fn resume_kept(&mut self, target: &Target) -> Option<Setup> {
        let k = self.kept.as_mut()?;
        let now = Tick::now();
        let pool = &k.target.pool;
        // A give-back request the pool made is taken by `let_go_of_kept`.
        let fits = k.target.same(target)
            && !self.signal.give_back_asked()
            && !pool.is_retired()
            && !crate::admin::pause_applies(target.tenant.as_deref())
            && k.conn
                .reusable(now, k.last_ready, pool.settings.idle_timeout);
        if !fits {
            return None;
        }
        // Swapped with the empty attached slot (see `keep_attached`).
        std::mem::swap(&mut self.attached, &mut self.kept);
        self.signal.set_holding(false);
        let a = self.attached.as_mut().expect("kept");
        // The request's timers start now, as after a checkout.
        a.query_started = Some(now);
        a.xact_started = Some(now);
        let wanted = settings_for(
            &self.settings,
            &self.reset_undo,
            &self.startup_settings,
            target,
        );
        Some(setup_sql(
            wanted,
            self.report_next_setup,
            self.id,
            &self.shared,
            &mut a.conn,
            target,
        ))
    }

    /// Takes the kept connection out of its slot: a pool's recall then no
    /// longer counts it as coming back (`SessionSignal::set_holding`).
    fn take_kept(&mut self) -> Option<Box<Attached>> {
        let k = self.kept.take();
        if k.is_some() {
            self.signal.set_holding(false);
        }
        k
    }

    /// Ends the session's hold on a kept connection that cannot serve the
    /// next request (`resume_kept`): given back, or closed when no
    /// connection should reuse it (`ServerConn::reusable`).
    async fn let_go_of_kept(&mut self) {
        let Some(mut k) = self.take_kept() else {
            return;
        };
        // A give-back request that arrived with the client's next request
        // (the relay loop saw the client first) is honoured here. The pool
        // dropped the registration when it asked.
        if self.signal.take_give_back() {
            self.keeper_of = None;
        }
        let pool = &k.target.pool;
        // Probed again if `resume_kept` found it unusable: its probe took
        // at most one byte of what the server sent, a message (5 bytes or
        // more) or the EOF, so this one finds the rest.
        if k.conn
            .reusable(Tick::now(), k.last_ready, pool.settings.idle_timeout)
        {
            self.give_back_kept(k).await;
        } else {
            // Closed, as an idle list would close it.
            self.cancel_slot.clear().await;
            drop(k);
        }
    }

    /// Returns a kept connection to its pool, as `maybe_detach` would have.
    async fn give_back_kept(&mut self, mut k: Box<Attached>) {
        self.cancel_slot.clear().await;
        std::mem::swap(&mut self.spare_expect, &mut k.expect);
        k.conn.give_back(k.last_ready);
    }

    /// Waits out a PAUSE and the pool's queue while still reading the
    /// client, as PgBouncer does: a client that leaves while queued gives
    /// up its place, and its statement never runs on a connection freed
    /// after it left. Bytes the client pipelines meanwhile are buffered (up
    /// to `CLIENT_READ_AHEAD`) and served in order afterwards.
    async fn checkout_watching_client(&mut self, target: &Target) -> Result<PooledConn, PgError> {
        if self.client_gone {
            // An earlier checkout in this turn already saw the client leave.
            return Err(closed());
        }
        let tenant = target.tenant.as_deref();
        let checkout = async {
            crate::admin::wait_while_paused(tenant).await;
            target.pool.checkout(tenant, Tick::now()).await
        };
        tokio::pin!(checkout);
        let signal = self.signal.clone();
        loop {
            let room = self.creader.buffered() < CLIENT_READ_AHEAD;
            tokio::select! {
                biased;
                () = signal.fired() => return Err(killed()),
                r = &mut checkout => return r,
                r = self.creader.fill(&mut self.client), if room => {
                    if !matches!(r, Ok(true)) {
                        self.client_gone = true;
                        return Err(closed());
                    }
                }
            }
        }
    }

    /// Notes that the request in hand was sent, up to its end (its Query
    /// or Sync queued last) when `ends_request`: what it changed of the
    /// session's records outside a block (the tenant, a RESET ALL) is
    /// undone if it fails, as PostgreSQL undoes the implicit transaction.
    /// Call it after `note_session_effects`, which may clear the settings.
    fn request_sent(&mut self, ends_request: bool) {
        let txn_control = self.request_tenant.holds_txn_control();
        let mut undo = undo::RequestUndo {
            tenant: self.request_tenant.sent(&self.session_tenant, ends_request),
            reset: None,
            settings: match ends_request {
                true => std::mem::take(&mut self.request_settings),
                false => Vec::new(),
            },
            block: None,
        };
        if let Some(r) = self.reset_undo.take() {
            let block = match self.attached.as_mut() {
                Some(a) if ends_request && txn_control => a.expect.block_of_last(),
                _ => None,
            };
            match block {
                // With transaction control in the request (its BEGIN, or a
                // COMMIT ending its implicit block), what undoes the RESET
                // ALL is a ROLLBACK the backend reports: a COMMIT keeps it.
                Some(b) => {
                    b.reset.get_or_insert(r);
                }
                // The request runs on to its Sync, which takes it.
                None if !ends_request => self.reset_undo = Some(r),
                // An error anywhere in the request undoes it; inside a
                // block, the block's outcome then decides (`TxSettings`).
                None => undo.reset = Some(r),
            }
        }
        if undo.tenant.is_some() || undo.reset.is_some() || !undo.settings.is_empty() {
            if let Some(a) = self.attached.as_mut() {
                a.expect.undo_on_error(Box::new(undo));
            }
        }
    }

    /// The request in hand was refused before it ran: a RESET ALL in it
    /// cleared nothing on the server, so the recorded settings come back.
    fn request_refused(&mut self) {
        self.request_tenant.refused(&mut self.session_tenant);
        if let Some(r) = self.reset_undo.take() {
            r.restore(&mut self.settings);
        }
        // What its batches ended by Flush ran fails with it: the proxy
        // raises the refusal where they ran.
        let keys = std::mem::take(&mut self.request_settings);
        if let Some(a) = self.attached.as_mut() {
            forget_settings(&mut self.settings, a, &keys);
        }
    }

    /// Records a session-level SET the client ran on `target`, so it is
    /// replayed elsewhere. `txn_control`: its request holds transaction
    /// control, so an error in it does not undo the SET: its ReadyForQuery
    /// decides (`BlockChanges`).
    fn record_setting(&mut self, target: &Target, stmt: &str, txn_control: bool) {
        let startup = self.startup_settings.clone();
        let s = self
            .settings
            .entry(target.pool.name.clone())
            .or_insert(startup);
        s.push(stmt.to_string());
        if let Some(a) = self.attached.as_mut() {
            if a.target.pool.name == target.pool.name {
                a.conn.settings_fingerprint = s.fingerprint;
                // Recorded before its result is known: forgotten if it
                // fails. In a batch ended by Flush, if its request fails.
                let key = Settings::key(stmt);
                if txn_control {
                    if let Some(block) = a.expect.block_of_last() {
                        block.keys.push(key);
                    }
                } else if !a
                    .expect
                    .on_error_of_last(expect::OnError::ForgetSetting(key))
                {
                    self.request_settings.push(key);
                }
            }
        }
    }

    /// Bookkeeping after sending `a` (text `sql`) to the attached
    /// connection: settings to replay elsewhere, and what the connection's
    /// own state now is. A changed or reset tenant setting makes the next
    /// transaction write it again; RESET ALL / DISCARD ALL (which also drops
    /// server-side prepared statements) retires the connection after use.
    ///
    /// Returns what of `sql` is a setting to replay: the caller records it
    /// (`record_setting`) once its whole request is known.
    #[must_use]
    fn note_session_effects(&mut self, a: &crate::router::Analysis, sql: &str) -> Replay {
        use crate::router::SessionEffect;
        let effects = a.statements.iter().flat_map(|s| s.effects.iter());
        let mut tenant_touched = false;
        let mut reset_all = false;
        let mut deallocate_all = false;
        let mut untracked = false;
        let mut other = false;
        for e in effects {
            match e {
                SessionEffect::SetTenant { .. } | SessionEffect::ResetTenant => {
                    tenant_touched = true
                }
                SessionEffect::ResetAll => reset_all = true,
                SessionEffect::Deallocate(None) => deallocate_all = true,
                // A name the proxy did not answer for (`deallocate_locally`)
                // is not one of the client's protocol-level statements.
                // Forwarded: not one of the client's statements, maybe a
                // statement the proxy shares between sessions (`pgt_…`).
                SessionEffect::Deallocate(Some(_)) => untracked = true,
                SessionEffect::LocalSetting => {}
                SessionEffect::Other => other = true,
                SessionEffect::Untracked => untracked = true,
            }
        }
        // A RESET of one of the client's startup parameters: PostgreSQL
        // puts back the client's startup value, a pooled connection its own
        // default. Replayed as the startup value, and the connection, left
        // with its own default, is retired after this use (below).
        let startup_value = |st: &crate::router::StatementInfo| {
            let name = st.resets.as_deref()?;
            let i = self.startup_names.iter().rposition(|n| n == name)?;
            Some(self.startup_settings.stmts[i].as_str())
        };
        let resets_startup = a.statements.iter().any(|st| startup_value(st).is_some());
        let replay = if !other {
            Replay::Nothing
        } else if !resets_startup && route::replayable_settings(a) && !sql.contains('$') {
            Replay::Whole
        } else if let Some((settings, txn_control)) = route::settings_part(a, sql, &startup_value) {
            Replay::Part {
                settings,
                txn_control,
            }
        } else {
            Replay::Nothing
        };
        untracked |= resets_startup;
        // The client was told the connection's default of a reported one
        // (ParameterStatus): the next setup tells it the startup value.
        self.report_next_setup |= resets_startup;
        // State the next session on this connection would inherit, and
        // that no reset undoes: the connection closes after this use.
        untracked |= other && matches!(replay, Replay::Nothing);
        if deallocate_all {
            // PostgreSQL forgets the client's statements (not the unnamed one).
            self.prepared.clear_named();
        }
        if reset_all {
            // Done already when routing read it before sending; an extended
            // statement in pass-through is read only now.
            self.reset_settings();
            self.report_next_setup |= !self.startup_settings.stmts.is_empty();
        }
        if let Some(att) = self.attached.as_mut() {
            if tenant_touched || reset_all {
                att.conn.tenant_setting = None;
            }
            // The server drops the statements other sessions share on this
            // connection too: none is listed any more, and the connection
            // closes after this use.
            if deallocate_all {
                att.conn.prepared.clear();
                att.conn.unnamed_owner = None;
                att.conn.statements_unknown = true;
            }
            if reset_all || deallocate_all || untracked {
                att.conn.retire_after_use = true;
            }
        }
        if mentions_advisory_lock(sql) {
            // Session-level advisory locks (the `_xact_` variants do not match):
            // the next session to get this connection releases them first.
            if let Some(att) = self.attached.as_mut() {
                att.conn.lock_owner = Some(self.id);
            }
        }
        replay
    }

    /// Forgets recorded settings (RESET ALL / DISCARD ALL by the client),
    /// keeping them in `reset_undo` until the request's fate is known.
    fn reset_settings(&mut self) {
        let earlier = std::mem::take(&mut self.request_settings);
        if self.reset_undo.is_none() {
            let mut settings = std::mem::take(&mut self.settings);
            // The request's SETs before it fail with it too: what its
            // failure gives back is the settings from before them.
            let pool = self.attached.as_ref().map(|a| &a.target.pool.name);
            if let Some(s) = pool.and_then(|p| settings.get_mut(p)) {
                s.forget_each(&earlier);
            }
            self.reset_undo = Some(Box::new(ResetUndo { settings }));
        }
        // PostgreSQL resets each setting to its value at the start of the
        // session, which for the client's startup parameters (its
        // application_name, `options=-c search_path=…`) is theirs: they
        // stay, to be replayed. The connection, whose own start had none of
        // them, is back to its defaults, and retired after this use
        // (`note_session_effects`): the next transaction's connection gets
        // them again.
        self.settings.clear();
        if let Some(a) = self.attached.as_mut() {
            a.conn.settings_fingerprint = 0;
        }
    }

    /// Writes one message to the attached backend and records what it expects.
    async fn send_to_backend(
        &mut self,
        bytes: &[u8],
        awaits: Await,
        swallow: bool,
    ) -> Result<(), PgError> {
        let a = self.attached.as_mut().expect("attached before sending");
        if awaits == Await::Query {
            // A simple Query destroys the server's unnamed statement (a
            // FunctionCall does not, but forgetting costs only a re-Parse).
            a.conn.unnamed_owner = None;
        }
        a.expect.push(awaits, swallow);
        a.note_request(bytes.len());
        a.conn
            .stream
            .send_all(bytes)
            .await
            .map_err(|_| backend_lost())
    }

    fn report_bytes_in(&mut self) {
        if self.unreported_in > 0 {
            crate::metrics::bytes_received(std::mem::take(&mut self.unreported_in) as usize);
        }
    }

    async fn flush_client(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            crate::metrics::bytes_sent(self.out.len());
            self.client.send_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Sends an error the proxy decided on, followed by ReadyForQuery when the
    /// client expects one (end of a simple query or of an extended batch).
    fn refuse(&mut self, err: &PgError, ready: bool) {
        if self.client_gone || self.signal.is_fired() {
            // Nobody to tell, or a KILL's FATAL ends the session once the
            // statement unwinds.
            return;
        }
        crate::metrics::refused(err.code);
        tracing::info!(session = self.id, user = %self.user, code = err.code, message = %err.message, "statement refused");
        self.out.extend_from_slice(&err.encode());
        if ready {
            let status = self.client_status();
            self.out.extend_from_slice(&be::ready_for_query(status));
        }
    }

    /// The transaction status the client should see now.
    fn client_status(&self) -> TxStatus {
        if self.client_failed {
            TxStatus::Failed
        } else if let Some(a) = &self.attached {
            a.status
        } else if self.held_begin.is_some() {
            TxStatus::InTransaction
        } else {
            TxStatus::Idle
        }
    }

    /// Releases or closes every backend connection when the client leaves.
    async fn close_backends(&mut self) {
        if let Some(pool) = self.keeper_of.take() {
            let me: Arc<dyn crate::pool::Keeper> = self.signal.clone();
            pool.remove_keeper(&me);
        }
        if let Some(k) = self.take_kept() {
            if self.signal.is_fired() {
                // KILL: the tenant's connections close, this one too.
                self.cancel_slot.clear().await;
            } else {
                self.give_back_kept(k).await;
            }
        }
        if let Some(a) = self.attached.take() {
            if a.is_idle() {
                self.cancel_slot.clear().await;
                a.conn.release(a.last_ready);
            } else {
                // A running statement (pg_sleep, a long scan) would not notice
                // the closed socket until it finishes, holding its locks: cancel
                // it, then drop the connection so PostgreSQL rolls back.
                if !a.expect.is_empty() {
                    let _ =
                        crate::pool::connect::send_cancel(&a.target.pool.url, a.conn.backend_key)
                            .await;
                }
                self.cancel_slot.clear().await;
                drop(a);
            }
        }
        for (_, c) in self.parked.drain() {
            // Session-pooled connections carry the client's session state: reset on next use.
            c.release(Tick::now());
        }
    }
}

/// Forgets the recorded SETs `keys` (in the order they ran) of `a`'s data
/// source: PostgreSQL refused or undid them, so they must not be replayed.
fn forget_settings(settings: &mut HashMap<String, Settings>, a: &mut Attached, keys: &[u64]) {
    if keys.is_empty() {
        return;
    }
    let Some(s) = settings.get_mut(&a.target.pool.name) else {
        return;
    };
    s.forget_each(keys);
    // The connection has what it had before them, unless that is not
    // known either.
    if a.conn.settings_fingerprint != SETTINGS_UNKNOWN {
        a.conn.settings_fingerprint = s.fingerprint;
    }
}

/// The extended-protocol messages, held in `Session::pending` until Sync or Flush.
fn is_extended(tag: u8) -> bool {
    matches!(
        tag,
        tag::PARSE | tag::BIND | tag::DESCRIBE | tag::EXECUTE | tag::CLOSE | tag::SYNC | tag::FLUSH
    )
}

/// A portal bound to a statement that may change session state: the
/// portal's name as sent, and the statement's text (`Session::setting_portals`).
type SettingPortal = (Box<[u8]>, Arc<[u8]>);

/// What of a statement text the session replays on its next connections
/// (`Session::note_session_effects`).
pub(super) enum Replay {
    /// Nothing: no setting, or one that cannot be replayed (the connection
    /// then closes after this use).
    Nothing,
    /// The whole text: it only changes settings.
    Whole,
    /// These statements of a simple Query that mixes settings with
    /// statements that must not run twice (`route::settings_part`);
    /// `txn_control`: the Query holds transaction control.
    Part { settings: String, txn_control: bool },
}

/// Appends `stmt` to a multi-statement Query `sql`: the `;` that ends it
/// goes on a line of its own, so that a `--` comment at its end cannot
/// swallow what follows.
fn push_statement(sql: &mut String, stmt: &str) {
    sql.push_str(stmt);
    sql.push_str("\n;");
}

/// Adds the message at `pos` (`len` bytes) to the run of forwarded
/// messages that ends there, or starts a run with it.
fn extend_run(run: &mut std::ops::Range<usize>, pos: usize, len: usize) {
    if run.start == run.end {
        *run = pos..pos + len;
    } else {
        run.end += len;
    }
}

/// Copies the forwarded messages `run` (a range of `reader`'s unconsumed
/// bytes) to the client's buffer `out`, and empties it.
fn copy_run(out: &mut BytesMut, reader: &FrameReader, run: &mut std::ops::Range<usize>) {
    if run.start != run.end {
        out.extend_from_slice(reader.unconsumed(run.clone()));
        *run = 0..0;
    }
}

/// PostgreSQL undid a RESET ALL on the attached connection: the session's
/// recorded settings come back, and the connection, retired after this
/// use, is described by neither list.
fn reset_undone(
    r: ResetUndo,
    settings: &mut HashMap<String, Settings>,
    connection_fingerprint: &mut u64,
) {
    r.restore(settings);
    *connection_fingerprint = SETTINGS_UNKNOWN;
}

/// The settings a session replays on `target`'s connections: those recorded
/// for its pool, else the startup ones. Recorded as the request in hand
/// found them: a RESET ALL in it, read before it is sent (`reset_undo`),
/// has not run yet. A connection is set up to those, so that the reset
/// runs on what the client set and reports the parameters it changes, as
/// on PostgreSQL.
fn settings_for<'a>(
    recorded: &'a HashMap<String, Settings>,
    reset_undo: &'a Option<Box<ResetUndo>>,
    startup: &'a Settings,
    target: &Target,
) -> &'a Settings {
    let recorded = reset_undo.as_ref().map_or(recorded, |r| &r.settings);
    if recorded.is_empty() {
        // The common case, without hashing the pool's name.
        return startup;
    }
    recorded.get(&target.pool.name).unwrap_or(startup)
}

/// The statements that bring a connection in line with a session, as two
/// simple Queries (see `setup_sql`).
#[derive(Default)]
pub(super) struct Setup {
    /// RESET ALL and the session's settings: may fail (a setting the
    /// server refuses), and then the whole Query is rolled back.
    settings: String,
    /// Its ParameterStatus messages are the client's
    /// (`Session::report_next_setup`).
    report: bool,
    /// The advisory-lock release and the tenant setting: cannot fail on an
    /// idle connection, and must hold whatever became of `settings`.
    session: String,
}

/// What `Session::resume` made of the session's connections for a target.
pub(super) enum Resumed {
    /// Attached to the target, nothing to send first.
    Ready,
    /// Attached to the target again; `Session::send_setup` must send this
    /// (or a held BEGIN) before the request.
    Setup(Setup),
    /// Not without waiting: `Session::ensure_attached`.
    Wait,
}

impl Setup {
    fn is_empty(&self) -> bool {
        self.settings.is_empty() && self.session.is_empty()
    }
}

/// The statements that bring `conn` in line with session `session` and
/// `target` (settings, advisory locks left by another session, the
/// tenant setting), recorded on `conn` as applied; empty when it already is.
/// They go out in the same write as the client's request.
fn setup_sql(
    wanted: &Settings,
    report: bool,
    session: u64,
    shared: &Shared,
    conn: &mut PooledConn,
    target: &Target,
) -> Setup {
    let mut setup = Setup::default();
    if conn.settings_fingerprint != wanted.fingerprint || report {
        setup.report = report;
        if conn.settings_fingerprint != 0 {
            // As DISCARD ALL begins: RESET ALL keeps a SET ROLE or SET
            // SESSION AUTHORIZATION, which the first statement undoes.
            setup
                .settings
                .push_str("SET SESSION AUTHORIZATION DEFAULT;RESET ALL;");
            // RESET ALL clears the tenant setting too.
            conn.tenant_setting = None;
        }
        for s in &wanted.stmts {
            push_statement(&mut setup.settings, s);
        }
        conn.settings_fingerprint = wanted.fingerprint;
    }
    if conn.lock_owner.is_some_and(|owner| owner != session) {
        setup.session.push_str("SELECT pg_advisory_unlock_all();");
        conn.lock_owner = None;
    }
    let setting = || quote_literal(&shared.config().routing.tenant_setting);
    match &target.tenant {
        Some(t) if conn.tenant_setting.as_deref() != Some(&**t) => {
            setup.session.push_str(&format!(
                "SELECT set_config({}, {}, false);",
                setting(),
                quote_literal(t)
            ));
            conn.tenant_setting = Some(t.clone());
        }
        // Without a tenant, the RESET ALL above clears any: unless it fails
        // with the settings and rolls back, so it is cleared here too.
        None if !setup.settings.is_empty() => {
            setup
                .session
                .push_str(&format!("SELECT set_config({}, '', false);", setting()));
        }
        _ => {}
    }
    if !setup.is_empty() {
        // Sent as simple Queries, which destroy the unnamed statement.
        conn.unnamed_owner = None;
    }
    setup
}

/// Whether `sql` calls a session-level advisory lock function
/// (`pg_advisory_lock…`, `pg_try_advisory_lock…`; the `_xact_` variants end
/// with their transaction and do not match), in any case.
fn mentions_advisory_lock(sql: &str) -> bool {
    const NEEDLE: &[u8] = b"advisory_lock";
    let h = sql.as_bytes();
    // Candidates are where its `v` is, a rare letter in SQL, found many
    // bytes at a time: this runs on every routed statement.
    memchr::memchr2_iter(b'v', b'V', h).any(|i| {
        i.checked_sub(2)
            .and_then(|start| h.get(start..start + NEEDLE.len()))
            .is_some_and(|w| w.eq_ignore_ascii_case(NEEDLE))
    })
}

fn park_key(t: &Target) -> String {
    format!("{}|{}", t.pool.name, t.tenant.as_deref().unwrap_or(""))
}

/// What a session ended by the admin console's KILL reports.
fn killed() -> PgError {
    PgError::fatal(
        "57P01",
        "terminating connection due to administrator command",
    )
    .with_hint("An administrator ran KILL for this tenant.")
}

fn closed() -> PgError {
    PgError::fatal("08006", "client connection lost")
}

fn backend_lost() -> PgError {
    PgError::fatal("08006", "lost the connection to the data source")
}

/// A string literal that means `s` whatever the session's settings: an
/// escape string (`E'…'`, so `standard_conforming_strings` does not
/// matter), quotes and backslashes doubled, and every other character
/// outside printable ASCII written as a Unicode escape. The text can come
/// from a client (a statement name, a startup parameter), and a client can
/// pick settings under which a plain literal ends early and the rest runs
/// as SQL: `standard_conforming_strings` off, or a client encoding such as
/// SJIS in which a multibyte character can swallow an escaping backslash.
/// Pure ASCII means the same in every client encoding.
pub fn quote_literal(s: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len() + 3);
    out.push_str("E'");
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if (c as u32) <= 0xFFFF => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08X}", c as u32);
            }
        }
    }
    out.push('\'');
    out
}

/// The statement that gives a startup parameter its value on a pooled
/// connection. `set_config` reads the value as the startup packet does, as
/// the parameter's own text: `search_path=a,b` (JDBC's `currentSchema`,
/// `options=-c search_path=a,b`) is two schemas, where `SET search_path =
/// 'a,b'` would be one schema named `a,b`.
fn set_statement(name: &str, value: &str) -> String {
    format!(
        "SELECT pg_catalog.set_config({}, {}, false)",
        quote_literal(name),
        quote_literal(value)
    )
}

#[cfg(test)]
mod tests {
    use super::{mentions_advisory_lock, quote_literal};

    #[test]
    fn advisory_lock_calls_are_found_in_any_case_and_position() {
        for (hay, found) in [
            ("SELECT pg_advisory_lock(1)", true),
            ("select PG_ADVISORY_LOCK(1)", true),
            ("SELECT pg_Advisory_Lock_shared(1)", true),
            ("advisory_lock", true),
            ("SELECT v FROM t WHERE v = 1", false),
            ("SELECT abalance FROM accounts WHERE aid = 1", false),
            ("SELECT pg_advisory_loc", false),
            ("SELECT pg_advisory_xact_lock(1)", false),
            ("", false),
        ] {
            assert_eq!(mentions_advisory_lock(hay), found, "{hay}");
        }
    }

    #[test]
    fn literals_are_printable_ascii_escape_strings() {
        assert_eq!(quote_literal("it's"), "E'it''s'");
        assert_eq!(quote_literal(r"a\b"), r"E'a\\b'");
        assert_eq!(
            quote_literal("caf\u{e9} \u{1F600}\n"),
            r"E'caf\u00E9 \U0001F600\u000A'"
        );
    }
}
