//! A guard that lets one request of a kind run at a time.

use std::sync::atomic::{AtomicBool, Ordering};

/// Held while a request of one kind runs; dropping it lets the next one in.
pub(crate) struct Exclusive(&'static AtomicBool);

impl Exclusive {
    /// Takes `flag`, or `None` when another request holds it.
    pub(crate) fn take(flag: &'static AtomicBool) -> Option<Exclusive> {
        flag.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Exclusive(flag))
    }
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_take_leaves_the_holder_in_place() {
        static FLAG: AtomicBool = AtomicBool::new(false);
        let held = Exclusive::take(&FLAG).unwrap();
        assert!(Exclusive::take(&FLAG).is_none());
        assert!(
            Exclusive::take(&FLAG).is_none(),
            "a refusal must not release the flag"
        );
        drop(held);
        assert!(Exclusive::take(&FLAG).is_some());
    }
}
