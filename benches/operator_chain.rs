//! The operator chain against a bare loop doing the same serde work.
//!
//! Both sides decode 10,000 JSON medication orders, upper-case the drug name, drop the
//! cancelled ones and encode the rest as JSON. The bare loop is the floor: what the work
//! costs with no engine at all. `engine` runs it as a topology through a `Task` (the code
//! path production runs); `engine-3-extra-hops` adds three pass-through operators to show the
//! cost of one operator hop. The ratio bare/engine is the share of the floor the engine
//! keeps.

#[path = "support/order_chain.rs"]
mod order_chain;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use order_chain::{bare_loop, engine, inputs, topology};
use sluice_engine::task::Task;

const RECORDS: usize = 10_000;

fn operator_chain(c: &mut Criterion) {
    let inputs = inputs(RECORDS);
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
