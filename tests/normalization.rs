//! The normalization topology end to end through the TestDriver, on generated feeds with
//! malformed records mixed in.

use std::collections::{HashMap, HashSet};

use sluice_engine::lineage::source_event_id;
use sluice_engine::serde::Serdes;
use sluice_engine::{ErrorKind, Origin, Serde, TestDriver};
use sluice_topologies::canonical::{MedicationOrder, SourceSystem};
use sluice_topologies::generator::{Malformation, OrderGenerator, SampleRecord};
use sluice_topologies::normalization::{self, EHR_TOPIC, OUTPUT_TOPIC, PHARMACY_TOPIC};

const ORDERS_PER_FEED: usize = 5_000;

struct Fed {
    driver: TestDriver,
    /// (topic, offset) -> the sample piped there.
    inputs: HashMap<(String, i64), SampleRecord>,
}

fn feed(malformed: f64, seed: u64) -> Fed {
    let mut driver = TestDriver::new(normalization::topology(normalization::local_output_serde()));
    let mut generator = OrderGenerator::new(seed).with_malformed_ratio(malformed);
    let mut inputs = HashMap::new();
    for i in 0..ORDERS_PER_FEED {
        for (topic, sample) in [
            (EHR_TOPIC, generator.next_ehr()),
            (PHARMACY_TOPIC, generator.next_pharmacy()),
        ] {
            driver
                .pipe_raw(topic, Some(sample.key.as_bytes()), Some(&sample.value))
                .unwrap();
            inputs.insert((topic.to_string(), i as i64), sample);
        }
    }
    Fed { driver, inputs }
}

#[test]
fn every_valid_order_is_written_once_and_every_malformed_one_is_dead_lettered_with_its_reason() {
    let Fed { mut driver, inputs } = feed(0.02, 11);
    let output = normalization::local_output_serde();

    let written = driver.read_raw(OUTPUT_TOPIC);
    let dead = driver.dead_letters();
    let valid = inputs.values().filter(|s| s.malformed.is_none()).count();
    assert_eq!(written.len(), valid);
    assert_eq!(dead.len(), inputs.len() - valid);
    assert!(!dead.is_empty());

    let mut event_ids = HashSet::new();
    let mut keys = HashSet::new();
    for record in &written {
        let order: MedicationOrder = output
            .deserialize(OUTPUT_TOPIC, record.value.as_deref())
            .unwrap();
        let key = Serdes::string()
            .deserialize(OUTPUT_TOPIC, record.key.as_deref())
            .unwrap();
        assert_eq!(key, order.order_id, "keyed by orderId");
        assert!(keys.insert(key), "each order once");
        assert_eq!(order.medication.ndc.len(), 11);
        let source = record.headers.get_str("source-system").unwrap();
        assert_eq!(source, order.source_system.header_value());
        assert_eq!(
            record.headers.get_str("event-type"),
            Some("medication-order")
        );
        assert_eq!(
            record.headers.get_str("change-type"),
            order.change_type.map(|c| c.header_value())
        );
        assert!(order.change_type.is_some());
        assert!(event_ids.insert(record.headers.get_str("event-id").unwrap().to_string()));
    }
    let sources: HashSet<_> = written
        .iter()
        .map(|r| r.headers.get_str("source-system").unwrap().to_string())
        .collect();
    assert_eq!(sources.len(), 2, "both feeds reach the canonical topic");

    let mut kinds_seen = HashSet::new();
    for d in &dead {
        let sample = &inputs[&(d.source_topic.clone(), d.source_offset)];
        let malformation = sample
            .malformed
            .expect("only malformed inputs are dead-lettered");
        kinds_seen.insert(malformation);
        assert!(
            d.message.contains(malformation.expected_reason()),
            "{malformation:?}: {}",
            d.message
        );
        let expected_kind = match malformation {
            Malformation::InvalidJson => ErrorKind::Deserialization,
            _ => ErrorKind::Validation,
        };
        assert_eq!(d.kind, expected_kind);
        assert_eq!(
            d.value.as_deref(),
            Some(sample.value.as_slice()),
            "input kept whole"
        );
        assert_eq!(d.topology, "normalization");
    }
    assert!(
        kinds_seen.len() >= 6,
        "most malformations occur: {kinds_seen:?}"
    );
}

