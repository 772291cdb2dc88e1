//! process: a custom operator, written as a [`Processor`] like every built-in one.
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
//! Each hook works through a [`Context`](super::Context): it forwards records (to every
//! child, or to one by name), reads the task's stream time and the current input's origin
//! and lineage, and reaches the stores the processor declared with
//! [`Stream::process_with_stores`]: stores of its own and global tables
//! ([`ProcessorStores`]). What a hook forwards flows on like any record; from
//! `on_commit`, it is handed over with the commit
//! ([`Task::prepare_commit`](crate::Task::prepare_commit)).
//!
//! Fields of the processor are lost on a crash or a rebalance. State that must survive
//! goes in its own stores: they commit with the task's transaction and move with the
//! partition.
//!
//! ```
//! use std::ops::Bound;
//! use std::time::Duration;
//! use sluice_engine::operators::{Context, Processor};
//! use sluice_engine::{Headers, ProcessError, Record, Serdes, TestDriver, TopologyBuilder};
//!
//! /// Counts doses per patient in its store; flags a dose more than a minute behind stream
//! /// time, naming where it was read; reports every count each hour of stream time; and on
//! /// each commit says how many doses went by since the last one.
//! struct DoseCounter {
//!     since_commit: u64,
//! }
//!
//! fn count(bytes: Option<Vec<u8>>) -> u64 {
//!     bytes.map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap()))
//! }
//!
//! impl Processor<String, String> for DoseCounter {
//!     type KeyOut = String;
//!     type ValueOut = String;
//!
//!     fn process(
//!         &mut self,
//!         dose: Record<String, String>,
//!         ctx: &mut Context<'_, String, String>,
//!     ) -> Result<(), ProcessError> {
//!         self.since_commit += 1;
//!         let store = ctx.store(0);
//!         let n = count(store.get(dose.key.as_bytes()).map_err(ProcessError::state)?);
//!         store.put(dose.key.as_bytes(), (n + 1).to_be_bytes().to_vec());
//!         if ctx.stream_time().is_some_and(|now| dose.timestamp < now - 60_000) {
//!             let from = ctx.origin();
//!             let note = format!("late dose, read at {}/{}@{}", from.topic, from.partition, from.offset);
//!             ctx.forward(Record::new(dose.key, note, dose.timestamp));
//!         }
//!         Ok(())
//!     }
//!
//!     fn stream_time_interval(&self) -> Option<Duration> {
//!         Some(Duration::from_secs(3600))
//!     }
//!
//!     fn on_stream_time(
//!         &mut self,
//!         now_ms: i64,
//!         ctx: &mut Context<'_, String, String>,
//!     ) -> Result<(), ProcessError> {
//!         let counts: Vec<(Vec<u8>, Vec<u8>)> = ctx
//!             .store(0)
//!             .range(Bound::Unbounded, Bound::Unbounded)
//!             .collect::<Result<_, _>>()
//!             .map_err(ProcessError::state)?;
//!         for (patient, n) in counts {
//!             let patient = String::from_utf8(patient).unwrap();
//!             ctx.forward(Record::new(patient, format!("{} doses", count(Some(n))), now_ms));
//!         }
//!         Ok(())
//!     }
//!
//!     fn on_commit(&mut self, ctx: &mut Context<'_, String, String>) -> Result<(), ProcessError> {
//!         if self.since_commit > 0 {
//!             let note = format!("{} doses since the last commit", self.since_commit);
//!             ctx.forward(Record::new("all".into(), note, ctx.stream_time().unwrap_or(0)));
//!             self.since_commit = 0;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let builder = TopologyBuilder::new("doses");
//! builder
//!     .source("in", &["doses"], Serdes::string(), Serdes::string())
//!     .process_with_stores("count", &["doses-per-patient"], || DoseCounter { since_commit: 0 })
//!     .to("out", "dose-reports", Serdes::string(), Serdes::string());
//! let mut driver = TestDriver::new(builder.build().unwrap());
//! let s = Serdes::string();
//! let minute = 60_000;
//! for (patient, at) in [("p1", 0), ("p1", 30 * minute), ("p2", 61 * minute), ("p1", 10 * minute)] {
//!     let dose = Record { key: patient.to_string(), value: "5 mg".to_string(), headers: Headers::new(), timestamp: at };
//!     driver.pipe("doses", &s, &s, &dose).unwrap();
//! }
//! driver.commit().unwrap();
//!
//! let reports: Vec<String> = driver.read("dose-reports", &s, &s).unwrap()
//!     .into_iter().map(|r| format!("{}: {}", r.key, r.value)).collect();
//! assert_eq!(reports, [
//!     "p1: 1 doses",                              // the first record starts stream time
//!     "p1: 2 doses", "p2: 1 doses",               // an hour of stream time later
//!     "p1: late dose, read at doses/0@3",
//!     "all: 4 doses since the last commit",
//! ]);
//! ```

