//! A task: one sub-topology running over one input partition.
//!
//! The task is where production and the [`TestDriver`](crate::TestDriver) meet: both hand
//! it raw input records one at a time and take the records it produces. For each input
//! the task decodes it at its source, runs it depth-first through the operators, and
//! releases the produced records only if every operator succeeded. If any failed, what
//! was produced for that input is discarded and the topology's [`ErrorPolicy`] decides:
//! a dead-letter record carrying the untouched input, a counted skip, or a stop. A
//! *transient* failure (a registry or lookup service that is down) is not the record's
//! fault: the task returns [`TaskError::Unavailable`] and the runtime retries the same
//! record after a backoff, so an outage never fills the dead-letter topic.
//!
//! A task holds no Kafka client: the runtime around it owns consuming, producing and
//! committing, which keeps this code path identical in tests. Its state stores are given
//! to it (RocksDB in production, in memory in the TestDriver); their writes stay in a
//! per-transaction overlay, undone with the input if any operator fails on it, until the
//! runtime has committed their changelog records
//! ([`Task::changelog_records`], [`Task::commit_stores`]).

mod hooks;
mod in_flight;

use foldhash::{HashMap, HashMapExt};
use std::fmt;
use std::sync::Arc;

use ::metrics::Counter;

use crate::error::{ErrorKind, ProcessError};
use crate::metrics::{self, TaskMetrics};
use crate::policy::{ErrorPolicy, FailedInput, dead_letter_record};
use crate::processor::{Decoder, DynProcessor, DynRecord, InputMeta, TaskContext};
use crate::record::{Origin, ProducerRecord, RawRecord};
use crate::topology::{NodeKind, Topology};
use sluice_state::{GlobalStore, InMemoryKeyValueStore, TransactionalStore};

/// A task's id, written `<sub-topology>_<partition>` as in Kafka Streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId {
    pub subtopology: usize,
    pub partition: i32,
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.subtopology, self.partition)
    }
}

/// What became of one input record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Processed,
    DeadLettered,
    Skipped,
    /// An async operator's call for it is in flight: the input is done once the call has
    /// completed and its result has run through the operators after it
    /// ([`Task::complete_calls`]).
    InFlight,
    /// Not due yet (its topic is held until due): kept, with what follows it on its
    /// partition, until it is. Only the TestDriver answers it: a worker holds a record
    /// before it reaches its task.
    Held,
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error(
        "record {topic}/{partition}@{offset} failed in operator `{operator}` ({error}), and topology `{topology}` has the error policy `fail`"
    )]
    Failed {
        topology: String,
        operator: String,
        topic: String,
        partition: i32,
        offset: i64,
        error: ProcessError,
    },
    #[error(
        "record {topic}/{partition}@{offset} cannot be processed now by operator `{operator}` ({error}); retry it later"
    )]
    Unavailable {
        topology: String,
        operator: String,
        topic: String,
        partition: i32,
        offset: i64,
        error: ProcessError,
    },
    #[error("task {task} of topology `{topology}` does not read topic `{topic}`")]
    UnknownTopic {
        topology: String,
        task: TaskId,
        topic: String,
    },
}

struct TaskNode {
    name: Arc<str>,
    processor: Box<dyn DynProcessor>,
    children: Vec<usize>,
    /// The children's names, in the order of `children`: for forwarding to one by name.
    child_names: Vec<Arc<str>>,
    records_in: Counter,
    /// Indexes of the task's stores this node uses.
    stores: Vec<usize>,
    /// The global stores this node reads.
    globals: Vec<Arc<GlobalStore>>,
}

/// A worker's global stores, by store name: shared by all its tasks.
pub type GlobalStores = std::collections::HashMap<String, Arc<GlobalStore>>;

struct Source {
    node: usize,
    decoder: Arc<dyn Decoder>,
}

