//! The normalization topology: EHR and pharmacy medication orders in, one canonical
//! medication-order event out.
//!
//! ```text
//! external.ehr.medication-orders  (JSON) --> normalize-ehr      --\
//!                                                                   merge --> canonical.medication-orders (Avro)
//! external.pharmacy.prescriptions (JSON) --> normalize-pharmacy --/
//! ```
//!
//! Each feed is JSON, bare or inside the platform's event envelope
//! (`{metadata{eventId, correlationId, ...}, payload}`, the shape the EHR connector emits).
//! Its bytes are decoded straight into the fields normalization reads
//! ([`OrderFeedSerde`]) and mapped by [`normalize`](crate::normalize) with the platform's
//! field fallbacks. An enveloped input's metadata is its lineage: the output keeps its
//! correlationId, and its causationId is the envelope's eventId (as headers, beside
//! `event-id`). The output is keyed by `orderId` (so every change
//! of one order lands in one partition, in order), carries the `source-system`,
//! `event-type` and `change-type` headers, and is written as Avro in the Confluent wire format. A record
//! that is not JSON, or lacks what the canonical schema requires, goes to
//! `normalization.dlq` with the missing field or broken rule named.

use apache_avro::Schema;
use sluice_engine::serde::registry::RegistryError;
use sluice_engine::serde::{AvroSerde, Schemas, Serdes};
use sluice_engine::{ProcessError, Record, Topology, TopologyBuilder};

use crate::canonical::{self, MedicationOrder};
use crate::normalize::{self, FeedOrder, OrderFeedSerde};

pub const NAME: &str = "normalization";
pub const EHR_TOPIC: &str = "external.ehr.medication-orders";
pub const PHARMACY_TOPIC: &str = "external.pharmacy.prescriptions";
pub const OUTPUT_TOPIC: &str = "canonical.medication-orders";
pub const DEAD_LETTER_TOPIC: &str = "normalization.dlq";
/// The schema id written when no schema registry is configured (demo, TestDriver).
pub const LOCAL_SCHEMA_ID: u32 = 1;

/// The output serde when no registry is configured: the canonical schema under
/// [`LOCAL_SCHEMA_ID`].
pub fn local_output_serde() -> AvroSerde<MedicationOrder> {
    AvroSerde::with_schema_id(canonical_schema(), LOCAL_SCHEMA_ID)
        .with_datum_writer(canonical::write_datum)
}

/// The output serde of a worker: the canonical schema under subject
/// `canonical.medication-orders-value` of its registry, or [`LOCAL_SCHEMA_ID`] without one.
pub fn output_serde(schemas: &Schemas) -> Result<AvroSerde<MedicationOrder>, RegistryError> {
    Ok(schemas
        .output_serde(OUTPUT_TOPIC, canonical::schema(), LOCAL_SCHEMA_ID)?
        .with_datum_writer(canonical::write_datum))
}

fn canonical_schema() -> Schema {
    canonical::schema().clone()
}

/// The topology, writing canonical orders with `output` (registered or local).
pub fn topology(output: AvroSerde<MedicationOrder>) -> Topology {
    topology_to(OUTPUT_TOPIC, output)
}

/// The same topology writing its canonical events to `output_topic` instead of
/// [`OUTPUT_TOPIC`]: for a second deployment beside the first (a bench, a migration).
pub fn topology_to(output_topic: &str, output: AvroSerde<MedicationOrder>) -> Topology {
    let builder = TopologyBuilder::new(NAME);
    // Input keys are ignored: the output is re-keyed by orderId.
    let ehr = builder
        .source(
            "ehr-orders",
            &[EHR_TOPIC],
            Serdes::unit(),
            OrderFeedSerde::ehr(),
        )
        .try_map("normalize-ehr", canonical_record);
    let pharmacy = builder
        .source(
            "pharmacy-prescriptions",
            &[PHARMACY_TOPIC],
            Serdes::unit(),
            OrderFeedSerde::pharmacy(),
        )
        .try_map("normalize-pharmacy", canonical_record);
    ehr.merge("canonical-orders", &pharmacy).to(
        "canonical-sink",
        output_topic,
        Serdes::string(),
        output,
    );
    builder
        .build()
        .expect("the normalization topology is valid by construction")
}

fn canonical_record(
    input: Record<(), FeedOrder>,
) -> Result<Record<String, MedicationOrder>, ProcessError> {
    let Record {
        value,
        headers,
        timestamp,
        ..
    } = input;
    let order = value.order?;
    let mut record = Record {
        key: order.order_id.clone(),
        value: order,
        headers,
        timestamp,
    };
    normalize::set_headers(&record.value, &mut record.headers);
    Ok(record)
}
