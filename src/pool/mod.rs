//! Backend connections, pooled per data source (URL + user).
//!
//! A [`DataSourcePool`] is shared by every tenant whose data lives on that
//! source; the app DB has one too. Checkout waits up to the checkout timeout
//! (then SQLSTATE 53300 naming the pool); each tenant is capped inside a
//! shared pool so one heavy tenant cannot take every connection. A connection
//! comes back only through [`PooledConn::release`] after the session saw it
//! idle; dropping it instead (client vanished, protocol trouble) closes it, so
//! a half-finished transaction is never handed to someone else.

pub mod connect;
pub mod control;
pub mod url;

pub use self::url::{BackendUrl, SslMode};
pub use connect::ConnectError;

use crate::clock::Tick;
use crate::counted::Counted;
use crate::net::Stream;
use crate::protocol::backend::PgError;
use crate::protocol::FrameReader;
use dashmap::DashMap;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long [`DataSourcePool::try_checkout`] waits for the connections it
/// asked other sessions to give back. They are idle, so they come back at
/// those sessions' next wake (microseconds, or a scheduler's delay on a
/// loaded machine); the limit bounds the rare case of a session that began
/// its next transaction with its connection as it was asked.
pub const RECALL_WAIT: Duration = Duration::from_secs(1);

/// Transaction pooling returns a connection after each transaction; session
/// pooling keeps it for the client's whole session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    Transaction,
    Session,
}

impl PoolMode {
    pub fn parse(s: &str) -> PoolMode {
        if s == "session" {
            PoolMode::Session
        } else {
            PoolMode::Transaction
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Transaction => "transaction",
            PoolMode::Session => "session",
        }
    }
}

/// Size and timeouts of one pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub size: usize,
    pub mode: PoolMode,
    pub checkout_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    /// Cap per tenant inside this pool (default: half the pool, at least 1).
    pub max_per_tenant: usize,
    pub prepared_per_connection: usize,
    /// Connections kept open while idle, so a quiet tenant's first query skips the connect.
    pub min_idle: usize,
}

impl PoolSettings {
    pub fn from_defaults(d: &crate::config::PoolDefaults) -> PoolSettings {
        PoolSettings {
            size: d.size.max(1),
            mode: PoolMode::parse(&d.mode),
            checkout_timeout: Duration::from_millis(d.checkout_timeout_ms),
            idle_timeout: Duration::from_millis(d.idle_timeout_ms),
            max_lifetime: Duration::from_millis(d.max_lifetime_ms),
            max_per_tenant: (d.size / 2).max(1),
            prepared_per_connection: d.prepared_statements_per_connection.max(1),
            min_idle: 0,
        }
    }
}

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// One authenticated backend connection and what the proxy knows of its state.
pub struct ServerConn {
    pub id: u64,
    pub stream: Stream,
    pub reader: FrameReader,
    pub backend_key: (i32, i32),
    pub params: Vec<(String, String)>,
    /// Server-side prepared statement names present on this connection, oldest first.
    pub prepared: VecDeque<Arc<str>>,
    /// Which client Parse the unnamed statement currently holds: the
    /// session's id and the Parse's generation, which only counts within
    /// its session. `None` once a simple Query destroyed it.
    pub unnamed_owner: Option<(u64, u64)>,
    /// Fingerprint of the session settings applied (0 = pristine).
    pub settings_fingerprint: u64,
    /// The tenant value last written to the tenant setting on this connection.
    pub tenant_setting: Option<Arc<str>>,
    /// The session that may hold session-level advisory locks here; another
    /// session's checkout releases them first.
    pub lock_owner: Option<u64>,
    /// A client reset the whole session (DISCARD ALL): close instead of reusing.
    pub retire_after_use: bool,
    /// A DEALLOCATE ALL or DISCARD ALL went out on this connection: the
    /// statements in `prepared` were forgotten, but whether the server
    /// dropped them is not known until it answers, so a statement prepared
    /// again is closed first.
    pub statements_unknown: bool,
    /// End of the (jittered) lifetime: compared, never subtracted, on the hot path.
    expires: Tick,
    last_used: Tick,
    /// The worker whose runtime registered the socket (`crate::workers`): the
    /// connection idles in that worker's list, so it is reused where its
    /// readiness events arrive.
    home: usize,
    /// Counts this connection in its pool's `open` for as long as it exists.
    _open: Counted<Arc<AtomicUsize>>,
}