/// One sub-topology's operators for one partition.
pub struct Task {
    id: TaskId,
    topology: Arc<str>,
    policy: ErrorPolicy,
    dlq_topic: Option<Arc<str>>,
    nodes: Vec<TaskNode>,
    sources: HashMap<String, Source>,
    /// Work list of the depth-first run, kept to reuse its allocation.
    pending: Vec<(usize, DynRecord)>,
    forwarded: Vec<(usize, DynRecord)>,
    produced_by_topic: HashMap<Arc<str>, Counter>,
    metrics: TaskMetrics,
    /// Ticks so far: a tick's outputs take it as their origin offset, so that each tick's
    /// derived event ids are distinct even within one millisecond.
    ticks: i64,
    /// The state stores of this task, in the order of [`Topology::stores`].
    stores: Vec<TransactionalStore>,
    /// Each store's changelog topic.
    changelogs: Vec<Arc<str>>,
    /// The largest timestamp of the records processed so far.
    stream_time: i64,
    /// Nodes punctuating on stream time.
    stream_punctuators: Vec<StreamPunctuator>,
    /// Per input topic (of this task's partition), the offset after the last input the
    /// task is done with since the last commit: what the runtime may commit.
    committable: Vec<(Arc<str>, i64)>,
    /// Async operators' calls in flight, and the inputs waiting for them.
    in_flight: in_flight::InFlight,
}

/// A node's schedule of stream-time punctuations.
struct StreamPunctuator {
    node: usize,
    interval: i64,
    /// The stream time at which it runs next (`i64::MIN`: at the first record).
    next: i64,
}

impl Task {
    /// Instantiates the operators of `subtopology` for `partition`.
    ///
    /// # Panics
    /// If `subtopology` is not an index of `topology.subtopologies()`.
    pub fn new(topology: &Topology, subtopology: usize, partition: i32) -> Self {
        let stores = topology
            .stores()
            .iter()
            .filter(|s| s.subtopology == subtopology)
            .map(|s| TransactionalStore::new(Box::new(InMemoryKeyValueStore::new(s.name.clone()))))
            .collect();
        Self::with_stores(topology, subtopology, partition, topology.name(), stores)
    }

    /// Instantiates the operators of `subtopology` for `partition` over the given stores:
    /// one for each of the sub-topology's [`Topology::stores`], in that order. Changelog
    /// topics are named after `application_id`.
    ///
    /// # Panics
    /// If `subtopology` is not an index of `topology.subtopologies()`, or the stores do
    /// not match the sub-topology's.
    pub fn with_stores(
        topology: &Topology,
        subtopology: usize,
        partition: i32,
        application_id: &str,
        stores: Vec<TransactionalStore>,
    ) -> Self {
        let def = &topology.def;
        let store_defs: Vec<_> = def
            .stores
            .iter()
            .filter(|s| s.subtopology == subtopology)
            .collect();
        assert_eq!(
            store_defs.len(),
            stores.len(),
            "one store per store of the sub-topology"
        );
        let changelogs = store_defs
            .iter()
            .map(|s| Arc::from(s.changelog_topic(application_id)))
            .collect();
        let sub = &def.subtopologies[subtopology];
        let local: HashMap<usize, usize> = sub
            .nodes
            .iter()
            .enumerate()
            .map(|(local, &global)| (global, local))
            .collect();
        let mut sources = HashMap::new();
        let nodes: Vec<TaskNode> = sub
            .nodes
            .iter()
            .map(|&global| {
                let def_node = &def.nodes[global];
                if let NodeKind::Source {
                    topics, decoder, ..
                } = &def_node.kind
                {
                    for topic in topics {
                        sources.insert(
                            topic.clone(),
                            Source {
                                node: local[&global],
                                decoder: decoder.clone(),
                            },
                        );
                    }
                }
                TaskNode {
                    name: Arc::from(def_node.name.as_str()),
                    processor: (def_node.factory)(),
                    children: def_node.children.iter().map(|c| local[c]).collect(),
                    child_names: def_node
                        .children
                        .iter()
                        .map(|&c| Arc::from(def.nodes[c].name.as_str()))
                        .collect(),
                    records_in: metrics::operator_records(&def.name, &def_node.name, partition),
                    // Owned stores first, then the stores the node reads.
                    stores: def_node
                        .stores
                        .iter()
                        .chain(&def_node.reads)
                        .filter_map(|name| store_defs.iter().position(|s| &s.name == name))
                        .collect(),
                    // Empty until the worker's are given (Task::with_global_stores).
                    globals: def_node
                        .globals
                        .iter()
                        .map(|name| Arc::new(GlobalStore::in_memory(name.clone(), 1)))
                        .collect(),
                }
            })
            .collect();
        let mut nodes = nodes;
        let nodes_async: Vec<(usize, crate::operators::AsyncOptions)> = nodes
            .iter_mut()
            .enumerate()
            .filter_map(|(i, n)| Some((i, n.processor.as_async()?.options().clone())))
            .collect();
        let stream_punctuators = nodes
            .iter()
            .enumerate()
            .filter_map(|(node, n)| {
                n.processor
                    .stream_time_interval()
                    .map(|interval| StreamPunctuator {
                        node,
                        interval,
                        next: i64::MIN,
                    })
            })
            .collect();
        Self {
            id: TaskId {
                subtopology,
                partition,
            },
            topology: Arc::from(def.name.as_str()),
            dlq_topic: def.policy.dead_letter_topic().map(Arc::from),
            policy: def.policy.clone(),
            nodes,
            sources,
            pending: Vec::new(),
            forwarded: Vec::new(),
            produced_by_topic: HashMap::new(),
            metrics: TaskMetrics::new(&def.name, partition),
            ticks: 0,
            stores,
            changelogs,
            stream_time: i64::MIN,
            stream_punctuators,
            committable: Vec::new(),
            in_flight: in_flight::InFlight::new(&nodes_async),
        }
    }

