//! The Sluice engine: turns a topology written in Rust into tasks that process records.
//!
//! * [`record`]: what flows — typed [`Record`]s inside, bytes at the edges.
//! * [`serde`]: how keys and values become bytes (JSON, Avro in the Confluent wire format,
//!   a schema-registry client).
//! * [`topology`]: the declarative builder ([`TopologyBuilder`], [`Stream`]), its validation
//!   and its description as text or a Mermaid diagram.
//! * [`processor`]: the operator contract — the [`Processor`](processor::Processor) trait
//!   every operator implements, built-in or custom, and the [`Context`](processor::Context)
//!   it works through.
//! * [`operators`]: one file per operator, each with the semantics it guarantees.
//! * [`task`]: one (sub-topology, partition) running its operators over input records, with
//!   the topology's [`ErrorPolicy`] applied to every failure.
//! * [`lookup`]: reference data by key for enrichment — the async [`Lookup`](lookup::Lookup)
//!   contract and the [`LookupCache`](lookup::LookupCache) in front of it (time to live,
//!   negative caching, one call per key however many ask).
//! * [`test_driver`]: the [`TestDriver`], running a topology in-process on in-memory topics
//!   through the same task code that production runs.
//!
//! The Kafka runtime that runs tasks in a consumer group is the crate `sluice-runtime`: this
//! crate holds no Kafka client, so topologies and their tests build and run without one.
//!
//! Lineage ([`lineage`]) and the platform's [`Envelope`] are carried by the engine, so topology
//! code never copies correlation ids by hand.

pub mod envelope;
pub mod error;
pub mod lineage;
pub mod lookup;
pub mod metrics;
pub mod operators;
pub mod policy;
pub mod processor;
pub mod record;
pub mod serde;
pub mod task;
pub mod test_driver;
pub mod topology;

pub use envelope::{Envelope, EventMetadata, JsonEvent};
pub use error::{ErrorKind, ProcessError, SerdeError};
pub use lineage::Lineage;
pub use operators::GroupedStream;
pub use policy::{DeadLetter, ErrorPolicy};
pub use record::{Headers, Origin, ProducerRecord, RawRecord, Record};
pub use serde::{Serde, Serdes};
pub use task::Task;
pub use test_driver::TestDriver;
pub use topology::{GlobalTableDef, StoreDef, Stream, Topology, TopologyBuilder, TopologyError};
