//! Session workers: one single-threaded tokio runtime per core, each running
//! whole client sessions, like PgBouncer's one event loop per process.
//!
//! Why not tokio's multi-thread runtime: a session is one task that wakes for
//! every message, and the work-stealing scheduler answers many of those wakes
//! by waking a parked worker thread too (measured on 2 cores: 0.9–1.1 context
//! switches per transaction against 0.6 for one thread, and 2–5 µs more CPU
//! per transaction). Here a session lives on one worker for its whole life,
//! so its sockets, its task and the backend connections it uses are served by
//! one epoll loop and one thread.
//!
//! Worker 0 is the runtime that calls [`Workers::start`] (the main thread,
//! which also runs the control plane: registry sync, admin HTTP, pool upkeep);
//! workers 1..n are threads started here. Backend connections remember the
//! worker whose runtime registered their socket (see `pool::ServerConn::home`),
//! and the pools keep one idle list per worker.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use tokio::net::TcpStream;
use tokio::runtime::Handle;

thread_local! {
    /// This thread's worker index (0 on the main thread and in tools/tests).
    static INDEX: Cell<usize> = const { Cell::new(0) };
    /// The [`PerWorker`] slot this thread owns, as its only writer: its
    /// worker index on the threads of a [`Workers::start`]; `usize::MAX`
    /// on every other thread (the blocking pool, tools, tests), which all
    /// share the last slot.
    static OWNED_SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// How many workers the process runs; pools size their idle lists by it.
static COUNT: AtomicUsize = AtomicUsize::new(1);

/// Live sessions per worker: the accept loop's balance, and a metric.
static SESSIONS: OnceLock<Box<[AtomicUsize]>> = OnceLock::new();

/// The worker running the calling code.
pub fn current() -> usize {
    INDEX.with(|i| i.get())
}

/// The number of workers (1 until [`Workers::start`] ran).
pub fn count() -> usize {
    COUNT.load(Ordering::Relaxed)
}

/// Live sessions on each worker (empty before [`Workers::start`]).
pub fn sessions() -> Vec<usize> {
    SESSIONS
        .get()
        .map(|s| s.iter().map(|c| c.load(Ordering::Relaxed)).collect())
        .unwrap_or_default()
}

/// The running workers, to hand accepted clients to.
pub struct Workers {
    handles: Vec<Handle>,
    sessions: &'static [AtomicUsize],
}

impl Workers {
    /// Makes the calling runtime worker 0 and starts `n - 1` more threads,
    /// each with a current-thread runtime. Call once, before any pool
    /// exists, from a current-thread runtime: the calling thread becomes
    /// the only writer of worker 0's [`PerWorker`] slots.
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let n = n.max(1);
        if SESSIONS.get().is_some() {
            // Only one thread may own each slot.
            return Err(std::io::Error::other("session workers started twice"));
        }
        COUNT.store(n, Ordering::Relaxed);
        OWNED_SLOT.with(|s| s.set(0));
        let mut handles = vec![Handle::current()];
        for k in 1..n {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name(format!("pgtenant-worker-{k}"))
                .spawn(move || {
                    INDEX.with(|i| i.set(k));
                    OWNED_SLOT.with(|s| s.set(k));
                    let rt = match crate::clock::event_loop() {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = tx.send(Ok(rt.handle().clone()));
                    // Runs the sessions spawned onto it until the process exits.
                    rt.block_on(std::future::pending::<()>());
                })?;
            let handle = rx.recv().map_err(|_| {
                std::io::Error::other(format!("worker {k} exited during startup"))
            })??;
            handles.push(handle);
        }
        let sessions = SESSIONS.get_or_init(|| (0..n).map(|_| AtomicUsize::new(0)).collect());
        Ok(Workers { handles, sessions })
    }

    /// Runs `session` for an accepted client on the worker holding the fewest
    /// sessions. Must be called from worker 0 (the accept loop).
    pub fn spawn_session<F, Fut>(&self, tcp: TcpStream, session: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let k = self.least_loaded();
        // Counts the session on its worker from spawn to end (dropped with the
        // task, also when the runtime drops it unfinished).
        let guard = crate::counted::Counted::new(&self.sessions[k]);
        if k == 0 {
            tokio::spawn(async move {
                session(tcp).await;
                drop(guard);
            });
            return;
        }
        // The socket is registered with worker 0's epoll; move it to worker k's.
        let std = match tcp.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand an accepted connection to a worker");
                return;
            }
        };
        self.handles[k].spawn(async move {
            match TcpStream::from_std(std) {
                Ok(tcp) => session(tcp).await,
                Err(e) => tracing::warn!(error = %e, worker = k, "cannot register a client socket"),
            }
            drop(guard);
        });
    }

    fn least_loaded(&self) -> usize {
        let mut best = 0;
        let mut least = usize::MAX;
        for (k, c) in self.sessions.iter().enumerate() {
            let v = c.load(Ordering::Relaxed);
            if v < least {
                least = v;
                best = k;
            }
        }
        best
    }
}