impl ServerConn {
    /// An idle connection must have nothing to say: readable bytes or EOF
    /// mean the server closed it (restart, admin termination, idle timeout).
    /// Costs no syscall when the socket has no readiness event pending.
    pub fn is_healthy(&mut self) -> bool {
        !self.stream.has_unread_input()
    }

    /// Past its (jittered) lifetime at `now`: close rather than reuse.
    pub fn expired(&self, now: Tick) -> bool {
        now >= self.expires
    }

    /// Whether a connection idle since `idle_since` may serve a request at
    /// `now`: within its lifetime and `idle_timeout`, and healthy. One that
    /// is not is closed. The same test for one from an idle list and for
    /// one a session kept.
    pub fn reusable(&mut self, now: Tick, idle_since: Tick, idle_timeout: Duration) -> bool {
        !self.expired(now) && now.since(idle_since) < idle_timeout && self.is_healthy()
    }

    pub fn has_prepared(&self, name: &str) -> bool {
        self.prepared.iter().any(|n| &**n == name)
    }
}

/// Counters for SHOW POOLS / metrics, kept lock-free. The ones bumped on
/// every request live in [`PoolCounters`], one set per worker.
#[derive(Default)]
pub struct PoolStats {
    pub waiting: AtomicUsize,
    pub connect_errors: AtomicU64,
    pub max_wait_us: AtomicU64,
    pub counters: crate::workers::PerWorker<PoolCounters>,
}

/// The per-request counters of one pool on one worker.
#[derive(Default)]
pub struct PoolCounters {
    /// Connections checked out. Incremented and decremented on whichever
    /// worker the session runs; only the (wrapping) sum is meaningful.
    pub active: AtomicUsize,
    pub checkouts: AtomicU64,
    pub wait_us_total: AtomicU64,
    /// Requests answered (ReadyForQuery), as PgBouncer's total_query_count.
    pub queries: AtomicU64,
    /// Transactions ended (ReadyForQuery 'I'), as total_xact_count.
    pub xacts: AtomicU64,
    pub query_us_total: AtomicU64,
    pub xact_us_total: AtomicU64,
    /// Bytes from clients to this pool's backends, and back.
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
}

/// A pool's [`PoolCounters`] summed over workers, at one instant.
#[derive(Clone, Copy, Default, Debug)]
pub struct PoolTotals {
    pub active: usize,
    pub checkouts: u64,
    pub wait_us: u64,
    pub queries: u64,
    pub xacts: u64,
    pub query_us: u64,
    pub xact_us: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

impl PoolStats {
    /// Sums the per-worker counters.
    pub fn totals(&self) -> PoolTotals {
        let mut t = PoolTotals::default();
        for c in self.counters.iter() {
            t.active = t.active.wrapping_add(c.active.load(Ordering::Relaxed));
            t.checkouts += c.checkouts.load(Ordering::Relaxed);
            t.wait_us += c.wait_us_total.load(Ordering::Relaxed);
            t.queries += c.queries.load(Ordering::Relaxed);
            t.xacts += c.xacts.load(Ordering::Relaxed);
            t.query_us += c.query_us_total.load(Ordering::Relaxed);
            t.xact_us += c.xact_us_total.load(Ordering::Relaxed);
            t.bytes_received += c.bytes_received.load(Ordering::Relaxed);
            t.bytes_sent += c.bytes_sent.load(Ordering::Relaxed);
        }
        t
    }

