//! The operator contract: the one trait every operator implements, and the context it works
//! through.
//!
//! Every operator of a topology, built-in or written by a topology author, is a
//! [`Processor`]: `map` and `filter` as much as aggregations, windows, joins, tables, sources
//! and sinks. A processor receives one typed record at a time and works through a
//! [`Context`]: it forwards records to its children (all of them, or one by name), reads the
//! task's stream time and the current input's origin and lineage, reads and writes the state
//! stores it declared, reads the global tables it declared, and may emit from its
//! punctuations ([`Processor::on_tick`], [`Processor::on_stream_time`]) and before a commit
//! ([`Processor::on_commit`]). So a custom processor can do whatever a built-in does; the
//! built-ins are written against the same trait, which keeps it honest.
//!
//! This module sits below both the graph ([`topology`](crate::topology)) and the operators
//! ([`operators`](crate::operators)): the graph holds processors without knowing any
//! operator, and operators add nodes to the graph through its narrow builder API.
//!
//! Inside a task, records travel between processors type-erased (`DynRecord`), so that one
//! task can hold a graph of processors of different key and value types. One adapter,
//! generic over the processor, unboxes a record on the way in and boxes what the processor
//! forwards; the graph holds it as a `Box<dyn DynProcessor>`. A type mismatch is a bug in the
//! builder, never in user code, because typed [`Stream`](crate::Stream) handles only connect
//! operators whose types agree.
//!
//! Forwarding is depth-first: a record forwarded to several children reaches the first
//! child's whole subtree before the second child sees it, as in Kafka Streams.

use std::any::{Any, TypeId};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::error::ProcessError;
use crate::lineage::Lineage;
use crate::record::{Headers, Origin, ProducerRecord, RawRecord, Record};
use sluice_state::{GlobalStore, TransactionalStore};

/// A typed operator: the one trait behind every built-in operator and every custom one.
///
/// One instance exists per task (per partition), so a processor may keep per-partition
/// state in its fields; the factory given to [`Stream::process`](crate::Stream::process)
/// makes one for each task. Fields are lost on a crash or a rebalance: state that must
/// survive goes in the processor's stores ([`Context::store`]).
pub trait Processor<K, V>: Send + 'static {
    type KeyOut: Clone + Send + 'static;
    type ValueOut: Clone + Send + 'static;

    /// Handles one record. An `Err` sends the *input* record to the topology's error policy
    /// and discards everything forwarded and written for it.
    fn process(
        &mut self,
        record: Record<K, V>,
        ctx: &mut Context<'_, Self::KeyOut, Self::ValueOut>,
    ) -> Result<(), ProcessError>;

    /// Whether this processor only forwards records unchanged or drops them (filter,
    /// peek, merge, a source's own hop), deciding by [`Processor::pass_through`] with a
    /// look at the record in place. The record then crosses it still boxed: such a hop
    /// costs no unboxing and reboxing, so extra pass-through operators stay cheap. A
    /// constant, so that every other processor pays nothing for the check. It takes
    /// effect only when the output types are the input types.
    const PASS_THROUGH: bool = false;

    /// For a [`Processor::PASS_THROUGH`] processor: whether to forward this record
    /// unchanged (`true`) or drop it (`false`); [`Processor::process`] is not called. It
    /// must agree with `process`, which runs wherever the fast path does not.
    fn pass_through(&mut self, _key: &K, _value: &V) -> bool {
        true
    }

    /// Called as wall-clock time passes (every poll loop in production, on
    /// [`TestDriver::advance_wall_clock`](crate::TestDriver::advance_wall_clock) in tests).
    fn on_tick(
        &mut self,
        _now_ms: i64,
        _ctx: &mut Context<'_, Self::KeyOut, Self::ValueOut>,
    ) -> Result<(), ProcessError> {
        Ok(())
    }

    /// How often [`Processor::on_stream_time`] runs, in stream time; `None` (the default):
    /// never. Read once, when the task starts.
    fn stream_time_interval(&self) -> Option<Duration> {
        None
    }

    /// A punctuation on *stream time*, the largest record timestamp the task has seen: it
    /// runs after the first record, then after each record that carries stream time past
    /// the next multiple of [`Processor::stream_time_interval`] (once, however many
    /// multiples it jumped). Event time drives it, so replaying the same input replays the
    /// same punctuations; a partition that receives nothing does not advance it.
    fn on_stream_time(
        &mut self,
        _stream_time_ms: i64,
        _ctx: &mut Context<'_, Self::KeyOut, Self::ValueOut>,
    ) -> Result<(), ProcessError> {
        Ok(())
    }

    /// Called before the task commits: flush what must be durable with this commit. What
    /// it forwards runs through the children at once; what reaches a sink is handed over
    /// with the commit ([`Task::prepare_commit`](crate::Task::prepare_commit)), for the
    /// transaction about to commit. An `Err` fails the commit (the transaction aborts and
    /// the task replays from its last commit).
    fn on_commit(
        &mut self,
        _ctx: &mut Context<'_, Self::KeyOut, Self::ValueOut>,
    ) -> Result<(), ProcessError> {
        Ok(())
    }
}

