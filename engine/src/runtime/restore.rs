//! Restoring a task's stores from their changelog topics.
//!
//! A store is a prefix of its committed changelog, and its checkpoint says where the
//! prefix ends. Restoring reads the changelog partition from the checkpoint (from the
//! beginning when there is none: a new or wiped state directory) to its end with
//! read_committed, so aborted writes never reach the store, and applies the records in
//! batches, each written with the checkpoint after it. A crash during a restore loses
//! nothing: the next one continues from the last batch's checkpoint.

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

    /// Brings `store` up to the end of `topic`/`partition`.
    pub(crate) fn restore(
        &self,
        topic: &str,
        partition: i32,
        store: &mut dyn KeyValueStore,
    ) -> Result<Restored, Box<RestoreError>> {
        let started = Instant::now();
        let name = store.name().to_string();
        let kafka = |source| {
            Box::new(RestoreError::Kafka {
                store: name.clone(),
                topic: topic.to_string(),
                partition,
                source,
            })
        };
        let store_error = |source| {
            Box::new(RestoreError::Store {
                store: name.clone(),
                topic: topic.to_string(),
                partition,
                source,
            })
        };
        let from = store.checkpoint().map_err(store_error)?;
        let (low, end) = self
            .consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(30))
            .map_err(kafka)?;
        let labels = [
            ("store", name.clone()),
            ("partition", partition.to_string()),
        ];
        let restored_counter = metrics::counter!(RESTORED_RECORDS, &labels);
        let remaining = metrics::gauge!(RESTORE_REMAINING, &labels);
        let start = from.unwrap_or(low);
        remaining.set((end - start).max(0) as f64);
        if start >= end {
            return Ok(Restored {
                records: 0,
                from,
                elapsed: started.elapsed(),
            });
        }
        log::log!(
            self.log_level,
            "restoring store `{name}` partition {partition} from {}: up to {} records",
            from.map_or("the beginning".to_string(), |f| format!("offset {f}")),
            end - start
        );
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(
                topic,
                partition,
                from.map_or(Offset::Beginning, Offset::Offset),
            )
            .map_err(kafka)?;
        self.consumer.assign(&assignment).map_err(kafka)?;

        let mut batch: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::with_capacity(BATCH);
        let mut next = start;
        let mut records = 0u64;
        let mut last_progress = Instant::now();
        let result = loop {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    batch.push((
                        message.key().map(<[u8]>::to_vec).unwrap_or_default(),
                        message.payload().map(<[u8]>::to_vec),
                    ));
                    next = message.offset() + 1;
                    last_progress = Instant::now();
                    if batch.len() >= BATCH {
                        write(store, &mut batch, next).map_err(store_error)?;
                        records += BATCH as u64;
                        restored_counter.increment(BATCH as u64);
                        remaining.set((end - next).max(0) as f64);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => break Ok(()),
                Some(Err(e)) => {
                    log::warn!("restoring store `{name}` partition {partition}: {e}");
                }
                None => {
                    // Nothing more for now: done once the position has reached the end
                    // seen at the start (brokers that answer an empty fetch without a
                    // record set never make librdkafka report the partition's end).
                    // librdkafka moves the position past transaction markers, which
                    // the records read never reach.
                    let position = self.position(topic, partition).unwrap_or(next).max(next);
                    if position >= end {
                        break Ok(());
                    }
                }
            }
            if last_progress.elapsed() > STALL_TIMEOUT {
                break Err(Box::new(RestoreError::Stalled {
                    store: name.clone(),
                    topic: topic.to_string(),
                    partition,
                    position: next,
                }));
            }
        };
        let tail = batch.len() as u64;
        if tail > 0 {
            write(store, &mut batch, next).map_err(store_error)?;
        }
        records += tail;
        restored_counter.increment(tail);
        remaining.set(0.0);
        let _ = self.consumer.unassign();
        result?;
        let elapsed = started.elapsed();
        log::log!(
            self.log_level,
            "restored store `{name}` partition {partition}: {records} records in {:.2}s ({:.0} records/s)",
            elapsed.as_secs_f64(),
            records as f64 / elapsed.as_secs_f64().max(1e-9)
        );
        Ok(Restored {
            records,
            from,
            elapsed,
        })
    }

    fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        let positions = self.consumer.position().ok()?;
        match positions.find_partition(topic, partition)?.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        }
    }
}

fn write(
    store: &mut dyn KeyValueStore,
    batch: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>,
    checkpoint: i64,
) -> Result<(), sluice_state::StoreError> {
    let mut changes = batch.iter().map(|(k, v)| (k.as_slice(), v.as_deref()));
    store.write(&mut changes, Some(checkpoint))?;
    batch.clear();
    Ok(())
}