    /// Connections checked out now.
    pub fn active(&self) -> usize {
        self.totals().active
    }
}

/// One worker's idle connections, most recently used last.
#[allow(clippy::vec_box)] // boxed on purpose: see `DataSourcePool::idle`
type IdleList = Mutex<Vec<Box<ServerConn>>>;

/// The pool of one data source.
pub struct DataSourcePool {
    /// `user@host:port/db`: identity, metrics label, admin display. Never secret.
    pub name: String,
    pub url: BackendUrl,
    pub settings: PoolSettings,
    /// Idle connections, one list per worker (indexed by `ServerConn::home`).
    /// Connections are boxed so that checkout and release move a pointer,
    /// not the whole struct, through lists, guards and the session.
    idle: Box<[IdleList]>,
    permits: Arc<Semaphore>,
    /// foldhash: looked up on every checkout; keys are registry tenant ids.
    per_tenant: DashMap<String, Arc<Semaphore>, foldhash::fast::RandomState>,
    pub stats: PoolStats,
    /// Set when the pool should close connections on release (tenant suspended, URL changed).
    retired: std::sync::atomic::AtomicBool,
    /// Server connections open (idle, checked out or parked). Permits bound
    /// checkouts; this bounds connections when a checkout racing a release
    /// on another worker opened one more than `size` (see `release`).
    open: Arc<AtomicUsize>,
    /// Sessions that may keep one of this pool's connections between their
    /// transactions; [`DataSourcePool::recall_kept`] asks them all to give it back.
    keepers: Mutex<Vec<Arc<dyn Keeper>>>,
    /// Suspended tenants: their connections close when given back instead
    /// of idling (`suspend_tenant`). The flag spares releases the lock.
    suspended: Mutex<Vec<Arc<str>>>,
    any_suspended: std::sync::atomic::AtomicBool,
}

/// A client session that may keep a checked-out connection after its
/// transaction ends, to reuse it for its next one without a checkout and a
/// release (the pool's fast path while it has room). The pool asks for the
/// connections back whenever keeping them could cost anyone anything: a
/// checkout that has to wait, RECONNECT, PAUSE, and every upkeep tick, so
/// idle timeouts and lifetimes apply to kept connections too.
pub trait Keeper: Send + Sync {
    /// Give the kept connection back now if the session is idle, else when
    /// its transaction ends. The pool has forgotten the session by then: it
    /// registers again if it keeps a connection later. Returns whether the
    /// session holds an idle connection now, which it gives back at its
    /// next wake (a hint: it may be using it again already).
    fn give_back_soon(&self) -> bool;
}

/// A checked-out connection. Drop it to discard; call `release` to reuse.
pub struct PooledConn {
    conn: Option<Box<ServerConn>>,
    pool: Arc<DataSourcePool>,
    /// The tenant's share of the pool, when capped. (The pool's own permit
    /// is not held as an object: `Drop` hands it back to `pool.permits`,
    /// which saves two refcount updates on the shared semaphore per checkout.)
    _tenant_permit: Option<OwnedSemaphorePermit>,
    /// When the connection was ready for the request (permits taken, or a
    /// new connection opened): the session starts its request timers from it
    /// instead of reading the clock again.
    pub checked_out: Tick,
}

impl std::ops::Deref for PooledConn {
    type Target = ServerConn;
    fn deref(&self) -> &ServerConn {
        self.conn
            .as_ref()
            .expect("connection present until release")
    }
}
impl std::ops::DerefMut for PooledConn {
    fn deref_mut(&mut self) -> &mut ServerConn {
        self.conn
            .as_mut()
            .expect("connection present until release")
    }
}

impl PooledConn {
    pub fn pool(&self) -> &Arc<DataSourcePool> {
        &self.pool
    }
    /// Returns a connection the session saw idle (ReadyForQuery 'I') to the
    /// pool. `now` is the caller's latest clock reading (a session has one
    /// from that ReadyForQuery): one clock read less per transaction.
    pub fn release(mut self, now: Tick) {
        self.give_back(now);
    }

