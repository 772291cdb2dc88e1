//! Retry scheduling for records that wait on an unavailable service.
//!
//! A record whose operator reports a transient failure (a registry or lookup service that
//! is down) is not the record's fault: it is neither dead-lettered nor skipped. Its
//! partition is paused and, once a backoff has passed, rewound to it and resumed, so the
//! same record is tried again while the thread keeps polling (and keeps its place in the
//! group). The other partitions go on meanwhile.
//!
//! Backoff doubles from [`MIN_BACKOFF`] up to [`MAX_BACKOFF`] per partition, each wait with
//! random jitter (backon's, up to the current delay again) so that the threads and
//! workers that saw one service fail do not all retry it in the same instant. Time is
//! tokio's clock: the real clock in a worker, a paused one in tests.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::time::Instant;

/// The first wait after a transient failure.
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two tries of one record (before jitter).
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// An input partition: (topic, partition).
pub(crate) type PartitionKey = (Arc<str>, i32);

/// The partitions whose record waits for a retry.
pub(crate) struct RetrySchedule {
    backoff: ExponentialBuilder,
    waiting: HashMap<PartitionKey, Retry>,
}

/// A record retried after a transient failure.
struct Retry {
    offset: i64,
    /// When the paused partition resumes; `None` once it has resumed and the record is
    /// being tried again.
    due: Option<Instant>,
    /// The waits still to come, growing.
    delays: ExponentialBackoff,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        Self::new(MIN_BACKOFF, MAX_BACKOFF)
    }
}

