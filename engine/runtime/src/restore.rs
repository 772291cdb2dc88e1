//! Restoring a task's stores from their changelog topics.
//!
//! A store is a prefix of its committed changelog, and its checkpoint says where the
//! prefix ends. Restoring reads the changelog partition from the checkpoint (from the
//! beginning when there is none: a new or wiped state directory) to its end with
//! read_committed, so aborted writes never reach the store, and applies the records in
//! batches, each written with the checkpoint after it. A crash during a restore loses
//! nothing: the next one continues from the last batch's checkpoint.
//!
//! A restore is a session ([`Restorer::begin`]) advanced in steps ([`Restorer::step`]),
//! so a stream thread restores between polls while its ready tasks keep processing. The
//! sessions of one restorer read side by side from one consumer, so a task with a short
//! changelog is not queued behind one with a long changelog. [`Restorer::restore`] runs
//! one session to its end (global tables).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sluice_state::KeyValueStore;

use crate::config::{KafkaClient, WorkerConfig};
use crate::kafka::{FETCH_QUEUE_BACKOFF_MS, redact_kafka_error};

/// Records applied to a store in one batch.
const BATCH: usize = 10_000;
/// How long a restore may see no progress before it gives up.
const STALL_TIMEOUT: Duration = Duration::from_secs(120);

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
    /// Asks partitions' watermarks. A client of its own, which never fetches: on the
    /// restoring consumer's connection such a request waits behind a long-poll fetch (up
    /// to `fetch.wait.max.ms`), and every task starting would stall the restores.
    offsets: BaseConsumer,
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
        "store `{store}` has checkpoint {checkpoint}, outside {topic}/{partition}'s offsets {low}..{end}: the changelog was deleted, recreated or truncated since the store was written; the store must be wiped and restored from the changelog"
    )]
    CheckpointOutOfRange {
        store: String,
        topic: String,
        partition: i32,
        checkpoint: i64,
        low: i64,
        end: i64,
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
            // A restore reads partitions to their ends, where some brokers answer a fetch
            // with an error (an empty record set); librdkafka's default 500 ms backoff
            // after one stalls every partition the restore is still reading.
            .set("fetch.error.backoff.ms", "10")
            .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
            .set("auto.offset.reset", "earliest");
        for (key, value) in config.kafka_for(KafkaClient::Consumer) {
            c.set(key, value);
        }
        let offsets = c
            .clone()
            .set("group.id", format!("{}-offsets", config.application_id))
            .create()
            .map_err(redact_kafka_error)?;
        Ok(Self {
            consumer: c.create().map_err(redact_kafka_error)?,
            offsets,
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

    /// Brings `store` up to the end of `topic`/`partition`, blocking until it is or until
    /// `stop` is set (then returns what it restored so far; the checkpoint keeps it).
    pub(crate) fn restore(
        &self,
        topic: &str,
        partition: i32,
        store: &mut dyn KeyValueStore,
        stop: &AtomicBool,
    ) -> Result<Restored, Box<RestoreError>> {
        let mut session = self.begin(topic, partition, store)?;
        loop {
            let until = Instant::now() + Duration::from_millis(200);
            if let Err(e) = self.step(&mut [(&mut session, &mut *store)], until) {
                // The partition must leave the consumer's assignment, or the next restore
                // of it could not assign it again.
                self.cancel(&mut session);
                return Err(e);
            }
            if let Some(restored) = session.restored {
                return Ok(restored);
            }
            if stop.load(Ordering::Relaxed) {
                session.flush(store)?;
                self.cancel(&mut session);
                return Ok(Restored {
                    records: session.records,
                    from: session.from,
                    elapsed: session.started.elapsed(),
                });
            }
        }
    }

    /// A partition's (low, high) watermarks, from a client that never fetches (a stream
    /// thread's connection may be held by a long-poll fetch for up to `fetch.wait.max.ms`).
    pub(crate) fn watermarks(&self, topic: &str, partition: i32) -> Option<(i64, i64)> {
        self.offsets
            .fetch_watermarks(topic, partition, Duration::from_secs(30))
            .ok()
    }

    /// Whether the checkpoint of `store` lies within `topic`/`partition`'s offsets: if it
    /// is past the end, or before the start, the changelog is not the one the store was
    /// written from (deleted and recreated, truncated), and the store must be wiped.
    pub(crate) fn check_checkpoint(
        &self,
        topic: &str,
        partition: i32,
        store: &dyn KeyValueStore,
    ) -> Result<(), Box<RestoreError>> {
        let error = |source| {
            Box::new(RestoreError::Kafka {
                store: store.name().to_string(),
                topic: topic.to_string(),
                partition,
                source,
            })
        };
        let Some(checkpoint) = store.checkpoint().map_err(|e| {
            Box::new(RestoreError::Store {
                store: store.name().to_string(),
                topic: topic.to_string(),
                partition,
                source: e,
            })
        })?
        else {
            return Ok(());
        };
        let (low, end) = self
            .offsets
            .fetch_watermarks(topic, partition, Duration::from_secs(30))
            .map_err(error)?;
        if checkpoint > end || checkpoint < low {
            return Err(Box::new(RestoreError::CheckpointOutOfRange {
                store: store.name().to_string(),
                topic: topic.to_string(),
                partition,
                checkpoint,
                low,
                end,
            }));
        }
        Ok(())
    }

    /// Starts restoring `store` from `topic`/`partition`: reads its checkpoint and the
    /// partition's end, and adds the partition, from the checkpoint on, to what this
    /// restorer reads. [`Restorer::step`] then advances every session begun.
    pub(crate) fn begin(
        &self,
        topic: &str,
        partition: i32,
        store: &dyn KeyValueStore,
    ) -> Result<RestoreSession, Box<RestoreError>> {
        let name = store.name().to_string();
        let (restored_counter, remaining) = crate::metrics::restore_progress(&name, partition);
        let mut session = RestoreSession {
            topic: topic.to_string(),
            partition,
            name,
            from: None,
            end: 0,
            next: 0,
            records: 0,
            batch: Batch::default(),
            started: Instant::now(),
            last_progress: Instant::now(),
            restored_counter,
            remaining,
            assigned: false,
            restored: None,
        };
        session.from = store.checkpoint().map_err(|e| session.store_error(e))?;
        let (low, end) = self
            .offsets
            .fetch_watermarks(topic, partition, Duration::from_secs(30))
            .map_err(|e| session.kafka_error(e))?;
        if let Some(checkpoint) = session.from
            && (checkpoint > end || checkpoint < low)
        {
            return Err(Box::new(RestoreError::CheckpointOutOfRange {
                store: session.name.clone(),
                topic: topic.to_string(),
                partition,
                checkpoint,
                low,
                end,
            }));
        }
        session.end = end;
        session.next = session.from.unwrap_or(low);
        session.remaining.set(session.remaining() as f64);
        if session.next >= end {
            session.restored = Some(Restored {
                records: 0,
                from: session.from,
                elapsed: session.started.elapsed(),
            });
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
            .incremental_assign(&assignment)
            .map_err(|e| session.kafka_error(e))?;
        session.assigned = true;
        session.batch.reserve(BATCH);
        Ok(session)
    }

    /// Reads what arrives for the sessions until `until`, each record into its session's
    /// store in batches, and finishes every session that has reached its end (its
    /// [`RestoreSession::restored`] is then set). Sessions restore side by side: one
    /// long changelog does not hold up the others.
    pub(crate) fn step(
        &self,
        sessions: &mut [(&mut RestoreSession, &mut dyn KeyValueStore)],
        until: Instant,
    ) -> Result<(), Box<RestoreError>> {
        let mut last = 0;
        let mut now = Instant::now();
        loop {
            let wait = until
                .saturating_duration_since(now)
                .min(Duration::from_millis(100));
            let polled = self.consumer.poll(wait);
            // One clock read a turn: progress and the deadline both use it.
            now = Instant::now();
            match polled {
                Some(Ok(message)) => {
                    let owns = |s: &RestoreSession| {
                        s.assigned
                            && s.partition == message.partition()
                            && s.topic == message.topic()
                    };
                    // Records come in runs per partition: try the last session first.
                    if !sessions.get(last).is_some_and(|(s, _)| owns(s)) {
                        match sessions.iter().position(|(s, _)| owns(s)) {
                            Some(found) => last = found,
                            // A partition no session reads any more (cancelled).
                            None => continue,
                        }
                    }
                    let (session, store) = &mut sessions[last];
                    session
                        .batch
                        .push(message.key().unwrap_or_default(), message.payload());
                    session.next = message.offset() + 1;
                    session.last_progress = now;
                    if session.batch.len() >= BATCH {
                        session.flush(&mut **store)?;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) | None => {
                    // Nothing more for now. Brokers that answer an empty fetch without a
                    // record set never make librdkafka report a partition's end, so the
                    // position decides (librdkafka moves it past transaction markers,
                    // which the records read never reach).
                    if self.all_at_end(sessions) {
                        break;
                    }
                }
                Some(Err(e)) => log::warn!("restoring: {e}"),
            }
            if now >= until {
                break;
            }
        }
        let positions = self.consumer.position().ok();
        for (session, store) in sessions.iter_mut() {
            if !session.assigned {
                continue;
            }
            if !reached_end(session, positions.as_ref()) {
                if session.last_progress.elapsed() > STALL_TIMEOUT {
                    return Err(Box::new(RestoreError::Stalled {
                        store: session.name.clone(),
                        topic: session.topic.clone(),
                        partition: session.partition,
                        position: session.next,
                    }));
                }
                continue;
            }
            session.flush(&mut **store)?;
            session.remaining.set(0.0);
            self.cancel(session);
            let elapsed = session.started.elapsed();
            log::log!(
                self.log_level,
                "restored store `{}` partition {}: {} records in {:.2}s ({:.0} records/s)",
                session.name,
                session.partition,
                session.records,
                elapsed.as_secs_f64(),
                session.records as f64 / elapsed.as_secs_f64().max(1e-9)
            );
            session.restored = Some(Restored {
                records: session.records,
                from: session.from,
                elapsed,
            });
        }
        Ok(())
    }

    /// Stops reading the session's partition (it is done, or its task went away).
    pub(crate) fn cancel(&self, session: &mut RestoreSession) {
        if session.assigned {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&session.topic, session.partition);
            let _ = self.consumer.incremental_unassign(&tpl);
            session.assigned = false;
        }
    }

    fn all_at_end(&self, sessions: &[(&mut RestoreSession, &mut dyn KeyValueStore)]) -> bool {
        let positions = self.consumer.position().ok();
        sessions
            .iter()
            .all(|(s, _)| !s.assigned || reached_end(s, positions.as_ref()))
    }
}

/// Whether a session's partition has been read to the end seen at its start.
fn reached_end(session: &RestoreSession, positions: Option<&TopicPartitionList>) -> bool {
    let position = positions
        .and_then(|p| p.find_partition(&session.topic, session.partition))
        .and_then(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        })
        .unwrap_or(session.next)
        .max(session.next);
    position >= session.end
}

/// Why a store could not be opened for restoring.
pub(crate) enum Opened {
    Store(sluice_state::StoreError),
    Restore(Box<RestoreError>),
}

/// Opens a store with `open` and checks its checkpoints with `check`. A store whose
/// checkpoint lies outside its log's offsets (the changelog or topic was deleted and
/// recreated, or truncated) may hold state the log no longer has: it is wiped and opened
/// afresh, so the restore rebuilds it from the log alone and it is never ahead of Kafka.
pub(crate) fn open_checked<T>(
    path: &std::path::Path,
    name: &str,
    open: impl Fn() -> Result<T, sluice_state::StoreError>,
    check: impl Fn(&T) -> Result<(), Box<RestoreError>>,
) -> Result<T, Opened> {
    let store = open().map_err(Opened::Store)?;
    match check(&store) {
        Ok(()) => Ok(store),
        Err(e) if matches!(*e, RestoreError::CheckpointOutOfRange { .. }) => {
            log::warn!("{e}: wiping {}", path.display());
            drop(store);
            std::fs::remove_dir_all(path).map_err(|e| {
                Opened::Store(sluice_state::StoreError {
                    store: name.to_string(),
                    what: "wiping its directory",
                    reason: format!("{e} (at {})", path.display()),
                })
            })?;
            open().map_err(Opened::Store)
        }
        Err(e) => Err(Opened::Restore(e)),
    }
}

/// Changelog records read and not yet written to their store: their bytes in one buffer,
/// so a record costs no allocation of its own (a batch's buffers are kept between
/// batches).
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    /// Per record: where its key ends in `bytes`, and where its value ends (`None`: a
    /// tombstone). Each part starts where the previous one ended.
    records: Vec<(usize, Option<usize>)>,
}

impl Batch {
    fn reserve(&mut self, records: usize) {
        self.records.reserve(records);
    }

    fn push(&mut self, key: &[u8], value: Option<&[u8]>) {
        self.bytes.extend_from_slice(key);
        let key_end = self.bytes.len();
        let value_end = value.map(|v| {
            self.bytes.extend_from_slice(v);
            self.bytes.len()
        });
        self.records.push((key_end, value_end));
    }

    fn len(&self) -> usize {
        self.records.len()
    }

    fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.records.clear();
    }

    /// The records in the order read, as (key, value).
    fn iter(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        let mut start = 0;
        self.records.iter().map(move |&(key_end, value_end)| {
            let key = &self.bytes[start..key_end];
            start = key_end;
            let value = value_end.map(|end| {
                let value = &self.bytes[key_end..end];
                start = end;
                value
            });
            (key, value)
        })
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
    batch: Batch,
    started: Instant,
    last_progress: Instant,
    restored_counter: metrics::Counter,
    remaining: metrics::Gauge,
    /// Whether the restorer reads its partition now.
    assigned: bool,
    /// What the restore did, once it is done.
    pub(crate) restored: Option<Restored>,
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
        let written = store.write(&mut self.batch.iter(), Some(self.next));
        written.map_err(|e| self.store_error(e))?;
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

#[cfg(test)]
mod tests {
    use super::Batch;

    #[test]
    fn a_batch_gives_back_its_records_in_order_with_empty_keys_and_tombstones() {
        let mut batch = Batch::default();
        batch.push(b"k1", Some(b"v1"));
        batch.push(b"", Some(b""));
        batch.push(b"k3", None);
        batch.push(b"key-4", Some(b"a longer value"));
        let read: Vec<(&[u8], Option<&[u8]>)> = batch.iter().collect();
        assert_eq!(
            read,
            vec![
                (&b"k1"[..], Some(&b"v1"[..])),
                (&b""[..], Some(&b""[..])),
                (&b"k3"[..], None),
                (&b"key-4"[..], Some(&b"a longer value"[..])),
            ]
        );
        batch.clear();
        assert!(batch.is_empty());
        batch.push(b"after", None);
        assert_eq!(
            batch.iter().collect::<Vec<_>>(),
            vec![(&b"after"[..], None)]
        );
    }
}