/// One `T` per worker, each on its own cache line, for counters bumped on
/// every request: shared atomics would bounce their line between cores on
/// each bump. Writers touch [`PerWorker::here`]; readers sum [`PerWorker::iter`].
pub struct PerWorker<T> {
    /// One slot per worker, then one shared by every other thread.
    slots: Box<[CacheLine<T>]>,
}

/// The calling thread's [`PerWorker`] slot, and whether the thread is its
/// only writer.
pub struct Slot<'a, T> {
    value: &'a T,
    exclusive: bool,
}

impl<T> std::ops::Deref for Slot<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value
    }
}

impl<T> Slot<'_, T> {
    /// Adds `n` to `counter`, one of this slot's fields. In a worker's own
    /// slot, which no other thread writes, a plain load and store: a locked
    /// add costs some twenty cycles, and a transaction bumps about eight
    /// counters. Readers on other threads see either value, never a torn one.
    #[inline]
    pub fn add(&self, counter: &AtomicU64, n: u64) {
        if self.exclusive {
            counter.store(
                counter.load(Ordering::Relaxed).wrapping_add(n),
                Ordering::Relaxed,
            );
        } else {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// 128 bytes: a cache line plus the neighbour that adjacent-line prefetch
/// pulls in with it.
#[repr(align(128))]
struct CacheLine<T>(T);

impl<T: Default> Default for PerWorker<T> {
    /// One slot per worker and the shared one (sized by [`count`], so make
    /// it after [`Workers::start`]: a worker without a slot writes the
    /// shared one).
    fn default() -> Self {
        PerWorker::new_with(T::default)
    }
}

impl<T> PerWorker<T> {
    /// One slot per worker and the shared one, each made by `make` (sized
    /// by [`count`], so make it after [`Workers::start`]).
    pub fn new_with(mut make: impl FnMut() -> T) -> Self {
        PerWorker {
            slots: (0..count() + 1).map(|_| CacheLine(make())).collect(),
        }
    }

    /// The calling worker's slot; on any other thread, or on a worker made
    /// after this `PerWorker`, the shared one.
    #[inline]
    pub fn here(&self) -> Slot<'_, T> {
        let shared = self.slots.len() - 1;
        let i = OWNED_SLOT.with(|s| s.get());
        match i < shared {
            true => Slot {
                value: &self.slots[i].0,
                exclusive: true,
            },
            false => Slot {
                value: &self.slots[shared].0,
                exclusive: false,
            },
        }
    }

    /// Every worker's slot.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().map(|s| &s.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Default)]
    struct Bumps(AtomicU64);

    /// A worker writes its own slot with plain stores; any other thread,
    /// and a worker whose index the `PerWorker` has no slot for, adds to
    /// the shared slot atomically: no add is lost, and no slot has two
    /// plain writers.
    #[test]
    fn owners_write_their_slot_and_everyone_else_the_shared_one() {
        let counters = Arc::new(PerWorker::<Bumps>::new_with(Default::default));
        let shared = counters.slots.len() - 1;
        let bump = |owned: Option<usize>| {
            let counters = counters.clone();
            std::thread::spawn(move || {
                if let Some(k) = owned {
                    OWNED_SLOT.with(|s| s.set(k));
                }
                let slot = counters.here();
                for _ in 0..10_000 {
                    slot.add(&slot.0, 1);
                }
                slot.exclusive
            })
        };
        // Worker 0, two other threads, and a worker made after the counters.
        let threads = [bump(Some(0)), bump(None), bump(None), bump(Some(shared))];
        let exclusive: Vec<bool> = threads.map(|t| t.join().unwrap()).into();
        assert_eq!(exclusive, [true, false, false, false]);
        let per_slot: Vec<u64> = counters
            .iter()
            .map(|b| b.0.load(Ordering::Relaxed))
            .collect();
        assert_eq!(per_slot[0], 10_000);
        assert_eq!(per_slot[shared], 30_000);
    }
}
