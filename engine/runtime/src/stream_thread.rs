//! A stream thread: one consumer in the group, the loop around it, and what happens in
//! a rebalance or on an error.
//!
//! The loop reads the assigned partitions' records a batch at a time ([`crate::fetch`])
//! and hands each to the [`TaskManager`], which runs it through its task and sends what
//! the task produced through the [`RecordCollector`]. Between batches it polls the
//! consumer (rebalances, errors, statistics), gives restoring tasks a step, resumes
//! partitions whose retry is due, lets operators punctuate, and every
//! `commit.interval.ms` commits ([`crate::commit`]).
//!
//! An error that a retry can help (a broker error, a fenced producer, a failed commit)
//! aborts the transaction and rewinds every assigned partition to its committed offset;
//! a fenced or fatally failed producer is replaced first. Errors no retry can help (the
//! topology asked to fail, a record too large to produce, a broken store) stop the
//! thread after the same abort. Before partitions are revoked in a rebalance, what was
//! processed is committed, so the next owner starts exactly where this thread stopped.
//!
//! Rebalance callbacks run inside `poll`, on this same thread, and need the task manager
//! and the producer: both sit behind one mutex, which the loop never holds across
//! `poll`, so it is never contended.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::TopicPartitionList;
use sluice_engine::task::GlobalStores;
use sluice_engine::topology::Topology;
use sluice_state::StateBudget;

use crate::WorkerStats;
use crate::commit::{abort_and_rewind, commit};
use crate::config::{ProcessingGuarantee, WorkerConfig};
use crate::error::StreamThreadError;
use crate::fetch::{FetchBatch, FetchQueue, FetchedRecord};
use crate::kafka::consumer_config;
use crate::lag::LagReporter;
use crate::metrics;
use crate::observability::{Health, ThreadStatus, publish_running};
use crate::record_collector::RecordCollector;
use crate::state_updater::StateUpdater;
use crate::task_manager::TaskManager;

/// What the mutex guards: the thread's tasks and its producer.
struct ThreadState {
    tasks: TaskManager,
    collector: RecordCollector,
    /// A failure inside a rebalance callback, surfaced by the loop after `poll` returns.
    callback_error: Option<StreamThreadError>,
}

impl ThreadState {
    fn commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), StreamThreadError> {
        commit(&mut self.tasks, &mut self.collector, consumer)
    }

    fn abort_and_rewind<C: ConsumerContext>(
        &mut self,
        thread: usize,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), StreamThreadError> {
        abort_and_rewind(thread, &mut self.tasks, &mut self.collector, consumer)
    }
}

/// The consumer's context: rebalance callbacks and statistics.
pub(crate) struct ThreadContext {
    state: Mutex<Option<ThreadState>>,
    index: usize,
    stats: Arc<WorkerStats>,
    health: Arc<Health>,
    lag: LagReporter,
    /// Where assigned partitions' records go; the stream thread owns it.
    fetch: OnceLock<Weak<FetchQueue>>,
}

impl ClientContext for ThreadContext {
    /// Runs inside `poll`, on the stream thread.
    fn stats_raw(&self, statistics: &[u8]) {
        self.lag.report(statistics, &self.stats);
    }
}

