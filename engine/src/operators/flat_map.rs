//! flat_map: turns each record into zero or more records.
//!
//! Each output keeps the input's headers and timestamp. Outputs are forwarded in the order
//! the function yields them, and each is written with its own derived event id.
//!
//! ```
//! use sluice_engine::{Serdes, TestDriver, TopologyBuilder};
//!
//! let builder = TopologyBuilder::new("split-lines");
//! builder
//!     .source("in", &["batches"], Serdes::string(), Serdes::string())
//!     .flat_map("lines", |k: String, v: String| {
//!         v.lines().map(|line| (k.clone(), line.to_string())).collect::<Vec<_>>()
//!     })
//!     .to("out", "lines", Serdes::string(), Serdes::string());
//! let mut driver = TestDriver::new(builder.build().unwrap());
//! driver.pipe_raw("batches", Some(b"b1"), Some(b"one\ntwo\nthree")).unwrap();
//!
//! let out = driver.read("lines", &Serdes::string(), &Serdes::string()).unwrap();
//! let lines: Vec<&str> = out.iter().map(|r| r.value.as_str()).collect();
//! assert_eq!(lines, ["one", "two", "three"]);
//! ```

use std::sync::Arc;

use super::{Context, Processor};
use crate::error::ProcessError;
use crate::record::Record;
use crate::topology::Stream;

impl<K, V> Stream<K, V>
where
    K: Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    /// Zero or more new records for every record.
    pub fn flat_map<K2, V2, I, F>(&self, name: &str, f: F) -> Stream<K2, V2>
    where
        K2: Clone + Send + 'static,
        V2: Clone + Send + 'static,
        I: IntoIterator<Item = (K2, V2)>,
        F: Fn(K, V) -> I + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.add_processor(name, "flat_map", move || FlatMap { f: f.clone() })
    }
}

struct FlatMap<F> {
    f: Arc<F>,
}

impl<K, V, K2, V2, I, F> Processor<K, V> for FlatMap<F>
where
    K2: Clone + Send + 'static,
    V2: Clone + Send + 'static,
    I: IntoIterator<Item = (K2, V2)>,
    F: Fn(K, V) -> I + Send + Sync + 'static,
{
    type KeyOut = K2;
    type ValueOut = V2;

    fn process(
        &mut self,
        record: Record<K, V>,
        ctx: &mut Context<'_, K2, V2>,
    ) -> Result<(), ProcessError> {
        for (key, value) in (self.f)(record.key, record.value) {
            ctx.forward(Record {
                key,
                value,
                headers: record.headers.clone(),
                timestamp: record.timestamp,
            });
        }
        Ok(())
    }
}