    /// Gives the nodes that read global tables the worker's stores of those tables.
    ///
    /// # Panics
    /// If a global table the task reads has no store in `globals`.
    pub fn with_global_stores(mut self, globals: &GlobalStores) -> Self {
        for node in &mut self.nodes {
            for store in &mut node.globals {
                *store = globals
                    .get(store.name())
                    .unwrap_or_else(|| panic!("no global store `{}` given", store.name()))
                    .clone();
            }
        }
        self
    }

    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Runs one input record through the sub-topology and appends what it produced (or its
    /// dead-letter record) to `out`.
    pub fn process(
        &mut self,
        input: &RawRecord,
        out: &mut Vec<ProducerRecord>,
    ) -> Result<Outcome, TaskError> {
        let started = self.metrics.start_input();
        let source =
            self.sources
                .get(&*input.origin.topic)
                .ok_or_else(|| TaskError::UnknownTopic {
                    topology: self.topology.to_string(),
                    task: self.id,
                    topic: input.origin.topic.to_string(),
                })?;
        self.metrics.consumed.increment(1);
        if self.in_flight.capacity().is_some() {
            self.in_flight.read(&input.origin);
        }
        if self.in_flight.was_done_ahead(&input.origin) {
            // Done before a crash or a rewind, behind an input that was still in flight.
            self.done_with(&input.origin);
            return Ok(Outcome::Skipped);
        }
        for store in &mut self.stores {
            store.begin_input();
        }
        let first_output = out.len();
        let source_node = source.node;
        let result = match source.decoder.decode(input) {
            Ok((record, lineage)) => {
                // Stream time moves with every record that decodes, before the operators
                // see it, as Kafka Streams' partition time does. A record without a
                // timestamp (negative) leaves it alone.
                if input.timestamp >= 0 {
                    self.stream_time = self.stream_time.max(input.timestamp);
                }
                let meta = InputMeta {
                    origin: input.origin.clone(),
                    lineage,
                };
                self.pending.push((source_node, record));
                let mut outputs = 0;
                let result = self.run_pending(&meta, out, &mut outputs);
                if result.is_ok() {
                    self.in_flight.hold_input(&meta.origin, input, outputs);
                }
                result
            }
            Err(error) => Err((source_node, error)),
        };
        let outcome = match self.settle(result, &input.origin, Some(input), first_output, out) {
            Ok(Outcome::Processed) if self.in_flight.holds(&input.origin) => Ok(Outcome::InFlight),
            outcome => outcome,
        };
        if matches!(outcome, Ok(o) if o != Outcome::InFlight) {
            self.done_with(&input.origin);
        }
        self.metrics.end_input(started);
        outcome
    }

    /// Marks an input as done: processed, dead-lettered or skipped. Done while an older
    /// input of its topic is still in flight, it is *done ahead*: the commit cannot pass
    /// the older one, so the input is listed in the commit's metadata and skipped when it
    /// is read again.
    fn done_with(&mut self, origin: &Origin) {
        // Past the inputs done ahead that follow: with none after them, no later input
        // moves the commit past them (an idle partition would never be caught up).
        let next = self
            .in_flight
            .done_through(&origin.topic, origin.offset + 1);
        match self
            .committable
            .iter_mut()
            .find(|(topic, _)| **topic == *origin.topic)
        {
            Some((_, offset)) => *offset = (*offset).max(next),
            None => self.committable.push((origin.topic.clone(), next)),
        }
        if self
            .in_flight
            .oldest(&origin.topic)
            .is_some_and(|oldest| oldest < origin.offset)
        {
            self.in_flight.done_ahead(origin);
        }
    }

    /// What the runtime may commit for this task: per input topic read since the last
    /// commit, the offset of the next input to process (on the task's partition). An input
    /// the task is not done with (one retried after a transient failure) is not covered.
    pub fn committable_offsets(&self) -> impl Iterator<Item = (&Arc<str>, i64)> {
        // An input in flight is not done: the commit stops at the oldest.
        self.committable.iter().map(|(topic, offset)| {
            let offset = match self.oldest_in_flight(topic) {
                Some(oldest) => oldest.min(*offset),
                None => *offset,
            };
            (topic, offset)
        })
    }

    /// After the runtime committed (or discarded) the committable offsets.
    pub fn clear_committable(&mut self) {
        let committed: Vec<(Arc<str>, i64)> = self
            .committable_offsets()
            .map(|(topic, offset)| (topic.clone(), offset))
            .collect();
        for (topic, offset) in committed {
            self.in_flight.forget_done_before(&topic, offset);
        }
        self.committable.clear();
    }

    /// What becomes of an input whose run ended with `result`: its outputs stay; or they
    /// are dropped with its writes and the error decides. A transient error makes the
    /// input unavailable (and cancels its partition's calls from it on, as the partition
    /// is rewound to it); a state error fails the task; any other goes to the error
    /// policy with the input (`raw`) as it was read.
    fn settle(
        &mut self,
        result: Result<(), (usize, ProcessError)>,
        origin: &Origin,
        raw: Option<&RawRecord>,
        first_output: usize,
        out: &mut Vec<ProducerRecord>,
    ) -> Result<Outcome, TaskError> {
        let (node, error) = match result {
            Ok(()) => {
                self.count_produced(&out[first_output..]);
                return Ok(Outcome::Processed);
            }
            Err(failure) => failure,
        };
        out.truncate(first_output);
        self.rollback_stores();
        if error.transient {
            self.in_flight.cancel_from(origin);
            return Err(self.unavailable(node, error, origin));
        }
        if error.kind == ErrorKind::State {
            return Err(self.failed(node, error, origin));
        }
        let no_headers = crate::record::Headers::new();
        let failed = FailedInput {
            origin,
            key: raw.and_then(|r| r.key.as_deref()),
            value: raw.and_then(|r| r.value.as_deref()),
            headers: raw.map_or(&no_headers, |r| &r.headers),
            timestamp: raw.map_or(0, |r| r.timestamp),
        };
        self.apply_policy(node, error, &failed, out)
    }

    /// Node `index`'s processor, and the context it works through for the input `meta`.
    fn node_context<'a>(
        &'a mut self,
        index: usize,
        meta: &'a InputMeta,
        out: &'a mut Vec<ProducerRecord>,
        outputs_for_input: &'a mut u32,
    ) -> (&'a mut Box<dyn DynProcessor>, TaskContext<'a>) {
        let TaskNode {
            processor,
            children,
            child_names,
            stores: node_stores,
            globals,
            ..
        } = &mut self.nodes[index];
        let ctx = TaskContext {
            forwarded: &mut self.forwarded,
            children,
            child_names,
            produced: out,
            input: meta,
            outputs_for_input,
            stores: &mut self.stores,
            node_stores,
            globals,
            stream_time: self.stream_time,
        };
        (processor, ctx)
    }

