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
use sluice_topologies::enrichment::{COVERAGE_TOPIC, PatientCoverage, ReferenceGenerator};
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