impl ConsumerContext for ThreadContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.stats.rebalances.fetch_add(1, Ordering::Relaxed);
        metrics::rebalance();
        let forwarded = match rebalance {
            Rebalance::Assign(assigned) => self.forward(consumer, assigned),
            _ => Ok(()),
        };
        let mut guard = self.lock();
        let Some(state) = guard.as_mut() else { return };
        if let Err(e) = forwarded {
            state.callback_error = Some(e);
            return;
        }
        if let Rebalance::Revoke(revoked) = rebalance {
            // Commit what is done before the partitions go to another member.
            if let Err(e) = state.commit(consumer) {
                log::warn!(
                    "stream thread {}: commit before giving up partitions failed ({e}); rewinding",
                    self.index
                );
                if let Err(e) = state.abort_and_rewind(self.index, consumer) {
                    state.callback_error = Some(e);
                }
            }
            let gone: Vec<(String, i32)> = revoked
                .elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect();
            state.tasks.close(&gone);
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

    /// Forwards the records of the partitions about to be assigned to the stream thread's
    /// fetch queue: before the assignment starts fetching, so none of them reaches the
    /// consumer's queue. A partition left unforwarded after an earlier assignment would
    /// be fetched into a queue nothing reads, so a failure stops the thread.
    fn forward(
        &self,
        consumer: &BaseConsumer<Self>,
        assigned: &TopicPartitionList,
    ) -> Result<(), StreamThreadError> {
        // Gone only while the stream thread is dropping its consumer.
        let Some(fetch) = self.fetch.get().and_then(Weak::upgrade) else {
            return Ok(());
        };
        for element in assigned.elements() {
            fetch
                .forward(consumer, element.topic(), element.partition())
                .map_err(|e| {
                    StreamThreadError::kafka(
                        self.index,
                        "forwarding an assigned partition's records to the stream thread",
                        e,
                    )
                })?;
        }
        Ok(())
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
    /// The worker's tokio runtime, where async operators' calls run.
    pub(crate) runtime: tokio::runtime::Handle,
}

pub(crate) struct StreamThread {
    /// Declared before the consumer, so dropped before it: librdkafka wants every queue
    /// handle destroyed before the consumer closes.
    fetch: Arc<FetchQueue>,
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
            runtime,
        } = shared;
        let kafka = |what, e| StreamThreadError::kafka(index, what, e);
        let read_committed = config.processing_guarantee == ProcessingGuarantee::ExactlyOnceV2;
        let context = ThreadContext {
            state: Mutex::new(None),
            index,
            stats: stats.clone(),
            health: health.clone(),
            lag: LagReporter::new(index, read_committed),
            fetch: OnceLock::new(),
        };
        let consumer: BaseConsumer<ThreadContext> = consumer_config(&config, index, process_id)
            .create_with_context(context)
            .map_err(|e| kafka("creating the consumer", e))?;
        let fetch = Arc::new(FetchQueue::new(&consumer));
        let _ = consumer.context().fetch.set(Arc::downgrade(&fetch));
        let topics: Vec<String> = topology.source_topics().into_iter().collect();
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| kafka("subscribing to the source topics", e))?;
        let collector = RecordCollector::new(
            index,
            process_id,
            config.clone(),
            topology.clone(),
            stats.clone(),
            &consumer,
        )?;
        let updater = StateUpdater::new(index, config.clone(), topology.clone(), budget, health);
        let commit_interval = config.commit_interval;
        let tasks = TaskManager::new(index, config, topology, stats, globals, updater, runtime);
        *consumer.context().lock() = Some(ThreadState {
            tasks,
            collector,
            callback_error: None,
        });
        Ok(Self {
            fetch,
            consumer,
            index,
            commit_interval,
            stop,
        })
    }

    /// Runs until `stop` is set, then commits and leaves the group.
    pub(crate) fn run(self) -> Result<(), StreamThreadError> {
        let consumer = &self.consumer;
        let mut last_commit = Instant::now();
        let mut poll_timeout = Duration::ZERO;
        let mut batch = FetchBatch::default();
        while !self.stop.load(Ordering::Relaxed) {
            // Rebalances, errors and statistics, served between batches, never inside one.
            // No record comes here while every assigned partition is forwarded.
            let polled = consumer.poll(Duration::ZERO);
            let wait = if polled.is_some() {
                Duration::ZERO
            } else {
                poll_timeout
            };
            self.fetch.read(wait, &mut batch);
            // The one clock read of the turn: the commit schedule, the tick and the
            // records' end-to-end latency all use it.
            let now = Instant::now();
            let mut guard = consumer.context().lock();
            let state = guard.as_mut().expect("state is set at creation");
            if let Some(e) = state.callback_error.take() {
                return Err(e);
            }
            let ThreadState {
                tasks, collector, ..
            } = state;
            tasks.begin_iteration(polled.is_none() && batch.is_empty(), now);
            let polled = match &polled {
                Some(Ok(message)) => Some(FetchedRecord::borrowed(message).checked()),
                Some(Err(e)) => Some(Err(e.clone())),
                None => None,
            };
            let fetched = polled
                .into_iter()
                .chain(batch.iter().map(FetchedRecord::checked));
            // After an error the rest of the batch is dropped: the recovery rewinds every
            // partition to its last commit.
            let mut result = Ok(());
            for record in fetched {
                result = match record {
                    Ok(record) => tasks.on_record(consumer, record, collector),
                    Err(e @ KafkaError::MessageConsumptionFatal(_)) => {
                        Err(StreamThreadError::kafka(self.index, "consuming", e))
                    }
                    Err(e) => {
                        // librdkafka reports broker trouble here and recovers by itself.
                        log::warn!("stream thread {}: consumer error: {e}", self.index);
                        Ok(())
                    }
                };
                if result.is_err() {
                    break;
                }
            }
            let result = result.and_then(|()| {
                tasks.drain_groups(consumer, collector)?;
                tasks.complete_calls(consumer, collector)?;
                tasks.restore_step(consumer)?;
                tasks.resume_due_retries(consumer);
                tasks.tick(collector)?;
                if now.saturating_duration_since(last_commit) >= self.commit_interval {
                    commit(tasks, collector, consumer)?;
                    // Measured from the end of the commit: a commit slower than the interval
                    // must not leave the thread committing after every record.
                    last_commit = Instant::now();
                }
                Ok(())
            });
            poll_timeout = tasks.poll_timeout();
            if let Err(e) = result {
                self.recover(state, e)?;
            }
        }
        // Graceful stop: commit what is done, then leave the group (the consumer's drop
        // closes it).
        let mut guard = consumer.context().lock();
        let state = guard.as_mut().expect("state is set at creation");
        if let Err(e) = state.commit(consumer) {
            log::warn!(
                "stream thread {}: final commit failed ({e}); aborting",
                self.index
            );
            let _ = state.abort_and_rewind(self.index, consumer);
        }
        drop(guard);
        consumer.unsubscribe();
        Ok(())
    }

    /// After an error: aborts and rewinds, replacing the producer if it is unusable; an
    /// error no retry can help stops the thread (after the abort).
    fn recover(
        &self,
        state: &mut ThreadState,
        error: StreamThreadError,
    ) -> Result<(), StreamThreadError> {
        if error.is_fatal() {
            let _ = state.abort_and_rewind(self.index, &self.consumer);
            return Err(error);
        }
        log::warn!(
            "stream thread {}: {error}; aborting and rewinding",
            self.index
        );
        state.tasks.stats().aborts.fetch_add(1, Ordering::Relaxed);
        if error.producer_unusable() {
            state.collector.replace(&self.consumer)?;
        }
        state.abort_and_rewind(self.index, &self.consumer)
    }
}
