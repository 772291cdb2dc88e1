//! Instructions per record, for callgrind: the operator chain (`operator_chain`'s, through
//! a `Task`), the end-to-end harness's map (200-byte values in upper case, bytes in and
//! out, as its variants (c) and (d) run it; `map-no-lineage` as (cn) and (dn) do) and the
//! normalization topology (generated EHR and pharmacy orders, Avro out, through its
//! `Task`s), with no Kafka client and no clock in the count.
//!
//! `benches/callgrind.sh` runs this binary under `valgrind --tool=callgrind` twice per
//! path, over N and 2N records, counting inside `Task::process` only (so neither the setup
//! nor the generation of the inputs counts), and prints (Ir(2N) − Ir(N)) ÷ N: the first
//! records' warm-up cancels out, and what is left is what one more record costs. Instruction counts are stable on a noisy machine where seconds are not, so the
//! figures in BENCHMARKS.md show a regression of a few percent.
//!
//!     per_record <chain|map|map-no-lineage|normalization> <records>
//!
//! Run as a test (`cargo test --bench per_record`), it runs both paths over 1,000 records
//! and checks every record came out.

#[path = "support/order_chain.rs"]
mod order_chain;

use std::sync::Arc;

use sluice_engine::task::Task;
use sluice_engine::{ProducerRecord, RawRecord, Serdes, Topology, TopologyBuilder};
use sluice_topologies::generator::OrderGenerator;
use sluice_topologies::normalization::{self, EHR_TOPIC, PHARMACY_TOPIC};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let positional: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    match positional.as_slice() {
        [path, records] => {
            let records: usize = records.parse().expect("a record count");
            let out = run(path, records);
            println!("{path}: {records} records in, {out} out");
        }
        // `cargo test --bench per_record` (and `cargo bench` without arguments).
        _ => {
            assert_eq!(run("chain", 1_000), 900, "the chain drops one order in ten");
            assert_eq!(run("map", 1_000), 1_000, "the map keeps every record");
            assert_eq!(
                run("map-no-lineage", 1_000),
                1_000,
                "so does its plain sink"
            );
            assert_eq!(run("normalization", 1_000), 1_000, "no malformed orders");
            println!("per_record: every path ran; see benches/callgrind.sh");
        }
    }
}

/// Runs `records` records through `path`'s tasks; answers how many records came out.
fn run(path: &str, records: usize) -> usize {
    let mut out = Vec::with_capacity(records);
    match path {
        "chain" => {
            let inputs = order_chain::inputs(records);
            let mut task = Task::new(&order_chain::topology(0), 0, 0);
            order_chain::engine(&mut task, &inputs, &mut out)
        }
        "map" | "map-no-lineage" => {
            let mut task = Task::new(&map_topology(path == "map"), 0, 0);
            for raw in map_inputs(records) {
                task.process(&raw, &mut out).unwrap();
            }
            out.len()
        }
        "normalization" => {
            let topology = normalization::topology(normalization::local_output_serde());
            let mut tasks: Vec<(Task, &std::collections::BTreeSet<String>)> = topology
                .subtopologies()
                .iter()
                .enumerate()
                .map(|(sub, spec)| (Task::new(&topology, sub, 0), &spec.source_topics))
                .collect();
            for raw in orders(records) {
                let (task, _) = tasks
                    .iter_mut()
                    .find(|(_, topics)| topics.contains(&*raw.origin.topic))
                    .expect("a task reads every feed");
                task.process(&raw, &mut out).unwrap();
            }
            out.iter().filter(|r| is_output(r)).count()
        }
        other => panic!("unknown path {other}: chain, map, map-no-lineage or normalization"),
    }
}

/// The end-to-end harness's stateless topology (`e2e_throughput`'s `map_topology`).
fn map_topology(lineage: bool) -> Topology {
    let builder = TopologyBuilder::new("e2e-map");
    let upper = builder
        .source("input", &[MAP_INPUT], Serdes::bytes(), Serdes::bytes())
        .map_values("upper", |v: Vec<u8>| v.to_ascii_uppercase());
    let serdes = (Serdes::bytes(), Serdes::bytes());
    match lineage {
        true => upper.to("output", "e2e.output", serdes.0, serdes.1),
        false => upper.to_without_lineage("output", "e2e.output", serdes.0, serdes.1),
    }
    builder.build().unwrap()
}

const MAP_INPUT: &str = "e2e.input";

/// `records` records of 200 lower-case bytes, keyed as the harness's backlog is.
fn map_inputs(records: usize) -> Vec<RawRecord> {
    let topic: Arc<str> = MAP_INPUT.into();
    (0..records)
        .map(|i| {
            order_chain::input_record(
                &topic,
                i as i64,
                format!("k{i}").into_bytes(),
                vec![b'a' + (i % 26) as u8; 200],
            )
        })
        .collect()
}

fn is_output(record: &ProducerRecord) -> bool {
    &*record.topic == normalization::OUTPUT_TOPIC
}

/// `records` well-formed generated orders, alternately EHR and pharmacy.
fn orders(records: usize) -> Vec<RawRecord> {
    let mut generator = OrderGenerator::new(5);
    let (ehr, pharmacy): (Arc<str>, Arc<str>) = (EHR_TOPIC.into(), PHARMACY_TOPIC.into());
    (0..records)
        .map(|i| {
            let (topic, order) = match i % 2 {
                0 => (&ehr, generator.next_ehr()),
                _ => (&pharmacy, generator.next_pharmacy()),
            };
            let offset = (i / 2) as i64;
            order_chain::input_record(topic, offset, order.key.into_bytes(), order.value)
        })
        .collect()
}
