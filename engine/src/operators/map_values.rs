//! map_values: turns each record's value into a new value, keeping the key.
//!
//! Because the key is untouched, a later grouping or join by key needs no repartition.
//!
//! ```
//! use sluice_engine::{Serdes, TestDriver, TopologyBuilder};
//!
//! let builder = TopologyBuilder::new("shout");
//! builder
//!     .source("in", &["in"], Serdes::string(), Serdes::string())
//!     .map_values("upper", |v: String| v.to_uppercase())
//!     .to("out", "out", Serdes::string(), Serdes::string());
//! let mut driver = TestDriver::new(builder.build().unwrap());
//! driver.pipe_raw("in", Some(b"k"), Some(b"quiet")).unwrap();
//!
//! let out = driver.read("out", &Serdes::string(), &Serdes::string()).unwrap();
//! assert_eq!((out[0].key.as_str(), out[0].value.as_str()), ("k", "QUIET"));
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
    /// A new value for every record; key, headers and timestamp are kept.
    pub fn map_values<V2, F>(&self, name: &str, f: F) -> Stream<K, V2>
    where
        V2: Clone + Send + 'static,
        F: Fn(V) -> V2 + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.add_processor(name, "map_values", move || MapValues { f: f.clone() })
    }
}

struct MapValues<F> {
    f: Arc<F>,
}

impl<K, V, V2, F> Processor<K, V> for MapValues<F>
where
    K: Clone + Send + 'static,
    V2: Clone + Send + 'static,
    F: Fn(V) -> V2 + Send + Sync + 'static,
{
    type KeyOut = K;
    type ValueOut = V2;

    fn process(
        &mut self,
        record: Record<K, V>,
        ctx: &mut Context<'_, K, V2>,
    ) -> Result<(), ProcessError> {
        let value = (self.f)(record.value);
        ctx.forward(Record {
            key: record.key,
            value,
            headers: record.headers,
            timestamp: record.timestamp,
        });
        Ok(())
    }
}