    /// [`PooledConn::release`] for a caller that holds the `PooledConn`
    /// inside a larger value and drops it in place afterwards (the permits
    /// go back with that drop).
    pub fn give_back(&mut self, now: Tick) {
        if let Some(mut conn) = self.conn.take() {
            conn.last_used = now;
            let expired = conn.expired(now);
            if !expired
                && !conn.retire_after_use
                && !self.pool.is_retired()
                && conn.reader.buffered() == 0
                && self.pool.open.load(Ordering::Relaxed) <= self.pool.settings.size
                && !self.pool.is_suspended(conn.tenant_setting.as_deref())
            {
                self.pool.idle_list(conn.home).lock().unwrap().push(conn);
            }
        }
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        // A connection not released closes before its permit is back, so a
        // waiter that then opens one never makes the pool exceed its size.
        drop(self.conn.take());
        self.pool.permits.add_permits(1);
        self.pool
            .stats
            .counters
            .here()
            .active
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl DataSourcePool {
    pub fn new(url: BackendUrl, settings: PoolSettings) -> Arc<DataSourcePool> {
        Arc::new(DataSourcePool {
            name: url.display(),
            permits: Arc::new(Semaphore::new(settings.size)),
            url,
            settings,
            idle: (0..crate::workers::count())
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            per_tenant: DashMap::default(),
            stats: PoolStats::default(),
            retired: false.into(),
            open: Arc::default(),
            keepers: Mutex::default(),
            suspended: Mutex::default(),
            any_suspended: false.into(),
        })
    }

    fn idle_list(&self, worker: usize) -> &IdleList {
        &self.idle[worker % self.idle.len()]
    }

    /// Number of idle connections (admin/metrics).
    pub fn idle_count(&self) -> usize {
        self.idle.iter().map(|l| l.lock().unwrap().len()).sum()
    }

    /// Keeps the idle connections for which `keep` holds; returns how many closed.
    fn retain_idle(&self, mut keep: impl FnMut(&ServerConn) -> bool) -> usize {
        let mut closed = 0;
        for list in self.idle.iter() {
            let mut idle = list.lock().unwrap();
            let before = idle.len();
            idle.retain(|c| keep(c));
            closed += before - idle.len();
        }
        closed
    }

    /// Stops reusing connections: idle ones close now, busy ones on release.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        self.retain_idle(|_| false);
        self.recall_kept();
    }

    /// Whether a session may keep its connection after a transaction: only
    /// in transaction pooling, and only while nobody waits and a checkout
    /// would still find room, so keeping never makes anyone wait.
    pub fn has_room_to_keep(&self) -> bool {
        self.settings.mode == PoolMode::Transaction
            && self.stats.waiting.load(Ordering::Relaxed) == 0
            && self.permits.available_permits() > 0
            && !self.is_retired()
    }

    /// Whether connections should no longer be reused (see [`DataSourcePool::retire`]).
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// Registers a session that keeps (or may keep) a connection of this
    /// pool between transactions, until [`DataSourcePool::recall_kept`] or
    /// [`DataSourcePool::remove_keeper`].
    pub fn add_keeper(&self, keeper: Arc<dyn Keeper>) {
        self.keepers.lock().unwrap().push(keeper);
    }

    /// Forgets a session registered with [`DataSourcePool::add_keeper`].
    pub fn remove_keeper(&self, keeper: &Arc<dyn Keeper>) {
        let same = |k: &Arc<dyn Keeper>| std::ptr::addr_eq(Arc::as_ptr(k), Arc::as_ptr(keeper));
        self.keepers.lock().unwrap().retain(|k| !same(k));
    }

    /// Asks every session keeping a connection of this pool to give it back
    /// (and forgets them: each registers again when it next keeps one).
    /// Returns how many of them held an idle connection (see
    /// [`Keeper::give_back_soon`]).
    pub fn recall_kept(&self) -> usize {
        let keepers = std::mem::take(&mut *self.keepers.lock().unwrap());
        keepers.iter().filter(|k| k.give_back_soon()).count()
    }

    /// Closes idle connections last used for `tenant` (KILL).
    pub fn close_idle_for_tenant(&self, tenant: &str) -> usize {
        self.retain_idle(|c| c.tenant_setting.as_deref() != Some(tenant))
    }

    /// A suspended tenant's connections stop being reused: idle ones close
    /// now, kept and busy ones when they come back. Returns how many closed now.
    pub fn suspend_tenant(&self, tenant: &str) -> usize {
        {
            let mut s = self.suspended.lock().unwrap();
            if !s.iter().any(|t| &**t == tenant) {
                s.push(tenant.into());
            }
            self.any_suspended.store(true, Ordering::Relaxed);
        }
        self.recall_kept();
        self.close_idle_for_tenant(tenant)
    }

    /// Undoes [`DataSourcePool::suspend_tenant`] (the tenant is active again).
    pub fn resume_tenant(&self, tenant: &str) {
        if !self.any_suspended.load(Ordering::Relaxed) {
            return;
        }
        let mut s = self.suspended.lock().unwrap();
        s.retain(|t| &**t != tenant);
        self.any_suspended.store(!s.is_empty(), Ordering::Relaxed);
    }

    pub fn is_suspended(&self, tenant: Option<&str>) -> bool {
        let Some(t) = tenant else {
            return false;
        };
        self.any_suspended.load(Ordering::Relaxed)
            && self.suspended.lock().unwrap().iter().any(|s| &**s == t)
    }

    /// Closes idle connections past their idle timeout or lifetime, then
    /// opens connections up to `min_idle` (only while nobody waits and the
    /// pool has room, so it never competes with clients).
    pub async fn maintain(&self) {
        // Kept connections come back to the idle lists, where the idle
        // timeout and lifetime below apply to them as to any other.
        self.recall_kept();
        let idle_timeout = self.settings.idle_timeout;
        let now = Tick::now();
        self.retain_idle(|c| now.since(c.last_used) < idle_timeout && !c.expired(now));
        if self.is_retired() {
            return;
        }
        // Counted against every open connection, not only free permits:
        // an idle connection holds no permit, so the permits alone would let
        // idle ones plus those clients hold (busy, or kept and not yet back
        // from the recall above) exceed the size.
        while self.idle_count() < self.settings.min_idle
            && self.open.load(Ordering::Relaxed) < self.settings.size
            && self.stats.waiting.load(Ordering::Relaxed) == 0
        {
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                return;
            };
            match self.open().await {
                Ok(conn) => self.idle_list(conn.home).lock().unwrap().push(conn),
                Err(_) => return,
            }
            drop(permit);
        }
    }

