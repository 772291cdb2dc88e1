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
use sluice_engine::serde::Schemas;
use sluice_engine::serde::registry::RegistryError;

/// A topology this crate ships, for the command line.
pub struct CatalogEntry {
    pub name: &'static str,
    pub description: &'static str,
    /// Builds the topology, its Avro serdes with `schemas` (a worker's registry, or local
    /// ids for `describe` and the demo).
    pub build: fn(&Schemas) -> Result<Topology, RegistryError>,
}

/// Every topology this crate ships.
pub fn catalog() -> Vec<CatalogEntry> {
    vec![
        CatalogEntry {
            name: normalization::NAME,
            description: "EHR and pharmacy medication orders -> canonical.medication-orders (Avro)",
            build: |schemas| {
                Ok(normalization::topology(normalization::output_serde(
                    schemas,
                )?))
            },
        },
        CatalogEntry {
            name: order_activity::NAME,
            description: "canonical.medication-orders -> running count of events per order (RocksDB state)",
            build: |_| Ok(order_activity::topology()),
        },
    ]
}
