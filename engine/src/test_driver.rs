//! The TestDriver: a topology run in-process over in-memory topics.
//!
//! Like Kafka Streams' `TopologyTestDriver`, it needs no broker: input records are piped
//! into in-memory topics, each is handed to the same [`Task`] code that production runs,
//! and what the tasks produce is kept per topic for the test to read. A record written to
//! a topic that another sub-topology reads is fed to that sub-topology too, so multi-stage
//! topologies run end to end. Every topic has one partition (0), and offsets count from 0.
//!
//! State: stateful operators get in-memory stores. As Kafka Streams' driver does, the
//! driver commits after every piped record: each store's changes go to its changelog topic
//! (`<topology>-<store>-changelog`, readable like any topic) and then into the store.
//!
//! Global tables: a record piped to a global table's topic goes straight into the table's
//! store, which every task reads, as a worker's global thread does.
//!
//! Time: record timestamps default to the driver's wall clock, which starts at
//! [`TestDriver::DEFAULT_START_MS`] and moves only when the test calls
//! [`TestDriver::advance_wall_clock`], which also runs every operator's `on_tick`.
//!
//! Records held until due ([`TopologyBuilder::hold_until_due`](crate::TopologyBuilder::hold_until_due)):
//! a record of a held topic whose due time is after the wall clock is kept, with every
//! record after it on its topic (its partition), and runs when
//! [`TestDriver::advance_wall_clock`] reaches its due time; piping it answers
//! [`Outcome::Held`].
//!
//! Async operators: the driver owns a tokio runtime on which their calls run. Piping a
//! record waits until every call it caused has completed and its results have gone on,
//! so a test reads the outputs right after. [`TestDriver::pipe_all`] pipes many records
//! without waiting between them (up to the operators' capacity), to show order and
//! concurrency. [`TestDriver::with_paused_time`] runs the calls on paused time: a call
//! that sleeps, or times out, does so at once and deterministically, in virtual time.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::error::SerdeError;
use crate::policy::DeadLetter;
use crate::record::{Headers, Origin, ProducerRecord, RawRecord, Record};
use crate::serde::Serde;
use crate::task::{GlobalStores, Outcome, Task, TaskError};
use crate::topology::Topology;
use sluice_state::{GlobalStore, KeyValueStore};

pub struct TestDriver {
    topology: Topology,
    tasks: Vec<Task>,
    /// Source topic -> index of the task reading it.
    readers: HashMap<String, usize>,
    /// Global table topic -> the table's store.
    globals: HashMap<String, Arc<GlobalStore>>,
    /// Everything written to each topic, piped or produced, in order.
    topics: HashMap<String, Vec<ProducerRecord>>,
    /// How far the test has read each topic.
    read_positions: HashMap<String, usize>,
    wall_clock_ms: i64,
    /// Where async operators' calls run.
    runtime: tokio::runtime::Runtime,
    /// Whether the runtime's clock is paused (moved only by `advance_wall_clock`).
    paused_time: bool,
    /// Per held topic, its records not due yet (with their offsets), oldest first.
    held: HashMap<String, VecDeque<RawRecord>>,
}

impl TestDriver {
    /// 2026-01-01T00:00:00Z.
    pub const DEFAULT_START_MS: i64 = 1_767_225_600_000;

    pub fn new(topology: Topology) -> Self {
        Self::with_runtime(topology, false)
    }

    /// A driver whose async operators' calls run on paused tokio time: sleeps and timeouts
    /// pass at once, in virtual time, whenever nothing else can run. For calls that only
    /// wait on timers; a call doing real I/O would see its timeout fire at once.
    pub fn with_paused_time(topology: Topology) -> Self {
        Self::with_runtime(topology, true)
    }

