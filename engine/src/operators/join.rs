//! join_table and left_join_table: each stream record joined with the current value of
//! its key in a [`Table`], looked up when the record is processed.
//!
//! Only stream records produce output; a table update changes what later stream records
//! see, never re-emits earlier joins (stream-table semantics, as in Kafka Streams). The
//! stream and the table's topic must be co-partitioned: the join runs in the table's task,
//! so the worker reads partition p of both in one task and checks at start that their
//! partition counts agree. Within a task, records are joined in the order they are read;
//! a stream record read before its table row is joined with no row.
//!
//! ```
//! use sluice_engine::{Serdes, TestDriver, TopologyBuilder};
//!
//! let builder = TopologyBuilder::new("formulary-check");
//! let formulary = builder.table("formulary", "formulary", "formulary-store", Serdes::string(), Serdes::string());
//! builder
//!     .source("orders", &["orders"], Serdes::string(), Serdes::string())
//!     .left_join_table("with-status", &formulary, |_ndc, order, status| {
//!         format!("{order}: {}", status.unwrap_or_else(|| "not on formulary".into()))
//!     })
//!     .to("out", "checked", Serdes::string(), Serdes::string());
//! let mut driver = TestDriver::new(builder.build().unwrap());
//! driver.pipe_raw("orders", Some(b"ndc-1"), Some(b"order 1")).unwrap();
//! driver.pipe_raw("formulary", Some(b"ndc-1"), Some(b"preferred")).unwrap();
//! driver.pipe_raw("orders", Some(b"ndc-1"), Some(b"order 2")).unwrap();
//!
//! let out = driver.read("checked", &Serdes::string(), &Serdes::string()).unwrap();
//! assert_eq!(out[0].value, "order 1: not on formulary");
//! assert_eq!(out[1].value, "order 2: preferred");
//! ```

use std::marker::PhantomData;
use std::sync::Arc;

use super::table::{Table, TableRef, lookup};
use super::{Context, Processor};
use crate::error::ProcessError;
use crate::processor;
use crate::record::Record;
use crate::topology::{NodeSpec, Stream};

impl<K, V> Stream<K, V>
where
    K: Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Joins each record with its key's row in `table`; records without a row are dropped.
    pub fn join_table<V2, VR, F>(
        &self,
        name: &str,
        table: &Table<K, V2>,
        joiner: F,
    ) -> Stream<K, VR>
    where
        V2: Clone + Send + Sync + 'static,
        VR: Clone + Send + Sync + 'static,
        F: Fn(&K, V, V2) -> VR + Send + Sync + 'static,
    {
        self.join_with(name, "join", table, move |k, v, row| {
            row.map(|row| joiner(k, v, row))
        })
    }

    /// Joins each record with its key's row in `table`, or with `None` when there is none.
    pub fn left_join_table<V2, VR, F>(
        &self,
        name: &str,
        table: &Table<K, V2>,
        joiner: F,
    ) -> Stream<K, VR>
    where
        V2: Clone + Send + Sync + 'static,
        VR: Clone + Send + Sync + 'static,
        F: Fn(&K, V, Option<V2>) -> VR + Send + Sync + 'static,
    {
        self.join_with(name, "left-join", table, move |k, v, row| {
            Some(joiner(k, v, row))
        })
    }

    fn join_with<V2, VR, F>(
        &self,
        name: &str,
        operator: &'static str,
        table: &Table<K, V2>,
        joiner: F,
    ) -> Stream<K, VR>
    where
        V2: Clone + Send + Sync + 'static,
        VR: Clone + Send + Sync + 'static,
        F: Fn(&K, V, Option<V2>) -> Option<VR> + Send + Sync + 'static,
    {
        let shared = Arc::new((TableRef::of(table), joiner));
        let factory = processor::factory::<_, K, V>(move || Join::<K, V, V2, VR, F> {
            shared: shared.clone(),
            _marker: PhantomData,
        });
        // The join reads the table's store, so it runs in the table's sub-topology.
        self.add_node(NodeSpec::processor(name, operator, factory).reads(&table.store))
    }
}

struct Join<K, V, V2, VR, F> {
    shared: Arc<(TableRef<K, V2>, F)>,
    _marker: PhantomData<fn(V) -> VR>,
}

impl<K, V, V2, VR, F> Processor<K, V> for Join<K, V, V2, VR, F>
where
    K: Clone + Send + Sync + 'static,
    V: Send + 'static,
    V2: Send + 'static,
    VR: Clone + Send + Sync + 'static,
    F: Fn(&K, V, Option<V2>) -> Option<VR> + Send + Sync + 'static,
{
    type KeyOut = K;
    type ValueOut = VR;

    fn process(
        &mut self,
        record: Record<K, V>,
        ctx: &mut Context<'_, K, VR>,
    ) -> Result<(), ProcessError> {
        let (table, joiner) = &*self.shared;
        let row = lookup(table, &record.key, ctx)?;
        if let Some(value) = joiner(&record.key, record.value, row) {
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
