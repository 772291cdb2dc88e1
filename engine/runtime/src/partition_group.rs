//! The partition group of a task that reads several partitions (a join of two topics, a
//! table and a stream) and depends on stream time: its records, buffered per partition
//! and handed out in timestamp order across them.
//!
//! The oldest head goes first. An empty partition holds the task up while the broker has
//! records for it that are not fetched yet (at most [`MAX_LAG_WAIT`]), plus
//! `max.task.idle.ms`, as in Kafka Streams; so a join catching up after downtime sees its
//! inputs interleaved by time rather than fetch batch by fetch batch, and does not call
//! records of the slower topic late. A full queue pauses its partition until it has
//! drained to half.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::topic_partition_list::TopicPartitionList;
use sluice_engine::record::RawRecord;

use crate::kafka::{self, cached_high_watermark, concrete};
use crate::retry::{PartitionKey, RetrySchedule};

/// Records a task buffers per input partition before the partition pauses.
const MAX_BUFFERED: usize = 1_000;
/// The longest a task waits for records the broker holds for an empty input partition,
/// so that a partition whose fetches stall cannot stop its task for good. Generous: a
/// task's first fetch on a loaded broker can take seconds, and giving up early joins a
/// stream against a table not loaded yet (the enrichment kill test saw orders without
/// the coverage the topic held, with 5 s here).
const MAX_LAG_WAIT: Duration = Duration::from_secs(30);

/// One task's input queues, one per partition it reads.
pub(crate) struct PartitionGroup {
    queues: Vec<InputQueue>,
}

/// Records fetched for one input partition, not processed yet.
struct InputQueue {
    key: PartitionKey,
    records: VecDeque<RawRecord>,
    /// Paused because the queue is full.
    paused: bool,
    /// Since when the queue has been empty.
    empty_since: Instant,
    /// The offset after the last record queued (at first, the committed offset).
    next: i64,
    /// The partition's end when the task started.
    high: i64,
}

/// Where one input partition of a new group starts and (as far as is known) ends.
pub(crate) struct InputPartition {
    pub(crate) key: PartitionKey,
    /// The committed offset: where the task reads from.
    pub(crate) next: i64,
    /// The partition's end when the task started.
    pub(crate) high: i64,
}

impl PartitionGroup {
    /// A group of the given partitions, each knowing where it starts and ends, so that
    /// an empty queue whose records are on their way can be told from one whose partition
    /// is read out.
    pub(crate) fn new(partitions: impl IntoIterator<Item = InputPartition>) -> Self {
        Self {
            queues: partitions
                .into_iter()
                .map(|p| InputQueue {
                    key: p.key,
                    records: VecDeque::new(),
                    paused: false,
                    empty_since: Instant::now(),
                    next: p.next,
                    high: p.high,
                })
                .collect(),
        }
    }

    /// Buffers a record; a full queue pauses its partition.
    pub(crate) fn push<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>, raw: RawRecord) {
        let Some(queue) = self
            .queues
            .iter_mut()
            .find(|q| *q.key.0 == *raw.origin.topic)
        else {
            return;
        };
        queue.next = raw.origin.offset + 1;
        queue.records.push_back(raw);
        if queue.records.len() >= MAX_BUFFERED && !queue.paused {
            kafka::pause(consumer, &queue.key.0, queue.key.1);
            queue.paused = true;
        }
    }

    /// Whether any record is buffered.
    pub(crate) fn has_records(&self) -> bool {
        self.queues.iter().any(|q| !q.records.is_empty())
    }

    /// The next record in timestamp order, or `None` while the task must wait for an
    /// empty partition (or has nothing). `positions` caches the consumer's positions
    /// across the calls of one drain; `idle` is `max.task.idle.ms` (`None`: never wait).
    pub(crate) fn next_record<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        positions: &mut Option<TopicPartitionList>,
        idle: Option<Duration>,
        retries: &RetrySchedule,
    ) -> Option<RawRecord> {
        let mut oldest: Option<(usize, i64)> = None;
        let mut waiting = false;
        for (i, queue) in self.queues.iter().enumerate() {
            match queue.records.front() {
                Some(head) => {
                    if oldest.is_none_or(|(_, t)| head.timestamp < t) {
                        oldest = Some((i, head.timestamp));
                    }
                }
                None => {
                    let positions =
                        positions.get_or_insert_with(|| consumer.position().unwrap_or_default());
                    waiting |= must_wait_for(consumer, queue, positions, idle, retries);
                }
            }
        }
        let (index, _) = oldest.filter(|_| !waiting)?;
        let queue = &mut self.queues[index];
        let raw = queue.records.pop_front()?;
        if queue.records.is_empty() {
            queue.empty_since = Instant::now();
        }
        if queue.paused && queue.records.len() <= MAX_BUFFERED / 2 {
            kafka::resume(consumer, &queue.key.0, queue.key.1);
            queue.paused = false;
        }
        Some(raw)
    }

    /// Drops what is buffered for `key`: its record is retried later from its offset, and
    /// what followed it is read again.
    pub(crate) fn drop_buffered(&mut self, key: &PartitionKey) {
        if let Some(queue) = self.queues.iter_mut().find(|q| q.key == *key) {
            queue.records.clear();
            queue.paused = false;
            queue.empty_since = Instant::now();
        }
    }
}

/// Whether a task must wait for its empty input `queue`.
fn must_wait_for<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    queue: &InputQueue,
    positions: &TopicPartitionList,
    idle: Option<Duration>,
    retries: &RetrySchedule,
) -> bool {
    let Some(idle) = idle else {
        return false;
    };
    // A partition paused until a retry is due is not coming soon.
    if retries.is_paused(&queue.key.0, queue.key.1) {
        return false;
    }
    let waited = queue.empty_since.elapsed();
    if waited < idle {
        return true;
    }
    if waited >= MAX_LAG_WAIT {
        return false;
    }
    let (topic, partition) = (&*queue.key.0, queue.key.1);
    // librdkafka's position moves past transaction markers, which `next` never does.
    let position = positions
        .find_partition(topic, partition)
        .and_then(|e| concrete(e.offset()))
        .unwrap_or(queue.next);
    let high = cached_high_watermark(consumer, topic, partition)
        .unwrap_or(0)
        .max(queue.high);
    position < high
}
