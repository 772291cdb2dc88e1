//! table: a topic read as a table (a KTable): the latest value of each key, kept in a
//! named state store, that joins look records up in.
//!
//! Each record of the topic sets its key's value; a record with a null value (a
//! tombstone) deletes the key. The store has its own changelog like every store, so a
//! task's table is restored from the checkpoint rather than by re-reading the topic. The
//! table is partitioned like its topic: a stream joined with it must be co-partitioned with
//! the topic (same key, same partition count), which the worker checks at start.
//!
//! ```
//! use sluice_engine::{Serdes, TestDriver, TopologyBuilder};
//!
//! let builder = TopologyBuilder::new("label-orders");
//! let drugs = builder.table("drugs", "drug-names", "drug-names-store", Serdes::string(), Serdes::string());
//! builder
//!     .source("orders", &["orders"], Serdes::string(), Serdes::string())
//!     .join_table("with-name", &drugs, |_ndc, order, name| format!("{order}: {name}"))
//!     .to("out", "labelled", Serdes::string(), Serdes::string());
//! let mut driver = TestDriver::new(builder.build().unwrap());
//! driver.pipe_raw("drug-names", Some(b"00071015523"), Some(b"atorvastatin 20 mg")).unwrap();
//! driver.pipe_raw("orders", Some(b"00071015523"), Some(b"order 1")).unwrap();
//!
//! let out = driver.read("labelled", &Serdes::string(), &Serdes::string()).unwrap();
//! assert_eq!(out[0].value, "order 1: atorvastatin 20 mg");
//! ```

use std::marker::PhantomData;
use std::sync::Arc;

use super::{Context, Processor, encode_key, read_value, write_value};
use crate::error::ProcessError;
use crate::processor;
use crate::record::Record;
use crate::serde::{OptionalSerde, Serde, SharedSerde};
use crate::topology::{NodeSpec, Outputs, Stream, TopologyBuilder};

/// A table: the latest value per key of a topic, in a named store.
pub struct Table<K, V> {
    pub(crate) updates: Stream<K, Option<V>>,
    pub(crate) store: String,
    pub(crate) key_serde: Arc<dyn Serde<K>>,
    pub(crate) value_serde: Arc<dyn Serde<V>>,
}

impl<K, V> Table<K, V> {
    /// The store holding the table.
    pub fn store_name(&self) -> &str {
        &self.store
    }

    /// The table's updates as a stream: each row as it is set, `None` when deleted.
    pub fn to_stream(&self) -> Stream<K, Option<V>> {
        self.updates.clone()
    }
}

impl TopologyBuilder {
    /// Reads `topic` as a table kept in `store`. The node is named `name`; its source is
    /// `<name>-source`.
    pub fn table<K, V>(
        &self,
        name: &str,
        topic: &str,
        store: &str,
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
    ) -> Table<K, V>
    where
        K: Clone + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
    {
        let key_serde: Arc<dyn Serde<K>> = Arc::new(key_serde);
        let value_serde: Arc<dyn Serde<V>> = Arc::new(value_serde);
        let source = self.source(
            &format!("{name}-source"),
            &[topic],
            SharedSerde(key_serde.clone()),
            OptionalSerde::new(SharedSerde(value_serde.clone())),
        );
        let shared = Arc::new(MaterializeShared {
            store: Arc::from(store),
            key_serde: key_serde.clone(),
            value_serde: value_serde.clone(),
        });
        let factory = processor::factory::<_, K, Option<V>>(move || Materialize {
            shared: shared.clone(),
        });
        // A table needs no consumer of its updates: joins read its store.
        let spec = NodeSpec::processor(name, "table", factory)
            .outputs(Outputs::Optional)
            .stores(&[store]);
        let updates = source.add_node(spec);
        Table {
            updates,
            store: store.to_string(),
            key_serde,
            value_serde,
        }
    }
}

struct MaterializeShared<K, V> {
    store: Arc<str>,
    key_serde: Arc<dyn Serde<K>>,
    value_serde: Arc<dyn Serde<V>>,
}

/// Writes each update of a table to its store, and forwards it as the table's stream.
struct Materialize<K, V> {
    shared: Arc<MaterializeShared<K, V>>,
}

impl<K, V> Processor<K, Option<V>> for Materialize<K, V>
where
    K: Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    type KeyOut = K;
    type ValueOut = Option<V>;

    fn process(
        &mut self,
        record: Record<K, Option<V>>,
        ctx: &mut Context<'_, K, Option<V>>,
    ) -> Result<(), ProcessError> {
        let shared = &*self.shared;
        let Some(key) = encode_key(&*shared.key_serde, &shared.store, &record.key, "table key")?
        else {
            // A null key has no row: Kafka Streams ignores such table records too.
            return Ok(());
        };
        let store = ctx.store(0);
        match &record.value {
            Some(value) => write_value(store, &*shared.value_serde, &key, value, "table value")?,
            None => store.delete(&key),
        }
        ctx.forward(record);
        Ok(())
    }
}

/// Looks a key up in a table's store, as a joining node of the same task sees it (the
/// store it reads is its first).
pub(crate) fn lookup<K: 'static, V: 'static, KO, VO>(
    table: &TableRef<K, V>,
    key: &K,
    ctx: &mut Context<'_, KO, VO>,
) -> Result<Option<V>, ProcessError> {
    let Some(key) = encode_key(&*table.key_serde, &table.store, key, "join key")? else {
        return Ok(None);
    };
    read_value(ctx.store(0), &*table.value_serde, &key, "table value")
}

/// What a joining node keeps of a table: its store's name and serdes.
pub(crate) struct TableRef<K, V> {
    pub(crate) store: Arc<str>,
    pub(crate) key_serde: Arc<dyn Serde<K>>,
    pub(crate) value_serde: Arc<dyn Serde<V>>,
    _marker: PhantomData<fn() -> V>,
}

impl<K, V> TableRef<K, V> {
    pub(crate) fn of(table: &Table<K, V>) -> Self {
        Self {
            store: Arc::from(table.store.as_str()),
            key_serde: table.key_serde.clone(),
            value_serde: table.value_serde.clone(),
            _marker: PhantomData,
        }
    }
}
