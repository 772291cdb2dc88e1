//! The operator chain both `operator_chain` (criterion, seconds) and `per_record`
//! (callgrind, instructions) measure: decode a JSON medication order, upper-case the drug
//! name, drop the cancelled ones, encode the rest as JSON.

// Each bench uses part of it.
#![allow(dead_code)]

use std::hint::black_box;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_engine::serde::{JsonSerde, Serdes};
use sluice_engine::{Headers, Origin, RawRecord, Topology, TopologyBuilder};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    order_id: String,
    patient_id: String,
    drug_name: String,
    ndc: String,
    quantity: f64,
    status: String,
}

pub fn inputs(records: usize) -> Vec<RawRecord> {
    let topic: Arc<str> = Arc::from("orders");
    (0..records)
        .map(|i| {
            let order = Order {
                order_id: format!("ord-{i:08}"),
                patient_id: format!("pat-{:06}", i % 5000),
                drug_name: "atorvastatin 20 mg tablet".into(),
                ndc: "00071015523".into(),
                quantity: 30.0,
                status: if i % 10 == 0 { "cancelled" } else { "active" }.into(),
            };
            input_record(
                &topic,
                i as i64,
                order.order_id.clone().into_bytes(),
                serde_json::to_vec(&order).unwrap(),
            )
        })
        .collect()
}

/// An input record without headers at `offset` of partition 0 of `topic`, stamped a
/// millisecond per offset after 2026-01-01.
pub fn input_record(topic: &Arc<str>, offset: i64, key: Vec<u8>, value: Vec<u8>) -> RawRecord {
    RawRecord {
        key: Some(key),
        value: Some(value),
        headers: Headers::new(),
        timestamp: 1_767_225_600_000 + offset,
        origin: Origin {
            topic: topic.clone(),
            partition: 0,
            offset,
        },
    }
}

fn upper(mut order: Order) -> Order {
    order.drug_name = order.drug_name.to_uppercase();
    order
}

pub fn topology(extra_hops: usize) -> Topology {
    let b = TopologyBuilder::new("bench");
    let mut s = b
        .source(
            "in",
            &["orders"],
            Serdes::string(),
            JsonSerde::<Order>::new(),
        )
        .map_values("upper", upper)
        .filter("not-cancelled", |_, o: &Order| o.status != "cancelled");
    for hop in 0..extra_hops {
        s = s.map_values(&format!("hop-{hop}"), |o| o);
    }
    s.to(
        "out",
        "orders.out",
        Serdes::string(),
        JsonSerde::<Order>::new(),
    );
    b.build().unwrap()
}

pub fn bare_loop(inputs: &[RawRecord]) -> usize {
    let mut written = 0;
    for raw in inputs {
        let key = String::from_utf8(raw.key.clone().unwrap()).unwrap();
        let order: Order = serde_json::from_slice(raw.value.as_deref().unwrap()).unwrap();
        let order = upper(order);
        if order.status != "cancelled" {
            let value = serde_json::to_vec(&order).unwrap();
            black_box((key.into_bytes(), value));
            written += 1;
        }
    }
    written
}

/// Runs `inputs` through `task` (the path production runs); answers the outputs.
pub fn engine(
    task: &mut sluice_engine::task::Task,
    inputs: &[RawRecord],
    out: &mut Vec<sluice_engine::ProducerRecord>,
) -> usize {
    out.clear();
    for raw in inputs {
        task.process(raw, out).unwrap();
    }
    out.len()
}
