//! global_table, then join_global and left_join_global: each stream record joined with a
//! row of a table that every worker holds whole, found by a key taken from the record.
//!
//! A [`GlobalTable`] reads every partition of its topic into a store of its own on every
//! worker (see [`sluice_state::GlobalStore`]). Before a worker starts its stream threads it
//! reads each partition to its end, so the first records already see the table; after
//! that a thread of the worker follows the topic. Because every task sees every row, the
//! stream needs no co-partitioning with the table and the lookup key may be anything the
//! record holds: an order joins drug reference data by its drug code, not by its own key.
//!
//! The store holds each row as the topic's key and value bytes; a lookup encodes the
//! extracted key with the table's key serde, so producers of the topic must encode keys
//! the same way. Updates to the table reach lookups soon after they are committed to the
//! topic, not in step with the stream: it is reference data, not a changelog.
//!
//! ```
//! use sluice_engine::{Serdes, TestDriver, TopologyBuilder};
//!
//! let builder = TopologyBuilder::new("order-enrichment");
//! let drugs = builder.global_table("drugs", "drug-reference", "drugs-store", Serdes::string(), Serdes::string());
//! builder
//!     .source("orders", &["orders"], Serdes::string(), Serdes::string())
//!     // An order's value is its drug code here; its key is the order id.
//!     .left_join_global("with-drug", &drugs, |_order, ndc| ndc.clone(), |_order, ndc, drug| {
//!         format!("{ndc}: {}", drug.unwrap_or_else(|| "unknown drug".into()))
//!     })
//!     .to("out", "enriched-orders", Serdes::string(), Serdes::string());
//! let mut driver = TestDriver::new(builder.build().unwrap());
//! driver.pipe_raw("drug-reference", Some(b"ndc-1"), Some(b"amoxicillin 500 mg")).unwrap();
//! driver.pipe_raw("orders", Some(b"order-1"), Some(b"ndc-1")).unwrap();
//! driver.pipe_raw("orders", Some(b"order-2"), Some(b"ndc-9")).unwrap();
//!
//! let out = driver.read("enriched-orders", &Serdes::string(), &Serdes::string()).unwrap();
//! assert_eq!(out[0].value, "ndc-1: amoxicillin 500 mg");
//! assert_eq!(out[1].value, "ndc-9: unknown drug");
//! ```

use std::marker::PhantomData;
use std::sync::Arc;

use super::{Context, Processor};
use crate::error::{ErrorKind, ProcessError};
use crate::processor;
use crate::record::Record;
use crate::serde::Serde;
use crate::topology::{GlobalTableDef, NodeSpec, Stream, TopologyBuilder};

/// A table every worker holds whole: the latest value per key of every partition of a
/// topic.
pub struct GlobalTable<K, V> {
    topic: Arc<str>,
    store: String,
    key_serde: Arc<dyn Serde<K>>,
    value_serde: Arc<dyn Serde<V>>,
}

impl<K, V> Clone for GlobalTable<K, V> {
    fn clone(&self) -> Self {
        Self {
            topic: self.topic.clone(),
            store: self.store.clone(),
            key_serde: self.key_serde.clone(),
            value_serde: self.value_serde.clone(),
        }
    }
}

impl<K, V> GlobalTable<K, V> {
    /// The store holding the table.
    pub fn store_name(&self) -> &str {
        &self.store
    }
}

