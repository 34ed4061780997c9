//! Signals reaching a session that may be waiting on its sockets: `KILL
//! <tenant>` from the admin console, and a pool asking for the connection the
//! session kept after its last transaction (see `Session::kept`).

use futures::task::AtomicWaker;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

/// Signals the relay loop waits on beside its sockets. Cheaper than
/// `tokio::sync::Notify` there: the loop polls them every time it waits
/// (twice per transaction), and polling is a waker registration and two
/// loads, with no lock. One task waits on them: the session's.
#[derive(Default, Debug)]
pub struct SessionSignal {
    fired: AtomicBool,
    /// A pool wants its connections back: the session gives back the one it
    /// kept (see `pool::Keeper`).
    give_back: AtomicBool,
    /// The session holds an idle connection between its transactions
    /// (`Session::kept`): what a give-back request frees at once.
    holding: AtomicBool,
    waker: AtomicWaker,
}

impl SessionSignal {
    /// Ends the session (it answers 57P01 at its next wait).
    pub fn fire(&self) {
        self.fired.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Whether [`SessionSignal::fire`] was called.
    pub fn is_fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    /// Asks the session to give back the connection it kept between
    /// transactions (it does at its next wait, or when its current
    /// transaction ends).
    pub fn ask_give_back(&self) {
        self.give_back.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Whether a [`SessionSignal::ask_give_back`] waits to be taken, without
    /// taking it.
    pub fn give_back_asked(&self) -> bool {
        self.give_back.load(Ordering::Acquire)
    }

    /// Consumes a [`SessionSignal::ask_give_back`]. A load first: the relay
    /// loop calls this at every wait, and the flag is almost never set.
    pub fn take_give_back(&self) -> bool {
        self.give_back.load(Ordering::Acquire) && self.give_back.swap(false, Ordering::AcqRel)
    }

    /// Records whether the session holds a kept connection, for the pools'
    /// recall (`Keeper::give_back_soon`). Relaxed: a stale answer makes a
    /// recall wait in vain, and that wait is bounded (`pool::RECALL_WAIT`).
    pub fn set_holding(&self, holding: bool) {
        self.holding.store(holding, Ordering::Relaxed);
    }

    /// Completes once [`SessionSignal::fire`] was called. Polling it also
    /// registers the task for [`SessionSignal::ask_give_back`]'s wake.
    pub fn fired(&self) -> Fired<'_> {
        Fired { switch: self }
    }
}

impl crate::pool::Keeper for SessionSignal {
    fn give_back_soon(&self) -> bool {
        // Read before asking: once asked, the session may give it back
        // (and clear the flag) before a read after would run.
        let holding = self.holding.load(Ordering::Relaxed);
        self.ask_give_back();
        holding
    }
}

/// The future returned by [`SessionSignal::fired`].
pub struct Fired<'a> {
    switch: &'a SessionSignal,
}

impl Future for Fired<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Register first, then check: a fire in between still wakes us.
        // Registered at every poll, never remembered as done: a wake (a
        // give-back request's too) takes the registration with it, and a
        // KILL after one must still find a waker.
        self.switch.waker.register(cx.waker());
        if self.switch.fired.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    /// A waker that counts its wakes.
    struct Count(AtomicUsize);
    impl futures::task::ArcWake for Count {
        fn wake_by_ref(me: &Arc<Self>) {
            me.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn fire_wakes_a_waiting_task_and_stays_fired() {
        let k = Arc::new(SessionSignal::default());
        let k2 = k.clone();
        let waiter = tokio::spawn(async move { k2.fired().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        k.fire();
        crate::clock::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        // Fired before anyone waits: completes at once.
        assert!(futures::FutureExt::now_or_never(k.fired()).is_some());
    }

    /// A give-back request wakes the task waiting on `fired`, is taken
    /// once, and does not end the session.
    #[test]
    fn a_give_back_request_wakes_the_waiter_and_is_taken_once() {
        use futures::task::waker;
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let w = waker(count.clone());
        let s = SessionSignal::default();
        let mut fired = s.fired();
        assert!(Pin::new(&mut fired)
            .poll(&mut Context::from_waker(&w))
            .is_pending());
        assert!(!s.take_give_back());
        s.ask_give_back();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(s.take_give_back());
        assert!(!s.take_give_back(), "taken once");
        assert!(!s.is_fired());
        assert!(Pin::new(&mut fired)
            .poll(&mut Context::from_waker(&w))
            .is_pending());
        // The give-back's wake used up the registration, and the request
        // was taken before this poll (as a request that finds its kept
        // connection asked for takes it): the poll registers again all
        // the same, so that a KILL still wakes the waiting task.
        s.fire();
        assert_eq!(count.0.load(Ordering::SeqCst), 2, "a later fire wakes it");
    }

    /// A recall learns whether the session holds an idle connection, and
    /// asks for it back either way.
    #[test]
    fn a_recall_learns_whether_a_connection_is_held() {
        use crate::pool::Keeper;
        let s = SessionSignal::default();
        assert!(!s.give_back_soon(), "nothing held");
        assert!(s.take_give_back(), "asked all the same");
        s.set_holding(true);
        assert!(s.give_back_soon());
        assert!(s.take_give_back());
        s.set_holding(false);
        assert!(!s.give_back_soon());
    }

    /// A later poll with another waker moves the registration: the fire
    /// wakes the waker of the latest poll, once.
    #[test]
    fn the_latest_waker_is_the_one_woken() {
        use futures::task::waker;
        let (a, b) = (
            Arc::new(Count(AtomicUsize::new(0))),
            Arc::new(Count(AtomicUsize::new(0))),
        );
        let (wa, wb) = (waker(a.clone()), waker(b.clone()));
        let k = SessionSignal::default();
        let mut fired = k.fired();
        for w in [&wa, &wa, &wb, &wb] {
            assert!(Pin::new(&mut fired)
                .poll(&mut Context::from_waker(w))
                .is_pending());
        }
        k.fire();
        assert_eq!(
            (a.0.load(Ordering::SeqCst), b.0.load(Ordering::SeqCst)),
            (0, 1)
        );
        assert!(Pin::new(&mut fired)
            .poll(&mut Context::from_waker(&wa))
            .is_ready());
    }
}