#[test]
fn source_system_follows_the_feed() {
    let Fed { mut driver, .. } = feed(0.0, 5);
    let output = normalization::local_output_serde();
    for record in driver.read_raw(OUTPUT_TOPIC) {
        let order: MedicationOrder = output
            .deserialize(OUTPUT_TOPIC, record.value.as_deref())
            .unwrap();
        let key = String::from_utf8(record.key.unwrap()).unwrap();
        // EHR order ids are `mr-...`, pharmacy ids are numeric (see the generator).
        let expected = if key.starts_with("mr-") {
            SourceSystem::Ehr
        } else {
            SourceSystem::Pharmacy
        };
        assert_eq!(order.source_system, expected, "{key}");
    }
}

/// One valid EHR order, as the generator writes it, parsed.
fn ehr_order_json(seed: u64) -> serde_json::Value {
    let sample = OrderGenerator::new(seed)
        .with_malformed_ratio(0.0)
        .next_ehr();
    serde_json::from_slice(&sample.value).unwrap()
}

#[test]
fn an_enveloped_order_is_normalized_and_keeps_the_envelopes_lineage() {
    let mut driver = TestDriver::new(normalization::topology(normalization::local_output_serde()));
    let payload = ehr_order_json(3);
    let envelope = serde_json::json!({
        "metadata": {
            "eventId": "evt-ehr-1",
            "eventType": "medication-order",
            "eventSource": "ehr-connector",
            "correlationId": "flow-9",
            "causationId": "poll-3",
            "timestamp": "2026-12-01T10:00:00Z",
            "version": "1.0"
        },
        "payload": payload,
    });
    driver
        .pipe_raw(
            EHR_TOPIC,
            None,
            Some(&serde_json::to_vec(&envelope).unwrap()),
        )
        .unwrap();
    // The same payload bare gives the same canonical order.
    driver
        .pipe_raw(
            EHR_TOPIC,
            None,
            Some(&serde_json::to_vec(&payload).unwrap()),
        )
        .unwrap();
    assert!(driver.dead_letters().is_empty());
    let written = driver.read_raw(OUTPUT_TOPIC);
    assert_eq!(written.len(), 2);
    assert_eq!(written[0].value, written[1].value);
    let enveloped = &written[0].headers;
    assert_eq!(enveloped.get_str("correlation-id"), Some("flow-9"));
    assert_eq!(enveloped.get_str("causation-id"), Some("evt-ehr-1"));
}

#[test]
fn an_order_without_lineage_names_its_source_position_as_its_cause() {
    let mut driver = TestDriver::new(normalization::topology(normalization::local_output_serde()));
    let payload = serde_json::to_vec(&ehr_order_json(4)).unwrap();
    driver.pipe_raw(EHR_TOPIC, None, Some(&payload)).unwrap();
    driver.pipe_raw(EHR_TOPIC, None, Some(&payload)).unwrap();
    let written = driver.read_raw(OUTPUT_TOPIC);
    assert_eq!(written.len(), 2);
    let cause = |i: usize| {
        written[i]
            .headers
            .get_str("causation-id")
            .expect("every output has a causation-id")
            .to_string()
    };
    let first_position = Origin {
        topic: EHR_TOPIC.into(),
        partition: 0,
        offset: 0,
    };
    assert_eq!(cause(0), source_event_id(&first_position));
    assert_ne!(cause(0), cause(1), "each input is its own cause");
    // The flow starts at the external record.
    assert_eq!(
        written[0].headers.get_str("correlation-id"),
        Some(&*cause(0))
    );
}

#[test]
fn an_envelope_without_an_event_id_is_dead_lettered_naming_the_field() {
    let mut driver = TestDriver::new(normalization::topology(normalization::local_output_serde()));
    let envelope = serde_json::json!({
        "metadata": {"eventType": "medication-order", "eventSource": "ehr",
                     "timestamp": "2026-12-01T10:00:00Z", "version": "1.0"},
        "payload": ehr_order_json(5),
    });
    driver
        .pipe_raw(
            EHR_TOPIC,
            None,
            Some(&serde_json::to_vec(&envelope).unwrap()),
        )
        .unwrap();
    let dead = driver.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].kind, ErrorKind::Deserialization);
    assert!(
        dead[0]
            .message
            .contains("metadata has a missing field `eventId`"),
        "{}",
        dead[0].message
    );
}

#[test]
fn json_nested_past_the_decoders_limit_is_dead_lettered_saying_so() {
    let mut driver = TestDriver::new(normalization::topology(normalization::local_output_serde()));
    let deep = "[".repeat(100_000) + &"]".repeat(100_000);
    driver
        .pipe_raw(PHARMACY_TOPIC, None, Some(deep.as_bytes()))
        .unwrap();
    let dead = driver.dead_letters();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].message.contains("JSON nesting reaches 128 levels"),
        "{}",
        dead[0].message
    );
}