/// What a processor works through while it handles a record, a punctuation or a commit:
/// its children, the task's stream time, the input being processed, and its stores.
///
/// `K` and `V` are the types the processor forwards.
pub struct Context<'a, K, V> {
    /// Borrowed, not moved in: a hop then costs a pointer, not a copy of the task's side.
    task: &'a mut TaskContext<'a>,
    _marker: PhantomData<fn(K, V)>,
}

impl<'a, K, V> Context<'a, K, V> {
    pub(crate) fn new(task: &'a mut TaskContext<'a>) -> Self {
        Self {
            task,
            _marker: PhantomData,
        }
    }

    /// The task's stream time: the largest timestamp of its input so far, the current
    /// record's included; `None` before the first record with a timestamp. It survives
    /// restarts (see [`Task::resume_stream_time`](crate::Task::resume_stream_time)), so
    /// what is late stays late after a crash.
    pub fn stream_time(&self) -> Option<i64> {
        (self.task.stream_time != i64::MIN).then_some(self.task.stream_time)
    }

    /// Where the input being processed was read: topic, partition and offset. Outside a
    /// record it names the occasion instead: topic `sluice.tick`, `sluice.stream-time` or
    /// `sluice.commit`, the task's partition, and the occasion's sequence number in the
    /// task as the offset (so derived event ids of what it emits stay distinct).
    pub fn origin(&self) -> &Origin {
        &self.task.input.origin
    }

    /// The lineage of the input being processed (event, correlation and causation ids),
    /// as the source read it; empty outside a record. Sinks stamp it on what they write.
    pub fn lineage(&self) -> &Lineage {
        &self.task.input.lineage
    }

    /// The `index`-th state store of the processor, in the order it declared them (see
    /// [`Stream::process_with_stores`](crate::Stream::process_with_stores)). Its writes
    /// commit with the task's transaction and reach the store's changelog; they are
    /// undone with the input if processing it fails.
    ///
    /// # Panics
    /// If the processor declared fewer stores.
    pub fn store(&mut self, index: usize) -> &mut TransactionalStore {
        let declared = self.task.node_stores.len();
        assert!(
            index < declared,
            "store {index} asked for, but the processor declared {declared}: name its stores with Stream::process_with_stores"
        );
        &mut self.task.stores[self.task.node_stores[index]]
    }

    /// The store of the `index`-th global table the processor declared (see
    /// [`ProcessorStores::global_table`](crate::operators::ProcessorStores::global_table)),
    /// read-only: the table's rows as its topic's key and value bytes, every partition.
    ///
    /// # Panics
    /// If the processor declared fewer global tables.
    pub fn global_store(&self, index: usize) -> &GlobalStore {
        let declared = self.task.globals.len();
        assert!(
            index < declared,
            "global table {index} asked for, but the processor declared {declared}: name them with ProcessorStores::global_table"
        );
        &self.task.globals[index]
    }

    /// The number of the next record written for the current input (or punctuation, or
    /// commit), counted over every sink: it numbers derived event ids.
    pub(crate) fn next_output_index(&mut self) -> u32 {
        let index = *self.task.outputs_for_input;
        *self.task.outputs_for_input += 1;
        index
    }

    /// Writes a record to a topic: released with the other outputs of the current input,
    /// only once the input has been handled without error. Crate-private on purpose:
    /// every topic a topology writes is a sink node of the graph, so that validation
    /// (loops, the dead-letter topic), descriptions, internal-topic naming and the
    /// worker's topic checks see it, and so that every record written gets its lineage.
    pub(crate) fn produce(&mut self, record: ProducerRecord) {
        self.task.produced.push(record);
    }
}