use super::{GlobalTable, Processor};
use crate::processor;
use crate::topology::{NodeSpec, Stream};

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
        self.add_processor(name, "process", make)
    }

    /// Runs a custom [`Processor`] that uses stores: its own, reached through
    /// [`Context::store`](super::Context::store) in every hook, and global tables, read
    /// through [`Context::global_store`](super::Context::global_store). Each store of its
    /// own gets a changelog topic and is restored like any other; its name must be unique
    /// in the topology. `stores` is a [`ProcessorStores`], or just the names of the
    /// processor's own stores (`&["counts"]`).
    pub fn process_with_stores<P, F>(
        &self,
        name: &str,
        stores: impl Into<ProcessorStores>,
        make: F,
    ) -> Stream<P::KeyOut, P::ValueOut>
    where
        P: Processor<K, V>,
        F: Fn() -> P + Send + Sync + 'static,
    {
        let ProcessorStores { own, global } = stores.into();
        let own: Vec<&str> = own.iter().map(String::as_str).collect();
        let global: Vec<&str> = global.iter().map(String::as_str).collect();
        let factory = processor::factory::<P, K, V>(make);
        let spec = NodeSpec::processor(name, "process", factory)
            .stores(&own)
            .globals(&global);
        self.add_node(spec)
    }
}

/// The stores a custom processor declares: stores of its own, which it reads and writes
/// (each with a changelog, restored after a crash), and global tables, which it reads.
/// Each kind is reached by index, in the order declared here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessorStores {
    own: Vec<String>,
    global: Vec<String>,
}

impl ProcessorStores {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store of the processor's own: [`Context::store`](super::Context::store)`(i)` for
    /// the i-th one declared.
    pub fn store(mut self, name: &str) -> Self {
        self.own.push(name.to_string());
        self
    }

    /// A global table the processor reads:
    /// [`Context::global_store`](super::Context::global_store)`(i)` for the i-th one
    /// declared.
    pub fn global_table<GK, GV>(mut self, table: &GlobalTable<GK, GV>) -> Self {
        self.global.push(table.store_name().to_string());
        self
    }
}

impl From<&[&str]> for ProcessorStores {
    fn from(own: &[&str]) -> Self {
        own.iter()
            .fold(ProcessorStores::new(), |stores, name| stores.store(name))
    }
}

impl<const N: usize> From<&[&str; N]> for ProcessorStores {
    fn from(own: &[&str; N]) -> Self {
        Self::from(&own[..])
    }
}

#[cfg(test)]
mod tests {
    /// The module's example, as the README shows it: the README's copy cannot drift from
    /// the one that runs as a doc test.
    #[test]
    fn the_readme_shows_the_custom_processor_example_that_runs_here() {
        let readme = include_str!("../../../README.md");
        let doc: Vec<&str> = include_str!("process.rs")
            .lines()
            .filter_map(|line| line.strip_prefix("//!"))
            .map(|line| line.strip_prefix(' ').unwrap_or(line))
            .collect();
        let doc = doc.join("\n");
        let example = doc
            .split("```")
            .nth(1)
            .expect("the module doc has an example");
        assert!(
            readme.contains(&format!("```rust\n{}\n```", example.trim())),
            "README.md's custom processor example differs from process.rs'"
        );
    }
}
