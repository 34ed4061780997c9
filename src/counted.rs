//! A unit held in a live count (sessions on a worker, a pool's open
//! connections, its queued checkouts), given back however its holder ends:
//! returned, failed, or dropped unfinished with a cancelled future or task.

use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Adds one to `count` on creation and takes it away on drop. `C` is how the
/// count is reached: `&AtomicUsize` for a count that outlives the holder,
/// `Arc<AtomicUsize>` when the holder may outlive everything else.
pub struct Counted<C: Deref<Target = AtomicUsize>>(C);

impl<C: Deref<Target = AtomicUsize>> Counted<C> {
    pub fn new(count: C) -> Counted<C> {
        count.fetch_add(1, Ordering::Relaxed);
        Counted(count)
    }
}

impl<C: Deref<Target = AtomicUsize>> Drop for Counted<C> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_count_follows_the_holders() {
        let n = AtomicUsize::new(0);
        let a = Counted::new(&n);
        let b = Counted::new(&n);
        assert_eq!(n.load(Ordering::Relaxed), 2);
        drop(a);
        assert_eq!(n.load(Ordering::Relaxed), 1);
        drop(b);
        assert_eq!(n.load(Ordering::Relaxed), 0);
        let shared = Arc::new(AtomicUsize::new(0));
        let c = Counted::new(shared.clone());
        assert_eq!(shared.load(Ordering::Relaxed), 1);
        drop(c);
        assert_eq!(shared.load(Ordering::Relaxed), 0);
    }
}