impl<K: Clone + Send + 'static, V: Clone + Send + 'static> Context<'_, K, V> {
    /// Sends `record` to every child, cloning it for all but the last.
    pub fn forward(&mut self, record: Record<K, V>) {
        let children = self.task.children;
        let Some((&last, rest)) = children.split_last() else {
            return;
        };
        for &child in rest {
            self.task
                .forwarded
                .push((child, DynRecord::from_typed(record.clone())));
        }
        self.task
            .forwarded
            .push((last, DynRecord::from_typed(record)));
    }

    /// Sends `record` to the child node named `child` only: one branch of a branch node
    /// (`<node>-<branch>`), or any node attached to this processor's stream.
    ///
    /// # Panics
    /// If no child has that name: a record would otherwise vanish without a trace.
    pub fn forward_to(&mut self, child: &str, record: Record<K, V>) {
        let Some(position) = self.task.child_names.iter().position(|n| **n == *child) else {
            panic!(
                "no child named `{child}`: the children are {:?}",
                self.task.child_names
            );
        };
        let index = self.task.children[position];
        self.task
            .forwarded
            .push((index, DynRecord::from_typed(record)));
    }

    /// Forwards a record still boxed (the pass-through fast path): the same box to a
    /// single child, typed clones to several.
    fn forward_boxed(&mut self, record: DynRecord) {
        match self.task.children {
            [only] => self.task.forwarded.push((*only, record)),
            _ => self.forward(record.into_typed::<K, V>()),
        }
    }
}

/// A record between two processors of a task: key and value boxed together as `(K, V)`.
pub(crate) struct DynRecord {
    pub(crate) key_value: Box<dyn Any + Send>,
    pub(crate) headers: Headers,
    pub(crate) timestamp: i64,
}

impl DynRecord {
    pub(crate) fn from_typed<K: Send + 'static, V: Send + 'static>(r: Record<K, V>) -> Self {
        Self {
            key_value: Box::new((r.key, r.value)),
            headers: r.headers,
            timestamp: r.timestamp,
        }
    }

    pub(crate) fn into_typed<K: 'static, V: 'static>(self) -> Record<K, V> {
        let (key, value) = *self
            .key_value
            .downcast::<(K, V)>()
            .expect("the topology builder connects only operators whose types agree");
        Record {
            key,
            value,
            headers: self.headers,
            timestamp: self.timestamp,
        }
    }
}

/// Turns a raw input into the first typed record of a task, with its lineage: what a
/// source node of the graph holds besides its processor.
pub(crate) trait Decoder: Send + Sync {
    fn decode(&self, raw: &RawRecord) -> Result<(DynRecord, Lineage), ProcessError>;
}

/// What the task knows about the input being processed.
pub(crate) struct InputMeta {
    pub(crate) origin: Origin,
    pub(crate) lineage: Lineage,
}

/// The task's side of a [`Context`], type-erased: what the task lends a processor for one
/// call.
pub(crate) struct TaskContext<'a> {
    /// Records forwarded so far, as (child node index, record); the task runs them next.
    pub(crate) forwarded: &'a mut Vec<(usize, DynRecord)>,
    /// This node's children, by node index, in the order they were attached.
    pub(crate) children: &'a [usize],
    /// The children's node names, in the same order.
    pub(crate) child_names: &'a [Arc<str>],
    /// Records bound for topics, produced by sinks while handling this input.
    pub(crate) produced: &'a mut Vec<ProducerRecord>,
    pub(crate) input: &'a InputMeta,
    /// How many records sinks have written for this input so far: numbers derived event ids.
    pub(crate) outputs_for_input: &'a mut u32,
    /// The task's state stores.
    pub(crate) stores: &'a mut [TransactionalStore],
    /// Which of them this node uses, in the order the node declared them.
    pub(crate) node_stores: &'a [usize],
    /// The global stores this node reads, in the order it declared them.
    pub(crate) globals: &'a [Arc<GlobalStore>],
    /// The task's stream time; `i64::MIN` before the first record with a timestamp.
    pub(crate) stream_time: i64,
}

