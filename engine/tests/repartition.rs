//! Repartitioning through the TestDriver: group_by re-keys a stream through an internal
//! topic named for the application, splitting the topology into sub-topologies, and the
//! aggregation downstream sees every record of a group.

use sluice_engine::{Serdes, TestDriver, TopologyBuilder};

/// Order events keyed by order id, valued "<patient>:<drug>"; counts orders per patient.
fn orders_per_patient() -> TopologyBuilder {
    let builder = TopologyBuilder::new("per-patient");
    builder
        .source("orders", &["orders"], Serdes::string(), Serdes::string())
        .group_by(
            "by-patient",
            |_order: &String, v: &String| v.split(':').next().unwrap_or_default().to_string(),
            Serdes::string(),
            Serdes::string(),
        )
        .count("count", "orders-per-patient")
        .to("out", "counts", Serdes::string(), Serdes::i64());
    builder
}

#[test]
fn group_by_counts_each_new_key_across_all_of_its_records() {
    let mut d = TestDriver::new(orders_per_patient().build().unwrap());
    for (order, value) in [
        ("o1", "p1:aspirin"),
        ("o2", "p2:insulin"),
        ("o3", "p1:statin"),
        ("o1", "p1:aspirin-refill"),
    ] {
        d.pipe_raw("orders", Some(order.as_bytes()), Some(value.as_bytes()))
            .unwrap();
    }
    let counts: Vec<(String, i64)> = d
        .read("counts", &Serdes::string(), &Serdes::i64())
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.value))
        .collect();
    assert_eq!(
        counts,
        [
            ("p1".to_string(), 1),
            ("p2".to_string(), 1),
            ("p1".to_string(), 2),
            ("p1".to_string(), 3)
        ]
    );
}

#[test]
fn the_internal_topic_carries_the_records_under_their_new_key() {
    let mut d = TestDriver::new(orders_per_patient().build().unwrap());
    d.pipe_raw("orders", Some(b"o1"), Some(b"p9:aspirin"))
        .unwrap();
    let hop = d.read_raw("per-patient-by-patient-repartition");
    assert_eq!(hop.len(), 1);
    assert_eq!(hop[0].key.as_deref(), Some(&b"p9"[..]));
    assert_eq!(hop[0].value.as_deref(), Some(&b"p9:aspirin"[..]));
}

#[test]
fn a_repartition_splits_the_topology_and_the_store_goes_with_the_downstream_part() {
    let topology = orders_per_patient().build().unwrap();
    assert_eq!(topology.subtopologies().len(), 2);
    let downstream = topology
        .subtopology_of("by-patient-repartition")
        .expect("the internal topic is a source of its own sub-topology");
    assert_eq!(topology.stores()[0].subtopology, downstream.id);
    assert!(
        topology.subtopologies()[0]
            .sink_topics
            .contains("by-patient-repartition")
    );
}

#[test]
fn internal_topics_are_named_for_the_application_that_runs_the_topology() {
    let topology = orders_per_patient().build().unwrap();
    let first = topology.for_application("pharmacy-a");
    let second = topology.for_application("pharmacy-b");
    assert!(
        first
            .internal_topics()
            .contains("pharmacy-a-by-patient-repartition")
    );
    assert!(
        second
            .source_topics()
            .contains("pharmacy-b-by-patient-repartition")
    );
    assert!(
        first
            .sink_topics()
            .contains("pharmacy-a-by-patient-repartition")
    );
    // Naming is idempotent for one application.
    assert_eq!(
        first.for_application("pharmacy-a").internal_topics(),
        first.internal_topics()
    );
}

#[test]
#[should_panic(expected = "already runs as application `pharmacy-a`")]
fn a_topology_named_for_one_application_is_not_renamed_for_another() {
    let topology = orders_per_patient().build().unwrap();
    topology
        .for_application("pharmacy-a")
        .for_application("pharmacy-b");
}

#[test]
fn two_repartitions_with_one_name_are_reported() {
    let builder = TopologyBuilder::new("twice");
    let orders = builder.source("orders", &["orders"], Serdes::string(), Serdes::string());
    orders
        .repartition("hop", Serdes::string(), Serdes::string())
        .to("a", "a", Serdes::string(), Serdes::string());
    orders
        .repartition("hop", Serdes::string(), Serdes::string())
        .to("b", "b", Serdes::string(), Serdes::string());
    let error = builder.build().unwrap_err().to_string();
    assert!(error.contains("two nodes are named `hop-sink`"), "{error}");
}
