//! The I/O that Sluice's topologies call: outbound HTTP, MongoDB lookups, and the other
//! services a topology reaches out to. This crate's one job is that I/O, each kind in a
//! module of its own shaped like a sink: its configuration (from the worker's string keys,
//! secrets redacted), the client, and how its failures are classified for the engine
//! (transient: pause and retry; permanent: the error policy). Topologies decide what to
//! ask; this crate asks it.
//!
//! * [`mongo`]: MongoDB reference-data lookups ([`mongo::MongoLookup`], a
//!   `sluice_engine::lookup::Lookup`) and the upserts that load reference data.

pub mod mongo;
