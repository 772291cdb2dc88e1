//! The I/O that Sluice's topologies call. This crate's one job is talking to systems
//! outside Kafka on a topology's behalf, safely and repeatably, each kind in a module of
//! its own shaped like a sink: its configuration (from the worker's string keys, secrets
//! redacted), the client, and how its failures are classified for the engine (transient:
//! pause and retry; permanent: the error policy). Every call carries the event's id so the
//! other side can de-duplicate it, and ends in an outcome the topology can act on within
//! its transaction. Topologies decide what to ask; this crate asks it.
//!
//! * [`http`]: outbound HTTP (webhook delivery, and the pharmacy, push and FHIR sinks on
//!   top of it): client, classification, retry schedule, signing, SSRF guard, per-endpoint
//!   limits and circuit breakers, metrics.
//! * [`mongo`]: MongoDB reference-data lookups ([`mongo::MongoLookup`], a
//!   `sluice_engine::lookup::Lookup`) and the upserts that load reference data.
//!
//! The crate sits between the engine and the topologies; it knows nothing of Kafka.

pub mod http;
pub mod mongo;
