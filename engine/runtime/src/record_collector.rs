//! The record collector: a stream thread's producer, and the transaction around what it
//! sends.
//!
//! Under exactly_once_v2 every record a task produces between two commits (outputs, dead
//! letters, changelog records) goes into one open transaction, begun lazily with the first
//! of them; the commit adds the input offsets and ends it ([`RecordCollector::commit`]),
//! an abort drops it. Under at_least_once records are sent at once, and a commit first
//! flushes the producer and checks that every delivery succeeded.
//!
//! Delivery reports tell the collector where each changelog partition's records landed:
//! after a commit those end offsets become the stores' checkpoints. A producer that is
//! fenced or fatally failed is replaced; the new one's `init_transactions` fences the old
//! transactional incarnation and aborts whatever it left open.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, ConsumerGroupMetadata};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, Producer, ProducerContext, PurgeConfig, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use sluice_engine::record::{Origin, ProducerRecord};
use sluice_engine::topology::Topology;

use crate::config::{ProcessingGuarantee, WorkerConfig};
use crate::error::StreamThreadError;
use crate::kafka::{CALL_TIMEOUT, TopicProducer, producer_config};
use crate::{WorkerStats, metrics};

/// The delivery opaque of a changelog record, whose offset becomes a store checkpoint.
const CHANGELOG: usize = 1;

/// What delivery reports tell: failed deliveries (under at-least-once a commit checks
/// there are none), and the end offset of each changelog partition written, which becomes
/// the checkpoint of the store after the commit.
#[derive(Default)]
struct DeliveryStats {
    failed: AtomicU64,
    changelog_sent: AtomicU64,
    /// Changelog records whose delivery was reported, delivered or not.
    changelog_reported: AtomicU64,
    /// (changelog topic, partition) -> offset after the last record delivered.
    changelog_ends: Mutex<ChangelogEnds>,
}

/// Per changelog (topic, partition), the offset after the last record delivered to it.
pub(crate) type ChangelogEnds = HashMap<(String, i32), i64>;

struct DeliveryContext(Arc<DeliveryStats>);

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        if result.is_err() {
            self.0.failed.fetch_add(1, Ordering::Relaxed);
        }
        if opaque == CHANGELOG {
            if let Ok(message) = result {
                let mut ends = self
                    .0
                    .changelog_ends
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let end = ends
                    .entry((message.topic().to_string(), message.partition()))
                    .or_insert(0);
                *end = (*end).max(message.offset() + 1);
            }
            self.0.changelog_reported.fetch_add(1, Ordering::Relaxed);
        }
    }
}

type OutputProducer = TopicProducer<DeliveryContext>;

/// A stream thread's producer and its open transaction.
pub(crate) struct RecordCollector {
    thread: usize,
    process_id: String,
    config: Arc<WorkerConfig>,
    topology: Topology,
    producer: OutputProducer,
    delivery: Arc<DeliveryStats>,
    worker_stats: Arc<WorkerStats>,
    transaction_open: bool,
}

impl RecordCollector {
    /// Creates the producer; under exactly-once, fences any earlier incarnation of its
    /// transactional id.
    pub(crate) fn new<C: ConsumerContext>(
        thread: usize,
        process_id: &str,
        config: Arc<WorkerConfig>,
        topology: Topology,
        worker_stats: Arc<WorkerStats>,
        consumer: &BaseConsumer<C>,
    ) -> Result<Self, StreamThreadError> {
        let delivery = Arc::new(DeliveryStats::default());
        let producer = create_producer(&config, thread, process_id, &delivery, consumer, &topology)
            .map_err(|e| StreamThreadError::kafka(thread, "creating the producer", e))?;
        Ok(Self {
            thread,
            process_id: process_id.to_string(),
            config,
            topology,
            producer,
            delivery,
            worker_stats,
            transaction_open: false,
        })
    }

    fn exactly_once(&self) -> bool {
        self.config.processing_guarantee == ProcessingGuarantee::ExactlyOnceV2
    }

    fn kafka(&self, what: &'static str, source: KafkaError) -> StreamThreadError {
        StreamThreadError::kafka(self.thread, what, source)
    }

    /// Whether a transaction is open (something was sent since the last commit).
    pub(crate) fn transaction_open(&self) -> bool {
        self.transaction_open
    }

