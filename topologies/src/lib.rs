//! The healthcare integration topologies built on Sluice, with their Avro schemas and
//! sample-data generators. This crate's one job is the healthcare side of the broker: what
//! the external feeds send, the canonical shapes the platform publishes ([`canonical`],
//! backed by the `.avsc` files under `src/schemas/`), the pure mappings between them
//! ([`normalize`]), the topologies that run those mappings on the engine
//! ([`normalization`], [`order_activity`]), the reference data enrichment joins with
//! ([`enrichment`]), and deterministic sample data for demos and tests ([`generator`]).

pub mod canonical;
pub mod demo;
pub mod enrichment;
pub mod generator;
pub mod normalization;
pub mod normalize;
pub mod order_activity;
pub mod webhooks;

use sluice_engine::Topology;
use sluice_runtime::{BuildContext, BuildError};

/// A topology this crate ships, for the command line.
pub struct CatalogEntry {
    pub name: &'static str,
    pub description: &'static str,
    /// The configuration keys the topology reads besides the worker's (its services, its
    /// caches); the worker accepts them and hands them to `build`.
    pub keys: fn() -> Vec<&'static str>,
    /// Builds the topology in a worker: its Avro serdes from the context's schemas (the
    /// registry, or local ids for `describe` and the demo), its settings from its keys.
    pub build: fn(&BuildContext<'_>) -> Result<Topology, BuildError>,
}

/// Every topology this crate ships.
pub fn catalog() -> Vec<CatalogEntry> {
    vec![
        CatalogEntry {
            name: normalization::NAME,
            description: "EHR and pharmacy medication orders -> canonical.medication-orders (Avro)",
            keys: Vec::new,
            build: |context| {
                let output = normalization::output_serde(context.schemas)?;
                Ok(normalization::topology(output))
            },
        },
        CatalogEntry {
            name: order_activity::NAME,
            description: "canonical.medication-orders -> running count of events per order (RocksDB state)",
            keys: Vec::new,
            build: |_| Ok(order_activity::topology()),
        },
        CatalogEntry {
            name: enrichment::topology::NAME,
            description: "canonical.medication-orders -> + drug reference, coverage and formulary -> canonical.medication-orders.enriched (Avro)",
            keys: enrichment::topology::config_keys,
            build: enrichment::topology::build,
        },
        CatalogEntry {
            name: webhooks::NAME,
            description: "api.webhooks.outbound -> signed HTTP delivery, retry tiers, api.webhooks.outbound.dlq, api.webhooks.delivery-attempts",
            keys: webhooks::config_keys,
            build: webhooks::build,
        },
    ]
}
