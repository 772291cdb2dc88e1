//! Operators: one file each, each adding its method to [`Stream`].
//!
//! Every operator is a [`Processor`], the one contract of [`processor`]:
//! stateless ones (`map`, `filter`, ...), the stateful ones (aggregations, windows,
//! sessions, joins, tables), sources and sinks alike. Each operator's method builds a node
//! spec around its processor and adds it through the graph's narrow builder API
//! ([`Stream`] and [`TopologyBuilder`](crate::TopologyBuilder) methods
//! taking a `NodeSpec`), so operators never touch the graph's edges or its list of
//! problems. Topology authors write their own operators the same way and add them with
//! [`Stream::process`](crate::Stream::process) and
//! [`Stream::process_with_stores`](crate::Stream::process_with_stores).
//!
//! Operators that forward records unchanged or drop them (filter, peek, merge, branch
//! outputs, a source's own hop) are [`Processor::PASS_THROUGH`]: a record crosses them
//! still boxed, so an extra hop costs a look at the record, not an unbox and a rebox.

mod aggregate;
mod branch;
mod dead_letter_sink;
mod enrich;
mod filter;
mod flat_map;
mod for_each;
mod global_join;
mod join;
mod lateness;
mod map;
mod map_async;
mod map_values;
mod merge;
mod peek;
mod process;
mod repartition;
mod session;
mod sink;
mod source;
mod stream_join;
mod table;
mod try_map;
mod windowed;

pub use crate::processor::{Context, Processor};
pub use aggregate::GroupedStream;
pub use branch::{BranchBuilder, Branches};
pub use global_join::GlobalTable;
pub use map_async::{AsyncOptions, AsyncOrder, Call};
pub use process::ProcessorStores;
pub use session::{SessionWindowedStream, SessionWindows};
pub use stream_join::{JoinWindows, StreamJoined};
pub use table::Table;
pub use windowed::{TimeWindows, Windowed, WindowedSerde};

use std::marker::PhantomData;

use crate::error::{ErrorKind, ProcessError};
pub(crate) use crate::processor::millis;
use crate::processor::{self, ProcessorFactory};
use crate::record::Record;
use crate::serde::Serde;
use crate::topology::{NodeSpec, Stream};
use sluice_state::TransactionalStore;

impl<K: Send + 'static, V: Send + 'static> Stream<K, V> {
    /// Adds a node running the processors that `make` creates, one per task, whose output
    /// must go somewhere.
    pub(crate) fn add_processor<P, F>(
        &self,
        name: &str,
        operator: &'static str,
        make: F,
    ) -> Stream<P::KeyOut, P::ValueOut>
    where
        P: Processor<K, V>,
        F: Fn() -> P + Send + Sync + 'static,
    {
        self.add_node(NodeSpec::processor(
            name,
            operator,
            processor::factory::<P, K, V>(make),
        ))
    }
}

/// Forwards every record unchanged: the processor of sources, merges and branch outputs.
/// A [`Processor::PASS_THROUGH`] processor (whose default `pass_through` keeps every
/// record), so the record is never unboxed on the way.
pub(crate) struct Relay<K, V>(PhantomData<fn(K, V)>);

impl<K, V> Relay<K, V>
where
    K: Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    pub(crate) fn factory() -> ProcessorFactory {
        processor::factory::<Self, K, V>(|| Relay(PhantomData))
    }
}

impl<K, V> Processor<K, V> for Relay<K, V>
where
    K: Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    type KeyOut = K;
    type ValueOut = V;

    fn process(
        &mut self,
        record: Record<K, V>,
        ctx: &mut Context<'_, K, V>,
    ) -> Result<(), ProcessError> {
        ctx.forward(record);
        Ok(())
    }

    const PASS_THROUGH: bool = true;
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