    /// Waits for a connection, up to the checkout timeout. `now` is the
    /// caller's clock reading, used to skip expired idle connections.
    pub async fn checkout(
        self: &Arc<Self>,
        tenant: Option<&str>,
        now: Tick,
    ) -> Result<PooledConn, PgError> {
        let tenant_sem = self.tenant_semaphore(tenant);
        // Fast path, the common case under normal load: permits are free, so
        // no timer is armed and there is no wait to account.
        let fast = self.permits_now(&tenant_sem);
        let (tenant_permit, now) = match fast {
            Some(p) => (p, now),
            None => {
                // Counted as waiting before asking: a session deciding
                // whether to keep its connection then sees the waiter or
                // gets the request (see `Session::register_keeper`).
                // Counted also when this future is dropped (the client left
                // while queued).
                let queued = Counted::new(&self.stats.waiting);
                // Connections kept idle by other sessions come back first.
                self.recall_kept();
                let limit = self.settings.checkout_timeout;
                let permit = self
                    .wait_for_permits(tenant_sem, queued, limit)
                    .await
                    .map_err(|_| {
                        PgError::error(
                            "53300",
                            format!(
                                "no server connection available in pool \"{}\" within {} ms",
                                self.name,
                                limit.as_millis()
                            ),
                        )
                        .with_hint("The data source is saturated: retry later, or raise the pool size (connection_pool_config.pool_size).")
                    })?;
                // After a wait, the caller's reading is stale.
                (permit, Tick::now())
            }
        };
        self.checkout_with(tenant_permit, now).await
    }

