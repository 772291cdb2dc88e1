//! Operators: one file each, each adding its method to [`Stream`](crate::Stream).
//!
//! Every operator is a [`Processor`]: it receives one typed record at a time and forwards
//! zero or more records to its children through an [`Output`]. It may also act on the
//! wall clock ([`Processor::on_tick`]) and before a commit ([`Processor::on_commit`]).
//! Topology authors write their own operators the same way and add them with
//! [`Stream::process`](crate::Stream::process).
//!
//! Inside a task, records travel between operators type-erased ([`DynRecord`]), so that one
//! task can hold a graph of operators of different key and value types. The adapter
//! [`ProcessorNode`] downcasts on the way in and boxes on the way out; a mismatch is a bug
//! in the builder, never in user code, because typed [`Stream`](crate::Stream) handles only
//! connect operators whose types agree.
//!
//! Forwarding is depth-first: a record forwarded to several children reaches the first
//! child's whole subtree before the second child sees it, as in Kafka Streams.

mod aggregate;
mod branch;
mod filter;
mod flat_map;
mod for_each;
mod global_join;
mod join;
mod lateness;
mod map;
mod map_values;
mod merge;
mod peek;
mod process;
mod repartition;
mod session;
pub(crate) mod sink;
pub(crate) mod source;
mod stream_join;
mod table;
mod try_map;
mod windowed;

pub use aggregate::GroupedStream;
pub use branch::{BranchBuilder, Branches};
pub use global_join::GlobalTable;
pub use session::{SessionWindowedStream, SessionWindows};
pub use stream_join::{JoinWindows, StreamJoined};
pub use table::Table;
pub use windowed::{TimeWindows, Windowed, WindowedSerde, WindowedStream};

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{ErrorKind, ProcessError};
use crate::lineage::Lineage;
use crate::record::{Headers, Origin, ProducerRecord, Record};
use crate::serde::Serde;
use crate::topology::{NodeFactory, Stream};
use sluice_state::{GlobalStore, TransactionalStore};

impl<K: Send + 'static, V: Send + 'static> Stream<K, V> {
    /// Adds a node running the processors that `make` creates, one per task.
    pub(crate) fn add_operator<P, F>(
        &self,
        name: &str,
        operator: &'static str,
        terminal: bool,
        make: F,
    ) -> Stream<P::KeyOut, P::ValueOut>
    where
        P: Processor<K, V>,
        F: Fn() -> P + Send + Sync + 'static,
    {
        self.add_node(name, operator, terminal, processor_factory::<P, K, V>(make))
    }
}

/// The factory of a node running the processors that `make` creates, one per task.
pub(crate) fn processor_factory<P, K, V>(
    make: impl Fn() -> P + Send + Sync + 'static,
) -> NodeFactory
where
    P: Processor<K, V>,
    K: Send + 'static,
    V: Send + 'static,
{
    Arc::new(move || Box::new(ProcessorNode::<P, K, V>::new(make())) as Box<dyn Node>)
}

/// A record between two operators of a task: key and value boxed together as `(K, V)`.
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

/// What the task knows about the input being processed.
pub(crate) struct InputMeta {
    pub(crate) origin: Origin,
    pub(crate) lineage: Lineage,
}

/// The task-side view an operator node works through while it handles one record.
pub(crate) struct NodeContext<'a> {
    /// Records forwarded so far, as (child node index, record); the task runs them next.
    pub(crate) forwarded: &'a mut Vec<(usize, DynRecord)>,
    /// This node's children, by node index, in the order they were attached.
    pub(crate) children: &'a [usize],
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
    /// The task's stream time: the largest timestamp of its input so far, this record's
    /// included. It survives restarts (see [`Task::resume_stream_time`](crate::Task::resume_stream_time)),
    /// so what is late stays late after a crash.
    pub(crate) stream_time: i64,
}

/// A duration in whole milliseconds, saturating: `Duration::MAX` means "for ever".
pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Encodes a record's key for a store; `None` when it encodes to null (no group, no row).
pub(crate) fn encode_key<K, S: Serde<K> + ?Sized>(
    serde: &S,
    store: &str,
    key: &K,
    what: &str,
) -> Result<Option<Vec<u8>>, ProcessError> {
    serde
        .serialize(store, key)
        .map_err(|e| ProcessError::from_serde(ErrorKind::Serialization, what, e))
}

