//! The waiting change feed's bounds: how many requests may wait at once, and the signal that
//! ends every wait when the node stops.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};

/// Waiting requests a node holds at most, unless told otherwise.
pub const DEFAULT_MAX_WAITING: usize = 256;

#[derive(Debug)]
pub struct Feed {
    waiting: Arc<AtomicUsize>,
    max: AtomicUsize,
    stopping: tokio::sync::watch::Sender<bool>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            waiting: Arc::new(AtomicUsize::new(0)),
            max: AtomicUsize::new(DEFAULT_MAX_WAITING),
            stopping: tokio::sync::watch::Sender::new(false),
        }
    }
}

/// A place among the waiting requests, given back when dropped.
#[derive(Debug)]
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Feed {
    pub fn set_max_waiting(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// A place for one more waiting request, or a 429 that says why there is none.
    pub fn enter(&self) -> Result<Slot> {
        let max = self.max.load(Ordering::Relaxed);
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(self.waiting.clone());
        if before >= max {
            return Err(Error::TooManyWaiting(format!(
                "this node already holds {max} waiting requests (its --max-waiting); retry later or without wait"
            )));
        }
        Ok(slot)
    }

    /// Waiting requests held now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Ends every wait, now and to come: the node is stopping.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Resolves once [`Feed::stop`] has been called.
    pub async fn stopped(&self) {
        let mut rx = self.stopping.subscribe();
        // Only an error if the sender is gone, which `self` prevents.
        let _ = rx.wait_for(|s| *s).await;
    }

    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beyond_the_limit_a_wait_is_refused_until_a_place_is_given_back() {
        let feed = Feed::default();
        feed.set_max_waiting(2);
        let a = feed.enter().unwrap();
        let _b = feed.enter().unwrap();
        let e = feed.enter().unwrap_err();
        assert_eq!(e.code(), "too_many_waiting");
        assert_eq!(feed.waiting(), 2);
        drop(a);
        let _c = feed.enter().unwrap();
        assert_eq!(feed.waiting(), 2);
    }

    #[tokio::test]
    async fn stop_ends_every_wait() {
        let feed = Arc::new(Feed::default());
        let waiter = tokio::spawn({
            let feed = feed.clone();
            async move { feed.stopped().await }
        });
        assert!(!feed.is_stopping());
        feed.stop();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        // And a wait that starts after the stop ends at once.
        tokio::time::timeout(std::time::Duration::from_secs(5), feed.stopped())
            .await
            .unwrap();
    }
}
