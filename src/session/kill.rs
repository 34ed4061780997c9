//! `KILL <tenant>` from the admin console reaching a session that may be
//! waiting on its sockets.

use futures::task::AtomicWaker;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

/// A one-way signal the relay loop waits on beside its sockets. Cheaper
/// than `tokio::sync::Notify` there: the loop polls it every time it waits
/// (twice per transaction), and polling is one atomic swap of a waker plus
/// a load, with no lock.
#[derive(Default, Debug)]
pub struct KillSwitch {
    fired: AtomicBool,
    waker: AtomicWaker,
}

impl KillSwitch {
    /// Ends the session (it answers 57P01 at its next wait).
    pub fn fire(&self) {
        self.fired.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Completes once [`KillSwitch::fire`] was called.
    pub fn fired(&self) -> Fired<'_> {
        Fired(self)
    }
}

/// The future returned by [`KillSwitch::fired`].
pub struct Fired<'a>(&'a KillSwitch);

impl Future for Fired<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Register first, then check: a fire in between still wakes us.
        self.0.waker.register(cx.waker());
        if self.0.fired.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn fire_wakes_a_waiting_task_and_stays_fired() {
        let k = Arc::new(KillSwitch::default());
        let k2 = k.clone();
        let waiter = tokio::spawn(async move { k2.fired().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        k.fire();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        // Fired before anyone waits: completes at once.
        assert!(futures::FutureExt::now_or_never(k.fired()).is_some());
    }
}
