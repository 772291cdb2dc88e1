//! How far a variant has come: records consumed and committed, and when.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Records consumed and committed, and when the first was consumed, the last consumed
/// and the last committed.
#[derive(Default)]
pub struct Progress {
    pub consumed: AtomicU64,
    pub committed: AtomicU64,
    first_consumed: std::sync::OnceLock<Instant>,
    last_consumed: std::sync::Mutex<Option<Instant>>,
    last_committed: std::sync::Mutex<Option<Instant>>,
}

impl Progress {
    pub fn observe(&self, consumed: u64, committed: u64) {
        if consumed > 0 {
            self.first_consumed.get_or_init(Instant::now);
        }
        if consumed > self.consumed.load(Ordering::Relaxed) {
            *self.last_consumed.lock().unwrap() = Some(Instant::now());
            self.consumed.store(consumed, Ordering::Relaxed);
        }
        if committed > self.committed.load(Ordering::Relaxed) {
            *self.last_committed.lock().unwrap() = Some(Instant::now());
            self.committed.store(committed, Ordering::Relaxed);
        }
    }

    /// From the first record consumed to the last committed (`to_commit`) or consumed.
    pub fn seconds(&self, to_commit: bool) -> f64 {
        let first = *self.first_consumed.get().unwrap();
        let last = if to_commit {
            &self.last_committed
        } else {
            &self.last_consumed
        };
        (last.lock().unwrap().unwrap() - first).as_secs_f64()
    }
}
