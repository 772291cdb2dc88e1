//! A stream thread: one consumer in the group, its tasks, and (under exactly-once) one
//! transactional producer.
//!
//! The loop polls one record at a time, hands it to the task of its (sub-topology,
//! partition), and sends what the task produced. Every `commit.interval.ms` it commits:
//!
//! * exactly_once_v2: the open transaction holds every output and dead-letter record
//!   since the last commit; the input offsets join it through
//!   `send_offsets_to_transaction` with the consumer's group metadata (so a zombie of an
//!   older group generation is fenced), then the transaction commits. Any error aborts
//!   the transaction and rewinds every assigned partition to its committed offset, and the
//!   tasks are rebuilt, so nothing uncommitted survives. A fenced or fatally failed
//!   producer is replaced after the rewind.
//! * at_least_once: the producer is flushed and every delivery checked, then the offsets
//!   are committed. A crash replays from the last commit: duplicates, never losses.
//!
//! Before partitions are revoked in a rebalance, what was processed is committed, so the
//! next owner starts exactly where this thread stopped. A record whose operator reports a
//! transient failure (a service down) is retried after a backoff: its partition is paused
//! and rewound to it, and the thread keeps polling so it stays in the group.
//!
//! A task that depends on stream time and reads several partitions (a join of two
//! topics, a table and a stream) takes their records in timestamp order: records are
//! buffered per partition and the oldest head goes first. An empty partition holds the
//! task up while the broker has records for it that are not fetched yet (at most
//! [`MAX_LAG_WAIT`]), plus `max.task.idle.ms`, as in Kafka Streams; so a join catching up
//! after downtime sees its inputs interleaved by time rather than fetch batch by fetch
//! batch, and does not call records of the slower topic late.
//!
//! A stateful task whose stores must first be restored from their changelogs does not
//! block the thread: its input partitions are paused at the first record that arrives for
//! it, and the loop restores its stores in short steps between polls, so the thread's
//! ready tasks keep processing (and the consumer keeps its place in the group). Once the
//! stores reach the end of their changelogs the task starts and its partitions resume at
//! the records they stopped at.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers as _, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::WorkerStats;
use super::config::{KafkaClient, ProcessingGuarantee, WorkerConfig, redact_kafka_error};
use super::failpoint;
use super::observability::{Health, ThreadStatus};
use super::restore::{Opened, RestoreError, RestoreSession, Restorer, open_checked};
use crate::record::{Headers, Origin, ProducerRecord, RawRecord};
use crate::task::{GlobalStores, Task, TaskError, TaskId};
use crate::topology::Topology;
use sluice_state::{RocksDbStore, StateBudget, StoreError, TransactionalStore};

/// How long a Kafka call that must finish before the loop goes on may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a poll blocks, so that commits, ticks and shutdown are never late by more.
const POLL_TIMEOUT: Duration = Duration::from_millis(20);
/// How often librdkafka reports statistics (consumer lag), unless
/// `kafka.consumer.statistics.interval.ms` says otherwise.
const STATISTICS_INTERVAL_MS: &str = "5000";
/// How often operators' `on_tick` runs.
const TICK_INTERVAL: Duration = Duration::from_millis(100);
/// How often store sizes are published as metrics.
const STORE_SIZE_INTERVAL: Duration = Duration::from_secs(5);
/// The delivery opaque of a changelog record, whose offset becomes a store checkpoint.
const CHANGELOG: usize = 1;
/// Backoff of a record whose operator reported a transient failure.
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(100);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The prefix of the stream time in committed offsets' metadata (versioned, so a later
/// format can tell itself apart).
const STREAM_TIME_METADATA: &str = "sluice.v1.stream-time=";
/// Records a synchronized task buffers per input partition before the partition pauses.
const MAX_BUFFERED: usize = 1_000;
/// The longest a synchronized task waits for records the broker holds for an empty input
/// partition, so that a partition whose fetches stall cannot stop its task for good.
const MAX_LAG_WAIT: Duration = Duration::from_secs(5);
/// How long one step of restoring may run between polls of the main consumer: restores
/// take turns with processing, so tasks that are ready keep running (at about half speed)
/// while others restore.
const RESTORE_STEP: Duration = Duration::from_millis(20);

/// Why a stream thread stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum StreamThreadError {
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(
        "stream thread {thread}: the consumer has no group metadata to fence the transaction with"
    )]
    NoGroupMetadata { thread: usize },
    #[error(
        "stream thread {thread}: a record for topic `{topic}` (from input {input}) is larger than the producer's message.max.bytes: raise kafka.producer.message.max.bytes (and the topic's max.message.bytes) or make the operator emit smaller records"
    )]
    RecordTooLarge {
        thread: usize,
        topic: String,
        input: String,
    },
    #[error("stream thread {thread}: {what}: {source}")]
    Kafka {
        thread: usize,
        what: &'static str,
        source: KafkaError,
    },
    #[error("stream thread {thread}: {source}")]
    State { thread: usize, source: StoreError },
    #[error("stream thread {thread}: {source}")]
    Restore {
        thread: usize,
        source: Box<RestoreError>,
    },
}

/// What delivery reports tell: failed deliveries (under at-least-once a commit checks
/// there are none), and the end offset of each changelog partition written, which becomes
/// the checkpoint of the store after the commit.
#[derive(Default)]
pub(crate) struct ProducerStats {
    failed_deliveries: AtomicU64,
    changelog_sent: AtomicU64,
    /// Changelog records whose delivery was reported, delivered or not.
    changelog_reported: AtomicU64,
    /// (changelog topic, partition) -> offset after the last record delivered.
    changelog_ends: Mutex<HashMap<(String, i32), i64>>,
}