    fn rollback_stores(&mut self) {
        for store in &mut self.stores {
            store.rollback_input();
        }
    }

    /// Whether the task keeps state.
    pub fn is_stateful(&self) -> bool {
        !self.stores.is_empty()
    }

    /// Whether anything in the task depends on stream time (state or stream-time
    /// punctuations), so that it must resume the stream time its partitions committed.
    pub fn uses_stream_time(&self) -> bool {
        self.is_stateful() || !self.stream_punctuators.is_empty()
    }

    /// The changelog records of every store's writes since the last commit, to be sent in
    /// the transaction about to commit: the latest value of each key written (`None`, a
    /// tombstone, for a delete), to the task's partition of the store's changelog topic.
    pub fn changelog_records(&self, now_ms: i64, out: &mut Vec<ProducerRecord>) {
        for (store, topic) in self.stores.iter().zip(&self.changelogs) {
            for (key, value) in store.changes() {
                out.push(ProducerRecord {
                    topic: topic.clone(),
                    partition: Some(self.id.partition),
                    key: Some(key.to_vec()),
                    value: value.map(<[u8]>::to_vec),
                    headers: Default::default(),
                    timestamp: now_ms,
                });
            }
        }
    }

    /// After the transaction committed: writes each store's overlay to the store with its
    /// new checkpoint, `checkpoint(changelog topic)` (the changelog offset after this
    /// transaction's records, when it wrote any).
    pub fn commit_stores(
        &mut self,
        checkpoint: impl Fn(&str) -> Option<i64>,
    ) -> Result<(), sluice_state::StoreError> {
        for (store, topic) in self.stores.iter_mut().zip(&self.changelogs) {
            store.commit(checkpoint(topic))?;
        }
        Ok(())
    }

