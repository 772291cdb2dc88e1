//! group_by_key, then count, reduce or aggregate: a running aggregate per key, kept in a
//! state store the topology author names, and emitted as a stream of updates (the
//! changelog stream of the table it builds).
//!
//! The store holds the key and the aggregate in bytes, encoded with the serdes given to
//! `group_by_key` and to the aggregation. Each update is written to the store inside the
//! task's transaction and reaches the store's changelog topic with the same commit as the
//! input's offset and the update's output, so after any crash the counts are exactly
//! those of the committed inputs. A record whose key encodes to null has no group: it is
//! dropped and counted (`reason="null-key"`), as Kafka Streams does.
//!
//! ```
//! use sluice_engine::{Serdes, TestDriver, TopologyBuilder};
//!
//! let builder = TopologyBuilder::new("orders-per-patient");
//! builder
//!     .source("orders", &["orders"], Serdes::string(), Serdes::string())
//!     .group_by_key(Serdes::string(), Serdes::string())
//!     .count("count", "orders-per-patient")
//!     .to("counts", "order-counts", Serdes::string(), Serdes::i64());
//! let mut driver = TestDriver::new(builder.build().unwrap());
//! for patient in ["p1", "p2", "p1"] {
//!     driver.pipe_raw("orders", Some(patient.as_bytes()), Some(b"order")).unwrap();
//! }
//!
//! let counts = driver.read("order-counts", &Serdes::string(), &Serdes::i64()).unwrap();
//! let updates: Vec<(&str, i64)> = counts.iter().map(|r| (r.key.as_str(), r.value)).collect();
//! assert_eq!(updates, [("p1", 1), ("p2", 1), ("p1", 2)]);
//! ```

use std::marker::PhantomData;
use std::sync::Arc;

use super::{Context, Processor, encode_key, read_value, write_value};
use crate::error::ProcessError;
use crate::processor;
use crate::record::Record;
use crate::serde::{I64Serde, Serde, SharedSerde};
use crate::topology::{NodeSpec, Stream};

/// A stream grouped by its key, ready to aggregate.
pub struct GroupedStream<K, V> {
    stream: Stream<K, V>,
    key_serde: Arc<dyn Serde<K>>,
    value_serde: Arc<dyn Serde<V>>,
}

impl<K, V> Clone for GroupedStream<K, V> {
    fn clone(&self) -> Self {
        Self {
            stream: self.stream.clone(),
            key_serde: self.key_serde.clone(),
            value_serde: self.value_serde.clone(),
        }
    }
}

impl<K, V> GroupedStream<K, V> {
    pub(crate) fn stream(&self) -> &Stream<K, V> {
        &self.stream
    }

    pub(crate) fn key_serde(&self) -> Arc<dyn Serde<K>> {
        self.key_serde.clone()
    }
}

impl<K, V> Stream<K, V>
where
    K: Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Groups records by their current key. The serdes encode the key in the store and
    /// changelog, and the value where an aggregation stores values (`reduce`).
    pub fn group_by_key(
        &self,
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
    ) -> GroupedStream<K, V> {
        GroupedStream {
            stream: self.clone(),
            key_serde: Arc::new(key_serde),
            value_serde: Arc::new(value_serde),
        }
    }
}

impl<K, V> Stream<K, V>
where
    K: Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Groups records by a new key, `key_of(key, value)`: the stream is re-keyed (node
    /// `name`) and [repartitioned](Stream::repartition) through the internal topic
    /// `<application.id>-<name>-repartition`, so each group is aggregated in one task.
    /// The serdes encode the new key and the value on that topic and in the stores.
    pub fn group_by<K2, F>(
        &self,
        name: &str,
        key_of: F,
        key_serde: impl Serde<K2>,
        value_serde: impl Serde<V>,
    ) -> GroupedStream<K2, V>
    where
        K2: Clone + Send + Sync + 'static,
        F: Fn(&K, &V) -> K2 + Send + Sync + 'static,
    {
        let key_serde: Arc<dyn Serde<K2>> = Arc::new(key_serde);
        let value_serde: Arc<dyn Serde<V>> = Arc::new(value_serde);
        let rekeyed = self
            .map(name, move |k, v| (key_of(&k, &v), v))
            .repartition_shared(name, key_serde.clone(), value_serde.clone());
        GroupedStream {
            stream: rekeyed,
            key_serde,
            value_serde,
        }
    }
}

