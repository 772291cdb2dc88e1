//! process: a custom operator, written as a [`Processor`].
//!
//! For what the built-in operators do not cover. The factory makes one processor per task
//! (per partition). Hooks:
//!
//! * `process`, for each record;
//! * `on_stream_time`, a timer on *stream time* (record timestamps) every
//!   `stream_time_interval`: deterministic, so replays punctuate the same way;
//! * `on_tick`, a timer on wall-clock time, every poll loop (about every 100 ms);
//! * `on_commit`, before every commit.
//!
//! Fields of the processor are lost on a crash or a rebalance. State that must survive
//! goes in stores ([`Stream::process_with_stores`], [`Output::store`](super::Output::store)):
//! they commit with the task's transaction and move with the partition.
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

use super::{Processor, processor_factory};
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

    /// Runs a custom [`Processor`] that keeps state in the named stores, reached through
    /// [`Output::store`](super::Output::store) in every hook. Each store gets a changelog
    /// topic and is restored like any other; its name must be unique in the topology.
    pub fn process_with_stores<P, F>(
        &self,
        name: &str,
        stores: &[&str],
        make: F,
    ) -> Stream<P::KeyOut, P::ValueOut>
    where
        P: Processor<K, V>,
        F: Fn() -> P + Send + Sync + 'static,
    {
        self.add_stateful_node(name, "process", stores, processor_factory::<P, K, V>(make))
    }
}
