//! Brute-force throttling: repeated failures from one address or for one
//! user slow further attempts down, without revealing anything to the client.

use dashmap::DashMap;
use std::time::{Duration, Instant};

/// Counts recent failures per key (a user name or an IP address).
pub struct Throttle {
    failures: DashMap<String, (u32, Instant)>,
    limit: u32,
    window: Duration,
}

impl Throttle {
    pub fn new(limit: u32, window: Duration) -> Throttle {
        Throttle {
            failures: DashMap::new(),
            limit,
            window,
        }
    }

    /// How long to delay an attempt for these keys (zero when under the limit).
    /// The delay doubles with each failure beyond the limit, capped at 10 s.
    pub fn delay_for(&self, keys: &[&str]) -> Duration {
        let now = Instant::now();
        let mut worst = 0;
        for k in keys {
            if let Some(e) = self.failures.get(*k) {
                if now.duration_since(e.1) < self.window {
                    worst = worst.max(e.0);
                }
            }
        }
        if worst < self.limit {
            return Duration::ZERO;
        }
        let excess = (worst - self.limit).min(6);
        Duration::from_millis(250u64 << excess).min(Duration::from_secs(10))
    }

    pub fn record_failure(&self, keys: &[&str]) {
        let now = Instant::now();
        for k in keys {
            let mut e = self.failures.entry(k.to_string()).or_insert((0, now));
            if now.duration_since(e.1) >= self.window {
                *e = (0, now);
            }
            e.0 += 1;
            e.1 = now;
        }
        if self.failures.len() > 100_000 {
            self.failures
                .retain(|_, v| now.duration_since(v.1) < self.window);
        }
    }

    pub fn record_success(&self, keys: &[&str]) {
        for k in keys {
            self.failures.remove(*k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_only_after_the_limit() {
        let t = Throttle::new(2, Duration::from_secs(60));
        t.record_failure(&["bob", "1.2.3.4"]);
        assert_eq!(t.delay_for(&["bob"]), Duration::ZERO);
        t.record_failure(&["bob", "1.2.3.4"]);
        assert!(t.delay_for(&["1.2.3.4"]) > Duration::ZERO);
        t.record_success(&["bob"]);
        assert_eq!(t.delay_for(&["bob"]), Duration::ZERO);
    }
}
