//! Restoring a task's stores from their changelog topics.
//!
//! A store is a prefix of its committed changelog, and its checkpoint says where the
//! prefix ends. Restoring reads the changelog partition from the checkpoint (from the
//! beginning when there is none: a new or wiped state directory) to its end with
//! read_committed, so aborted writes never reach the store, and applies the records in
//! batches, each written with the checkpoint after it. A crash during a restore loses
//! nothing: the next one continues from the last batch's checkpoint.
//!
//! A restore is a session advanced in steps ([`Restorer::begin`], [`Restorer::step`]), so
//! that a stream thread can restore one task's stores between polls while its other
//! tasks keep processing; [`Restorer::restore`] runs one to the end (global tables).

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sluice_state::KeyValueStore;

use super::config::{KafkaClient, WorkerConfig};

/// Records applied to a store in one batch.
const BATCH: usize = 10_000;
/// How long a restore may see no progress before it gives up.
const STALL_TIMEOUT: Duration = Duration::from_secs(120);

pub const RESTORED_RECORDS: &str = "sluice_restore_records_total";
pub const RESTORE_REMAINING: &str = "sluice_restore_remaining_records";

/// What one restore did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restored {
    pub records: u64,
    /// The checkpoint the restore started from (`None`: the beginning).
    pub from: Option<i64>,
    pub elapsed: Duration,
}

/// Reads changelog partitions for one stream thread; a consumer outside the group.
pub(crate) struct Restorer {
    consumer: BaseConsumer,
    /// How restores are logged: `Info` for a task's stores, `Debug` for the rounds of a
    /// global table's thread, which follows its topic with a restore every few moments.
    log_level: log::Level,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("restoring store `{store}` from {topic}/{partition}: {source}")]
    Kafka {
        store: String,
        topic: String,
        partition: i32,
        source: KafkaError,
    },
    #[error("restoring store `{store}` from {topic}/{partition}: {source}")]
    Store {
        store: String,
        topic: String,
        partition: i32,
        source: sluice_state::StoreError,
    },
    #[error(
        "restoring store `{store}` from {topic}/{partition}: no progress for {STALL_TIMEOUT:?} at offset {position}; is a transaction on the changelog left open?"
    )]
    Stalled {
        store: String,
        topic: String,
        partition: i32,
        position: i64,
    },
}

