//! The latency phase every variant ends with: records written at a steady rate to its
//! input, read back from its output.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sluice_topologies::demo::send_waiting;
use sluice_topologies::generator::OrderGenerator;
use sluice_topologies::normalization::EHR_TOPIC;

use super::{
    LATENCY_RATE, LATENCY_RECORDS, async_calls, enrichment, is_sluice_normalization, partitions,
    quix, value_of,
};

/// A consumer reading only committed records, fetching without waiting long: what sees a
/// variant's output as its users would, as soon as they could.
pub fn committed_reader(brokers: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap()
}

/// Writes 2,000 records at 1,000/s to the variant's input and reads them back from its
/// output; returns the end-to-end latencies in milliseconds, sorted.
pub fn measure_latency(brokers: &str, variant: &str, output: &str) -> Vec<i64> {
    let reader = committed_reader(brokers, &format!("e2e-latency-reader-{variant}"));
    // Start at each partition's end as it is now, before the first latency record is
    // written: an exact offset, where `Offset::End` would resolve whenever the reader
    // first fetches and could skip records written before that on a busy machine.
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions() {
        let (_, high) = reader
            .fetch_watermarks(output, partition, Duration::from_secs(30))
            .unwrap();
        assignment
            .add_partition_offset(output, partition, Offset::Offset(high))
            .unwrap();
    }
    reader.assign(&assignment).unwrap();
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "0")
        .create()
        .unwrap();
    let normalization = is_sluice_normalization(variant) || quix::is_quix(variant);
    let input = async_calls::input_topic(variant);
    let enriching = enrichment::is_enrichment(variant);
    let canonical_input = enrichment::input_topic(variant);
    let written_from = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let writer = std::thread::spawn(move || {
        let started = Instant::now();
        let mut generator = OrderGenerator::new(99);
        for i in 0..LATENCY_RECORDS {
            if normalization {
                let order = generator.next_ehr();
                send_waiting(&producer, EHR_TOPIC, &order.key, &order.value);
            } else if enriching {
                let (key, value) = enrichment::latency_record(&mut generator);
                send_waiting(&producer, canonical_input, &key, &value);
            } else {
                send_waiting(&producer, input, &format!("lat{i}"), &value_of(i));
            }
            let due = started + Duration::from_secs_f64((i + 1) as f64 / LATENCY_RATE);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    });
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    // Only the records written now count. The input topics are shared, so a variant's
    // input also holds the latency records of the variants before it, and their outputs,
    // minutes old, can come out now.
    let written_from = written_from.as_millis() as i64;
    while (latencies.len() as u64) < LATENCY_RECORDS {
        assert!(
            Instant::now() < deadline,
            "{variant}: only {} of {LATENCY_RECORDS} latency records came out",
            latencies.len()
        );
        if let Some(Ok(message)) = reader.poll(Duration::from_millis(50)) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            match message.timestamp().to_millis() {
                Some(written) if written >= written_from => latencies.push(now - written),
                _ => {}
            }
        }
    }
    writer.join().unwrap();
    latencies.sort_unstable();
    latencies
}
