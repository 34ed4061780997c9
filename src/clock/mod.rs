//! A monotonic clock read as plain nanoseconds.
//!
//! The hot path reads the clock twice per transaction and derives the query
//! and transaction times, the idle check and the expiry check from those
//! readings. With `std::time::Instant` each of those is a checked
//! seconds-and-nanoseconds subtraction and each microsecond count a 128-bit
//! division; with a `Tick` they are one integer subtraction each.
//!
//! Waits with a deadline (sleeps, timeouts, the control plane's periodic
//! work) go through [`timers`], not tokio's time driver: see there why.

mod timers;

pub use timers::{event_loop, sleep, sleep_until, timeout, Elapsed, Metronome};

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

    /// The reading in nanoseconds (what a kernel timer is set to).
    pub fn nanos(self) -> u64 {
        self.0
    }

    /// The inverse of [`Tick::nanos`].
    pub fn from_nanos(ns: u64) -> Tick {
        Tick(ns)
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

#[cfg(test)]
mod tests {
    use super::Tick;
    use std::time::{Duration, Instant};

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