    fn with_runtime(topology: Topology, paused: bool) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(paused)
            .build()
            .expect("a current-thread tokio runtime starts");
        // Internal topics are named for an application: here, the topology's name.
        let topology = topology.for_application(topology.name());
        let stores: GlobalStores = topology
            .global_tables()
            .iter()
            .map(|g| {
                (
                    g.store.clone(),
                    Arc::new(GlobalStore::in_memory(g.store.clone(), 1)),
                )
            })
            .collect();
        let globals = topology
            .global_tables()
            .iter()
            .map(|g| (g.topic.clone(), stores[&g.store].clone()))
            .collect();
        let tasks: Vec<Task> = (0..topology.subtopologies().len())
            .map(|sub| {
                Task::new(&topology, sub, 0)
                    .with_global_stores(&stores)
                    .with_runtime(runtime.handle().clone())
            })
            .collect();
        let readers = topology
            .subtopologies()
            .iter()
            .flat_map(|s| s.source_topics.iter().map(move |t| (t.clone(), s.id)))
            .collect();
        Self {
            topology,
            tasks,
            readers,
            globals,
            topics: HashMap::new(),
            read_positions: HashMap::new(),
            wall_clock_ms: Self::DEFAULT_START_MS,
            runtime,
            paused_time: paused,
            held: HashMap::new(),
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    pub fn wall_clock_ms(&self) -> i64 {
        self.wall_clock_ms
    }

    /// Pipes raw bytes into `topic`, timestamped with the wall clock.
    pub fn pipe_raw(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<Outcome, TaskError> {
        self.pipe_record(ProducerRecord {
            topic: Arc::from(topic),
            partition: Some(0),
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            headers: Headers::new(),
            timestamp: self.wall_clock_ms,
        })
    }

    /// Pipes a typed record into `topic`, encoded with the given serdes.
    pub fn pipe<K, V>(
        &mut self,
        topic: &str,
        key_serde: &impl Serde<K>,
        value_serde: &impl Serde<V>,
        record: &Record<K, V>,
    ) -> Result<Outcome, TaskError> {
        let encode = |r: Result<Option<Vec<u8>>, SerdeError>| {
            r.unwrap_or_else(|e| panic!("the test's own input does not encode: {e}"))
        };
        self.pipe_record(ProducerRecord {
            topic: Arc::from(topic),
            partition: Some(0),
            key: encode(key_serde.serialize(topic, &record.key)),
            value: encode(value_serde.serialize(topic, &record.value)),
            headers: record.headers.clone(),
            timestamp: record.timestamp,
        })
    }

    /// Appends `record` to its topic and runs it, and everything it causes, through the
    /// tasks. Returns the outcome of the piped record itself.
    pub fn pipe_record(&mut self, record: ProducerRecord) -> Result<Outcome, TaskError> {
        let outcome = self.run_record(record, true)?;
        self.commit_state();
        Ok(outcome)
    }

    /// Pipes raw records into `topic` one after the other without waiting for async
    /// operators between them: a record waits only while its task has as many inputs in
    /// flight as its capacity allows, as a worker's partition would pause. Then waits for
    /// every call. Returns each piped record's outcome ([`Outcome::InFlight`] for one whose
    /// call was still running when the next was piped).
    pub fn pipe_all<'a>(
        &mut self,
        topic: &str,
        records: impl IntoIterator<Item = (Option<&'a [u8]>, Option<&'a [u8]>)>,
    ) -> Result<Vec<Outcome>, TaskError> {
        let mut outcomes = Vec::new();
        for (key, value) in records {
            let record = ProducerRecord {
                topic: Arc::from(topic),
                partition: Some(0),
                key: key.map(<[u8]>::to_vec),
                value: value.map(<[u8]>::to_vec),
                headers: Headers::new(),
                timestamp: self.wall_clock_ms,
            };
            outcomes.push(self.run_record(record, false)?);
        }
        self.settle_calls()?;
        self.commit_state();
        Ok(outcomes)
    }

    /// Waits until no task has a call in flight, piping on what completions produce.
    fn settle_calls(&mut self) -> Result<(), TaskError> {
        for task in 0..self.tasks.len() {
            while self.tasks[task].in_flight() > 0 {
                let produced = self.complete_some(task)?;
                for record in produced {
                    self.run_record(record, true)?;
                }
            }
        }
        Ok(())
    }

    /// Drives the runtime until some call of `task` completes, and forwards the results.
    fn complete_some(&mut self, task: usize) -> Result<Vec<ProducerRecord>, TaskError> {
        let task = &mut self.tasks[task];
        self.runtime
            .block_on(std::future::poll_fn(|cx| task.poll_calls(cx)));
        let mut produced = Vec::new();
        task.complete_calls(&mut produced)?;
        Ok(produced)
    }

    /// Runs `record` and everything it causes through the tasks; with `settle`, waits for
    /// the calls it starts, otherwise only while its task is at capacity.
    fn run_record(&mut self, record: ProducerRecord, settle: bool) -> Result<Outcome, TaskError> {
        let mut queue = VecDeque::from([record]);
        let mut first_outcome = None;
        while let Some(record) = queue.pop_front() {
            let topic = record.topic.to_string();
            let log = self.topics.entry(topic.clone()).or_default();
            let offset = log.len() as i64;
            log.push(record.clone());
            if let Some(global) = self.globals.get(&topic) {
                let key = record.key.as_deref().unwrap_or_default();
                global
                    .partition(0)
                    .write(
                        &mut [(key, record.value.as_deref())].into_iter(),
                        Some(offset + 1),
                    )
                    .unwrap_or_else(|e| panic!("an in-memory store does not fail: {e}"));
            }
            let Some(&task) = self.readers.get(&topic) else {
                first_outcome.get_or_insert(Outcome::Processed);
                continue;
            };
            let raw = RawRecord {
                key: record.key,
                value: record.value,
                headers: record.headers,
                timestamp: record.timestamp,
                origin: Origin {
                    topic: record.topic,
                    partition: 0,
                    offset,
                },
            };
            if let Some(header) = self.topology.due_time_header(&topic) {
                let waiting = self.held.get(&topic).is_some_and(|h| !h.is_empty());
                let due = crate::topology::due_at(&raw.headers, header);
                if waiting || due.is_some_and(|due| due > self.wall_clock_ms) {
                    // The head of its partition is not due (this one, or one before it).
                    self.held.entry(topic).or_default().push_back(raw);
                    first_outcome.get_or_insert(Outcome::Held);
                    continue;
                }
            }
            let mut produced = Vec::new();
            let outcome = self.tasks[task].process(&raw, &mut produced)?;
            first_outcome.get_or_insert(outcome);
            self.tasks[task].punctuate_stream_time(&mut produced)?;
            let at_capacity = |t: &Task| t.async_capacity().is_some_and(|c| t.in_flight() >= c);
            while (settle && self.tasks[task].in_flight() > 0) || at_capacity(&self.tasks[task]) {
                produced.extend(self.complete_some(task)?);
            }
            queue.extend(produced);
        }
        Ok(first_outcome.unwrap_or(Outcome::Processed))
    }

    /// Sends every store's changes to its changelog topic and commits them to the store,
    /// as the runtime does at each commit.
    fn commit_state(&mut self) {
        let mut changelog = Vec::new();
        for task in &mut self.tasks {
            if !task.is_stateful() {
                continue;
            }
            changelog.clear();
            task.changelog_records(self.wall_clock_ms, &mut changelog);
            for record in changelog.drain(..) {
                self.topics
                    .entry(record.topic.to_string())
                    .or_default()
                    .push(record);
            }
            let topics = &self.topics;
            task.commit_stores(|topic| topics.get(topic).map(|log| log.len() as i64))
                .unwrap_or_else(|e| panic!("an in-memory store does not fail: {e}"));
        }
    }

    /// Moves the wall clock forward and lets every operator act on the new time. On a
    /// driver [with paused time](Self::with_paused_time), tokio's clock moves with it, so
    /// what async operators time (a cache's time to live) passes too.
    pub fn advance_wall_clock(&mut self, by: Duration) -> Result<(), TaskError> {
        self.wall_clock_ms += by.as_millis() as i64;
        if self.paused_time {
            self.runtime.block_on(tokio::time::advance(by));
        }
        let mut produced = Vec::new();
        for task in &mut self.tasks {
            task.tick(self.wall_clock_ms, &mut produced)?;
        }
        for record in produced {
            self.pipe_record(record)?;
        }
        self.run_due()
    }

    /// Runs the held records that are due now, each topic's in order.
    fn run_due(&mut self) -> Result<(), TaskError> {
        let mut topics: Vec<String> = self.held.keys().cloned().collect();
        topics.sort();
        for topic in topics {
            let header = self
                .topology
                .due_time_header(&topic)
                .expect("only held topics hold records")
                .to_string();
            while let Some(queue) = self.held.get_mut(&topic) {
                let due = queue
                    .front()
                    .map(|raw| crate::topology::due_at(&raw.headers, &header));
                let Some(due) = due else { break };
                if due.is_some_and(|due| due > self.wall_clock_ms) {
                    break;
                }
                let raw = queue.pop_front().expect("looked at above");
                let task = self.readers[&topic];
                let mut produced = Vec::new();
                self.tasks[task].process(&raw, &mut produced)?;
                self.tasks[task].punctuate_stream_time(&mut produced)?;
                while self.tasks[task].in_flight() > 0 {
                    produced.extend(self.complete_some(task)?);
                }
                for record in produced {
                    self.run_record(record, true)?;
                }
            }
        }
        self.commit_state();
        Ok(())
    }

    /// Runs every operator's commit hook, as the runtime does before it commits; what the
    /// hooks emit is written (and piped on to its readers) before the stores commit.
    pub fn commit(&mut self) -> Result<(), TaskError> {
        let mut produced = Vec::new();
        for task in &mut self.tasks {
            task.prepare_commit(&mut produced)?;
        }
        for record in produced {
            self.pipe_record(record)?;
        }
        self.commit_state();
        Ok(())
    }

    /// The records written to `topic` since the last read of it.
    pub fn read_raw(&mut self, topic: &str) -> Vec<ProducerRecord> {
        let log = self.topics.get(topic).map(Vec::as_slice).unwrap_or(&[]);
        let position = self.read_positions.entry(topic.to_string()).or_default();
        let unread = log[*position..].to_vec();
        *position = log.len();
        unread
    }

    /// The records written to `topic` since the last read of it, decoded.
    pub fn read<K, V>(
        &mut self,
        topic: &str,
        key_serde: &impl Serde<K>,
        value_serde: &impl Serde<V>,
    ) -> Result<Vec<Record<K, V>>, SerdeError> {
        self.read_raw(topic)
            .into_iter()
            .map(|r| {
                Ok(Record {
                    key: key_serde.deserialize(topic, r.key.as_deref())?,
                    value: value_serde.deserialize(topic, r.value.as_deref())?,
                    headers: r.headers,
                    timestamp: r.timestamp,
                })
            })
            .collect()
    }

    /// The dead-letter records written since the last read of the dead-letter topic.
    ///
    /// # Panics
    /// If the topology's policy has no dead-letter topic, or a record there lacks its
    /// `sluice.*` headers.
    pub fn dead_letters(&mut self) -> Vec<DeadLetter> {
        let topic = self
            .topology
            .error_policy()
            .dead_letter_topic()
            .expect("the topology's error policy has no dead-letter topic")
            .to_string();
        self.read_raw(&topic)
            .iter()
            .map(|r| DeadLetter::from_record(r).expect("a dead-letter record has sluice.* headers"))
            .collect()
    }
}
