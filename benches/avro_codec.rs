//! The Avro codec against a bare loop doing the same serde work.
//!
//! Both sides encode and decode 10,000 canonical medication orders in the Confluent wire
//! format. The bare loop uses apache-avro directly, with a datum writer and reader built
//! once and the 5-byte header written by hand: the floor for this work. `AvroSerde` is
//! what topologies use. The ratio bare/serde is the share of the floor the serde keeps.

use std::hint::black_box;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_engine::Serde;
use sluice_topologies::canonical::{self, MedicationOrder};
use sluice_topologies::generator::OrderGenerator;
use sluice_topologies::normalization;
use sluice_topologies::normalize;

const RECORDS: usize = 10_000;
const TOPIC: &str = "canonical.medication-orders";

fn orders() -> Vec<MedicationOrder> {
    let mut generator = OrderGenerator::new(1);
    (0..RECORDS)
        .map(|i| {
            let sample = if i % 2 == 0 {
                generator.next_ehr()
            } else {
                generator.next_pharmacy()
            };
            let json: serde_json::Value = serde_json::from_slice(&sample.value).unwrap();
            if i % 2 == 0 {
                normalize::from_ehr(&json)
            } else {
                normalize::from_pharmacy(&json)
            }
            .unwrap()
        })
        .collect()
}

fn avro_codec(c: &mut Criterion) {
    let orders = orders();
    let schema = canonical::schema();
    let writer = GenericDatumWriter::builder(schema).build().unwrap();
    let reader = GenericDatumReader::builder(schema).build().unwrap();
    let serde = normalization::local_output_serde();
    let id = serde.schema_id();

    let bare_encode = |order: &MedicationOrder| {
        let mut bytes = Vec::with_capacity(256);
        bytes.push(0);
        bytes.extend_from_slice(&id.to_be_bytes());
        writer.write_ser(&mut bytes, order).unwrap();
        bytes
    };
    let encoded: Vec<Vec<u8>> = orders.iter().map(bare_encode).collect();
    for (order, bytes) in orders.iter().zip(&encoded) {
        assert_eq!(
            &serde.serialize(TOPIC, order).unwrap().unwrap(),
            bytes,
            "same bytes both ways"
        );
    }

    let mut group = c.benchmark_group("avro_codec");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.bench_function("encode/bare-apache-avro", |b| {
        b.iter(|| {
            orders
                .iter()
                .map(|o| black_box(bare_encode(o)).len())
                .sum::<usize>()
        })
    });
    group.bench_function("encode/AvroSerde", |b| {
        b.iter(|| {
            orders
                .iter()
                .map(|o| black_box(serde.serialize(TOPIC, o).unwrap()).map_or(0, |v| v.len()))
                .sum::<usize>()
        })
    });
    group.bench_function("decode/bare-apache-avro", |b| {
        b.iter(|| {
            for bytes in &encoded {
                let mut datum = &bytes[5..];
                let order: MedicationOrder = reader.read_deser(&mut datum).unwrap();
                black_box(order);
            }
        })
    });
    group.bench_function("decode/AvroSerde", |b| {
        b.iter(|| {
            for bytes in &encoded {
                black_box(serde.deserialize(TOPIC, Some(bytes)).unwrap());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, avro_codec);
criterion_main!(benches);