pub(crate) struct DeliveryContext(Arc<ProducerStats>);

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        if result.is_err() {
            self.0.failed_deliveries.fetch_add(1, Ordering::Relaxed);
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

type OutputProducer = ThreadedProducer<DeliveryContext>;

/// The thread's state, behind a mutex so that rebalance callbacks (which run inside
/// `poll`, on this same thread) can commit and close tasks. The loop never holds the lock
/// across `poll`, so the lock is never contended.
pub(crate) struct ThreadState {
    index: usize,
    process_id: String,
    last_tick: Instant,
    /// Each source topic, shared as the `Arc` that records and offsets carry, with the
    /// sub-topology reading it: the per-record path allocates no topic strings.
    sources: HashMap<String, (Arc<str>, usize)>,
    /// The input being handled (`None` during a punctuation), for errors.
    current_input: Option<Origin>,
    end_to_end_latency: metrics::Histogram,
    config: Arc<WorkerConfig>,
    topology: Topology,
    stats: Arc<WorkerStats>,
    producer: OutputProducer,
    producer_stats: Arc<ProducerStats>,
    tasks: HashMap<TaskId, Task>,
    /// Next offset to commit per input partition, since the last commit.
    uncommitted: HashMap<(Arc<str>, i32), i64>,
    transaction_open: bool,
    /// Input records processed since the last commit.
    processed_since_commit: u64,
    /// A failure inside a rebalance callback, surfaced by the loop after `poll` returns.
    callback_error: Option<StreamThreadError>,
    /// Partitions whose record waits for an unavailable service.
    retries: HashMap<(Arc<str>, i32), Retry>,
    /// The worker's shared memory budget for RocksDB stores.
    budget: StateBudget,
    /// Reads changelogs into stores; made when the first stateful task starts.
    restorer: Option<Restorer>,
    /// Open stores of tasks dropped by an abort, up to date with the last commit, for the
    /// rebuilt tasks to take back without a restore.
    idle_stores: HashMap<TaskId, Vec<TransactionalStore>>,
    /// Stateful tasks whose stores are being restored, restored one at a time in task
    /// order; their input partitions are paused meanwhile.
    restoring: std::collections::BTreeMap<TaskId, RestoringTask>,
    /// When the last restore step ended.
    last_restore_step: Instant,
    /// Whether the last poll found no input record: then restoring takes no time from
    /// processing.
    input_idle: bool,
    /// Tasks reading several partitions (a join or merge of topics): their records,
    /// buffered per partition and processed in timestamp order across them.
    synced: HashMap<TaskId, SyncedInputs>,
    health: Arc<Health>,
    last_store_sizes: Instant,
    globals: GlobalStores,
}

/// The input of a task that reads several partitions: one queue per partition.
struct SyncedInputs {
    queues: Vec<InputQueue>,
}

/// Records fetched for one input partition of a [`SyncedInputs`], not processed yet.
struct InputQueue {
    key: (Arc<str>, i32),
    records: std::collections::VecDeque<RawRecord>,
    /// Paused because the queue is full.
    paused: bool,
    /// Since when the queue has been empty.
    empty_since: Instant,
    /// The offset after the last record queued (at first, the committed offset).
    next: i64,
    /// The partition's end when the task started.
    high: i64,
}

/// A stateful task waiting for its stores to be restored.
struct RestoringTask {
    /// Its stores, in the sub-topology's order.
    stores: Vec<RestoringStore>,
    /// Input partitions paused until the task is ready, with the offset to resume at.
    waiting: HashMap<(Arc<str>, i32), i64>,
}

/// One store of a restoring task.
struct RestoringStore {
    store: RocksDbStore,
    changelog: String,
    /// Its restore, once begun; done when the session says it is restored.
    session: Option<RestoreSession>,
}

/// A record retried after a transient failure.
struct Retry {
    offset: i64,
    /// When the paused partition resumes; `None` once it has resumed and the record is
    /// being tried again.
    due: Option<Instant>,
    backoff: Duration,
}

pub(crate) struct ThreadContext {
    state: Mutex<Option<ThreadState>>,
    index: usize,
    read_committed: bool,
    stats: Arc<WorkerStats>,
    health: Arc<Health>,
    /// Partitions whose lag gauge this thread set, so a revoked one is set to 0 rather
    /// than left at its last value on this worker.
    lag_reported: Mutex<Vec<(String, i32)>>,
}

impl ClientContext for ThreadContext {
    /// Consumer lag from librdkafka's statistics: per assigned partition, the records
    /// between the thread's position and the end of the partition (its last stable offset
    /// under read_committed). Runs inside `poll`, on the stream thread.
    ///
    /// librdkafka's own `consumer_lag` counts from the offset committed through the
    /// consumer, which under exactly-once it never sees (offsets are committed through the
    /// producer's transaction), so it stays unknown; the position is what the thread has
    /// actually read. Only the few fields needed are decoded.
    fn stats_raw(&self, statistics: &[u8]) {
        let statistics: LagStatistics = match serde_json::from_slice(statistics) {
            Ok(s) => s,
            Err(e) => {
                log::debug!("stream thread {}: unreadable statistics: {e}", self.index);
                return;
            }
        };
        let mut reported = Vec::new();
        let mut total = 0u64;
        for (topic, stats) in &statistics.topics {
            for (partition, p) in &stats.partitions {
                // Partition -1 is librdkafka's internal unassigned queue; a lag of -1 is
                // unknown (not fetching, or nothing committed or fetched yet).
                let Ok(partition) = partition.parse::<i32>() else {
                    continue;
                };
                let end = if self.read_committed {
                    p.ls_offset
                } else {
                    p.hi_offset
                };
                let position = if p.app_offset >= 0 {
                    p.app_offset
                } else {
                    p.committed_offset
                };
                if partition < 0 || p.fetch_state == "none" || end < 0 || position < 0 {
                    continue;
                }
                let lag = (end - position).max(0);
                super::metrics::consumer_lag(topic, partition, lag);
                total += lag as u64;
                reported.push((topic.clone(), partition));
            }
        }
        self.stats.set_thread_lag(self.index, total);
        let mut previous = self.lag_reported.lock().unwrap_or_else(|p| p.into_inner());
        for (topic, partition) in previous.iter() {
            if !reported.contains(&(topic.clone(), *partition)) {
                super::metrics::consumer_lag(topic, *partition, 0);
            }
        }
        *previous = reported;
    }
}

/// The part of librdkafka's statistics report that consumer lag needs.
#[derive(serde::Deserialize)]
struct LagStatistics {
    #[serde(default)]
    topics: HashMap<String, LagTopic>,
}

#[derive(serde::Deserialize)]
struct LagTopic {
    #[serde(default)]
    partitions: HashMap<String, LagPartition>,
}

#[derive(serde::Deserialize)]
struct LagPartition {
    #[serde(default)]
    fetch_state: String,
    #[serde(default = "unknown_offset")]
    hi_offset: i64,
    #[serde(default = "unknown_offset")]
    ls_offset: i64,
    /// The offset after the last record handed to the thread.
    #[serde(default = "unknown_offset")]
    app_offset: i64,
    #[serde(default = "unknown_offset")]
    committed_offset: i64,
}

fn unknown_offset() -> i64 {
    -1
}

impl ConsumerContext for ThreadContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut guard = self.lock();
        let Some(state) = guard.as_mut() else { return };
        state.stats.rebalances.fetch_add(1, Ordering::Relaxed);
        super::metrics::rebalance();
        if let Rebalance::Revoke(revoked) = rebalance {
            // Commit what is done before the partitions go to another member.
            if let Err(e) = state.commit(consumer) {
                log::warn!(
                    "stream thread {}: commit before giving up partitions failed ({e}); rewinding",
                    state.index
                );
                if let Err(e) = state.abort_and_rewind(consumer) {
                    state.callback_error = Some(e);
                }
            }
            let gone: Vec<(String, i32)> = revoked
                .elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect();
            state.close_tasks(&gone);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            log::info!(
                "stream thread {}: assigned {} partitions",
                self.index,
                assigned.count()
            );
            // A member of the group with its assignment (possibly empty): ready. Later
            // rebalances keep it ready; they take seconds and flapping readiness would
            // only make an orchestrator restart a healthy worker.
            self.health.set(self.index, ThreadStatus::Running);
            publish_running(&self.health);
        }
    }
}

