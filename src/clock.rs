//! A monotonic clock read as plain nanoseconds.
//!
//! The hot path reads the clock twice per transaction and derives the query
//! and transaction times, the idle check and the expiry check from those
//! readings. With `std::time::Instant` each of those is a checked
//! seconds-and-nanoseconds subtraction and each microsecond count a 128-bit
//! division; with a `Tick` they are one integer subtraction each.
//!
//! The control plane's periodic work (pool upkeep, the registry's refresh)
//! is paced by a [`Metronome`], not by tokio timers: see there why.

use std::ops::Add;
use std::time::Duration;

/// A reading of `CLOCK_MONOTONIC` (the clock behind `Instant` on Unix), in
/// nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tick(u64);

impl Tick {
    pub fn now() -> Tick {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC exists
        // on every Unix we build for, so the call cannot fail.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        Tick(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
    }

    /// The time from `earlier` to `self`; zero if `earlier` is later.
    pub fn since(self, earlier: Tick) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// `since` in whole microseconds, the unit of the pool statistics.
    pub fn micros_since(self, earlier: Tick) -> u64 {
        self.0.saturating_sub(earlier.0) / 1_000
    }
}

impl Add<Duration> for Tick {
    type Output = Tick;
    /// Saturates: a lifetime of `Duration::MAX` means never.
    fn add(self, d: Duration) -> Tick {
        Tick(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
}

/// A beat every `period` for a control-plane loop, from a kernel timer
/// (Linux `timerfd`) that the event loop watches like a socket, instead of
/// a tokio timer.
///
/// Why not `tokio::time::interval`: while any timer is pending, every park
/// of the event loop reads the clock, computes a timeout and walks tokio's
/// timer wheel. The event loop that runs the control plane also runs
/// sessions, and it parks about once per transaction, so a 2 s upkeep timer
/// there cost about 280 instructions per transaction (4–5% of a
/// pass-through transaction, `bench/instructions.sh`) for work done once
/// every 2 s. A timerfd costs nothing between beats. (A sleeping thread
/// would not do: a second thread makes glibc wrap every `send`, `recv` and
/// `epoll_wait` in cancellation bookkeeping, which costs as much.)
///
/// Beats do not pile up: the beats missed while the loop was busy count as
/// one (like `MissedTickBehavior::Skip`).
pub struct Metronome {
    #[cfg(target_os = "linux")]
    timer: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
    #[cfg(not(target_os = "linux"))]
    timer: tokio::sync::Mutex<tokio::time::Interval>,
}

impl Metronome {
    /// Arms the timer; the first beat comes one `period` from now. Call it
    /// inside the runtime whose event loop should watch the timer.
    #[cfg(target_os = "linux")]
    pub fn start(period: Duration) -> std::io::Result<Metronome> {
        use std::os::fd::{FromRawFd, OwnedFd};
        let period = period.max(Duration::from_millis(1));
        // SAFETY: plain syscalls; the new descriptor is owned at once.
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
        let every = libc::timespec {
            tv_sec: period.as_secs() as libc::time_t,
            tv_nsec: period.subsec_nanos() as libc::c_long,
        };
        let spec = libc::itimerspec {
            it_interval: every,
            it_value: every,
        };
        use std::os::fd::AsRawFd;
        // SAFETY: `spec` is a valid itimerspec; the old value is not asked for.
        if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: an `OwnedFd` stays open, and is the same descriptor, for
        // as long as the `AsyncFd` owns it.
        let timer = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        }
        .map_err(std::io::Error::from)?;
        Ok(Metronome { timer })
    }

    /// Waits for the next beat. Cancel-safe: a beat is only consumed by the
    /// `tick` that returns it.
    #[cfg(target_os = "linux")]
    pub async fn tick(&self) {
        use std::os::fd::AsRawFd;
        loop {
            let Ok(mut ready) = self.timer.readable().await else {
                // The event loop is shutting down; there will be no beat.
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
                Ok(Ok(())) => return,
                // Not readable after all (another wake raced it): wait on.
                Err(_would_block) => {}
                // An error a timerfd read does not give: wait for the next
                // expiry rather than retry at once, which would spin.
                Ok(Err(_)) => ready.clear_ready(),
            }
        }
    }

    /// Elsewhere, a tokio interval: the per-park cost above is the price.
    #[cfg(not(target_os = "linux"))]
    pub fn start(period: Duration) -> std::io::Result<Metronome> {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        Ok(Metronome {
            timer: tokio::sync::Mutex::new(i),
        })
    }

    #[cfg(not(target_os = "linux"))]
    pub async fn tick(&self) {
        self.timer.lock().await.tick().await;
    }
}

#[cfg(test)]
mod tests {
    use super::{Metronome, Tick};
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn a_metronome_beats_every_period_and_keeps_one_missed_beat() {
        let period = Duration::from_millis(40);
        let m = Metronome::start(period).unwrap();
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
    }

    #[test]
    fn ticks_follow_the_monotonic_clock() {
        let (t0, i0) = (Tick::now(), Instant::now());
        std::thread::sleep(Duration::from_millis(20));
        let (i1, t1) = (Instant::now(), Tick::now());
        let (tick, instant) = (t1.since(t0), i1.duration_since(i0));
        // Read around the Instants, the ticks span at least as long; a
        // wrong unit would be off by a factor of 1000 either way.
        assert!(
            tick >= instant && tick < instant + Duration::from_secs(1),
            "{tick:?} vs {instant:?}"
        );
        assert_eq!(t1.micros_since(t0), tick.as_micros() as u64);
        assert_eq!(t0.since(t1), Duration::ZERO);
        assert!(t0 + Duration::from_millis(20) <= t1);
        assert!(t0 + Duration::MAX > t1);
    }
}