/// The value a store holds under `key`, decoded.
pub(crate) fn read_value<T, S: Serde<T> + ?Sized>(
    store: &TransactionalStore,
    serde: &S,
    key: &[u8],
    what: &str,
) -> Result<Option<T>, ProcessError> {
    match store.get(key).map_err(ProcessError::state)? {
        Some(bytes) => serde
            .deserialize(store.name(), Some(&bytes))
            .map(Some)
            .map_err(|e| ProcessError::from_serde(ErrorKind::Deserialization, what, e)),
        None => Ok(None),
    }
}

/// Writes `value` under `key`, encoded; a value that encodes to null deletes the key.
pub(crate) fn write_value<T, S: Serde<T> + ?Sized>(
    store: &mut TransactionalStore,
    serde: &S,
    key: &[u8],
    value: &T,
    what: &str,
) -> Result<(), ProcessError> {
    let bytes = serde
        .serialize(store.name(), value)
        .map_err(|e| ProcessError::from_serde(ErrorKind::Serialization, what, e))?;
    match bytes {
        Some(bytes) => store.put(key, bytes),
        None => store.delete(key),
    }
    Ok(())
}

impl NodeContext<'_> {
    /// The node's `index`-th store.
    ///
    /// # Panics
    /// If the node declared fewer stores: a bug in the operator, not in user code.
    pub(crate) fn store(&mut self, index: usize) -> &mut TransactionalStore {
        &mut self.stores[self.node_stores[index]]
    }

    /// Sends a typed record to every child.
    pub(crate) fn forward_typed<K, V>(&mut self, record: Record<K, V>)
    where
        K: Clone + Send + 'static,
        V: Clone + Send + 'static,
    {
        Output {
            ctx: self,
            _marker: PhantomData,
        }
        .forward(record);
    }
}

/// An operator as the task runs it: type-erased.
pub(crate) trait Node: Send {
    fn process(&mut self, record: DynRecord, ctx: &mut NodeContext<'_>)
    -> Result<(), ProcessError>;

    fn tick(&mut self, _now_ms: i64, _ctx: &mut NodeContext<'_>) -> Result<(), ProcessError> {
        Ok(())
    }

    /// Milliseconds of stream time between calls of [`Node::on_stream_time`]; `None`: never.
    fn stream_time_interval(&self) -> Option<i64> {
        None
    }

    fn on_stream_time(
        &mut self,
        _stream_time_ms: i64,
        _ctx: &mut NodeContext<'_>,
    ) -> Result<(), ProcessError> {
        Ok(())
    }

    fn commit(&mut self) -> Result<(), ProcessError> {
        Ok(())
    }
}

/// A typed operator: the one trait behind every built-in operator and every custom one.
///
/// One instance exists per task (per partition), so a processor may keep per-partition
/// state in its fields; the factory given to [`Stream::process`](crate::Stream::process)
/// makes one for each task.
pub trait Processor<K, V>: Send + 'static {
    type KeyOut: Clone + Send + 'static;
    type ValueOut: Clone + Send + 'static;

    /// Handles one record. An `Err` sends the *input* record to the topology's error policy
    /// and discards everything forwarded for it.
    fn process(
        &mut self,
        record: Record<K, V>,
        out: &mut Output<'_, '_, Self::KeyOut, Self::ValueOut>,
    ) -> Result<(), ProcessError>;

    /// Called as wall-clock time passes (every poll loop in production, on
    /// [`TestDriver::advance_wall_clock`](crate::TestDriver::advance_wall_clock) in tests).
    fn on_tick(
        &mut self,
        _now_ms: i64,
        _out: &mut Output<'_, '_, Self::KeyOut, Self::ValueOut>,
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
        _out: &mut Output<'_, '_, Self::KeyOut, Self::ValueOut>,
    ) -> Result<(), ProcessError> {
        Ok(())
    }

    /// Called before the task commits: flush what must be durable with this commit.
    fn on_commit(&mut self) -> Result<(), ProcessError> {
        Ok(())
    }
}

/// Where a processor sends its records: to every child, or to one of them.
pub struct Output<'c, 'a, K, V> {
    ctx: &'c mut NodeContext<'a>,
    _marker: PhantomData<fn(K, V)>,
}

impl<K: Clone + Send + 'static, V: Clone + Send + 'static> Output<'_, '_, K, V> {
    /// Sends `record` to every child, cloning it for all but the last.
    pub fn forward(&mut self, record: Record<K, V>) {
        let children = self.ctx.children;
        let Some((&last, rest)) = children.split_last() else {
            return;
        };
        for &child in rest {
            self.ctx
                .forwarded
                .push((child, DynRecord::from_typed(record.clone())));
        }
        self.ctx
            .forwarded
            .push((last, DynRecord::from_typed(record)));
    }

