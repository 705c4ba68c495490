//! `--memory-budget` in the baseline: the connections that hold the most (unfinished
//! messages plus queued output) are closed 1008 when all of them together exceed it.
//!
//! ws-server checks each core's own slab; here tasks migrate between workers, so the
//! budget is one pool of `--memory-budget` × workers. Only connections holding at least
//! [`THRESHOLD`] bytes register (a map behind a mutex, touched when a connection crosses
//! the threshold, not per message), each with a [`Holder`] whose byte count it updates with
//! a relaxed store. A task checks the pool once a second, as ws-server's tick does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use futures_util::task::AtomicWaker;

use crate::hub::ConnId;

/// Below this a connection is not worth tracking (tungstenite's read buffer alone is 4 KiB).
pub const THRESHOLD: usize = 16 * 1024;

/// One tracked connection.
#[derive(Debug, Default)]
pub struct Holder {
    pub bytes: AtomicUsize,
    /// Set by the budget check: the connection closes 1008 at its next wake.
    pub killed: AtomicBool,
    pub waker: AtomicWaker,
}

#[derive(Debug, Default)]
pub struct Holders {
    map: Mutex<HashMap<ConnId, Arc<Holder>>>,
}

impl Holders {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConnId, Arc<Holder>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn register(&self, id: ConnId, h: Arc<Holder>) {
        self.lock().insert(id, h);
    }

    pub fn unregister(&self, id: ConnId) {
        self.lock().remove(&id);
    }

    /// Tells the largest holders to close until the rest fit in `budget`; returns how many.
    pub fn enforce(&self, budget: usize) -> usize {
        let mut held: Vec<(usize, Arc<Holder>)> = {
            let map = self.lock();
            map.values()
                .filter(|h| !h.killed.load(Relaxed))
                .map(|h| (h.bytes.load(Relaxed), h.clone()))
                .collect()
        };
        let mut total: usize = held.iter().map(|(b, _)| b).sum();
        if total <= budget {
            return 0;
        }
        held.sort_unstable_by_key(|b| std::cmp::Reverse(b.0));
        let mut killed = 0;
        for (bytes, h) in held {
            if total <= budget {
                break;
            }
            total = total.saturating_sub(bytes);
            h.killed.store(true, Relaxed);
            h.waker.wake();
            killed += 1;
        }
        killed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_the_largest_first_and_only_as_many_as_needed() {
        let hs = Holders::default();
        let mk = |b: usize| {
            let h = Arc::new(Holder::default());
            h.bytes.store(b, Relaxed);
            h
        };
        let (a, b, c) = (mk(100), mk(300), mk(200));
        hs.register(1, a.clone());
        hs.register(2, b.clone());
        hs.register(3, c.clone());
        assert_eq!(hs.enforce(600), 0);
        assert_eq!(hs.enforce(350), 1);
        assert!(b.killed.load(Relaxed) && !a.killed.load(Relaxed) && !c.killed.load(Relaxed));
        assert_eq!(hs.enforce(350), 0); // the killed one no longer counts
    }
}
