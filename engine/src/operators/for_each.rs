//! for_each: a terminal operator that consumes each record.
//!
//! Ends a stream without writing to a topic. Anything it does outside Kafka is not part of
//! the transaction: it may see a record again after a crash, so keep it idempotent.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use sluice_engine::{Serdes, TestDriver, TopologyBuilder};
//!
//! let keys = Arc::new(Mutex::new(Vec::new()));
//! let sink = keys.clone();
//! let builder = TopologyBuilder::new("collect");
//! builder
//!     .source("in", &["in"], Serdes::string(), Serdes::string())
//!     .for_each("remember-key", move |k: String, _v: String| sink.lock().unwrap().push(k));
//! let mut driver = TestDriver::new(builder.build().unwrap());
//! driver.pipe_raw("in", Some(b"a"), Some(b"1")).unwrap();
//! driver.pipe_raw("in", Some(b"b"), Some(b"2")).unwrap();
//!
//! assert_eq!(*keys.lock().unwrap(), ["a", "b"]);
//! ```

use std::sync::Arc;

use super::{Context, Processor};
use crate::error::ProcessError;
use crate::processor;
use crate::record::Record;
use crate::topology::{NodeSpec, Outputs, Stream};

impl<K, V> Stream<K, V>
where
    K: Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    /// Calls `f` on every record; the stream ends here.
    pub fn for_each<F>(&self, name: &str, f: F)
    where
        F: Fn(K, V) + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        let factory = processor::factory::<ForEach<F>, K, V>(move || ForEach { f: f.clone() });
        // The stream ends here: the node needs no children.
        let spec = NodeSpec::processor(name, "for_each", factory).outputs(Outputs::Optional);
        let _: Stream<K, V> = self.add_node(spec);
    }
}

struct ForEach<F> {
    f: Arc<F>,
}

impl<K, V, F> Processor<K, V> for ForEach<F>
where
    K: Clone + Send + 'static,
    V: Clone + Send + 'static,
    F: Fn(K, V) + Send + Sync + 'static,
{
    type KeyOut = K;
    type ValueOut = V;

    fn process(
        &mut self,
        record: Record<K, V>,
        _ctx: &mut Context<'_, K, V>,
    ) -> Result<(), ProcessError> {
        (self.f)(record.key, record.value);
        Ok(())
    }
}
