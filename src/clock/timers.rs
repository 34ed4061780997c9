//! Sleeps, timeouts and beats for pgtenant's event loops, from one kernel
//! timer per event loop (a Linux timerfd) instead of tokio's time driver.
//!
//! Why: tokio's time driver, once enabled, reads the clock and walks its
//! timer wheel on every park of the event loop, whether or not any timer
//! is pending. A session's event loop parks about once per transaction,
//! so that is paid per transaction: about 220 instructions, 4% of a
//! pass-through transaction (callgrind, `bench/instructions.sh`). pgtenant's runtimes
//! are built without it ([`event_loop`]), and the few waits that need a
//! deadline (a checkout queued behind a full pool, the delay after failed
//! logins, reconnect backoffs, the shutdown drain, the control plane's
//! periodic work) register in this thread's `Wheel`: the event loop pays
//! for a timer only when one fires. A sleeping thread would not do: a
//! second thread makes glibc wrap every `send`, `recv` and `epoll_wait`
//! in cancellation bookkeeping, which costs as much.
//!
//! `tokio::time` must therefore not be used on these event loops (it
//! panics without the driver): `clippy.toml` forbids it everywhere, tests
//! included (they use these functions, which fall back to tokio's timers
//! on a test's own runtime). Dependencies must not use it either:
//! tokio-postgres does only for `connect_timeout`, which
//! `pool::control::pg_config` leaves unset.
//! Elsewhere than Linux these functions are tokio's own timers, and the
//! runtimes keep tokio's time driver.

use super::Tick;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

/// Builds the current-thread runtime of one pgtenant event loop (the main
/// thread's and each session worker's), with the calling thread's timer
/// wheel installed. Call it on the thread that will run the loop.
pub fn event_loop() -> std::io::Result<tokio::runtime::Runtime> {
    #[cfg(target_os = "linux")]
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        let driver = {
            let _in = rt.enter();
            wheel::install()?
        };
        rt.spawn(driver);
        Ok(rt)
    }
    #[cfg(not(target_os = "linux"))]
    {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
}

/// Waits until `deadline`.
pub async fn sleep_until(deadline: Tick) {
    #[cfg(target_os = "linux")]
    wheel::Sleep::new(deadline).await;
    #[cfg(not(target_os = "linux"))]
    fallback(deadline).await;
}

/// Waits for `d`.
pub async fn sleep(d: Duration) {
    sleep_until(Tick::now() + d).await
}

/// The error of a [`timeout`] that ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// Runs `work` for at most `d`; `Err(Elapsed)` (and `work` dropped) when
/// it takes longer. `work` is polled first, so work that is ready at once
/// never times out.
pub async fn timeout<F: Future>(d: Duration, work: F) -> Result<F::Output, Elapsed> {
    let mut work = std::pin::pin!(work);
    let mut limit = std::pin::pin!(sleep(d));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = work.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        limit.as_mut().poll(cx).map(|()| Err(Elapsed))
    })
    .await
}

/// tokio's timer, for a thread without a wheel: tests' runtimes, and
/// every runtime elsewhere than Linux.
#[allow(clippy::disallowed_methods)]
async fn fallback(deadline: Tick) {
    let left = deadline.since(Tick::now());
    tokio::time::sleep(left).await
}

/// A beat every `period` for a control-plane loop (pool upkeep, the
/// registry's full reload).
///
/// Beats do not pile up: the beats missed while the loop was busy count as
/// one (like tokio's `MissedTickBehavior::Skip`).
pub struct Metronome {
    period: Duration,
    /// The next beat, in `Tick` nanoseconds (atomic only so that a loop
    /// holding `&Metronome` across an await stays `Send`).
    next: AtomicU64,
}

impl Metronome {
    /// The first beat comes one `period` from now.
    pub fn new(period: Duration) -> Metronome {
        let period = period.max(Duration::from_millis(1));
        Metronome {
            period,
            next: AtomicU64::new((Tick::now() + period).nanos()),
        }
    }

