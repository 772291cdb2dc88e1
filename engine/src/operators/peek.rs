//! peek: looks at each record and passes it on unchanged.
//!
//! For side effects that must not alter the stream: counting, sampling, debugging. The
//! function sees key and value by reference; remember that values are patient data and
//! must not be logged.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use sluice_engine::{Serdes, TestDriver, TopologyBuilder};
//!
//! let seen = Arc::new(AtomicUsize::new(0));
//! let counter = seen.clone();
//! let builder = TopologyBuilder::new("observed");
//! builder
//!     .source("in", &["in"], Serdes::string(), Serdes::string())
//!     .peek("count", move |_k: &String, _v: &String| { counter.fetch_add(1, Ordering::Relaxed); })
//!     .to("out", "out", Serdes::string(), Serdes::string());
//! let mut driver = TestDriver::new(builder.build().unwrap());
//! driver.pipe_raw("in", Some(b"k"), Some(b"v")).unwrap();
//!
//! assert_eq!(seen.load(Ordering::Relaxed), 1);
//! assert_eq!(driver.read_raw("out").len(), 1);
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
    /// Calls `f` on every record and forwards the record unchanged.
    pub fn peek<F>(&self, name: &str, f: F) -> Stream<K, V>
    where
        F: Fn(&K, &V) + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.add_processor(name, "peek", move || Peek { f: f.clone() })
    }
}

struct Peek<F> {
    f: Arc<F>,
}

impl<K, V, F> Processor<K, V> for Peek<F>
where
    K: Clone + Send + 'static,
    V: Clone + Send + 'static,
    F: Fn(&K, &V) + Send + Sync + 'static,
{
    type KeyOut = K;
    type ValueOut = V;

    fn process(
        &mut self,
        record: Record<K, V>,
        ctx: &mut Context<'_, K, V>,
    ) -> Result<(), ProcessError> {
        (self.f)(&record.key, &record.value);
        ctx.forward(record);
        Ok(())
    }

    const PASS_THROUGH: bool = true;

    fn pass_through(&mut self, key: &K, value: &V) -> bool {
        (self.f)(key, value);
        true
    }
}
