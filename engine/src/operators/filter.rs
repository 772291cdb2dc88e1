//! filter: keeps the records a predicate accepts.
//!
//! A record the predicate rejects is dropped silently: filtering is the topology's intent,
//! not an error. (Use `try_map` when a rejected record must reach the dead-letter topic.)
//!
//! ```
//! use sluice_engine::{Serdes, TestDriver, TopologyBuilder};
//!
//! let builder = TopologyBuilder::new("urgent-only");
//! builder
//!     .source("in", &["alerts"], Serdes::string(), Serdes::string())
//!     .filter("urgent", |_k: &String, v: &String| v.starts_with("URGENT"))
//!     .to("out", "alerts.urgent", Serdes::string(), Serdes::string());
//! let mut driver = TestDriver::new(builder.build().unwrap());
//! driver.pipe_raw("alerts", Some(b"1"), Some(b"URGENT: refill")).unwrap();
//! driver.pipe_raw("alerts", Some(b"2"), Some(b"fyi")).unwrap();
//!
//! let out = driver.read("alerts.urgent", &Serdes::string(), &Serdes::string()).unwrap();
//! assert_eq!(out.len(), 1);
//! assert_eq!(out[0].key, "1");
//! assert!(driver.dead_letters().is_empty());
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
    /// Keeps the records for which `predicate` is true.
    pub fn filter<F>(&self, name: &str, predicate: F) -> Stream<K, V>
    where
        F: Fn(&K, &V) -> bool + Send + Sync + 'static,
    {
        let predicate = Arc::new(predicate);
        self.add_processor(name, "filter", move || Filter {
            predicate: predicate.clone(),
        })
    }
}

struct Filter<F> {
    predicate: Arc<F>,
}

impl<K, V, F> Processor<K, V> for Filter<F>
where
    K: Clone + Send + 'static,
    V: Clone + Send + 'static,
    F: Fn(&K, &V) -> bool + Send + Sync + 'static,
{
    type KeyOut = K;
    type ValueOut = V;

    fn process(
        &mut self,
        record: Record<K, V>,
        ctx: &mut Context<'_, K, V>,
    ) -> Result<(), ProcessError> {
        if (self.predicate)(&record.key, &record.value) {
            ctx.forward(record);
        }
        Ok(())
    }

    const PASS_THROUGH: bool = true;

    fn pass_through(&mut self, key: &K, value: &V) -> bool {
        (self.predicate)(key, value)
    }
}