    /// The `index`-th state store of the processor, in the order given to
    /// [`Stream::process_with_stores`](crate::Stream::process_with_stores). Its writes
    /// commit with the task's transaction and reach the store's changelog; they are
    /// undone with the input if processing it fails.
    ///
    /// # Panics
    /// If the processor declared fewer stores.
    pub fn store(&mut self, index: usize) -> &mut TransactionalStore {
        let declared = self.ctx.node_stores.len();
        assert!(
            index < declared,
            "store {index} asked for, but the processor declared {declared}: name its stores with Stream::process_with_stores"
        );
        self.ctx.store(index)
    }

    /// Sends `record` to the `index`-th child only (in the order children were attached).
    pub(crate) fn forward_to(&mut self, index: usize, record: Record<K, V>) {
        if let Some(&child) = self.ctx.children.get(index) {
            self.ctx
                .forwarded
                .push((child, DynRecord::from_typed(record)));
        }
    }
}

/// A node that forwards records unchanged, or drops them, deciding by a look at the
/// record in place. Pass-through operators (filter, peek, merge, branch outputs, the
/// source's own hop) use it so that a record is not unboxed and boxed again at every hop.
pub(crate) struct PassThroughNode<K, V, F> {
    keep: F,
    _marker: PhantomData<fn(K, V)>,
}

impl<K, V, F> Node for PassThroughNode<K, V, F>
where
    K: Clone + Send + 'static,
    V: Clone + Send + 'static,
    F: FnMut(&K, &V) -> bool + Send,
{
    fn process(
        &mut self,
        record: DynRecord,
        ctx: &mut NodeContext<'_>,
    ) -> Result<(), ProcessError> {
        let (key, value) = record
            .key_value
            .downcast_ref::<(K, V)>()
            .expect("the topology builder connects only operators whose types agree");
        if !(self.keep)(key, value) {
            return Ok(());
        }
        match ctx.children {
            // The common case: hand the same box on.
            [only] => ctx.forwarded.push((*only, record)),
            // Fan-out needs typed clones.
            _ => Output {
                ctx,
                _marker: PhantomData,
            }
            .forward(record.into_typed::<K, V>()),
        }
        Ok(())
    }
}

/// The factory of a pass-through node; `keep` makes its per-task predicate.
pub(crate) fn pass_through<K, V, F>(keep: impl Fn() -> F + Send + Sync + 'static) -> NodeFactory
where
    K: Clone + Send + 'static,
    V: Clone + Send + 'static,
    F: FnMut(&K, &V) -> bool + Send + 'static,
{
    Arc::new(move || {
        Box::new(PassThroughNode::<K, V, F> {
            keep: keep(),
            _marker: PhantomData,
        }) as Box<dyn Node>
    })
}

/// Runs a typed [`Processor`] as a task node.
pub(crate) struct ProcessorNode<P, K, V> {
    processor: P,
    _marker: PhantomData<fn(K, V)>,
}

impl<P, K, V> ProcessorNode<P, K, V> {
    pub(crate) fn new(processor: P) -> Self {
        Self {
            processor,
            _marker: PhantomData,
        }
    }
}

impl<P, K, V> Node for ProcessorNode<P, K, V>
where
    P: Processor<K, V>,
    K: Send + 'static,
    V: Send + 'static,
{
    fn process(
        &mut self,
        record: DynRecord,
        ctx: &mut NodeContext<'_>,
    ) -> Result<(), ProcessError> {
        let mut out = Output {
            ctx,
            _marker: PhantomData,
        };
        self.processor.process(record.into_typed(), &mut out)
    }

    fn tick(&mut self, now_ms: i64, ctx: &mut NodeContext<'_>) -> Result<(), ProcessError> {
        let mut out = Output {
            ctx,
            _marker: PhantomData,
        };
        self.processor.on_tick(now_ms, &mut out)
    }

    fn stream_time_interval(&self) -> Option<i64> {
        self.processor
            .stream_time_interval()
            .map(|d| millis(d).max(1))
    }

    fn on_stream_time(
        &mut self,
        stream_time_ms: i64,
        ctx: &mut NodeContext<'_>,
    ) -> Result<(), ProcessError> {
        let mut out = Output {
            ctx,
            _marker: PhantomData,
        };
        self.processor.on_stream_time(stream_time_ms, &mut out)
    }

    fn commit(&mut self) -> Result<(), ProcessError> {
        self.processor.on_commit()
    }
}