impl<K, V> GroupedStream<K, V>
where
    K: Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The number of records per key so far.
    pub fn count(&self, name: &str, store: &str) -> Stream<K, i64> {
        self.aggregate_with(name, "count", store, || 0, |_, _, n| n + 1, I64Serde)
    }

    /// Combines each record's value with the key's aggregate so far; the first value of a
    /// key is its aggregate.
    pub fn reduce<F>(&self, name: &str, store: &str, reducer: F) -> Stream<K, V>
    where
        F: Fn(V, V) -> V + Send + Sync + 'static,
    {
        let serde = SharedSerde(self.value_serde.clone());
        let reducer = Arc::new(reducer);
        self.aggregate_optional(
            name,
            "reduce",
            store,
            serde,
            move |_, value, current| match current {
                Some(current) => reducer(current, value),
                None => value,
            },
        )
    }

    /// Folds each record into the key's aggregate, starting from `initial()`.
    pub fn aggregate<A, I, F>(
        &self,
        name: &str,
        store: &str,
        initial: I,
        fold: F,
        aggregate_serde: impl Serde<A>,
    ) -> Stream<K, A>
    where
        A: Clone + Send + Sync + 'static,
        I: Fn() -> A + Send + Sync + 'static,
        F: Fn(&K, V, A) -> A + Send + Sync + 'static,
    {
        self.aggregate_with(name, "aggregate", store, initial, fold, aggregate_serde)
    }

    fn aggregate_with<A, I, F>(
        &self,
        name: &str,
        operator: &'static str,
        store: &str,
        initial: I,
        fold: F,
        aggregate_serde: impl Serde<A>,
    ) -> Stream<K, A>
    where
        A: Clone + Send + Sync + 'static,
        I: Fn() -> A + Send + Sync + 'static,
        F: Fn(&K, V, A) -> A + Send + Sync + 'static,
    {
        self.aggregate_optional(
            name,
            operator,
            store,
            aggregate_serde,
            move |k, v, current| fold(k, v, current.unwrap_or_else(&initial)),
        )
    }

    fn aggregate_optional<A, F>(
        &self,
        name: &str,
        operator: &'static str,
        store: &str,
        aggregate_serde: impl Serde<A>,
        fold: F,
    ) -> Stream<K, A>
    where
        A: Clone + Send + Sync + 'static,
        F: Fn(&K, V, Option<A>) -> A + Send + Sync + 'static,
    {
        let shared = Arc::new(Aggregation {
            store: Arc::from(store),
            key_serde: self.key_serde.clone(),
            aggregate_serde,
            fold,
            _marker: PhantomData,
        });
        let topology = self.stream.topology_name();
        let node = name.to_string();
        let factory = processor::factory::<_, K, V>(move || Aggregate {
            shared: shared.clone(),
            null_keys: crate::metrics::dropped(&topology, &node, "null-key"),
        });
        let spec = NodeSpec::processor(name, operator, factory).stores(&[store]);
        self.stream.add_node(spec)
    }
}

/// What every task's instance of one aggregation shares.
struct Aggregation<K, V, A, S, F> {
    store: Arc<str>,
    key_serde: Arc<dyn Serde<K>>,
    aggregate_serde: S,
    fold: F,
    _marker: PhantomData<fn(V) -> A>,
}

struct Aggregate<K, V, A, S, F> {
    shared: Arc<Aggregation<K, V, A, S, F>>,
    null_keys: metrics::Counter,
}

impl<K, V, A, S, F> Processor<K, V> for Aggregate<K, V, A, S, F>
where
    K: Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
    A: Clone + Send + Sync + 'static,
    S: Serde<A>,
    F: Fn(&K, V, Option<A>) -> A + Send + Sync + 'static,
{
    type KeyOut = K;
    type ValueOut = A;

    fn process(
        &mut self,
        record: Record<K, V>,
        ctx: &mut Context<'_, K, A>,
    ) -> Result<(), ProcessError> {
        let shared = &*self.shared;
        let Some(key) = encode_key(&*shared.key_serde, &shared.store, &record.key, "group key")?
        else {
            self.null_keys.increment(1);
            return Ok(());
        };
        let store = ctx.store(0);
        let current = read_value(store, &shared.aggregate_serde, &key, "stored aggregate")?;
        let next = (shared.fold)(&record.key, record.value, current);
        write_value(store, &shared.aggregate_serde, &key, &next, "aggregate")?;
        ctx.forward(Record {
            key: record.key,
            value: next,
            headers: record.headers,
            timestamp: record.timestamp,
        });
        Ok(())
    }
}
