//! Records held until due (a retry tier's records, whose due time is a header): the task
//! manager's side of [`TopologyBuilder::hold_until_due`](sluice_engine::TopologyBuilder::hold_until_due).
//!
//! A record of a held topic that is not due yet never reaches its task. Its partition is
//! paused and put on the [`RetrySchedule`](crate::retry::RetrySchedule) to resume *at
//! that record* when it falls due: the stream thread never sleeps, and the other
//! partitions (the other tiers, the main topic) go on. Records fetched behind it before
//! the pause took effect are dropped, and read again after the seek.
//!
//! Commits: the held record was not processed, so its task's committable offset stays at
//! or before it, and a crash or rebalance reads it again (and holds it again if it is
//! still not due). An abort rewinds and resumes every partition, forgetting the holds;
//! the rewound partition meets its record again and holds it again. A revoked partition
//! drops its hold with its task.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use std::sync::Arc;

use super::TaskManager;
use crate::fetch::FetchedRecord;
use crate::kafka;

impl TaskManager {
    /// Holds `record` if its header `header` says it is not due yet: pauses its
    /// partition until it is, and answers `true`. Due (or without a readable due time),
    /// it answers `false` and the record is processed now.
    pub(super) fn hold_until_due<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        record: FetchedRecord<'_>,
        topic: &Arc<str>,
        header: &str,
    ) -> bool {
        let Some(due) = due_at(record, header) else {
            return false;
        };
        let now = chrono::Utc::now().timestamp_millis();
        if due <= now {
            sluice_engine::metrics::due_lateness(topic, Duration::from_millis((now - due) as u64));
            return false;
        }
        sluice_engine::metrics::due_hold(topic);
        let wait = Duration::from_millis((due - now) as u64);
        let (partition, offset) = (record.partition(), record.offset());
        self.retries.hold_until(
            (topic.clone(), partition),
            offset,
            tokio::time::Instant::now() + wait,
        );
        kafka::pause(consumer, topic, partition);
        log::debug!(
            "stream thread {}: {topic}/{partition}@{offset} is held {wait:?} until due",
            self.thread
        );
        true
    }
}

/// The due time (epoch milliseconds) in the record's last header `name`, read as
/// [`sluice_engine::topology::due_at`] reads a record's: absent or unreadable, `None`.
fn due_at(record: FetchedRecord<'_>, name: &str) -> Option<i64> {
    let (_, value) = record
        .headers()
        .filter(|(key, _)| *key == name.as_bytes())
        .last()?;
    let value = value?;
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}