    /// Waits for the next beat. Cancel-safe: a beat is only consumed by
    /// the `tick` that returns it.
    pub async fn tick(&self) {
        let next = Tick::from_nanos(self.next.load(Ordering::Relaxed));
        sleep_until(next).await;
        let now = Tick::now();
        let after = next + self.period;
        let after = if after > now {
            after
        } else {
            now + self.period
        };
        self.next.store(after.nanos(), Ordering::Relaxed);
    }
}

#[cfg(target_os = "linux")]
mod wheel {
    //! The per-thread timer wheel: pending sleeps ordered by deadline and
    //! one timerfd set to the earliest, watched by a driver task on the
    //! thread's event loop that wakes the sleeps that are due.

    use super::Tick;
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::future::Future;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::pin::Pin;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::task::{Context, Poll, Waker};
    use tokio::io::unix::AsyncFd;

    thread_local! {
        static WHEEL: RefCell<Option<Wheel>> = const { RefCell::new(None) };
    }

    /// Tells wheels apart: a thread's event loop can be rebuilt (tests do),
    /// and a sleep registered in the old wheel is not in the new one.
    static NEXT_WHEEL: AtomicU64 = AtomicU64::new(1);

    /// One thread's pending sleeps.
    struct Wheel {
        id: u64,
        /// A duplicate of the driver's timerfd (one timer, two
        /// descriptors): valid for as long as the wheel is installed,
        /// whatever became of the driver.
        fd: OwnedFd,
        /// Pending sleeps by deadline, then registration order (the key
        /// each `Sleep` keeps to find its entry again).
        pending: BTreeMap<(Tick, u64), Waker>,
        next_key: u64,
        /// The deadline the timerfd is set to; `None` when disarmed.
        armed: Option<Tick>,
    }

    impl Wheel {
        /// Sets the timerfd to fire at `deadline` (CLOCK_MONOTONIC, as `Tick`).
        fn arm(&mut self, deadline: Tick) {
            let ns = deadline.nanos().max(1);
            let spec = libc::itimerspec {
                it_interval: libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: libc::timespec {
                    tv_sec: (ns / 1_000_000_000) as libc::time_t,
                    tv_nsec: (ns % 1_000_000_000) as libc::c_long,
                },
            };
            // SAFETY: `fd` is the wheel's own open timerfd; `spec` is valid.
            let r = unsafe {
                libc::timerfd_settime(
                    self.fd.as_raw_fd(),
                    libc::TFD_TIMER_ABSTIME,
                    &spec,
                    std::ptr::null_mut(),
                )
            };
            // Fails only for a bad descriptor or value: neither can happen.
            debug_assert_eq!(r, 0, "timerfd_settime");
            self.armed = Some(deadline);
        }

        /// Moves the wakers of the sleeps due at `now` into `due` and sets
        /// the timer for the next one.
        fn take_due(&mut self, now: Tick, due: &mut Vec<Waker>) {
            self.armed = None;
            while let Some(entry) = self.pending.first_entry() {
                if entry.key().0 > now {
                    let deadline = entry.key().0;
                    self.arm(deadline);
                    break;
                }
                due.push(entry.remove());
            }
        }
    }