impl TopologyBuilder {
    /// Reads every partition of `topic` as a global table, kept in `store` on every
    /// worker. The serdes encode lookup keys and decode rows.
    pub fn global_table<K, V>(
        &self,
        name: &str,
        topic: &str,
        store: &str,
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
    ) -> GlobalTable<K, V> {
        self.add_global(GlobalTableDef {
            name: name.to_string(),
            topic: topic.to_string(),
            store: store.to_string(),
        });
        GlobalTable {
            topic: Arc::from(topic),
            store: store.to_string(),
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
    /// Joins each record with the row of `table` under `key_of(record)`; records without a
    /// row are dropped.
    pub fn join_global<GK, GV, VR, KF, F>(
        &self,
        name: &str,
        table: &GlobalTable<GK, GV>,
        key_of: KF,
        joiner: F,
    ) -> Stream<K, VR>
    where
        GK: 'static,
        GV: Send + 'static,
        VR: Clone + Send + Sync + 'static,
        KF: Fn(&K, &V) -> GK + Send + Sync + 'static,
        F: Fn(&K, V, GV) -> VR + Send + Sync + 'static,
    {
        self.global_join_with(name, "join-global", table, key_of, move |k, v, row| {
            row.map(|row| joiner(k, v, row))
        })
    }

    /// Joins each record with the row of `table` under `key_of(record)`, or with `None`
    /// when there is none.
    pub fn left_join_global<GK, GV, VR, KF, F>(
        &self,
        name: &str,
        table: &GlobalTable<GK, GV>,
        key_of: KF,
        joiner: F,
    ) -> Stream<K, VR>
    where
        GK: 'static,
        GV: Send + 'static,
        VR: Clone + Send + Sync + 'static,
        KF: Fn(&K, &V) -> GK + Send + Sync + 'static,
        F: Fn(&K, V, Option<GV>) -> VR + Send + Sync + 'static,
    {
        self.global_join_with(name, "left-join-global", table, key_of, move |k, v, row| {
            Some(joiner(k, v, row))
        })
    }

    fn global_join_with<GK, GV, VR, KF, F>(
        &self,
        name: &str,
        operator: &'static str,
        table: &GlobalTable<GK, GV>,
        key_of: KF,
        joiner: F,
    ) -> Stream<K, VR>
    where
        GK: 'static,
        GV: Send + 'static,
        VR: Clone + Send + Sync + 'static,
        KF: Fn(&K, &V) -> GK + Send + Sync + 'static,
        F: Fn(&K, V, Option<GV>) -> Option<VR> + Send + Sync + 'static,
    {
        let shared = Arc::new(GlobalJoinShared {
            table: table.clone(),
            key_of,
            joiner,
        });
        let factory =
            processor::factory::<_, K, V>(move || GlobalJoin::<K, V, GK, GV, VR, KF, F> {
                shared: shared.clone(),
                _marker: PhantomData,
            });
        self.add_node(NodeSpec::processor(name, operator, factory).globals(&[&table.store]))
    }
}

struct GlobalJoinShared<GK, GV, KF, F> {
    table: GlobalTable<GK, GV>,
    key_of: KF,
    joiner: F,
}

struct GlobalJoin<K, V, GK, GV, VR, KF, F> {
    shared: Arc<GlobalJoinShared<GK, GV, KF, F>>,
    _marker: PhantomData<fn(K, V) -> VR>,
}

impl<K, V, GK, GV, VR, KF, F> Processor<K, V> for GlobalJoin<K, V, GK, GV, VR, KF, F>
where
    K: Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    GK: 'static,
    GV: Send + 'static,
    VR: Clone + Send + Sync + 'static,
    KF: Fn(&K, &V) -> GK + Send + Sync + 'static,
    F: Fn(&K, V, Option<GV>) -> Option<VR> + Send + Sync + 'static,
{
    type KeyOut = K;
    type ValueOut = VR;

    fn process(
        &mut self,
        record: Record<K, V>,
        ctx: &mut Context<'_, K, VR>,
    ) -> Result<(), ProcessError> {
        let shared = &*self.shared;
        let table = &shared.table;
        let lookup = (shared.key_of)(&record.key, &record.value);
        let key = table
            .key_serde
            .serialize(&table.topic, &lookup)
            .map_err(|e| {
                ProcessError::from_serde(ErrorKind::Serialization, "global table key", e)
            })?;
        let row = match key {
            Some(key) => match ctx.global_store(0).get(&key).map_err(ProcessError::state)? {
                Some(bytes) => Some(
                    table
                        .value_serde
                        .deserialize(&table.topic, Some(&bytes))
                        .map_err(|e| {
                            ProcessError::from_serde(
                                ErrorKind::Deserialization,
                                "global table row",
                                e,
                            )
                        })?,
                ),
                None => None,
            },
            // A key that encodes to null has no row.
            None => None,
        };
        if let Some(value) = (shared.joiner)(&record.key, record.value, row) {
            ctx.forward(Record {
                key: record.key,
                value,
                headers: record.headers,
                timestamp: record.timestamp,
            });
        }
        Ok(())
    }
}
