//! Patient coverage onto its compacted topic, `reference.patient-coverage`, which the
//! enrichment joins as a table keyed by patient id.
//!
//! The value is a [`PatientCoverage`] as JSON (camelCase, like the JSON-lines file); the
//! key is the patient id. The topic is compacted: the latest coverage per patient is
//! what a table restores, and a coverage change is just a newer record for the key.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};
use sluice_runtime::admin::{self, AdminError};

use super::reference::PatientCoverage;
use crate::demo::send_waiting;

/// The compacted topic of patient coverage.
pub const COVERAGE_TOPIC: &str = "reference.patient-coverage";

/// Why coverage could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// Creates `topic` compacted with `partitions` partitions of `replication_factor`
/// replicas (an existing topic is kept as it is), then writes each coverage keyed by its patient id and waits until the broker
/// has acknowledged all of them. Returns how many were written.
pub fn publish_coverage(
    brokers: &str,
    topic: &str,
    partitions: i32,
    replication_factor: i32,
    coverage: &[PatientCoverage],
) -> Result<usize, PublishError> {
    let timeout = Duration::from_secs(30);
    let admin = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    admin::create_topics_with(
        &admin,
        &[topic.to_string()],
        partitions,
        replication_factor,
        &[("cleanup.policy", "compact")],
        timeout,
    )?;
    // Idempotent: a retried send cannot write one coverage twice or out of order.
    // Java's partitioner, as every worker's producer has: the enrichment joins coverage
    // as a partitioned table, so a patient's coverage must be in the partition its
    // orders are repartitioned to (librdkafka's default, CRC32, puts most elsewhere).
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .create()?;
    for record in coverage {
        let value = serde_json::to_vec(record).expect("PatientCoverage always encodes");
        send_waiting(&producer, topic, &record.patient_id, &value);
    }
    producer.flush(timeout)?;
    Ok(coverage.len())
}