    fn begin_transaction_if_needed(&mut self) -> Result<(), StreamThreadError> {
        if self.exactly_once() && !self.transaction_open {
            self.producer
                .begin_transaction()
                .map_err(|e| self.kafka("beginning a transaction", e))?;
            self.transaction_open = true;
        }
        Ok(())
    }

    /// Sends an output or dead-letter record; `input` is the input it came from (`None`
    /// for a punctuation), named in errors.
    pub(crate) fn send(
        &mut self,
        record: ProducerRecord,
        input: Option<&Origin>,
    ) -> Result<(), StreamThreadError> {
        self.send_with(record, 0, input)?;
        self.worker_stats.produced.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Sends a changelog record; its delivery report moves the store's checkpoint.
    pub(crate) fn send_changelog(
        &mut self,
        record: ProducerRecord,
    ) -> Result<(), StreamThreadError> {
        self.send_with(record, CHANGELOG, None)?;
        self.delivery.changelog_sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn send_with(
        &mut self,
        record: ProducerRecord,
        opaque: usize,
        input: Option<&Origin>,
    ) -> Result<(), StreamThreadError> {
        self.begin_transaction_if_needed()?;
        loop {
            match self.producer.send(&record, opaque) {
                Ok(()) => return Ok(()),
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                    // The producer's own thread drains the queue; wait for room.
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)) => {
                    return Err(StreamThreadError::RecordTooLarge {
                        thread: self.thread,
                        topic: record.topic.to_string(),
                        input: match input {
                            Some(o) => format!("{}/{}@{}", o.topic, o.partition, o.offset),
                            None => "a punctuation".to_string(),
                        },
                    });
                }
                Err(e) => return Err(self.kafka("producing a record", e)),
            }
        }
    }

    /// Makes everything sent since the last commit durable together with `offsets`:
    /// under exactly-once by committing the transaction they join (fenced by the group
    /// `metadata`), under at-least-once by flushing, checking every delivery, and then
    /// committing the offsets through `consumer`.
    pub(crate) fn commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        offsets: &TopicPartitionList,
    ) -> Result<(), StreamThreadError> {
        if self.exactly_once() {
            self.begin_transaction_if_needed()?;
            let metadata: ConsumerGroupMetadata =
                consumer
                    .group_metadata()
                    .ok_or(StreamThreadError::NoGroupMetadata {
                        thread: self.thread,
                    })?;
            if offsets.count() > 0 {
                self.producer
                    .send_offsets_to_transaction(offsets, &metadata, CALL_TIMEOUT)
                    .map_err(|e| self.kafka("adding offsets to the transaction", e))?;
            }
            self.producer
                .commit_transaction(CALL_TIMEOUT)
                .map_err(|e| self.kafka("committing the transaction", e))?;
            self.transaction_open = false;
        } else {
            self.producer
                .flush(CALL_TIMEOUT)
                .map_err(|e| self.kafka("flushing the producer", e))?;
            if self.delivery.failed.swap(0, Ordering::Relaxed) > 0 {
                return Err(self.kafka(
                    "delivering records",
                    KafkaError::MessageProduction(RDKafkaErrorCode::Fail),
                ));
            }
            if offsets.count() > 0 {
                consumer
                    .commit(offsets, rdkafka::consumer::CommitMode::Sync)
                    .map_err(|e| self.kafka("committing offsets", e))?;
            }
        }
        Ok(())
    }

    /// Drops everything sent since the last commit. Under exactly-once the transaction is
    /// aborted (a producer that cannot abort is replaced, which aborts it on the broker);
    /// under at-least-once queued records are purged so none reaches Kafka after the
    /// rewind.
    pub(crate) fn abort<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), StreamThreadError> {
        if self.exactly_once() && self.transaction_open {
            match self.producer.abort_transaction(CALL_TIMEOUT) {
                Ok(()) => metrics::transaction_aborted(),
                Err(e) => {
                    // A producer that cannot abort (fenced, failed, or the abort timed
                    // out) is replaced: the new one's init_transactions fences it and
                    // aborts its transaction on the broker.
                    log::warn!(
                        "stream thread {}: abort failed ({e}); replacing the producer",
                        self.thread
                    );
                    self.replace(consumer)?;
                }
            }
            self.transaction_open = false;
        } else if !self.exactly_once() {
            // Their failed delivery reports arrive during the flush, before the counter
            // is reset.
            self.producer
                .purge(PurgeConfig::default().queue().inflight());
            let _ = self.producer.flush(Duration::from_secs(1));
        }
        self.delivery.failed.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Replaces a fenced or failed producer.
    pub(crate) fn replace<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), StreamThreadError> {
        log::warn!("stream thread {}: replacing the producer", self.thread);
        self.producer = create_producer(
            &self.config,
            self.thread,
            &self.process_id,
            &self.delivery,
            consumer,
            &self.topology,
        )
        .map_err(|e| self.kafka("recreating the producer", e))?;
        if self.transaction_open {
            // The new producer's init_transactions aborted it on the broker.
            metrics::transaction_aborted();
            self.transaction_open = false;
        }
        Ok(())
    }

    /// After a commit: waits for the delivery reports of every changelog record sent (they
    /// carry the offsets that become checkpoints) and returns the changelogs' ends.
    pub(crate) fn changelog_ends(
        &self,
    ) -> Result<MutexGuard<'_, ChangelogEnds>, StreamThreadError> {
        let deadline = Instant::now() + CALL_TIMEOUT;
        let stats = &self.delivery;
        while stats.changelog_reported.load(Ordering::Acquire)
            < stats.changelog_sent.load(Ordering::Acquire)
        {
            if Instant::now() >= deadline {
                return Err(self.kafka(
                    "waiting for changelog delivery reports",
                    KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
                ));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(stats
            .changelog_ends
            .lock()
            .unwrap_or_else(|p| p.into_inner()))
    }
}