impl ThreadContext {
    fn lock(&self) -> MutexGuard<'_, Option<ThreadState>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What every stream thread of a worker shares.
#[derive(Clone)]
pub(crate) struct WorkerShared {
    pub(crate) stats: Arc<WorkerStats>,
    pub(crate) health: Arc<Health>,
    /// The memory budget of every RocksDB store of the worker.
    pub(crate) budget: StateBudget,
    /// Set to stop the worker.
    pub(crate) stop: Arc<AtomicBool>,
    /// The global tables' stores, which every task reads.
    pub(crate) globals: GlobalStores,
}

pub(crate) struct StreamThread {
    consumer: BaseConsumer<ThreadContext>,
    index: usize,
    commit_interval: Duration,
    stop: Arc<AtomicBool>,
}

impl StreamThread {
    pub(crate) fn new(
        index: usize,
        config: Arc<WorkerConfig>,
        topology: Topology,
        shared: WorkerShared,
        process_id: &str,
    ) -> Result<Self, StreamThreadError> {
        let WorkerShared {
            stats,
            health,
            budget,
            stop,
            globals,
        } = shared;
        let kafka = |what, source| StreamThreadError::Kafka {
            thread: index,
            what,
            source: redact_kafka_error(source),
        };
        let context = ThreadContext {
            state: Mutex::new(None),
            index,
            read_committed: config.processing_guarantee == ProcessingGuarantee::ExactlyOnceV2,
            stats: stats.clone(),
            health: health.clone(),
            lag_reported: Mutex::new(Vec::new()),
        };
        let consumer: BaseConsumer<ThreadContext> = consumer_config(&config, index, process_id)
            .create_with_context(context)
            .map_err(|e| kafka("creating the consumer", e))?;
        let topics: Vec<String> = topology.source_topics().into_iter().collect();
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| kafka("subscribing to the source topics", e))?;
        let producer_stats = Arc::new(ProducerStats::default());
        let producer = create_producer(
            &config,
            index,
            process_id,
            &producer_stats,
            &consumer,
            &topology,
        )
        .map_err(|e| kafka("creating the producer", e))?;
        let commit_interval = config.commit_interval;
        *consumer.context().lock() = Some(ThreadState {
            index,
            process_id: process_id.to_string(),
            last_tick: Instant::now(),
            sources: topology
                .subtopologies()
                .iter()
                .flat_map(|s| {
                    s.source_topics
                        .iter()
                        .map(move |t| (t.clone(), (Arc::from(t.as_str()), s.id)))
                })
                .collect(),
            current_input: None,
            end_to_end_latency: super::metrics::end_to_end_latency(topology.name()),
            config,
            topology,
            stats,
            producer,
            producer_stats,
            tasks: HashMap::new(),
            uncommitted: HashMap::new(),
            transaction_open: false,
            processed_since_commit: 0,
            callback_error: None,
            retries: HashMap::new(),
            budget,
            restorer: None,
            idle_stores: HashMap::new(),
            restoring: Default::default(),
            last_restore_step: Instant::now(),
            input_idle: true,
            synced: HashMap::new(),
            health,
            last_store_sizes: Instant::now(),
            globals,
        });
        Ok(Self {
            consumer,
            index,
            commit_interval,
            stop,
        })
    }

    /// Runs until `stop` is set, then commits and leaves the group.
    pub(crate) fn run(self) -> Result<(), StreamThreadError> {
        let mut last_commit = Instant::now();
        let mut out = Vec::new();
        let mut poll_timeout = POLL_TIMEOUT;
        while !self.stop.load(Ordering::Relaxed) {
            let polled = self.consumer.poll(poll_timeout);
            let mut guard = self.consumer.context().lock();
            let state = guard.as_mut().expect("state is set at creation");
            if let Some(e) = state.callback_error.take() {
                return Err(e);
            }
            state.input_idle = polled.is_none();
            let result = match polled {
                Some(Ok(message)) => state.process(&self.consumer, &message, &mut out),
                Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => {
                    Err(state.kafka("consuming", e))
                }
                Some(Err(e)) => {
                    // librdkafka reports broker trouble here and recovers by itself.
                    log::warn!("stream thread {}: consumer error: {e}", self.index);
                    Ok(())
                }
                None => Ok(()),
            };
            let result = result.and_then(|()| {
                if !state.synced.is_empty() {
                    state.drain_all_synced(&self.consumer, &mut out)?;
                }
                state.restore_step(&self.consumer)?;
                state.resume_due_retries(&self.consumer);
                state.tick(&mut out)?;
                if last_commit.elapsed() >= self.commit_interval {
                    state.commit(&self.consumer)?;
                    // Measured from the end of the commit: a commit slower than the interval
                    // must not leave the thread committing after every record.
                    last_commit = Instant::now();
                }
                Ok(())
            });
            poll_timeout = state.poll_timeout();
            if let Err(e) = result {
                match e {
                    // The topology asked to stop on this error, or no retry can help.
                    StreamThreadError::Task(TaskError::Failed { .. })
                    | StreamThreadError::RecordTooLarge { .. }
                    | StreamThreadError::State { .. }
                    | StreamThreadError::Restore { .. }
                    | StreamThreadError::Kafka {
                        source: KafkaError::MessageConsumptionFatal(_),
                        ..
                    } => {
                        let _ = state.abort_and_rewind(&self.consumer);
                        return Err(e);
                    }
                    e => {
                        log::warn!("stream thread {}: {e}; aborting and rewinding", self.index);
                        state.stats.aborts.fetch_add(1, Ordering::Relaxed);
                        if state.producer_is_unusable(&e) {
                            state.replace_producer(&self.consumer)?;
                        }
                        state.abort_and_rewind(&self.consumer)?;
                    }
                }
            }
        }
        // Graceful stop: commit what is done, then leave the group (the consumer's drop
        // closes it).
        let mut guard = self.consumer.context().lock();
        let state = guard.as_mut().expect("state is set at creation");
        if let Err(e) = state.commit(&self.consumer) {
            log::warn!(
                "stream thread {}: final commit failed ({e}); aborting",
                self.index
            );
            let _ = state.abort_and_rewind(&self.consumer);
        }
        drop(guard);
        self.consumer.unsubscribe();
        Ok(())
    }
}

impl ThreadState {
    fn kafka(&self, what: &'static str, source: KafkaError) -> StreamThreadError {
        StreamThreadError::Kafka {
            thread: self.index,
            what,
            source: redact_kafka_error(source),
        }
    }

    fn exactly_once(&self) -> bool {
        self.config.processing_guarantee == ProcessingGuarantee::ExactlyOnceV2
    }

