//! The operator chain against a bare loop doing the same serde work.
//!
//! Both sides decode 10,000 JSON medication orders, upper-case the drug name, drop the
//! cancelled ones and encode the rest as JSON. The bare loop is the floor: what the work
//! costs with no engine at all. `engine` runs it as a topology through a `Task` (the code
//! path production runs); `engine-3-extra-hops` adds three pass-through operators to show the
//! cost of one operator hop. The ratio bare/engine is the share of the floor the engine
//! keeps.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};
use sluice_engine::serde::{JsonSerde, Serdes};
use sluice_engine::task::Task;
use sluice_engine::{Headers, Origin, RawRecord, Topology, TopologyBuilder};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Order {
    order_id: String,
    patient_id: String,
    drug_name: String,
    ndc: String,
    quantity: f64,
    status: String,
}

const RECORDS: usize = 10_000;

fn inputs() -> Vec<RawRecord> {
    let topic: Arc<str> = Arc::from("orders");
    (0..RECORDS)
        .map(|i| {
            let order = Order {
                order_id: format!("ord-{i:08}"),
                patient_id: format!("pat-{:06}", i % 5000),
                drug_name: "atorvastatin 20 mg tablet".into(),
                ndc: "00071015523".into(),
                quantity: 30.0,
                status: if i % 10 == 0 { "cancelled" } else { "active" }.into(),
            };
            RawRecord {
                key: Some(order.order_id.clone().into_bytes()),
                value: Some(serde_json::to_vec(&order).unwrap()),
                headers: Headers::new(),
                timestamp: 1_767_225_600_000 + i as i64,
                origin: Origin {
                    topic: topic.clone(),
                    partition: 0,
                    offset: i as i64,
                },
            }
        })
        .collect()
}

fn upper(mut order: Order) -> Order {
    order.drug_name = order.drug_name.to_uppercase();
    order
}

fn topology(extra_hops: usize) -> Topology {
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

fn bare_loop(inputs: &[RawRecord]) -> usize {
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

fn engine(
    task: &mut Task,
    inputs: &[RawRecord],
    out: &mut Vec<sluice_engine::ProducerRecord>,
) -> usize {
    out.clear();
    for raw in inputs {
        task.process(raw, out).unwrap();
    }
    out.len()
}

fn operator_chain(c: &mut Criterion) {
    let inputs = inputs();
    let expected = bare_loop(&inputs);
    let mut group = c.benchmark_group("operator_chain");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.bench_function("bare-loop", |b| b.iter(|| bare_loop(&inputs)));
    for (name, hops) in [("engine", 0), ("engine-3-extra-hops", 3)] {
        let topology = topology(hops);
        let mut task = Task::new(&topology, 0, 0);
        let mut out = Vec::with_capacity(RECORDS);
        assert_eq!(engine(&mut task, &inputs, &mut out), expected);
        group.bench_function(name, |b| b.iter(|| engine(&mut task, &inputs, &mut out)));
    }
    group.finish();
}

criterion_group!(benches, operator_chain);
criterion_main!(benches);
