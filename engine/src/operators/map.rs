//! map: turns each record's key and value into a new key and value.
//!
//! One record in, one record out; headers and timestamp are kept. Changing the key of a
//! stream that later groups or joins by key will need a repartition, as in Kafka Streams.
//!
//! ```
//! use sluice_engine::{Serdes, TestDriver, TopologyBuilder};
//!
//! let builder = TopologyBuilder::new("rekey");
//! builder
//!     .source("in", &["in"], Serdes::string(), Serdes::string())
//!     .map("swap", |k: String, v: String| (v, k))
//!     .to("out", "out", Serdes::string(), Serdes::string());
//! let mut driver = TestDriver::new(builder.build().unwrap());
//! driver.pipe_raw("in", Some(b"key"), Some(b"value")).unwrap();
//!
//! let out = driver.read("out", &Serdes::string(), &Serdes::string()).unwrap();
//! assert_eq!((out[0].key.as_str(), out[0].value.as_str()), ("value", "key"));
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
    /// A new key and value for every record.
    pub fn map<K2, V2, F>(&self, name: &str, f: F) -> Stream<K2, V2>
    where
        K2: Clone + Send + 'static,
        V2: Clone + Send + 'static,
        F: Fn(K, V) -> (K2, V2) + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.add_processor(name, "map", move || Map { f: f.clone() })
    }
}

struct Map<F> {
    f: Arc<F>,
}

impl<K, V, K2, V2, F> Processor<K, V> for Map<F>
where
    K2: Clone + Send + 'static,
    V2: Clone + Send + 'static,
    F: Fn(K, V) -> (K2, V2) + Send + Sync + 'static,
{
    type KeyOut = K2;
    type ValueOut = V2;

    fn process(
        &mut self,
        record: Record<K, V>,
        ctx: &mut Context<'_, K2, V2>,
    ) -> Result<(), ProcessError> {
        let Record {
            key,
            value,
            headers,
            timestamp,
        } = record;
        let (key, value) = (self.f)(key, value);
        ctx.forward(Record {
            key,
            value,
            headers,
            timestamp,
        });
        Ok(())
    }
}