/// A processor as the task runs it: type-erased. [`Adapter`] is its only implementation,
/// so every operator goes through the [`Processor`] contract.
pub(crate) trait DynProcessor: Send {
    fn process(&mut self, record: DynRecord, ctx: TaskContext<'_>) -> Result<(), ProcessError>;

    fn on_tick(&mut self, now_ms: i64, ctx: TaskContext<'_>) -> Result<(), ProcessError>;

    /// Milliseconds of stream time between calls of [`DynProcessor::on_stream_time`];
    /// `None`: never.
    fn stream_time_interval(&self) -> Option<i64>;

    fn on_stream_time(
        &mut self,
        stream_time_ms: i64,
        ctx: TaskContext<'_>,
    ) -> Result<(), ProcessError>;

    fn on_commit(&mut self, ctx: TaskContext<'_>) -> Result<(), ProcessError>;

    /// For an async operator, its calls; `None` for every other processor. The task
    /// starts an async operator's call where it would call [`DynProcessor::process`], and
    /// forwards the call's result to the operator's children once it completes.
    fn as_async(&mut self) -> Option<&mut dyn AsyncCalls> {
        None
    }
}

/// An async operator as the task runs it: it starts one call per record.
pub(crate) trait AsyncCalls: Send {
    /// The operator's options (capacity, timeout, order).
    fn options(&self) -> &crate::operators::AsyncOptions;

    /// Starts the call for `record`; `call` says which input it serves.
    fn start(&mut self, record: DynRecord, call: crate::operators::Call) -> StartedCall;

    /// Forwards a completed call's record to the operator's children.
    fn forward(&mut self, record: DynRecord, ctx: TaskContext<'_>);
}

/// A call an async operator has started: the future of the record it forwards, and the
/// hash of its record's key, which orders it in key-ordered mode.
pub(crate) struct StartedCall {
    pub(crate) key_hash: u64,
    pub(crate) future: std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<DynRecord, ProcessError>> + Send>,
    >,
}

/// Makes a node's processor, one per task.
pub(crate) type ProcessorFactory = Arc<dyn Fn() -> Box<dyn DynProcessor> + Send + Sync>;

/// The factory of a node running the processors that `make` creates, one per task.
pub(crate) fn factory<P, K, V>(make: impl Fn() -> P + Send + Sync + 'static) -> ProcessorFactory
where
    P: Processor<K, V>,
    K: Send + 'static,
    V: Send + 'static,
{
    Arc::new(move || {
        Box::new(Adapter::<P, K, V> {
            processor: make(),
            _marker: PhantomData,
        }) as Box<dyn DynProcessor>
    })
}

/// Runs a typed [`Processor`] as a task node.
struct Adapter<P, K, V> {
    processor: P,
    _marker: PhantomData<fn(K, V)>,
}

impl<P, K, V> Adapter<P, K, V>
where
    P: Processor<K, V>,
    K: 'static,
    V: 'static,
{
    /// Whether records cross the processor still boxed: it says it is a pass-through, and
    /// it forwards the types it takes. Constants only, folded away for each processor type.
    fn passes_through() -> bool {
        P::PASS_THROUGH && TypeId::of::<(K, V)>() == TypeId::of::<(P::KeyOut, P::ValueOut)>()
    }
}

impl<P, K, V> DynProcessor for Adapter<P, K, V>
where
    P: Processor<K, V>,
    K: Send + 'static,
    V: Send + 'static,
{
    fn process(&mut self, record: DynRecord, task: TaskContext<'_>) -> Result<(), ProcessError> {
        // Rebound so that its lifetime may shrink to the borrow the context takes of it.
        let mut task = task;
        let mut ctx: Context<'_, P::KeyOut, P::ValueOut> = Context::new(&mut task);
        if Self::passes_through() {
            let (key, value) = record
                .key_value
                .downcast_ref::<(K, V)>()
                .expect("the topology builder connects only operators whose types agree");
            if self.processor.pass_through(key, value) {
                ctx.forward_boxed(record);
            }
            return Ok(());
        }
        self.processor.process(record.into_typed(), &mut ctx)
    }

    fn on_tick(&mut self, now_ms: i64, task: TaskContext<'_>) -> Result<(), ProcessError> {
        let mut task = task;
        self.processor.on_tick(now_ms, &mut Context::new(&mut task))
    }

    fn stream_time_interval(&self) -> Option<i64> {
        self.processor
            .stream_time_interval()
            .map(|d| millis(d).max(1))
    }

    fn on_stream_time(
        &mut self,
        stream_time_ms: i64,
        task: TaskContext<'_>,
    ) -> Result<(), ProcessError> {
        let mut task = task;
        self.processor
            .on_stream_time(stream_time_ms, &mut Context::new(&mut task))
    }

    fn on_commit(&mut self, task: TaskContext<'_>) -> Result<(), ProcessError> {
        let mut task = task;
        self.processor.on_commit(&mut Context::new(&mut task))
    }
}

/// A duration in whole milliseconds, saturating: `Duration::MAX` means "for ever".
pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
