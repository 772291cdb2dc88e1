//! The I/O that Sluice's topologies call. This crate's one job is talking to systems
//! outside Kafka on a topology's behalf, safely and repeatably: every call carries the
//! event's id so the other side can de-duplicate it, refuses destinations inside our
//! network, and ends in an outcome the topology can act on within its transaction.
//!
//! * [`http`]: outbound HTTP (webhook delivery, and the pharmacy, push and FHIR sinks on
//!   top of it): client, classification, retry schedule, signing, SSRF guard, per-endpoint
//!   limits and circuit breakers, metrics.
//!
//! The crate sits between the engine and the topologies; it knows nothing of Kafka.

pub mod http;
