//! process: a custom operator, written as a [`Processor`].
//!
//! For what the built-in operators do not cover. The factory makes one processor per task
//! (per partition), so fields hold per-partition state; `on_tick` runs as wall-clock time
//! passes and `on_commit` before every commit.
//!
//! ```
//! use sluice_engine::{ProcessError, Record, Serdes, TestDriver, TopologyBuilder};
//! use sluice_engine::operators::{Output, Processor};
//!
//! /// Emits how many records it saw, once per tick.
//! struct Counter { seen: u64 }
//!
//! impl Processor<String, String> for Counter {
//!     type KeyOut = String;
//!     type ValueOut = String;
//!     fn process(&mut self, _r: Record<String, String>, _out: &mut Output<'_, '_, String, String>)
//!         -> Result<(), ProcessError> {
//!         self.seen += 1;
//!         Ok(())
//!     }
//!     fn on_tick(&mut self, now_ms: i64, out: &mut Output<'_, '_, String, String>)
//!         -> Result<(), ProcessError> {
//!         out.forward(Record::new("count".into(), self.seen.to_string(), now_ms));
//!         Ok(())
//!     }
//! }
//!
//! let builder = TopologyBuilder::new("tally");
//! builder
//!     .source("in", &["in"], Serdes::string(), Serdes::string())
//!     .process("counter", || Counter { seen: 0 })
//!     .to("out", "tally", Serdes::string(), Serdes::string());
//! let mut driver = TestDriver::new(builder.build().unwrap());
//! driver.pipe_raw("in", Some(b"a"), Some(b"x")).unwrap();
//! driver.pipe_raw("in", Some(b"b"), Some(b"y")).unwrap();
//! driver.advance_wall_clock(std::time::Duration::from_secs(1)).unwrap();
//!
//! let out = driver.read("tally", &Serdes::string(), &Serdes::string()).unwrap();
//! assert_eq!(out[0].value, "2");
//! ```

use super::Processor;
use crate::topology::Stream;

impl<K, V> Stream<K, V>
where
    K: Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    /// Runs a custom [`Processor`]; `make` creates one per task.
    pub fn process<P, F>(&self, name: &str, make: F) -> Stream<P::KeyOut, P::ValueOut>
    where
        P: Processor<K, V>,
        F: Fn() -> P + Send + Sync + 'static,
    {
        self.add_operator(name, "process", false, make)
    }
}