    fn process(
        &mut self,
        consumer: &BaseConsumer<ThreadContext>,
        message: &BorrowedMessage<'_>,
        out: &mut Vec<ProducerRecord>,
    ) -> Result<(), StreamThreadError> {
        let (partition, offset) = (message.partition(), message.offset());
        let (topic, subtopology) = self
            .sources
            .get(message.topic())
            .cloned()
            .expect("the consumer subscribes to source topics only");
        // Paused partitions are rare: their key is built only when some partition is.
        let key = || (topic.clone(), partition);
        if !self.retries.is_empty() && self.retries.get(&key()).is_some_and(|r| r.due.is_some()) {
            // Fetched before the pause took effect; it will be read again after the retry.
            return Ok(());
        }
        if !self.restoring.is_empty() {
            let key = key();
            if self
                .restoring
                .values()
                .any(|r| r.waiting.contains_key(&key))
            {
                // Its task is restoring: read again once it is ready.
                return Ok(());
            }
        }
        let id = TaskId {
            subtopology,
            partition,
        };
        if !self.ensure_task(consumer, id)? {
            // The task restores first; its partition waits, paused, from this record on.
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&topic, partition);
            let _ = consumer.pause(&tpl);
            if let Some(restoring) = self.restoring.get_mut(&id) {
                restoring.waiting.insert(key(), offset);
            }
            return Ok(());
        }
        let raw = raw_record(message, topic);
        // Order across partitions matters to what depends on stream time (windows, joins,
        // stream-time punctuations); a stateless merge of topics is not held up for it.
        if self.topology.subtopologies()[subtopology]
            .source_topics
            .len()
            > 1
            && self.tasks.get(&id).is_some_and(Task::uses_stream_time)
        {
            self.enqueue(consumer, id, raw);
            return self.drain_synced(consumer, id, out);
        }
        self.process_raw(consumer, id, raw, out).map(|_| ())
    }

    /// Runs one input record through its task and sends what it produced. `Ok(false)`
    /// when a service it needs is down: the record is retried later (its partition paused
    /// and rewound to it).
    fn process_raw(
        &mut self,
        consumer: &BaseConsumer<ThreadContext>,
        id: TaskId,
        raw: RawRecord,
        out: &mut Vec<ProducerRecord>,
    ) -> Result<bool, StreamThreadError> {
        let key = (raw.origin.topic.clone(), raw.origin.partition);
        let offset = raw.origin.offset;
        self.current_input = Some(raw.origin.clone());
        let task = self.tasks.get_mut(&id).expect("ensured above");
        out.clear();
        match task.process(&raw, out) {
            Ok(outcome) => {
                if outcome == crate::task::Outcome::DeadLettered {
                    self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(TaskError::Unavailable { .. }) => {
                self.schedule_retry(consumer, key, offset);
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
        if !self.retries.is_empty() {
            self.retries.remove(&key);
        }
        task.punctuate_stream_time(out)?;
        self.begin_transaction_if_needed()?;
        for record in out.drain(..) {
            self.send(record)?;
        }
        self.stats.consumed.fetch_add(1, Ordering::Relaxed);
        if raw.timestamp > 0 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as i64;
            self.end_to_end_latency
                .record((now - raw.timestamp).max(0) as f64 / 1000.0);
        }
        self.processed_since_commit += 1;
        self.uncommitted.insert(key, offset + 1);
        Ok(true)
    }

    /// Buffers a record of a task that reads several partitions; a full queue pauses its
    /// partition.
    fn enqueue(&mut self, consumer: &BaseConsumer<ThreadContext>, id: TaskId, raw: RawRecord) {
        if !self.synced.contains_key(&id) {
            let inputs = self.synced_inputs(consumer, id);
            self.synced.insert(id, inputs);
        }
        let Some(inputs) = self.synced.get_mut(&id) else {
            return;
        };
        let Some(queue) = inputs
            .queues
            .iter_mut()
            .find(|q| *q.key.0 == *raw.origin.topic)
        else {
            return;
        };
        queue.next = raw.origin.offset + 1;
        queue.records.push_back(raw);
        if queue.records.len() >= MAX_BUFFERED && !queue.paused {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&queue.key.0, queue.key.1);
            let _ = consumer.pause(&tpl);
            queue.paused = true;
        }
    }

    /// The queues of a task that reads several partitions, each knowing where its
    /// partition starts (the committed offset) and ends, so that the task can tell an
    /// empty queue whose records are on their way from one whose partition is read out.
    fn synced_inputs(
        &mut self,
        consumer: &BaseConsumer<ThreadContext>,
        id: TaskId,
    ) -> SyncedInputs {
        if self.restorer.is_none() {
            match Restorer::new(&self.config) {
                Ok(restorer) => self.restorer = Some(restorer),
                Err(e) => log::warn!("stream thread {}: creating a consumer: {e}", self.index),
            }
        }
        let topics = &self.topology.subtopologies()[id.subtopology].source_topics;
        let mut partitions = TopicPartitionList::new();
        for topic in topics {
            partitions.add_partition(topic, id.partition);
        }
        let committed = consumer.committed_offsets(partitions, CALL_TIMEOUT).ok();
        let queues = topics
            .iter()
            .map(|topic| {
                let next = committed
                    .as_ref()
                    .and_then(|c| c.find_partition(topic, id.partition))
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    })
                    .unwrap_or(0);
                let high = self
                    .restorer
                    .as_ref()
                    .and_then(|r| r.watermarks(topic, id.partition))
                    .map_or(0, |(_, high)| high);
                InputQueue {
                    key: (self.sources[topic.as_str()].0.clone(), id.partition),
                    records: Default::default(),
                    paused: false,
                    empty_since: Instant::now(),
                    next,
                    high,
                }
            })
            .collect();
        SyncedInputs { queues }
    }

    /// Processes a synchronized task's buffered records in timestamp order: always the
    /// oldest head among its partitions. An empty partition stops it while the broker
    /// holds records for that partition not fetched yet (up to [`MAX_LAG_WAIT`]), and then
    /// for `max.task.idle.ms` more, as Kafka Streams' `max.task.idle.ms` does; so a join
    /// catching up on two topics sees them interleaved by time, not batch by batch.
    fn drain_synced(
        &mut self,
        consumer: &BaseConsumer<ThreadContext>,
        id: TaskId,
        out: &mut Vec<ProducerRecord>,
    ) -> Result<(), StreamThreadError> {
        let mut positions: Option<TopicPartitionList> = None;
        loop {
            let Some(inputs) = self.synced.get(&id) else {
                return Ok(());
            };
            let mut oldest: Option<(usize, i64)> = None;
            let mut waiting = false;
            for (i, queue) in inputs.queues.iter().enumerate() {
                match queue.records.front() {
                    Some(head) => {
                        if oldest.is_none_or(|(_, t)| head.timestamp < t) {
                            oldest = Some((i, head.timestamp));
                        }
                    }
                    None => {
                        let positions = positions
                            .get_or_insert_with(|| consumer.position().unwrap_or_default());
                        waiting |= self.must_wait_for(consumer, queue, positions);
                    }
                }
            }
            let (index, _) = match oldest {
                Some(oldest) if !waiting => oldest,
                _ => return Ok(()),
            };
            let inputs = self.synced.get_mut(&id).expect("looked up above");
            let queue = &mut inputs.queues[index];
            let raw = queue.records.pop_front().expect("a head");
            if queue.records.is_empty() {
                queue.empty_since = Instant::now();
            }
            if queue.paused && queue.records.len() <= MAX_BUFFERED / 2 {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(&queue.key.0, queue.key.1);
                let _ = consumer.resume(&tpl);
                queue.paused = false;
            }
            let key = queue.key.clone();
            if !self.process_raw(consumer, id, raw, out)? {
                // Retried later from its offset: what is buffered after it is read again.
                if let Some(queue) = self
                    .synced
                    .get_mut(&id)
                    .and_then(|i| i.queues.iter_mut().find(|q| q.key == key))
                {
                    queue.records.clear();
                    queue.paused = false;
                    queue.empty_since = Instant::now();
                }
            }
        }
    }

    /// Whether a synchronized task must wait for its empty input `queue`.
    fn must_wait_for(
        &self,
        consumer: &BaseConsumer<ThreadContext>,
        queue: &InputQueue,
        positions: &TopicPartitionList,
    ) -> bool {
        let Some(idle) = self.config.max_task_idle else {
            return false;
        };
        // A partition paused until a retry is due is not coming soon.
        if self
            .retries
            .get(&queue.key)
            .is_some_and(|r| r.due.is_some())
        {
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
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
            .unwrap_or(queue.next);
        let high = cached_high_watermark(consumer, topic, partition)
            .unwrap_or(0)
            .max(queue.high);
        position < high
    }

    /// Runs the synchronized tasks whose wait for an empty partition has ended.
    fn drain_all_synced(
        &mut self,
        consumer: &BaseConsumer<ThreadContext>,
        out: &mut Vec<ProducerRecord>,
    ) -> Result<(), StreamThreadError> {
        let ids: Vec<TaskId> = self
            .synced
            .iter()
            .filter(|(_, inputs)| inputs.queues.iter().any(|q| !q.records.is_empty()))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.drain_synced(consumer, id, out)?;
        }
        Ok(())
    }

    fn tick(&mut self, out: &mut Vec<ProducerRecord>) -> Result<(), StreamThreadError> {
        if self.tasks.is_empty() || self.last_tick.elapsed() < TICK_INTERVAL {
            return Ok(());
        }
        self.last_tick = Instant::now();
        self.current_input = None;
        let now = chrono::Utc::now().timestamp_millis();
        out.clear();
        for task in self.tasks.values_mut() {
            task.tick(now, out)?;
        }
        if !out.is_empty() {
            self.begin_transaction_if_needed()?;
            for record in std::mem::take(out) {
                self.send(record)?;
            }
        }
        Ok(())
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

    fn send(&mut self, record: ProducerRecord) -> Result<(), StreamThreadError> {
        self.send_with(record, 0)
    }

    /// Sends a record; `opaque` is [`CHANGELOG`] for changelog records.
    fn send_with(
        &mut self,
        record: ProducerRecord,
        opaque: usize,
    ) -> Result<(), StreamThreadError> {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in record.headers.iter() {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut base = BaseRecord::<[u8], [u8], usize>::with_opaque_to(&record.topic, opaque)
            .headers(headers)
            .timestamp(record.timestamp);
        if let Some(key) = record.key.as_deref() {
            base = base.key(key);
        }
        if let Some(value) = record.value.as_deref() {
            base = base.payload(value);
        }
        if let Some(partition) = record.partition {
            base = base.partition(partition);
        }
        loop {
            match self.producer.send(base) {
                Ok(()) => {
                    if opaque == CHANGELOG {
                        self.producer_stats
                            .changelog_sent
                            .fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.stats.produced.fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok(());
                }
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    back,
                )) => {
                    // The producer's own thread drains the queue; wait for room.
                    base = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((
                    KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge,
                    ),
                    _,
                )) => {
                    return Err(StreamThreadError::RecordTooLarge {
                        thread: self.index,
                        topic: record.topic.to_string(),
                        input: match &self.current_input {
                            Some(o) => format!("{}/{}@{}", o.topic, o.partition, o.offset),
                            None => "a punctuation".to_string(),
                        },
                    });
                }
                Err((e, _)) => return Err(self.kafka("producing a record", e)),
            }
        }
    }

    /// Commits the processed offsets (and, under exactly-once, the transaction).
    fn commit(&mut self, consumer: &BaseConsumer<ThreadContext>) -> Result<(), StreamThreadError> {
        for task in self.tasks.values_mut() {
            task.commit()?;
        }
        // State changes since the last commit join the transaction as changelog records.
        let mut changelog = Vec::new();
        let now = chrono::Utc::now().timestamp_millis();
        for task in self.tasks.values() {
            task.changelog_records(now, &mut changelog);
        }
        let state_changed = !changelog.is_empty();
        if state_changed {
            self.begin_transaction_if_needed()?;
            for record in changelog {
                self.send_with(record, CHANGELOG)?;
            }
        }
        if self.uncommitted.is_empty() && !self.transaction_open && !state_changed {
            return Ok(());
        }
        let started = Instant::now();
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), offset) in &self.uncommitted {
            offsets
                .add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .map_err(|e| self.kafka("listing offsets to commit", e))?;
            // Each offset carries its task's stream time, so a restarted task resumes it.
            let task = self.sources.get(&**topic).and_then(|(_, sub)| {
                self.tasks.get(&TaskId {
                    subtopology: *sub,
                    partition: *partition,
                })
            });
            if let Some(stream_time) = task.and_then(Task::stream_time)
                && let Some(mut element) = offsets.find_partition(topic, *partition)
            {
                element.set_metadata(stream_time_metadata(stream_time));
            }
        }
        if self.exactly_once() {
            self.begin_transaction_if_needed()?;
            let metadata = consumer
                .group_metadata()
                .ok_or(StreamThreadError::NoGroupMetadata { thread: self.index })?;
            if !self.uncommitted.is_empty() {
                self.producer
                    .send_offsets_to_transaction(&offsets, &metadata, CALL_TIMEOUT)
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
            let failed = self
                .producer_stats
                .failed_deliveries
                .swap(0, Ordering::Relaxed);
            if failed > 0 {
                return Err(self.kafka(
                    "delivering records",
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::Fail),
                ));
            }
            consumer
                .commit(&offsets, CommitMode::Sync)
                .map_err(|e| self.kafka("committing offsets", e))?;
        }
        self.uncommitted.clear();
        if state_changed {
            self.write_state()?;
        }
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.stats.committed.fetch_add(
            std::mem::take(&mut self.processed_since_commit),
            Ordering::Relaxed,
        );
        super::metrics::commit(started.elapsed());
        Ok(())
    }

    /// Drops everything since the last commit: aborts the transaction, rewinds every
    /// assigned partition to its committed offset and rebuilds the tasks.
    fn abort_and_rewind(
        &mut self,
        consumer: &BaseConsumer<ThreadContext>,
    ) -> Result<(), StreamThreadError> {
        if self.exactly_once() && self.transaction_open {
            if let Err(e) = self.producer.abort_transaction(CALL_TIMEOUT) {
                // A producer that cannot abort (fenced, failed, or the abort timed out) is
                // replaced: the new one's init_transactions fences it and aborts its
                // transaction on the broker.
                log::warn!(
                    "stream thread {}: abort failed ({e}); replacing the producer",
                    self.index
                );
                self.replace_producer(consumer)?;
            }
            super::metrics::transaction_aborted();
            self.transaction_open = false;
        } else if !self.exactly_once() {
            // Records already queued must not reach Kafka after the rewind; their failed
            // delivery reports arrive during the flush, before the counter is reset.
            self.producer
                .purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
            let _ = self.producer.flush(Duration::from_secs(1));
        }
        self.producer_stats
            .failed_deliveries
            .store(0, Ordering::Relaxed);
        self.processed_since_commit = 0;
        self.uncommitted.clear();
        self.retries.clear();
        // Buffered records are read again from the committed offsets.
        self.synced.clear();
        // Stateful tasks keep their stores open: the abort dropped the overlays, and what
        // is in RocksDB is exactly the last commit's state.
        for (id, task) in self.tasks.drain() {
            if task.is_stateful() {
                self.idle_stores.insert(id, task.into_stores());
            }
        }
        let assignment = consumer
            .assignment()
            .map_err(|e| self.kafka("reading the assignment", e))?;
        if assignment.count() == 0 {
            return Ok(());
        }
        let committed = consumer
            .committed_offsets(assignment, CALL_TIMEOUT)
            .map_err(|e| self.kafka("reading committed offsets", e))?;
        let mut rewind = TopicPartitionList::new();
        for element in committed.elements() {
            let offset = match element.offset() {
                Offset::Offset(offset) => Offset::Offset(offset),
                // Nothing committed yet: start over, as auto.offset.reset=earliest does.
                _ => Offset::Beginning,
            };
            rewind
                .add_partition_offset(element.topic(), element.partition(), offset)
                .map_err(|e| self.kafka("listing offsets to rewind to", e))?;
        }
        let rewound = consumer
            .seek_partitions(rewind, CALL_TIMEOUT)
            .map_err(|e| self.kafka("rewinding to the committed offsets", e))?;
        for element in rewound.elements() {
            if let Err(e) = element.error()
                && e.rdkafka_error_code() != Some(rdkafka::types::RDKafkaErrorCode::State)
            {
                // Not fetching yet (State) is fine: its fetch starts at the committed
                // offset. Going on from an unknown position could skip records: stop.
                return Err(self.kafka("rewinding a partition to its committed offset", e));
            }
        }
        let _ = consumer.resume(&consumer.assignment().unwrap_or_default());
        // Restoring tasks processed nothing: their partitions wait on, from the record
        // each stopped at (their committed offset, where the rewind just put them).
        let mut waiting = TopicPartitionList::new();
        for restoring in self.restoring.values() {
            for (topic, partition) in restoring.waiting.keys() {
                waiting.add_partition(topic, *partition);
            }
        }
        if waiting.count() > 0 {
            let _ = consumer.pause(&waiting);
        }
        Ok(())
    }

    /// After a commit: waits for the delivery reports of the changelog records (they carry
    /// the offsets that become checkpoints), then writes every store's overlay with its
    /// checkpoint in one batch.
    fn write_state(&mut self) -> Result<(), StreamThreadError> {
        let deadline = Instant::now() + CALL_TIMEOUT;
        let stats = &self.producer_stats;
        while stats.changelog_reported.load(Ordering::Acquire)
            < stats.changelog_sent.load(Ordering::Acquire)
        {
            if Instant::now() >= deadline {
                return Err(self.kafka(
                    "waiting for changelog delivery reports",
                    KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::MessageTimedOut,
                    ),
                ));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        // A crash here leaves RocksDB behind the committed changelog; start-up repairs it
        // by restoring from the checkpoint.
        failpoint::hit(failpoint::AFTER_COMMIT_BEFORE_STATE_WRITE);
        let ends = stats
            .changelog_ends
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let index = self.index;
        for (id, task) in &mut self.tasks {
            let partition = id.partition;
            task.commit_stores(|topic| ends.get(&(topic.to_string(), partition)).copied())
                .map_err(|source| StreamThreadError::State {
                    thread: index,
                    source,
                })?;
        }
        if self.last_store_sizes.elapsed() >= STORE_SIZE_INTERVAL {
            self.last_store_sizes = Instant::now();
            for (id, task) in &mut self.tasks {
                for (store, _) in task.stores_mut() {
                    super::metrics::store_size(store, id.partition);
                }
            }
        }
        Ok(())
    }

    /// Creates the task if it does not exist yet; `false` while it cannot run yet. A
    /// stateful task takes back its stores if an abort left them open; otherwise it opens
    /// them and restores each from its changelog (in [`ThreadState::restore_step`], beside
    /// the tasks that are ready) before it processes anything.
    fn ensure_task(
        &mut self,
        consumer: &BaseConsumer<ThreadContext>,
        id: TaskId,
    ) -> Result<bool, StreamThreadError> {
        if self.tasks.contains_key(&id) {
            return Ok(true);
        }
        if self.restoring.contains_key(&id) {
            return Ok(false);
        }
        let task = if self.topology.is_stateful(id.subtopology) {
            match self.idle_stores.remove(&id) {
                Some(stores) => Task::with_stores(
                    &self.topology,
                    id.subtopology,
                    id.partition,
                    &self.config.application_id,
                    stores,
                ),
                None => {
                    self.begin_restore(id)?;
                    return Ok(false);
                }
            }
        } else {
            Task::new(&self.topology, id.subtopology, id.partition)
        };
        self.start_task(consumer, id, task);
        Ok(true)
    }

    /// Runs `task` from now on, from the stream time its partitions last committed.
    fn start_task(&mut self, consumer: &BaseConsumer<ThreadContext>, id: TaskId, mut task: Task) {
        if task.uses_stream_time()
            && let Some(stream_time) = self.committed_stream_time(consumer, id)
        {
            task.resume_stream_time(stream_time);
        }
        self.tasks
            .insert(id, task.with_global_stores(&self.globals));
    }

    /// The stream time committed with the offsets of a task's input partitions.
    fn committed_stream_time(
        &self,
        consumer: &BaseConsumer<ThreadContext>,
        id: TaskId,
    ) -> Option<i64> {
        let mut partitions = TopicPartitionList::new();
        for topic in &self.topology.subtopologies()[id.subtopology].source_topics {
            partitions.add_partition(topic, id.partition);
        }
        match consumer.committed_offsets(partitions, CALL_TIMEOUT) {
            Ok(committed) => committed
                .elements()
                .iter()
                .filter_map(|e| parse_stream_time(e.metadata()))
                .max(),
            Err(e) => {
                // Without it the task starts from the next record's time: windows it
                // closed may take late records again, as before stream time was kept.
                log::warn!(
                    "stream thread {}: reading the committed stream time of task {id}: {e}",
                    self.index
                );
                None
            }
        }
    }

    /// Opens the task's stores under `<state.dir>/<application.id>/<task>/<store>` and
    /// queues the task for restoring.
    fn begin_restore(&mut self, id: TaskId) -> Result<(), StreamThreadError> {
        let index = self.index;
        let state = |source| StreamThreadError::State {
            thread: index,
            source,
        };
        if self.restorer.is_none() {
            self.restorer = Some(
                Restorer::new(&self.config)
                    .map_err(|e| self.kafka("creating the restore consumer", e))?,
            );
        }
        let dir = self
            .config
            .state_dir
            .join(&self.config.application_id)
            .join(id.to_string());
        let mut stores = Vec::new();
        for def in self
            .topology
            .stores()
            .iter()
            .filter(|s| s.subtopology == id.subtopology)
        {
            let changelog = def.changelog_topic(&self.config.application_id);
            let path = dir.join(&def.name);
            let restorer = self.restorer.as_ref().expect("made above");
            let store = open_checked(
                &path,
                &def.name,
                || RocksDbStore::open(&path, &def.name, &self.budget),
                |store| restorer.check_checkpoint(&changelog, id.partition, store),
            )
            .map_err(|source| match source {
                Opened::Store(e) => state(e),
                Opened::Restore(e) => StreamThreadError::Restore {
                    thread: index,
                    source: e,
                },
            })?;
            stores.push(RestoringStore {
                store,
                changelog,
                session: None,
            });
        }
        self.restoring.insert(
            id,
            RestoringTask {
                stores,
                waiting: HashMap::new(),
            },
        );
        self.health.set(index, ThreadStatus::Restoring);
        publish_running(&self.health);
        Ok(())
    }

    /// How long the next poll may wait: not at all while tasks restore (the restore steps
    /// wait for changelog records instead).
    fn poll_timeout(&self) -> Duration {
        if self.restoring.is_empty() {
            POLL_TIMEOUT
        } else {
            Duration::ZERO
        }
    }

    /// Restores every restoring task's stores, side by side, for up to [`RESTORE_STEP`];
    /// starts each task whose stores have all reached the end of their changelogs and
    /// resumes its partitions from the records they stopped at. While ready tasks have
    /// input it runs at most every other [`RESTORE_STEP`], so they keep processing; when
    /// they have none it runs at once.
    fn restore_step(
        &mut self,
        consumer: &BaseConsumer<ThreadContext>,
    ) -> Result<(), StreamThreadError> {
        // Ready tasks with input get every other step's worth of time.
        if self.restoring.is_empty()
            || (!self.tasks.is_empty()
                && !self.input_idle
                && self.last_restore_step.elapsed() < RESTORE_STEP)
        {
            return Ok(());
        }
        let index = self.index;
        let restore_error = |source| StreamThreadError::Restore {
            thread: index,
            source,
        };
        let restorer = self
            .restorer
            .as_ref()
            .expect("made with the restoring task");
        for (id, task) in &mut self.restoring {
            for store in &mut task.stores {
                if store.session.is_none() {
                    let session = restorer
                        .begin(&store.changelog, id.partition, &store.store)
                        .map_err(restore_error)?;
                    store.session = Some(session);
                }
            }
        }
        let mut active: Vec<(&mut RestoreSession, &mut dyn sluice_state::KeyValueStore)> = self
            .restoring
            .values_mut()
            .flat_map(|task| task.stores.iter_mut())
            .filter_map(|RestoringStore { store, session, .. }| {
                let session = session.as_mut().filter(|s| s.restored.is_none())?;
                Some((session, store as &mut dyn sluice_state::KeyValueStore))
            })
            .collect();
        if !active.is_empty() {
            restorer
                .step(&mut active, Instant::now() + RESTORE_STEP)
                .map_err(restore_error)?;
        }
        drop(active);
        let ready: Vec<TaskId> = self
            .restoring
            .iter()
            .filter(|(_, task)| {
                task.stores
                    .iter()
                    .all(|s| s.session.as_ref().is_some_and(|s| s.restored.is_some()))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            self.start_restored(consumer, id);
        }
        self.last_restore_step = Instant::now();
        Ok(())
    }

    /// Starts a task whose stores are restored, and lets its partitions resume.
    fn start_restored(&mut self, consumer: &BaseConsumer<ThreadContext>, id: TaskId) {
        let restored = self.restoring.remove(&id).expect("a restoring task");
        let mut records = 0;
        let stores: Vec<TransactionalStore> = restored
            .stores
            .into_iter()
            .map(|s| {
                records += s.session.and_then(|s| s.restored).map_or(0, |r| r.records);
                let store = TransactionalStore::new(Box::new(s.store));
                super::metrics::store_size(&store, id.partition);
                store
            })
            .collect();
        self.stats.restored.fetch_add(records, Ordering::Relaxed);
        let task = Task::with_stores(
            &self.topology,
            id.subtopology,
            id.partition,
            &self.config.application_id,
            stores,
        );
        self.start_task(consumer, id, task);
        // Resume each paused partition at the record it stopped at, as a retry due now.
        for (key, offset) in restored.waiting {
            self.retries.insert(
                key,
                Retry {
                    offset,
                    due: Some(Instant::now()),
                    backoff: RETRY_BACKOFF_MIN,
                },
            );
        }
        log::info!(
            "stream thread {}: task {id} restored {records} records and runs",
            self.index
        );
        if self.restoring.is_empty() {
            self.health.set(self.index, ThreadStatus::Running);
            publish_running(&self.health);
        }
    }

    fn producer_is_unusable(&self, error: &StreamThreadError) -> bool {
        match error {
            StreamThreadError::Kafka {
                source: KafkaError::Transaction(e),
                ..
            } => e.is_fatal(),
            StreamThreadError::Kafka { source, .. } => {
                source.rdkafka_error_code().is_some_and(|c| {
                    c == rdkafka::types::RDKafkaErrorCode::Fenced
                        || c == rdkafka::types::RDKafkaErrorCode::ProducerFenced
                })
            }
            StreamThreadError::Task(_)
            | StreamThreadError::NoGroupMetadata { .. }
            | StreamThreadError::RecordTooLarge { .. }
            | StreamThreadError::State { .. }
            | StreamThreadError::Restore { .. } => false,
        }
    }

    fn replace_producer(
        &mut self,
        consumer: &BaseConsumer<ThreadContext>,
    ) -> Result<(), StreamThreadError> {
        log::warn!("stream thread {}: replacing the producer", self.index);
        self.producer = create_producer(
            &self.config,
            self.index,
            &self.process_id,
            &self.producer_stats,
            consumer,
            &self.topology,
        )
        .map_err(|e| self.kafka("recreating the producer", e))?;
        Ok(())
    }

    fn close_tasks(&mut self, partitions: &[(String, i32)]) {
        for (topic, partition) in partitions {
            if let Some(sub) = self.topology.subtopology_of(topic) {
                let id = TaskId {
                    subtopology: sub.id,
                    partition: *partition,
                };
                // Dropping a task's stores flushes and closes them; their directories stay,
                // so a later assignment restores only the changelog's tail.
                self.tasks.remove(&id);
                self.idle_stores.remove(&id);
                self.synced.remove(&id);
                if let Some(restoring) = self.restoring.remove(&id) {
                    if let Some(restorer) = &self.restorer {
                        for mut session in restoring.stores.into_iter().filter_map(|s| s.session) {
                            restorer.cancel(&mut session);
                        }
                    }
                    if self.restoring.is_empty() {
                        self.health.set(self.index, ThreadStatus::Running);
                        publish_running(&self.health);
                    }
                }
            }
            let key = (Arc::from(topic.as_str()), *partition);
            self.uncommitted.remove(&key);
            self.retries.remove(&key);
        }
    }

    fn schedule_retry(
        &mut self,
        consumer: &BaseConsumer<ThreadContext>,
        key: (Arc<str>, i32),
        offset: i64,
    ) {
        let (topic, partition) = (&*key.0, key.1);
        let backoff = match self.retries.get(&key) {
            Some(previous) => (previous.backoff * 2).min(RETRY_BACKOFF_MAX),
            None => RETRY_BACKOFF_MIN,
        };
        // Jitter keeps many threads from retrying a recovering service at once.
        let wait = backoff.mul_f64(0.5 + rand_unit() / 2.0);
        log::warn!(
            "stream thread {}: {topic}/{partition}@{offset} waits {wait:?} for an unavailable service",
            self.index
        );
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        let _ = consumer.pause(&tpl);
        self.retries.insert(
            key,
            Retry {
                offset,
                due: Some(Instant::now() + wait),
                backoff,
            },
        );
    }

    fn resume_due_retries(&mut self, consumer: &BaseConsumer<ThreadContext>) {
        let now = Instant::now();
        for ((topic, partition), retry) in &mut self.retries {
            if retry.due.is_some_and(|due| due <= now) {
                if consumer
                    .seek(
                        topic,
                        *partition,
                        Offset::Offset(retry.offset),
                        CALL_TIMEOUT,
                    )
                    .is_err()
                {
                    // Resuming from another position would skip the record: try again soon.
                    retry.due = Some(now + RETRY_BACKOFF_MIN);
                    continue;
                }
                retry.due = None;
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(topic, *partition);
                let _ = consumer.resume(&tpl);
            }
        }
    }
}

/// The high watermark librdkafka last saw for a partition, from its cache (no request).
fn cached_high_watermark(
    consumer: &BaseConsumer<ThreadContext>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid for the consumer's lifetime; the topic is a
    // NUL-terminated string that outlives the call, which copies into the two locals.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}

/// The metadata of a committed offset: the stream time of the task that committed it.
fn stream_time_metadata(stream_time: i64) -> String {
    format!("{STREAM_TIME_METADATA}{stream_time}")
}

/// The stream time in a committed offset's metadata, if Sluice wrote it.
fn parse_stream_time(metadata: &str) -> Option<i64> {
    metadata.strip_prefix(STREAM_TIME_METADATA)?.parse().ok()
}

/// Aborts one transaction that holds the group, so the broker drops any transactional
/// offsets still pending for this producer id.
///
/// A crashed incarnation may leave offsets it sent to its open transaction. Kafka drops
/// them when `init_transactions` aborts that transaction; crabka-broker 0.3 (the test
/// broker) keeps them, keyed by producer id, and applies them at the *next* commit of
/// the same transactional id — moving the group's offsets past records whose outputs
/// were aborted, which loses them. Every broker drops pending offsets on an explicit
/// abort (EndTxn), so one empty abort at start-up makes the restart safe everywhere; on
/// Kafka it costs one round trip.
fn discard_pending_offsets(
    producer: &OutputProducer,
    consumer: &BaseConsumer<ThreadContext>,
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

fn rand_unit() -> f64 {
    // Not cryptographic: only spreads retries apart.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    f64::from(nanos % 1000) / 1000.0
}

fn raw_record(message: &BorrowedMessage<'_>, topic: Arc<str>) -> RawRecord {
    let mut headers = Headers::new();
    if let Some(h) = message.headers() {
        for header in h.iter() {
            headers.add(header.key.to_string(), header.value.unwrap_or_default());
        }
    }
    RawRecord {
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers,
        timestamp: message.timestamp().to_millis().unwrap_or(0),
        origin: Origin {
            topic,
            partition: message.partition(),
            offset: message.offset(),
        },
    }
}

fn consumer_config(config: &WorkerConfig, index: usize, process_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.bootstrap_servers)
        .set("group.id", &config.application_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // Range assignment gives partition p of every co-partitioned topic to one member,
        // so a task sees all of its inputs.
        .set("partition.assignment.strategy", "range")
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MS)
        // Prefetch keeps librdkafka's defaults (up to 100,000 records per partition): under
        // a backlog of small records it is most of a worker's memory (each queued record
        // costs a few hundred bytes of bookkeeping besides its payload), but bounding it
        // to 10,000 cut exactly-once throughput on the test broker 3.6x (fetches could not
        // keep up). Memory-bound deployments set kafka.consumer.queued.min.messages.
        .set(
            "isolation.level",
            match config.processing_guarantee {
                ProcessingGuarantee::ExactlyOnceV2 => "read_committed",
                ProcessingGuarantee::AtLeastOnce => "read_uncommitted",
            },
        );
    if config.static_membership {
        // A restarted worker (same state dir, so same process id) takes its old place in
        // the group at once, with the same partitions, instead of waiting for the dead
        // member's session to expire.
        c.set(
            "group.instance.id",
            format!("{}-{process_id}-{index}", config.application_id),
        );
    }
    for (key, value) in config.kafka_for(KafkaClient::Consumer) {
        c.set(key, value);
    }
    c
}

fn create_producer(
    config: &WorkerConfig,
    index: usize,
    process_id: &str,
    stats: &Arc<ProducerStats>,
    consumer: &BaseConsumer<ThreadContext>,
    topology: &Topology,
) -> Result<OutputProducer, KafkaError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.bootstrap_servers)
        // Java's partitioner: keys land where Kafka Streams and Java clients put them.
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5");
    if config.processing_guarantee == ProcessingGuarantee::ExactlyOnceV2 {
        c.set(
            "transactional.id",
            format!("{}-{process_id}-{index}", config.application_id),
        )
        .set("transaction.timeout.ms", "10000");
    } else {
        c.set("enable.idempotence", "true");
    }
    for (key, value) in config.kafka_for(KafkaClient::Producer) {
        c.set(key, value);
    }
    let producer: OutputProducer = c.create_with_context(DeliveryContext(stats.clone()))?;
    if config.processing_guarantee == ProcessingGuarantee::ExactlyOnceV2 {
        // Fences the previous incarnation of this transactional id and aborts its open
        // transaction.
        producer.init_transactions(CALL_TIMEOUT)?;
        discard_pending_offsets(&producer, consumer, topology)?;
    }
    Ok(producer)
}

/// Sets the gauge of running stream threads from the worker's health.
pub(crate) fn publish_running(health: &Health) {
    super::metrics::threads_running(health.running());
}