impl Restorer {
    pub(crate) fn new(config: &WorkerConfig) -> Result<Self, KafkaError> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &config.bootstrap_servers)
            // Never joins the group (partitions are assigned by hand) and never commits.
            .set("group.id", format!("{}-restore", config.application_id))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest");
        for (key, value) in config.kafka_for(KafkaClient::Consumer) {
            c.set(key, value);
        }
        Ok(Self {
            consumer: c.create().map_err(super::config::redact_kafka_error)?,
            log_level: log::Level::Info,
        })
    }

    /// Logs each restore at `level`.
    pub(crate) fn log_at(self, level: log::Level) -> Self {
        Self {
            log_level: level,
            ..self
        }
    }

    /// Brings `store` up to the end of `topic`/`partition`, blocking until it is.
    pub(crate) fn restore(
        &self,
        topic: &str,
        partition: i32,
        store: &mut dyn KeyValueStore,
    ) -> Result<Restored, Box<RestoreError>> {
        let mut session = self.begin(topic, partition, store)?;
        loop {
            let until = Instant::now() + Duration::from_secs(1);
            if let Some(restored) = self.step(&mut session, store, until)? {
                return Ok(restored);
            }
        }
    }

    /// Starts restoring `store` from `topic`/`partition`: reads its checkpoint and the
    /// partition's end, and assigns the partition from the checkpoint on. The restore
    /// then advances by [`Restorer::step`]; one session at a time per restorer.
    pub(crate) fn begin(
        &self,
        topic: &str,
        partition: i32,
        store: &dyn KeyValueStore,
    ) -> Result<RestoreSession, Box<RestoreError>> {
        let name = store.name().to_string();
        let labels = [
            ("store", name.clone()),
            ("partition", partition.to_string()),
        ];
        let mut session = RestoreSession {
            topic: topic.to_string(),
            partition,
            name,
            from: None,
            end: 0,
            next: 0,
            records: 0,
            batch: Vec::new(),
            started: Instant::now(),
            last_progress: Instant::now(),
            restored_counter: metrics::counter!(RESTORED_RECORDS, &labels),
            remaining: metrics::gauge!(RESTORE_REMAINING, &labels),
            assigned: false,
        };
        session.from = store.checkpoint().map_err(|e| session.store_error(e))?;
        let (low, end) = self
            .consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(30))
            .map_err(|e| session.kafka_error(e))?;
        session.end = end;
        session.next = session.from.unwrap_or(low);
        session.remaining.set((end - session.next).max(0) as f64);
        if session.next >= end {
            return Ok(session);
        }
        log::log!(
            self.log_level,
            "restoring store `{}` partition {partition} from {}: up to {} records",
            session.name,
            session
                .from
                .map_or("the beginning".to_string(), |f| format!("offset {f}")),
            end - session.next
        );
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(
                topic,
                partition,
                session.from.map_or(Offset::Beginning, Offset::Offset),
            )
            .map_err(|e| session.kafka_error(e))?;
        self.consumer
            .assign(&assignment)
            .map_err(|e| session.kafka_error(e))?;
        session.assigned = true;
        session.batch.reserve(BATCH);
        Ok(session)
    }

    /// Restores until the partition's end (then returns what the restore did) or until
    /// `until` (then `None`: call again).
    pub(crate) fn step(
        &self,
        session: &mut RestoreSession,
        store: &mut dyn KeyValueStore,
        until: Instant,
    ) -> Result<Option<Restored>, Box<RestoreError>> {
        let mut done = !session.assigned;
        while !done && Instant::now() < until {
            let wait = until
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100));
            match self.consumer.poll(wait) {
                // A record of a partition assigned before this session's: not its own.
                Some(Ok(message))
                    if message.partition() != session.partition
                        || message.topic() != session.topic => {}
                Some(Ok(message)) => {
                    session.batch.push((
                        message.key().map(<[u8]>::to_vec).unwrap_or_default(),
                        message.payload().map(<[u8]>::to_vec),
                    ));
                    session.next = message.offset() + 1;
                    session.last_progress = Instant::now();
                    if session.batch.len() >= BATCH {
                        session.flush(store)?;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => done = true,
                Some(Err(e)) => {
                    log::warn!(
                        "restoring store `{}` partition {}: {e}",
                        session.name,
                        session.partition
                    );
                }
                None => {
                    // Nothing more for now: done once the position has reached the end
                    // seen at the start (brokers that answer an empty fetch without a
                    // record set never make librdkafka report the partition's end).
                    // librdkafka moves the position past transaction markers, which
                    // the records read never reach.
                    let position = self
                        .position(&session.topic, session.partition)
                        .unwrap_or(session.next)
                        .max(session.next);
                    done = position >= session.end;
                }
            }
            if !done && session.last_progress.elapsed() > STALL_TIMEOUT {
                self.cancel();
                return Err(Box::new(RestoreError::Stalled {
                    store: session.name.clone(),
                    topic: session.topic.clone(),
                    partition: session.partition,
                    position: session.next,
                }));
            }
        }
        if !done {
            return Ok(None);
        }
        session.flush(store)?;
        session.remaining.set(0.0);
        if session.assigned {
            self.cancel();
            session.assigned = false;
        }
        let elapsed = session.started.elapsed();
        if session.records > 0 {
            log::log!(
                self.log_level,
                "restored store `{}` partition {}: {} records in {:.2}s ({:.0} records/s)",
                session.name,
                session.partition,
                session.records,
                elapsed.as_secs_f64(),
                session.records as f64 / elapsed.as_secs_f64().max(1e-9)
            );
        }
        Ok(Some(Restored {
            records: session.records,
            from: session.from,
            elapsed,
        }))
    }

    /// Stops reading the session's partition (its task went away, or it is done).
    pub(crate) fn cancel(&self) {
        let _ = self.consumer.unassign();
    }

    fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        let positions = self.consumer.position().ok()?;
        match positions.find_partition(topic, partition)?.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        }
    }
}

/// A restore in progress: one changelog partition into one store.
pub(crate) struct RestoreSession {
    topic: String,
    partition: i32,
    name: String,
    from: Option<i64>,
    /// The partition's end when the restore began: the restore is done on reaching it.
    end: i64,
    /// The offset after the last record read.
    next: i64,
    records: u64,
    batch: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    started: Instant,
    last_progress: Instant,
    restored_counter: metrics::Counter,
    remaining: metrics::Gauge,
    assigned: bool,
}

impl RestoreSession {
    /// Records still to restore, as far as the end seen at the start.
    pub(crate) fn remaining(&self) -> i64 {
        (self.end - self.next).max(0)
    }

    /// Writes the batch read so far with the checkpoint after it.
    fn flush(&mut self, store: &mut dyn KeyValueStore) -> Result<(), Box<RestoreError>> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut changes = self.batch.iter().map(|(k, v)| (k.as_slice(), v.as_deref()));
        store
            .write(&mut changes, Some(self.next))
            .map_err(|e| self.store_error(e))?;
        let n = self.batch.len() as u64;
        self.records += n;
        self.restored_counter.increment(n);
        self.remaining.set(self.remaining() as f64);
        self.batch.clear();
        Ok(())
    }

    fn kafka_error(&self, source: KafkaError) -> Box<RestoreError> {
        Box::new(RestoreError::Kafka {
            store: self.name.clone(),
            topic: self.topic.clone(),
            partition: self.partition,
            source,
        })
    }

    fn store_error(&self, source: sluice_state::StoreError) -> Box<RestoreError> {
        Box::new(RestoreError::Store {
            store: self.name.clone(),
            topic: self.topic.clone(),
            partition: self.partition,
            source,
        })
    }
}