    /// Creates this thread's wheel and returns its driver, to be spawned on
    /// the thread's (current-thread) event loop. Call inside the runtime.
    pub(super) fn install() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
        // SAFETY: a plain syscall; the new descriptor is owned at once.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let own = fd.try_clone()?;
        // SAFETY: an `OwnedFd` stays open, and is the same descriptor, for
        // as long as the `AsyncFd` owns it.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        let id = NEXT_WHEEL.fetch_add(1, Ordering::Relaxed);
        WHEEL.with(|w| {
            *w.borrow_mut() = Some(Wheel {
                id,
                fd: own,
                pending: BTreeMap::new(),
                next_key: 0,
                armed: None,
            })
        });
        // Made here, not in `drive`: a driver dropped before it ever ran
        // (its runtime shut down first) still uninstalls the wheel.
        Ok(drive(fd, Uninstall(id)))
    }

    /// Uninstalls the wheel when its driver goes (the event loop shuts
    /// down): later sleeps on the thread fall back to tokio's timers.
    struct Uninstall(u64);

    impl Drop for Uninstall {
        fn drop(&mut self) {
            let _ = WHEEL.try_with(|w| {
                if let Ok(mut w) = w.try_borrow_mut() {
                    if w.as_ref().is_some_and(|w| w.id == self.0) {
                        *w = None;
                    }
                }
            });
        }
    }

    /// Waits for the timerfd and wakes the sleeps that are due.
    async fn drive(fd: AsyncFd<OwnedFd>, _uninstall: Uninstall) {
        let mut due = Vec::new();
        loop {
            let Ok(mut ready) = fd.readable().await else {
                // The event loop is shutting down: nothing will fire.
                return std::future::pending().await;
            };
            let mut expirations = [0u8; 8];
            let read = ready.try_io(|fd| {
                // SAFETY: reads at most 8 bytes into an 8-byte buffer.
                let n = unsafe { libc::read(fd.as_raw_fd(), expirations.as_mut_ptr().cast(), 8) };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match read {
                Ok(Ok(())) => {}
                // Not readable after all (a re-arm raced the wake): wait on.
                Err(_would_block) => continue,
                // An error a timerfd read does not give: wait for the next
                // expiry rather than retry at once, which would spin.
                Ok(Err(_)) => {
                    ready.clear_ready();
                    continue;
                }
            }
            WHEEL.with(|w| {
                if let Some(w) = w.borrow_mut().as_mut() {
                    w.take_due(Tick::now(), &mut due);
                }
            });
            // Woken outside the borrow: a waker is not the wheel's code.
            for waker in due.drain(..) {
                waker.wake();
            }
        }
    }

    /// How many sleeps this thread's wheel holds.
    #[cfg(test)]
    pub(super) fn pending() -> usize {
        WHEEL.with(|w| w.borrow().as_ref().map_or(0, |w| w.pending.len()))
    }

    /// A sleep until a deadline: registered in the wheel of the thread that
    /// polls it, or tokio's timer where the thread has none. Current-thread
    /// runtimes poll a task on one thread only; a sleep moved to another
    /// would register there and leave its first entry to fire for nothing.
    pub(super) struct Sleep {
        deadline: Tick,
        /// (wheel id, key) of the registration, once polled.
        registered: Option<(u64, u64)>,
        fallback: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    }

    impl Sleep {
        pub(super) fn new(deadline: Tick) -> Sleep {
            Sleep {
                deadline,
                registered: None,
                fallback: None,
            }
        }

        /// Removes the registration, if it is still in the wheel.
        fn deregister(&mut self) {
            let Some((id, key)) = self.registered.take() else {
                return;
            };
            let deadline = self.deadline;
            let _ = WHEEL.try_with(|w| {
                if let Ok(mut w) = w.try_borrow_mut() {
                    if let Some(w) = w.as_mut().filter(|w| w.id == id) {
                        // An earlier timer left armed fires for nothing
                        // and re-arms for the next: cheaper than a syscall.
                        w.pending.remove(&(deadline, key));
                    }
                }
            });
        }
    }

    impl Future for Sleep {
        type Output = ();

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let this = &mut *self;
            if let Some(f) = this.fallback.as_mut() {
                return f.as_mut().poll(cx);
            }
            if Tick::now() >= this.deadline {
                this.deregister();
                return Poll::Ready(());
            }
            let deadline = this.deadline;
            let in_wheel = WHEEL.with(|w| {
                let mut w = w.borrow_mut();
                let Some(w) = w.as_mut() else {
                    return false;
                };
                if let Some((id, key)) = this.registered {
                    if id == w.id {
                        if let Some(waker) = w.pending.get_mut(&(deadline, key)) {
                            if !waker.will_wake(cx.waker()) {
                                *waker = cx.waker().clone();
                            }
                            return true;
                        }
                    }
                }
                let key = w.next_key;
                w.next_key += 1;
                w.pending.insert((deadline, key), cx.waker().clone());
                this.registered = Some((w.id, key));
                if w.armed.is_none_or(|a| deadline < a) {
                    w.arm(deadline);
                }
                true
            });
            if in_wheel {
                return Poll::Pending;
            }
            let f = this.fallback.insert(Box::pin(super::fallback(deadline)));
            f.as_mut().poll(cx)
        }
    }

    impl Drop for Sleep {
        fn drop(&mut self) {
            self.deregister();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{event_loop, sleep, timeout, Elapsed, Metronome};
    use std::time::{Duration, Instant};

    #[test]
    fn sleeps_on_an_event_loop_wake_in_deadline_order() {
        let rt = event_loop().unwrap();
        rt.block_on(async {
            let t0 = Instant::now();
            let order = std::sync::Mutex::new(Vec::new());
            let one = |ms: u64| {
                let order = &order;
                async move {
                    sleep(Duration::from_millis(ms)).await;
                    order.lock().unwrap().push(ms);
                }
            };
            // Registered out of order: the later one first arms the timer.
            tokio::join!(one(60), one(20), one(40));
            assert_eq!(*order.lock().unwrap(), [20, 40, 60]);
            let took = t0.elapsed();
            assert!(took >= Duration::from_millis(60), "{took:?}");
            assert!(took < Duration::from_millis(1000), "{took:?}");
        });
    }

    #[test]
    fn a_timeout_drops_slow_work_and_keeps_fast_work() {
        let rt = event_loop().unwrap();
        rt.block_on(async {
            let slow = timeout(Duration::from_millis(30), sleep(Duration::from_secs(60)));
            assert_eq!(slow.await, Err(Elapsed));
            // Both sleeps are gone from the wheel: the one that fired, and
            // the one dropped with its work.
            assert_eq!(super::wheel::pending(), 0);
            // A later, shorter sleep still fires on time (the timer was
            // left armed for the dropped one).
            let t0 = Instant::now();
            let fast = timeout(Duration::from_secs(60), async {
                sleep(Duration::from_millis(20)).await;
                7
            });
            assert_eq!(fast.await, Ok(7));
            assert!(t0.elapsed() < Duration::from_secs(5));
            assert_eq!(timeout(Duration::ZERO, async { 1 }).await, Ok(1));
        });
    }

    #[test]
    fn a_metronome_beats_every_period_and_keeps_one_missed_beat() {
        let rt = event_loop().unwrap();
        rt.block_on(async {
            let period = Duration::from_millis(40);
            let m = Metronome::new(period);
            let t0 = Instant::now();
            m.tick().await;
            m.tick().await;
            assert!(t0.elapsed() >= period * 2 - Duration::from_millis(5));
            // Busy for three and a half periods: one beat is kept...
            std::thread::sleep(period * 7 / 2);
            let t1 = Instant::now();
            m.tick().await;
            assert!(t1.elapsed() < period / 4, "the missed beat was not kept");
            // ...and the others dropped: two more beats are a period apart.
            let t2 = Instant::now();
            m.tick().await;
            m.tick().await;
            assert!(
                t2.elapsed() >= period - Duration::from_millis(5),
                "missed beats piled up"
            );
        });
    }

    #[tokio::test]
    async fn without_a_wheel_sleeps_use_tokio_timers() {
        let t0 = Instant::now();
        sleep(Duration::from_millis(20)).await;
        assert!(t0.elapsed() >= Duration::from_millis(20));
        let slow = timeout(Duration::from_millis(10), sleep(Duration::from_secs(60)));
        assert_eq!(slow.await, Err(Elapsed));
    }
}