impl RetrySchedule {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self {
            backoff: ExponentialBuilder::default()
                .with_min_delay(min)
                .with_max_delay(max)
                .with_jitter()
                .without_max_times(),
            waiting: HashMap::new(),
        }
    }

    /// Schedules the record at `offset` of `key` to be tried again, after a wait that grows
    /// with each failure of the same partition in a row; returns the wait. The caller
    /// pauses the partition.
    pub(crate) fn schedule(&mut self, key: PartitionKey, offset: i64) -> Duration {
        let backoff = self.backoff;
        let retry = self.waiting.entry(key).or_insert_with(|| Retry {
            offset,
            due: None,
            delays: backoff.build(),
        });
        retry.offset = offset;
        // Never exhausted: built without a maximum number of tries.
        let wait = retry.delays.next().unwrap_or(MAX_BACKOFF);
        retry.due = Some(Instant::now() + wait);
        wait
    }

    /// Holds `key` until `due`, then resumes it at `offset`: its record there is not due
    /// before (a retry tier's record, held until its due time). Not a failure: the
    /// partition's backoff is left as it is. The caller pauses the partition.
    pub(crate) fn hold_until(&mut self, key: PartitionKey, offset: i64, due: Instant) {
        let backoff = self.backoff;
        let retry = self.waiting.entry(key).or_insert_with(|| Retry {
            offset,
            due: None,
            delays: backoff.build(),
        });
        retry.offset = offset;
        retry.due = Some(due);
    }

    /// Makes `key` resume at `offset` at once, as a retry that is due (a task that has
    /// finished restoring lets its paused partitions go on from where they stopped).
    pub(crate) fn resume_now(&mut self, key: PartitionKey, offset: i64) {
        self.waiting.insert(
            key,
            Retry {
                offset,
                due: Some(Instant::now()),
                delays: self.backoff.build(),
            },
        );
    }

    /// Whether `key` is paused until its retry is due: a record fetched for it before the
    /// pause took effect is dropped (it is read again after the rewind).
    pub(crate) fn is_paused(&self, topic: &Arc<str>, partition: i32) -> bool {
        // Checked per record: no key is built while nothing waits.
        !self.waiting.is_empty()
            && self
                .waiting
                .get(&(topic.clone(), partition))
                .is_some_and(|r| r.due.is_some())
    }

    /// The partitions whose retry is due now, with the offset to rewind to; each is marked
    /// resumed. If the rewind fails, [`RetrySchedule::postpone`] puts it back.
    pub(crate) fn take_due(&mut self) -> Vec<(PartitionKey, i64)> {
        if self.waiting.is_empty() {
            return Vec::new();
        }
        let now = Instant::now();
        self.waiting
            .iter_mut()
            .filter(|(_, r)| r.due.is_some_and(|due| due <= now))
            .map(|(key, retry)| {
                retry.due = None;
                (key.clone(), retry.offset)
            })
            .collect()
    }

    /// Tries `key` again shortly (its rewind failed; resuming from another position could
    /// skip the record).
    pub(crate) fn postpone(&mut self, key: &PartitionKey) {
        if let Some(retry) = self.waiting.get_mut(key) {
            retry.due = Some(Instant::now() + MIN_BACKOFF);
        }
    }

    /// The record of `key` went through: its next failure starts from the shortest wait.
    pub(crate) fn succeeded(&mut self, topic: &Arc<str>, partition: i32) {
        // Called per record: no key is built while nothing waits.
        if !self.waiting.is_empty() {
            self.waiting.remove(&(topic.clone(), partition));
        }
    }

    /// Forgets every retry (after an abort, every partition rewinds anyway).
    pub(crate) fn clear(&mut self) {
        self.waiting.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(partition: i32) -> PartitionKey {
        (Arc::from("orders"), partition)
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_is_due_only_after_its_backoff_has_passed() {
        let mut retries = RetrySchedule::default();
        let wait = retries.schedule(key(0), 41);
        assert!(retries.is_paused(&key(0).0, 0));
        tokio::time::advance(wait - Duration::from_millis(1)).await;
        assert!(retries.take_due().is_empty(), "due before its wait passed");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(retries.take_due(), vec![(key(0), 41)]);
        assert!(!retries.is_paused(&key(0).0, 0), "resumed once due");
        assert!(retries.take_due().is_empty(), "a due retry is taken once");
    }

    #[tokio::test(start_paused = true)]
    async fn waits_grow_with_each_failure_in_a_row_within_jittered_bounds() {
        let mut retries = RetrySchedule::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut base = Duration::from_millis(100);
        for _ in 0..8 {
            let wait = retries.schedule(key(0), 7);
            // backon's jitter adds up to the current delay again: [base, 2 * base).
            assert!(
                wait >= base && wait < base * 2,
                "wait {wait:?} outside [{base:?}, {:?})",
                base * 2
            );
            tokio::time::advance(wait).await;
            assert_eq!(retries.take_due().len(), 1);
            base = (base * 2).min(Duration::from_secs(2));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_spreads_the_retries_of_partitions_that_failed_together() {
        let mut retries = RetrySchedule::default();
        let waits: std::collections::BTreeSet<Duration> =
            (0..16).map(|p| retries.schedule(key(p), 0)).collect();
        assert!(
            waits.len() > 1,
            "16 partitions failing at once all wait the same {waits:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_backoff_of_its_partition_only() {
        let mut retries = RetrySchedule::default();
        for _ in 0..5 {
            retries.schedule(key(0), 1);
            retries.schedule(key(1), 1);
        }
        retries.succeeded(&key(0).0, 0);
        assert!(retries.schedule(key(0), 2) < MIN_BACKOFF * 2);
        assert!(retries.schedule(key(1), 2) >= MIN_BACKOFF * 16);
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_partition_resumes_at_its_record_when_it_is_due_and_not_before() {
        let mut retries = RetrySchedule::default();
        let due = Instant::now() + Duration::from_millis(400);
        retries.hold_until(key(2), 17, due);
        assert!(retries.is_paused(&key(2).0, 2));
        assert!(!retries.is_paused(&key(1).0, 1), "other partitions go on");
        tokio::time::advance(Duration::from_millis(399)).await;
        assert!(retries.take_due().is_empty(), "resumed before its due time");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(retries.take_due(), vec![(key(2), 17)]);
        assert!(!retries.is_paused(&key(2).0, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_leaves_the_partitions_backoff_as_it_was() {
        let mut retries = RetrySchedule::default();
        for _ in 0..5 {
            retries.schedule(key(0), 1);
        }
        retries.hold_until(key(0), 1, Instant::now() + Duration::from_secs(1));
        assert!(
            retries.schedule(key(0), 1) >= MIN_BACKOFF * 32,
            "backoff was reset"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_postponed_retry_comes_back_after_the_shortest_wait() {
        let mut retries = RetrySchedule::default();
        retries.resume_now(key(3), 9);
        assert_eq!(retries.take_due(), vec![(key(3), 9)]);
        retries.postpone(&key(3));
        assert!(retries.is_paused(&key(3).0, 3));
        tokio::time::advance(MIN_BACKOFF).await;
        assert_eq!(retries.take_due(), vec![(key(3), 9)]);
    }
}
