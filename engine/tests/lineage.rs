//! Lineage carried by the engine: correlation and causation ids without topology code.

use serde::{Deserialize, Serialize};
use sluice_engine::serde::{EnvelopeSerde, Serdes};
use sluice_engine::{Envelope, Headers, ProducerRecord, TestDriver, TopologyBuilder};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Order {
    order_id: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Notification {
    text: String,
}

fn input_envelope(event_id: &str, correlation: Option<&str>) -> Vec<u8> {
    let mut env = Envelope::new(
        "OrderPlaced",
        "ehr",
        "1",
        Order {
            order_id: "o-1".into(),
        },
    );
    env.metadata.event_id = event_id.into();
    env.metadata.correlation_id = correlation.map(Into::into);
    serde_json::to_vec(&env).unwrap()
}

/// An input record on partition 0 of `topic`, with `headers`.
fn input_record(topic: &str, key: &[u8], value: Vec<u8>, headers: Headers) -> ProducerRecord {
    ProducerRecord {
        topic: topic.into(),
        partition: Some(0),
        key: Some(key.to_vec()),
        value: Some(value),
        headers,
        timestamp: 0,
    }
}

/// A new event made from an order: the author writes only the event; lineage is the
/// engine's job.
fn notification_for(order: Envelope<Order>) -> Envelope<Notification> {
    Envelope::new(
        "NotificationRequested",
        "sluice",
        "1",
        Notification {
            text: format!("order {} placed", order.payload.order_id),
        },
    )
}

#[test]
fn a_derived_envelope_gets_correlation_and_causation_from_its_input() {
    let b = TopologyBuilder::new("notify");
    b.source(
        "orders",
        &["orders"],
        Serdes::string(),
        EnvelopeSerde::<Order>::new(),
    )
    .map_values("to-notification", notification_for)
    .to(
        "out",
        "notifications",
        Serdes::string(),
        EnvelopeSerde::<Notification>::new(),
    );
    let mut driver = TestDriver::new(b.build().unwrap());
    driver
        .pipe_raw(
            "orders",
            Some(b"o-1"),
            Some(&input_envelope("evt-1", Some("flow-9"))),
        )
        .unwrap();

    let out = driver
        .read(
            "notifications",
            &Serdes::string(),
            &EnvelopeSerde::<Notification>::new(),
        )
        .unwrap();
    let meta = &out[0].value.metadata;
    assert_eq!(meta.correlation_id.as_deref(), Some("flow-9"));
    assert_eq!(meta.causation_id.as_deref(), Some("evt-1"));
    assert_ne!(meta.event_id, "evt-1");
    // Headers mirror the envelope.
    assert_eq!(
        out[0].headers.get_str("event-id"),
        Some(meta.event_id.as_str())
    );
    assert_eq!(out[0].headers.get_str("correlation-id"), Some("flow-9"));
    assert_eq!(out[0].headers.get_str("causation-id"), Some("evt-1"));
}

#[test]
fn a_forwarded_envelope_keeps_its_own_lineage() {
    let b = TopologyBuilder::new("relay");
    b.source(
        "orders",
        &["orders"],
        Serdes::string(),
        EnvelopeSerde::<Order>::new(),
    )
    .to(
        "out",
        "orders.copy",
        Serdes::string(),
        EnvelopeSerde::<Order>::new(),
    );
    let mut driver = TestDriver::new(b.build().unwrap());
    driver
        .pipe_raw(
            "orders",
            Some(b"o-1"),
            Some(&input_envelope("evt-1", Some("flow-9"))),
        )
        .unwrap();
    let out = driver
        .read(
            "orders.copy",
            &Serdes::string(),
            &EnvelopeSerde::<Order>::new(),
        )
        .unwrap();
    assert_eq!(out[0].value.metadata.event_id, "evt-1");
    assert_eq!(out[0].value.metadata.causation_id, None);
    assert_eq!(out[0].headers.get_str("event-id"), Some("evt-1"));
}

#[test]
fn plain_records_take_lineage_from_headers_and_get_deterministic_event_ids() {
    let b = TopologyBuilder::new("plain");
    b.source("in", &["in"], Serdes::string(), Serdes::string())
        .flat_map("twice", |k: String, v: String| {
            [(k.clone(), v.clone()), (k, v)]
        })
        .to("out", "out", Serdes::string(), Serdes::string());
    let topology = b.build().unwrap();
    let mut headers = Headers::new();
    headers.add("event-id", "evt-1");
    headers.add("correlation-id", "flow-1");
    let input = input_record("in", b"k", b"v".to_vec(), headers);

    let run = |input: ProducerRecord| {
        let mut driver = TestDriver::new(topology.clone());
        driver.pipe_record(input).unwrap();
        driver.read_raw("out")
    };
    let first = run(input.clone());
    let again = run(input);

    assert_eq!(first.len(), 2);
    for r in &first {
        assert_eq!(r.headers.get_str("correlation-id"), Some("flow-1"));
        assert_eq!(r.headers.get_str("causation-id"), Some("evt-1"));
    }
    let ids: Vec<_> = first
        .iter()
        .map(|r| r.headers.get_str("event-id"))
        .collect();
    assert_ne!(ids[0], ids[1], "each output is its own event");
    let ids_again: Vec<_> = again
        .iter()
        .map(|r| r.headers.get_str("event-id"))
        .collect();
    assert_eq!(
        ids, ids_again,
        "reprocessing the same input yields the same ids"
    );
}

#[test]
fn a_repartition_hop_keeps_the_inputs_lineage_so_the_output_names_the_input_as_its_cause() {
    let b = TopologyBuilder::new("hop");
    b.source("in", &["in"], Serdes::string(), Serdes::string())
        .map("rekey", |_k: String, v: String| (v.clone(), v))
        .repartition("by-value", Serdes::string(), Serdes::string())
        .to("out", "out", Serdes::string(), Serdes::string());
    let mut driver = TestDriver::new(b.build().unwrap());
    let mut headers = Headers::new();
    headers.add("event-id", "evt-7");
    headers.add("correlation-id", "flow-7");
    driver
        .pipe_record(input_record("in", b"k", b"v".to_vec(), headers))
        .unwrap();
    let hop = driver.read_raw("hop-by-value-repartition");
    assert_eq!(hop[0].headers.get_str("event-id"), Some("evt-7"));
    let out = driver.read_raw("out");
    assert_eq!(out[0].headers.get_str("causation-id"), Some("evt-7"));
    assert_eq!(out[0].headers.get_str("correlation-id"), Some("flow-7"));
    assert_ne!(out[0].headers.get_str("event-id"), Some("evt-7"));
}

#[test]
fn a_sink_without_lineage_writes_the_record_as_made_while_a_sibling_sink_stamps_it() {
    let b = TopologyBuilder::new("export");
    let notifications = b
        .source(
            "orders",
            &["orders"],
            Serdes::string(),
            EnvelopeSerde::<Order>::new(),
        )
        .map_values("to-notification", notification_for);
    notifications.to_without_lineage(
        "export",
        "exported",
        Serdes::string(),
        EnvelopeSerde::<Notification>::new(),
    );
    notifications.to(
        "out",
        "notifications",
        Serdes::string(),
        EnvelopeSerde::<Notification>::new(),
    );
    let mut driver = TestDriver::new(b.build().unwrap());
    let mut headers = Headers::new();
    headers.add("event-id", "evt-1");
    headers.add("correlation-id", "flow-9");
    headers.add("tenant", "north");
    driver
        .pipe_record(input_record(
            "orders",
            b"o-1",
            input_envelope("evt-1", Some("flow-9")),
            headers,
        ))
        .unwrap();

    let serdes = (Serdes::string(), EnvelopeSerde::<Notification>::new());
    let exported = driver.read("exported", &serdes.0, &serdes.1).unwrap();
    assert_eq!(exported.len(), 1);
    let meta = &exported[0].value.metadata;
    assert_eq!(meta.correlation_id, None, "the envelope is not filled in");
    assert_eq!(meta.causation_id, None);
    for name in ["event-id", "correlation-id", "causation-id"] {
        assert_eq!(
            exported[0].headers.get_str(name),
            None,
            "{name}: the input's lineage headers are dropped"
        );
    }
    assert_eq!(exported[0].headers.get_str("tenant"), Some("north"));

    let stamped = driver.read("notifications", &serdes.0, &serdes.1).unwrap();
    let meta = &stamped[0].value.metadata;
    assert_eq!(meta.causation_id.as_deref(), Some("evt-1"));
    assert_eq!(stamped[0].headers.get_str("correlation-id"), Some("flow-9"));
}
