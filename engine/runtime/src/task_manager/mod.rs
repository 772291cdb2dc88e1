//! The task manager: a stream thread's tasks in every state, and the way each input
//! record reaches its task.
//!
//! A task is created when the first record of one of its partitions arrives. A stateless
//! task runs at once; a stateful one first takes back the stores an abort left open, or
//! else goes to the [`StateUpdater`] until its stores are restored, its partitions paused
//! meanwhile. A task that reads several partitions and depends on stream time takes its
//! records through a [`PartitionGroup`] in timestamp order. A record whose operator
//! reports a transient failure is retried on the [`RetrySchedule`], its partition paused
//! and rewound to it.
//!
//! Each task says which offsets may be committed (the inputs it is done with), so the
//! commit ([`crate::commit`]) asks the tasks rather than recording offsets itself.

use foldhash::{HashMap, HashMapExt, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sluice_engine::record::{ProducerRecord, RawRecord};
use sluice_engine::task::{GlobalStores, Outcome, Task, TaskError, TaskId};
use sluice_engine::topology::Topology;
use sluice_state::TransactionalStore;

use crate::config::WorkerConfig;
use crate::error::StreamThreadError;
use crate::fetch::FetchedRecord;
use crate::kafka::{self, CALL_TIMEOUT, parse_stream_time, raw_record};
use crate::partition_group::PartitionGroup;
use crate::record_collector::{ChangelogEnds, RecordCollector};
use crate::retry::RetrySchedule;
use crate::state_updater::StateUpdater;
use crate::{WorkerStats, metrics};

mod async_calls;
mod due;
mod grouped;

/// The longest a poll blocks, so that commits, ticks and shutdown are never late by more.
const POLL_TIMEOUT: Duration = Duration::from_millis(20);
/// The longest a poll blocks while async calls are in flight: how late a completed call
/// may be forwarded.
const CALLS_POLL_TIMEOUT: Duration = Duration::from_millis(1);
/// How often operators' `on_tick` runs.
const TICK_INTERVAL: Duration = Duration::from_millis(100);
/// How often store sizes are published as metrics.
const STORE_SIZE_INTERVAL: Duration = Duration::from_secs(5);

/// A source topic as the per-record path needs it.
#[derive(Clone)]
struct Source {
    /// The topic, shared as the `Arc` records and offsets carry.
    topic: Arc<str>,
    subtopology: usize,
    /// For a topic held until due, the header of its records' due time.
    due_header: Option<Arc<str>>,
}

/// A stream thread's tasks.
pub(crate) struct TaskManager {
    thread: usize,
    config: Arc<WorkerConfig>,
    topology: Topology,
    stats: Arc<WorkerStats>,
    globals: GlobalStores,
    /// Each source topic, shared as the `Arc` that records and offsets carry, with the
    /// sub-topology reading it and, for a topic held until due, the header of its
    /// records' due time: the per-record path allocates no topic strings.
    sources: HashMap<String, Source>,
    /// Tasks that run.
    tasks: HashMap<TaskId, Task>,
    /// Open stores of tasks dropped by an abort, up to date with the last commit, for the
    /// rebuilt tasks to take back without a restore.
    idle_stores: HashMap<TaskId, Vec<TransactionalStore>>,
    /// Stateful tasks whose stores are being restored.
    updater: StateUpdater,
    /// The input queues of tasks that take several partitions in timestamp order.
    groups: HashMap<TaskId, PartitionGroup>,
    retries: RetrySchedule,
    /// Input records processed since the last commit.
    processed_since_commit: u64,
    /// Whether the last poll found no input record: then restoring takes no time from
    /// processing.
    input_idle: bool,
    /// The loop's clock, read once per poll ([`TaskManager::begin_iteration`]): the
    /// per-record path reads no clock of its own.
    now: Instant,
    /// Wall-clock milliseconds at `wall_base.0`, refreshed every tick, from which the
    /// end-to-end latency of each record is taken without a system call.
    wall_base: (Instant, i64),
    last_tick: Instant,
    last_store_sizes: Instant,
    end_to_end_latency: ::metrics::Histogram,
    /// What a task produced for the input at hand, reused between inputs.
    out: Vec<ProducerRecord>,
    /// Where async operators' calls run: the worker's tokio runtime.
    runtime: tokio::runtime::Handle,
    /// Running tasks with async operators (when none, completions are not looked for).
    async_tasks: usize,
    /// Tasks paused because their async operators are at capacity.
    paused_tasks: HashSet<TaskId>,
    /// Records fetched for tasks at their async capacity, in order (see `async_calls`).
    held: HashMap<TaskId, std::collections::VecDeque<RawRecord>>,
}

impl TaskManager {
    pub(crate) fn new(
        thread: usize,
        config: Arc<WorkerConfig>,
        topology: Topology,
        stats: Arc<WorkerStats>,
        globals: GlobalStores,
        updater: StateUpdater,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        let sources = topology
            .subtopologies()
            .iter()
            .flat_map(|s| {
                let topology = &topology;
                s.source_topics.iter().map(move |t| {
                    let due_header = topology.due_time_header(t).map(Arc::from);
                    let source = Source {
                        topic: Arc::from(t.as_str()),
                        subtopology: s.id,
                        due_header,
                    };
                    (t.clone(), source)
                })
            })
            .collect();
        Self {
            thread,
            end_to_end_latency: metrics::end_to_end_latency(topology.name()),
            config,
            topology,
            stats,
            globals,
            sources,
            tasks: HashMap::new(),
            idle_stores: HashMap::new(),
            updater,
            groups: HashMap::new(),
            retries: RetrySchedule::default(),
            processed_since_commit: 0,
            input_idle: true,
            now: Instant::now(),
            wall_base: (Instant::now(), chrono::Utc::now().timestamp_millis()),
            last_tick: Instant::now(),
            last_store_sizes: Instant::now(),
            out: Vec::new(),
            runtime,
            async_tasks: 0,
            paused_tasks: Default::default(),
            held: HashMap::new(),
        }
    }

    /// How long the next poll may wait: not at all while tasks restore (the restore steps
    /// wait for changelog records instead).
    pub(crate) fn poll_timeout(&self) -> Duration {
        if !self.updater.is_idle() {
            Duration::ZERO
        } else if self.async_tasks > 0 && self.tasks.values().any(|t| t.in_flight() > 0) {
            // A completed call is forwarded at the next look: not 20 ms later. (A poll
            // cannot be woken early: rdkafka's poll waits out its timeout whatever
            // librdkafka's queue says.)
            CALLS_POLL_TIMEOUT
        } else {
            POLL_TIMEOUT
        }
    }

    /// The worker's counters.
    pub(crate) fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    /// At each turn of the loop, after the poll: whether it returned nothing, and the
    /// time, which every timed step of this turn uses.
    pub(crate) fn begin_iteration(&mut self, idle: bool, now: Instant) {
        self.input_idle = idle;
        self.now = now;
    }

    /// Wall-clock milliseconds now, within a tick's drift of the system clock.
    fn wall_clock_ms(&self) -> i64 {
        let (instant, ms) = self.wall_base;
        ms + self.now.saturating_duration_since(instant).as_millis() as i64
    }

    /// Hands one fetched record to its task.
    pub(crate) fn on_record<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        record: FetchedRecord<'_>,
        collector: &mut RecordCollector,
    ) -> Result<(), StreamThreadError> {
        let (partition, offset) = (record.partition(), record.offset());
        let Source {
            topic,
            subtopology,
            due_header,
        } = self
            .sources
            .get(record.topic())
            .cloned()
            .expect("the consumer subscribes to source topics only");
        if self.retries.is_paused(&topic, partition) || self.updater.holds(&topic, partition) {
            // Fetched before its pause took effect; it is read again after the resume.
            return Ok(());
        }
        if let Some(header) = due_header
            && self.hold_until_due(consumer, record, &topic, &header)
        {
            return Ok(());
        }
        let id = TaskId {
            subtopology,
            partition,
        };
        if !self.ensure_task(consumer, id)? {
            // The task restores first; its partition waits, paused, from this record on.
            kafka::pause(consumer, &topic, partition);
            self.updater.hold(id, (topic, partition), offset);
            return Ok(());
        }
        let raw = raw_record(record, topic);
        // Order across partitions matters to what depends on stream time (windows, joins,
        // stream-time punctuations); a stateless merge of topics is not held up for it.
        if self.topology.subtopologies()[subtopology]
            .source_topics
            .len()
            > 1
            && self.tasks.get(&id).is_some_and(Task::uses_stream_time)
        {
            if !self.groups.contains_key(&id) {
                let group = self.partition_group(consumer, id);
                self.groups.insert(id, group);
            }
            if let Some(group) = self.groups.get_mut(&id) {
                group.push(consumer, raw);
            }
            // Drained after the whole batch is buffered (`drain_groups`): the consumer's
            // position is past the batch, so a partition whose records are later in it
            // must not look caught up while they are still unbuffered.
            return Ok(());
        }
        let Some(raw) = self.hold_while_busy(consumer, id, raw) else {
            return Ok(());
        };
        self.process(consumer, id, raw, collector).map(|_| ())
    }

    /// Runs one input record through its task and sends what it produced. `Ok(false)`
    /// when a service it needs is down: the record is retried later (its partition paused
    /// and rewound to it).
    fn process<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        id: TaskId,
        raw: RawRecord,
        collector: &mut RecordCollector,
    ) -> Result<bool, StreamThreadError> {
        let task = self.tasks.get_mut(&id).expect("ensured before");
        self.out.clear();
        let outcome = task.process(&raw, &mut self.out);
        let in_flight = matches!(outcome, Ok(Outcome::InFlight));
        match outcome {
            Ok(Outcome::DeadLettered) => {
                self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Outcome::Processed | Outcome::Skipped | Outcome::Held) => {}
            // Done once its calls complete (`complete_calls`).
            Ok(Outcome::InFlight) => {}
            Err(TaskError::Unavailable { .. }) => {
                let key = (raw.origin.topic.clone(), raw.origin.partition);
                let wait = self.retries.schedule(key, raw.origin.offset);
                log::warn!(
                    "stream thread {}: {}/{}@{} waits {wait:?} for an unavailable service",
                    self.thread,
                    raw.origin.topic,
                    raw.origin.partition,
                    raw.origin.offset
                );
                kafka::pause(consumer, &raw.origin.topic, raw.origin.partition);
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
        self.retries
            .succeeded(&raw.origin.topic, raw.origin.partition);
        task.punctuate_stream_time(&mut self.out)?;
        // A task in a partition group at its async operators' capacity stops taking
        // input until half its inputs in flight are done; others hold what comes for it.
        let at_capacity = task.at_capacity() && self.groups.contains_key(&id);
        for record in self.out.drain(..) {
            collector.send(record, Some(&raw.origin))?;
        }
        if at_capacity {
            self.pause_task(consumer, id);
        }
        self.stats.consumed.fetch_add(1, Ordering::Relaxed);
        if raw.timestamp > 0 {
            self.end_to_end_latency
                .record((self.wall_clock_ms() - raw.timestamp).max(0) as f64 / 1000.0);
        }
        // An input in flight counts once its calls are done (`complete_calls`).
        if !in_flight {
            self.processed_since_commit += 1;
        }
        Ok(true)
    }

    /// Creates the task if it does not exist yet; `false` while it cannot run yet. A
    /// stateful task takes back its stores if an abort left them open; otherwise it opens
    /// them and restores each from its changelog (in the state updater, beside the tasks
    /// that are ready) before it processes anything.
    fn ensure_task<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        id: TaskId,
    ) -> Result<bool, StreamThreadError> {
        if self.tasks.contains_key(&id) {
            return Ok(true);
        }
        if self.updater.is_restoring(id) {
            return Ok(false);
        }
        let task = if self.topology.is_stateful(id.subtopology) {
            match self.idle_stores.remove(&id) {
                Some(stores) => self.task_with(id, stores),
                None => {
                    self.updater.begin(id)?;
                    return Ok(false);
                }
            }
        } else {
            Task::new(&self.topology, id.subtopology, id.partition)
        };
        self.start(consumer, id, task);
        Ok(true)
    }

    fn task_with(&self, id: TaskId, stores: Vec<TransactionalStore>) -> Task {
        Task::with_stores(
            &self.topology,
            id.subtopology,
            id.partition,
            &self.config.application_id,
            stores,
        )
    }

    /// Runs `task` from now on, from the stream time its partitions last committed.
    fn start<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        id: TaskId,
        mut task: Task,
    ) {
        if task.uses_stream_time() || task.async_capacity().is_some() {
            let committed = self.committed_metadata(consumer, id);
            if task.uses_stream_time()
                && let Some(stream_time) = committed
                    .iter()
                    .filter_map(|(_, m)| parse_stream_time(m))
                    .max()
            {
                task.resume_stream_time(stream_time);
            }
            for (topic, metadata) in &committed {
                task.resume_done_ahead(topic, kafka::parse_done_ahead(metadata));
            }
        }
        if task.async_capacity().is_some() {
            self.async_tasks += 1;
        }
        let task = task
            .with_global_stores(&self.globals)
            .with_runtime(self.runtime.clone());
        self.tasks.insert(id, task);
    }

    /// The metadata committed with the offsets of a task's input partitions, per topic.
    fn committed_metadata<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        id: TaskId,
    ) -> Vec<(Arc<str>, String)> {
        let mut partitions = TopicPartitionList::new();
        for topic in &self.topology.subtopologies()[id.subtopology].source_topics {
            partitions.add_partition(topic, id.partition);
        }
        match consumer.committed_offsets(partitions, CALL_TIMEOUT) {
            Ok(committed) => committed
                .elements()
                .iter()
                .map(|e| {
                    (
                        self.sources[e.topic()].topic.clone(),
                        e.metadata().to_string(),
                    )
                })
                .collect(),
            Err(e) => {
                // Without it the task starts from the next record's time: windows it
                // closed may take late records again, as before stream time was kept.
                log::warn!(
                    "stream thread {}: reading the committed metadata of task {id}: {e}",
                    self.thread
                );
                Vec::new()
            }
        }
    }

    /// Gives the state updater a step, and starts the tasks it has finished restoring;
    /// their partitions resume at the records they stopped at.
    pub(crate) fn restore_step<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), StreamThreadError> {
        let ready_tasks_busy = !self.tasks.is_empty() && !self.input_idle;
        for restored in self.updater.step(ready_tasks_busy)? {
            self.stats
                .restored
                .fetch_add(restored.records, Ordering::Relaxed);
            let task = self.task_with(restored.id, restored.stores);
            self.start(consumer, restored.id, task);
            for (key, offset) in restored.waiting {
                self.retries.resume_now(key, offset);
            }
        }
        Ok(())
    }

    /// Rewinds and resumes the partitions whose retry is due.
    pub(crate) fn resume_due_retries<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        for (key, offset) in self.retries.take_due() {
            let (topic, partition) = (&*key.0, key.1);
            if consumer
                .seek(topic, partition, Offset::Offset(offset), CALL_TIMEOUT)
                .is_err()
            {
                // Resuming from another position would skip the record: try again soon.
                self.retries.postpone(&key);
                continue;
            }
            kafka::resume(consumer, topic, partition);
        }
    }

    /// Lets every task act on wall-clock time (punctuation), every [`TICK_INTERVAL`].
    pub(crate) fn tick(
        &mut self,
        collector: &mut RecordCollector,
    ) -> Result<(), StreamThreadError> {
        if self.tasks.is_empty()
            || self.now.saturating_duration_since(self.last_tick) < TICK_INTERVAL
        {
            return Ok(());
        }
        self.last_tick = self.now;
        let now = chrono::Utc::now().timestamp_millis();
        self.wall_base = (self.now, now);
        self.out.clear();
        for task in self.tasks.values_mut() {
            task.tick(now, &mut self.out)?;
        }
        for record in self.out.drain(..) {
            collector.send(record, None)?;
        }
        Ok(())
    }

    /// Lets every task's operators act before a commit; what they emit goes to `out`, for
    /// the transaction about to commit.
    pub(crate) fn prepare_commit(
        &mut self,
        out: &mut Vec<ProducerRecord>,
    ) -> Result<(), StreamThreadError> {
        for task in self.tasks.values_mut() {
            task.prepare_commit(out)?;
        }
        Ok(())
    }

    /// The changelog records of every store's writes since the last commit.
    pub(crate) fn changelog_records(&self, now_ms: i64, out: &mut Vec<ProducerRecord>) {
        for task in self.tasks.values() {
            task.changelog_records(now_ms, out);
        }
    }

    /// Every task's committable offsets, each with its task's stream time as metadata so
    /// that a restarted task resumes it.
    pub(crate) fn committable_offsets(&self) -> Result<TopicPartitionList, StreamThreadError> {
        let mut offsets = TopicPartitionList::new();
        for (id, task) in &self.tasks {
            for (topic, offset) in task.committable_offsets() {
                offsets
                    .add_partition_offset(topic, id.partition, Offset::Offset(offset))
                    .map_err(|e| {
                        StreamThreadError::kafka(self.thread, "listing offsets to commit", e)
                    })?;
                let done_ahead = task.done_ahead(topic, offset);
                if (task.stream_time().is_some() || !done_ahead.is_empty())
                    && let Some(mut element) = offsets.find_partition(topic, id.partition)
                {
                    element.set_metadata(kafka::offset_metadata(task.stream_time(), &done_ahead));
                }
            }
        }
        Ok(offsets)
    }

    /// After a commit: the tasks' offsets are committed; returns how many inputs were.
    pub(crate) fn committed(&mut self) -> u64 {
        for task in self.tasks.values_mut() {
            task.clear_committable();
        }
        std::mem::take(&mut self.processed_since_commit)
    }

    /// After a commit: writes every store's overlay with its checkpoint (the end of its
    /// changelog partition after this commit's records), and now and then publishes store
    /// sizes.
    pub(crate) fn write_state(&mut self, ends: &ChangelogEnds) -> Result<(), StreamThreadError> {
        let thread = self.thread;
        for (id, task) in &mut self.tasks {
            let partition = id.partition;
            task.commit_stores(|topic| ends.get(&(topic.to_string(), partition)).copied())
                .map_err(|source| StreamThreadError::State { thread, source })?;
        }
        if self.last_store_sizes.elapsed() >= STORE_SIZE_INTERVAL {
            self.last_store_sizes = Instant::now();
            for (id, task) in &mut self.tasks {
                for (store, _) in task.stores_mut() {
                    metrics::store_size(store, id.partition);
                }
            }
        }
        Ok(())
    }

    /// After an abort: drops every task and what was buffered or scheduled for it; the
    /// partitions are about to be rewound to their committed offsets. Stateful tasks leave
    /// their stores open: the abort dropped the overlays, and what is in RocksDB is exactly
    /// the last commit's state.
    pub(crate) fn drop_uncommitted(&mut self) {
        self.processed_since_commit = 0;
        self.retries.clear();
        self.groups.clear();
        self.async_tasks = 0;
        // The rewind resumes every partition.
        self.paused_tasks.clear();
        self.held.clear();
        for (id, task) in self.tasks.drain() {
            if task.is_stateful() {
                self.idle_stores.insert(id, task.into_stores());
            }
        }
    }

    /// Input partitions paused until their task is restored (they stay paused across a
    /// rewind).
    pub(crate) fn held_partitions(&self) -> TopicPartitionList {
        let mut held = TopicPartitionList::new();
        for (topic, partition) in self.updater.held_partitions() {
            held.add_partition(topic, *partition);
        }
        held
    }

    /// Closes the tasks of partitions given up in a rebalance (after their commit).
    /// Dropping a task's stores flushes and closes them; their directories stay, so a later
    /// assignment restores only the changelog's tail.
    pub(crate) fn close(&mut self, partitions: &[(String, i32)]) {
        for (topic, partition) in partitions {
            if let Some(sub) = self.topology.subtopology_of(topic) {
                let id = TaskId {
                    subtopology: sub.id,
                    partition: *partition,
                };
                if self
                    .tasks
                    .remove(&id)
                    .is_some_and(|t| t.async_capacity().is_some())
                {
                    self.async_tasks -= 1;
                }
                self.paused_tasks.remove(&id);
                self.held.remove(&id);
                self.idle_stores.remove(&id);
                self.groups.remove(&id);
                self.updater.cancel(id);
            }
            self.retries
                .succeeded(&Arc::from(topic.as_str()), *partition);
        }
    }
}