    /// After the transaction aborted: drops every store's writes since the last commit.
    pub fn abort_stores(&mut self) {
        for store in &mut self.stores {
            store.abort();
        }
    }

    /// Each store with its changelog topic (for restoring and for size metrics).
    pub fn stores_mut(&mut self) -> impl Iterator<Item = (&mut TransactionalStore, &str)> {
        self.stores
            .iter_mut()
            .zip(self.changelogs.iter().map(|t| &**t))
    }

    /// Gives the stores back, so a task rebuilt after an abort reuses them open.
    pub fn into_stores(mut self) -> Vec<TransactionalStore> {
        self.abort_stores();
        std::mem::take(&mut self.stores)
    }

    /// Runs the work list depth-first until it is empty.
    fn run_pending(
        &mut self,
        meta: &InputMeta,
        out: &mut Vec<ProducerRecord>,
        outputs_for_input: &mut u32,
    ) -> Result<(), (usize, ProcessError)> {
        while let Some((index, record)) = self.pending.pop() {
            let node = &mut self.nodes[index];
            node.records_in.increment(1);
            if let Some(calls) = node.processor.as_async() {
                match self.in_flight.start(index, calls, record, meta) {
                    Ok(None) => {}
                    Ok(Some(Ok(record))) => {
                        self.forward_result(index, record, meta, out, outputs_for_input);
                    }
                    Ok(Some(Err(error))) | Err(error) => {
                        self.pending.clear();
                        self.forwarded.clear();
                        return Err((index, error));
                    }
                }
                continue;
            }
            let (processor, ctx) = self.node_context(index, meta, out, outputs_for_input);
            if let Err(error) = processor.process(record, ctx) {
                self.pending.clear();
                self.forwarded.clear();
                return Err((index, error));
            }
            // Reversed onto the stack so the first record forwarded runs first.
            self.pending.extend(self.forwarded.drain(..).rev());
        }
        Ok(())
    }

    fn apply_policy(
        &mut self,
        node: usize,
        error: ProcessError,
        input: &FailedInput<'_>,
        out: &mut Vec<ProducerRecord>,
    ) -> Result<Outcome, TaskError> {
        match &self.dlq_topic {
            Some(topic) => {
                let operator = &self.nodes[node].name;
                out.push(dead_letter_record(
                    topic,
                    input,
                    &self.topology,
                    operator,
                    &error,
                ));
                self.metrics.dead_lettered.increment(1);
                Ok(Outcome::DeadLettered)
            }
            None if self.policy == ErrorPolicy::Skip => {
                self.metrics.skipped.increment(1);
                Ok(Outcome::Skipped)
            }
            None => Err(self.failed(node, error, input.origin)),
        }
    }

    fn unavailable(&self, node: usize, error: ProcessError, origin: &Origin) -> TaskError {
        TaskError::Unavailable {
            topology: self.topology.to_string(),
            operator: self.nodes[node].name.to_string(),
            topic: origin.topic.to_string(),
            partition: origin.partition,
            offset: origin.offset,
            error,
        }
    }

    fn failed(&self, node: usize, error: ProcessError, origin: &Origin) -> TaskError {
        TaskError::Failed {
            topology: self.topology.to_string(),
            operator: self.nodes[node].name.to_string(),
            topic: origin.topic.to_string(),
            partition: origin.partition,
            offset: origin.offset,
            error,
        }
    }

    fn count_produced(&mut self, produced: &[ProducerRecord]) {
        for record in produced {
            match self.produced_by_topic.get(&record.topic) {
                Some(counter) => counter.increment(1),
                None => {
                    let counter =
                        metrics::produced(&self.topology, &record.topic, self.id.partition);
                    counter.increment(1);
                    self.produced_by_topic.insert(record.topic.clone(), counter);
                }
            }
        }
    }
}