fn create_producer<C: ConsumerContext>(
    config: &WorkerConfig,
    index: usize,
    process_id: &str,
    delivery: &Arc<DeliveryStats>,
    consumer: &BaseConsumer<C>,
    topology: &Topology,
) -> Result<OutputProducer, KafkaError> {
    let producer: ThreadedProducer<DeliveryContext> = producer_config(config, index, process_id)
        .create_with_context(DeliveryContext(delivery.clone()))?;
    let producer = TopicProducer::new(producer);
    if config.processing_guarantee == ProcessingGuarantee::ExactlyOnceV2 {
        // Fences the previous incarnation of this transactional id and aborts its open
        // transaction.
        producer.init_transactions(CALL_TIMEOUT)?;
        discard_pending_offsets(&producer, consumer, topology)?;
    }
    Ok(producer)
}

/// Aborts one transaction that holds the group, so the broker drops any transactional
/// offsets still pending for this producer id.
///
/// A crashed incarnation may leave offsets it sent to its open transaction. Kafka drops
/// them when `init_transactions` aborts that transaction, so on Kafka this step changes
/// nothing; crabka-broker 0.3 (the test broker) keeps them, keyed by producer id, and
/// applies them at the *next* commit of the same transactional id — moving the group's
/// offsets past records whose outputs were aborted, which loses them. Every broker drops
/// pending offsets on an explicit abort (EndTxn), so one empty abort when a producer is
/// created makes the restart safe on every broker. It is harmless on Kafka: it writes no
/// record and commits nothing, and costs one round trip per stream thread at start-up
/// (and at a producer's replacement), never on the per-record or commit path.
fn discard_pending_offsets<C: ConsumerContext>(
    producer: &OutputProducer,
    consumer: &BaseConsumer<C>,
    topology: &Topology,
) -> Result<(), KafkaError> {
    let Some(metadata) = consumer.group_metadata() else {
        return Ok(());
    };
    let Some(topic) = topology.source_topics().into_iter().next() else {
        return Ok(());
    };
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset(&topic, 0, Offset::Offset(0))?;
    producer.begin_transaction()?;
    // Before this consumer has joined the group the broker may refuse the offsets as of an
    // unknown generation; the group is in the transaction all the same, which is what
    // makes the abort reach the broker.
    if let Err(e) = producer.send_offsets_to_transaction(&offsets, &metadata, CALL_TIMEOUT) {
        log::debug!("offsets of the discarding transaction refused (as expected): {e}");
    }
    producer.abort_transaction(CALL_TIMEOUT)
}