    /// A checkout that never queues behind transactions: `None` when the
    /// pool (or the tenant's share of it) has no room now. For work that
    /// may as well be done later (see `Session::attach`'s callers).
    ///
    /// Connections other sessions keep idle between their transactions
    /// count as room in the pool: they are asked back, and the checkout
    /// waits for them for at most [`RECALL_WAIT`] (a session that held one
    /// may have begun its next transaction with it as it was asked).
    pub async fn try_checkout(
        self: &Arc<Self>,
        tenant: Option<&str>,
        now: Tick,
    ) -> Option<Result<PooledConn, PgError>> {
        if self.stats.waiting.load(Ordering::Relaxed) > 0 {
            // Not ahead of those already queued.
            return None;
        }
        let tenant_sem = self.tenant_semaphore(tenant);
        let (tenant_permit, now) = match self.permits_now(&tenant_sem) {
            Some(p) => (p, now),
            // The tenant's share is full: kept connections of other
            // tenants, which a recall would bring back, would not help.
            None if tenant_sem
                .as_ref()
                .is_some_and(|s| s.available_permits() == 0) =>
            {
                return None;
            }
            None => {
                // Counted before asking, as `checkout` does: a keeper that
                // looks again then keeps nothing more.
                let queued = Counted::new(&self.stats.waiting);
                if self.recall_kept() == 0 {
                    return None;
                }
                let p = self
                    .wait_for_permits(tenant_sem, queued, RECALL_WAIT)
                    .await
                    .ok()?;
                (p, Tick::now())
            }
        };
        Some(self.checkout_with(tenant_permit, now).await)
    }

    /// The permits a checkout holds, if they are free now: the tenant's
    /// (when it has a share) and the pool's.
    fn permits_now(
        &self,
        tenant_sem: &Option<Arc<Semaphore>>,
    ) -> Option<Option<OwnedSemaphorePermit>> {
        match tenant_sem {
            Some(sem) => sem.clone().try_acquire_owned().ok().map(Some),
            None => Some(None),
        }
        .and_then(|tp| {
            // Given back by `PooledConn`'s drop.
            self.permits.try_acquire().ok()?.forget();
            Some(tp)
        })
    }

    /// The rest of a checkout once its permits are held: an idle
    /// connection, else a new one.
    async fn checkout_with(
        self: &Arc<Self>,
        tenant_permit: Option<OwnedSemaphorePermit>,
        now: Tick,
    ) -> Result<PooledConn, PgError> {
        let counters = self.stats.counters.here();
        counters.add(&counters.checkouts, 1);
        counters.active.fetch_add(1, Ordering::Relaxed);
        // Holds the permits from here: a failed or abandoned open gives them back.
        let mut pooled = PooledConn {
            conn: None,
            pool: self.clone(),
            _tenant_permit: tenant_permit,
            checked_out: now,
        };
        pooled.conn = Some(match self.take_idle(now) {
            Some(c) => c,
            None => {
                let c = self.open().await?;
                // Request timers start after the connection setup.
                pooled.checked_out = Tick::now();
                c
            }
        });
        Ok(pooled)
    }

    /// A reusable idle connection: this worker's own first (most recently
    /// used first), else another worker's, moved to this worker's runtime.
    /// Expired or broken ones met on the way are closed. A new connection is
    /// opened only when every list came up empty, which keeps the pool at
    /// `size` connections; a release racing the scan can let it open one
    /// more, and `release` then closes whichever connection comes back while
    /// the pool is over its size.
    fn take_idle(&self, now: Tick) -> Option<Box<ServerConn>> {
        let me = crate::workers::current();
        let lists = self.idle.len();
        for i in 0..lists {
            let list = &self.idle[(me + i) % lists];
            loop {
                let Some(mut c) = list.lock().unwrap().pop() else {
                    break;
                };
                let idle_since = c.last_used;
                if !c.reusable(now, idle_since, self.settings.idle_timeout) {
                    continue;
                }
                if c.home == me {
                    return Some(c);
                }
                match c.stream.into_current_runtime() {
                    Ok((stream, moved)) => {
                        c.stream = stream;
                        if moved {
                            c.home = me;
                        }
                        return Some(c);
                    }
                    Err(e) => {
                        tracing::debug!(pool = %self.name, error = %e, "idle connection lost while moving between workers");
                    }
                }
            }
        }
        None
    }

