//! Patient coverage onto its compacted topic, through `sluice reference publish-coverage`,
//! on a real Kafka-protocol broker of the test's own.

mod support;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};
use sluice_topologies::demo::send_waiting;
use sluice_topologies::enrichment::{
    COVERAGE_TOPIC, PatientCoverage, ReferenceGenerator, publish_coverage,
};
use support::TestBroker;

/// Every record of `topic`, as (key, value), read from the start until `expected` came.
fn read_all(brokers: &str, topic: &str, expected: usize) -> Vec<(String, PatientCoverage)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "coverage-reader")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut records = Vec::new();
    while records.len() < expected && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.unwrap();
            let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
            let value = serde_json::from_slice(message.payload().unwrap()).unwrap();
            records.push((key, value));
        }
    }
    records
}

fn cleanup_policy(brokers: &str, topic: &str) -> Option<String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let results = runtime
        .block_on(admin.describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new()))
        .unwrap();
    let resource = results.into_iter().next().unwrap().unwrap();
    resource
        .get("cleanup.policy")
        .and_then(|entry| entry.value.clone())
}

#[test]
fn coverage_is_published_keyed_by_patient_id_onto_a_compacted_topic() {
    let broker = TestBroker::start();
    let dir = std::env::temp_dir().join(format!("sluice-coverage-{}", std::process::id()));
    let data = ReferenceGenerator::new(9).with_patients(300).generate();
    let files = data.write_json_lines(&dir).unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "reference",
            "publish-coverage",
            "--brokers",
            &broker.brokers,
        ])
        .arg("--coverage")
        .arg(&files.coverage)
        .args(["--partitions", "4"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "{} coverages -> {COVERAGE_TOPIC}",
            data.coverage.len()
        )),
        "{stdout}"
    );

    let records = read_all(&broker.brokers, COVERAGE_TOPIC, data.coverage.len());
    assert_eq!(records.len(), data.coverage.len());
    let by_patient: HashMap<String, PatientCoverage> = records
        .into_iter()
        .inspect(|(key, value)| assert_eq!(key, &value.patient_id, "keyed by patient id"))
        .collect();
    for coverage in &data.coverage {
        assert_eq!(by_patient.get(&coverage.patient_id), Some(coverage));
    }
    assert_eq!(
        cleanup_policy(&broker.brokers, COVERAGE_TOPIC).as_deref(),
        Some("compact")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every record of `topic` as key -> partition, read from the start until `expected` came.
fn partitions_by_key(brokers: &str, topic: &str, expected: usize) -> HashMap<String, i32> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("partition-reader-{topic}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut partitions = HashMap::new();
    while partitions.len() < expected && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.unwrap();
            let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
            partitions.insert(key, message.partition());
        }
    }
    partitions
}

/// The enrichment joins coverage as a partitioned table: task p holds the coverage of
/// partition p and gets the orders its repartition topic routes to p. So a patient's
/// coverage must be in the partition the worker's producer (Java's murmur2 partitioner)
/// picks for the patient id, or the order meets no coverage.
#[test]
fn coverage_is_partitioned_as_a_worker_partitions_orders_by_patient() {
    const PARTITIONS: i32 = 8;
    let broker = TestBroker::start();
    let data = ReferenceGenerator::new(9).with_patients(300).generate();
    publish_coverage(
        &broker.brokers,
        COVERAGE_TOPIC,
        PARTITIONS,
        1,
        &data.coverage,
    )
    .unwrap();
    // The patients keyed as a worker's repartition writes them (engine/runtime/src/kafka.rs
    // sets the same partitioner for every producer of a stream thread).
    let by_patient = "orders-by-patient";
    broker.create_topics(&[by_patient], PARTITIONS);
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &broker.brokers)
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    for coverage in &data.coverage {
        send_waiting(&producer, by_patient, &coverage.patient_id, b"order");
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let n = data.coverage.len();
    let coverage = partitions_by_key(&broker.brokers, COVERAGE_TOPIC, n);
    let orders = partitions_by_key(&broker.brokers, by_patient, n);
    assert_eq!((coverage.len(), orders.len()), (n, n));
    let elsewhere: Vec<&String> = orders
        .iter()
        .filter(|(patient, partition)| coverage.get(*patient) != Some(partition))
        .map(|(patient, _)| patient)
        .collect();
    assert!(
        elsewhere.is_empty(),
        "{} of {n} patients' coverage is not in their orders' partition, e.g. {:?}",
        elsewhere.len(),
        &elsewhere[..elsewhere.len().min(5)]
    );
}
