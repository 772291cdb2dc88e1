//! try_map: a fallible, whole-record transformation.
//!
//! The function sees the whole record (key, value, headers, timestamp) and returns the
//! record to forward, or a [`ProcessError`] that sends the *input* to the topology's error
//! policy — by default to the dead-letter topic, with the error's kind and message in its
//! headers. This is the operator for validation and normalisation, where a bad record must
//! be set aside with a reason rather than dropped or allowed to stop the topology.
//!
//! ```
//! use sluice_engine::{ProcessError, Serdes, TestDriver, TopologyBuilder};
//!
//! let builder = TopologyBuilder::new("doses");
//! builder
//!     .source("in", &["doses"], Serdes::string(), Serdes::string())
//!     .try_map("parse-dose", |r| {
//!         let mg: u32 = r.value.parse().map_err(|_| ProcessError::validation("dose is not a whole number"))?;
//!         Ok(r.with_value(mg))
//!     })
//!     .to("out", "doses.mg", Serdes::string(), sluice_engine::serde::JsonSerde::<u32>::new());
//! let mut driver = TestDriver::new(builder.build().unwrap());
//! driver.pipe_raw("doses", Some(b"a"), Some(b"250")).unwrap();
//! driver.pipe_raw("doses", Some(b"b"), Some(b"lots")).unwrap();
//!
//! assert_eq!(driver.read_raw("doses.mg").len(), 1);
//! let dead = driver.dead_letters();
//! assert_eq!(dead[0].operator, "parse-dose");
//! assert_eq!(dead[0].message, "dose is not a whole number");
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
    /// A fallible transformation of the whole record; an `Err` dead-letters the input.
    pub fn try_map<K2, V2, F>(&self, name: &str, f: F) -> Stream<K2, V2>
    where
        K2: Clone + Send + 'static,
        V2: Clone + Send + 'static,
        F: Fn(Record<K, V>) -> Result<Record<K2, V2>, ProcessError> + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.add_processor(name, "try_map", move || TryMap { f: f.clone() })
    }
}

struct TryMap<F> {
    f: Arc<F>,
}

impl<K, V, K2, V2, F> Processor<K, V> for TryMap<F>
where
    K2: Clone + Send + 'static,
    V2: Clone + Send + 'static,
    F: Fn(Record<K, V>) -> Result<Record<K2, V2>, ProcessError> + Send + Sync + 'static,
{
    type KeyOut = K2;
    type ValueOut = V2;

    fn process(
        &mut self,
        record: Record<K, V>,
        ctx: &mut Context<'_, K2, V2>,
    ) -> Result<(), ProcessError> {
        ctx.forward((self.f)(record)?);
        Ok(())
    }
}