    /// The per-tenant cap's semaphore, when the cap is below the pool size.
    fn tenant_semaphore(&self, tenant: Option<&str>) -> Option<Arc<Semaphore>> {
        let t = tenant?;
        if self.settings.max_per_tenant >= self.settings.size {
            return None;
        }
        if let Some(sem) = self.per_tenant.get(t) {
            return Some(sem.clone());
        }
        Some(
            self.per_tenant
                .entry(t.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.settings.max_per_tenant)))
                .clone(),
        )
    }

    /// Waits (fairly, in arrival order) for the tenant's and the pool's
    /// permits, at most `limit`.
    async fn wait_for_permits(
        &self,
        tenant_sem: Option<Arc<Semaphore>>,
        queued: Counted<&AtomicUsize>,
        limit: Duration,
    ) -> Result<Option<OwnedSemaphorePermit>, crate::clock::Elapsed> {
        let started = Tick::now();
        let waited = crate::clock::timeout(limit, async {
            let tenant_permit = match tenant_sem {
                Some(sem) => Some(sem.acquire_owned().await.expect("never closed")),
                None => None,
            };
            // Given back by `PooledConn`'s drop.
            self.permits.acquire().await.expect("never closed").forget();
            tenant_permit
        })
        .await;
        drop(queued);
        let wait_us = Tick::now().micros_since(started);
        let counters = self.stats.counters.here();
        counters.add(&counters.wait_us_total, wait_us);
        self.stats.max_wait_us.fetch_max(wait_us, Ordering::Relaxed);
        waited
    }

    async fn open(&self) -> Result<Box<ServerConn>, PgError> {
        match connect::connect(&self.url).await {
            Ok(c) => {
                // Jitter spreads reconnect storms when many connections age together.
                let jitter = rand::random::<f64>() * 0.2;
                let now = Tick::now();
                Ok(Box::new(ServerConn {
                    id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
                    stream: c.stream,
                    reader: c.reader,
                    backend_key: c.backend_key,
                    params: c.params,
                    prepared: VecDeque::new(),
                    unnamed_owner: None,
                    statements_unknown: false,
                    settings_fingerprint: 0,
                    tenant_setting: None,
                    lock_owner: None,
                    retire_after_use: false,
                    expires: now + self.settings.max_lifetime.mul_f64(1.0 - jitter),
                    last_used: now,
                    home: crate::workers::current(),
                    _open: Counted::new(self.open.clone()),
                }))
            }
            Err(e) => {
                self.stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(pool = %self.name, error = %e, "backend connection failed");
                Err(PgError::error(
                    "08006",
                    format!("cannot connect to data source \"{}\": {e}", self.name),
                )
                .with_hint("The data source is down or refusing connections; pgtenant retries on the next statement."))
            }
        }
    }
}

/// All pools, keyed by data source identity (`user@host:port/db`).
#[derive(Default)]
pub struct PoolSet {
    pools: DashMap<String, Arc<DataSourcePool>>,
}

impl PoolSet {
    /// The pool for `url`, created with `settings` on first use. A changed URL
    /// (e.g. new password) under the same identity retires the old pool.
    pub fn get_or_create(&self, url: &BackendUrl, settings: &PoolSettings) -> Arc<DataSourcePool> {
        let key = url.display();
        if let Some(p) = self.pools.get(&key) {
            if p.url == *url {
                return p.clone();
            }
        }
        let pool = DataSourcePool::new(url.clone(), settings.clone());
        if let Some(old) = self.pools.insert(key, pool.clone()) {
            old.retire();
        }
        pool
    }

    pub fn get(&self, name: &str) -> Option<Arc<DataSourcePool>> {
        self.pools.get(name).map(|p| p.clone())
    }

    pub fn all(&self) -> Vec<Arc<DataSourcePool>> {
        self.pools.iter().map(|p| p.clone()).collect()
    }
}
