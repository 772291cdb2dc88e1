//! Restore throughput end to end: a worker rebuilding a store from its changelog on the
//! test broker, against a bare librdkafka consumer reading the same changelog in the same
//! run (the ceiling: what reading the records costs before anything is stored).
//!
//! A changelog of N 100-byte records over 4 partitions is written once. Then:
//!
//! * (a) bare: one `BaseConsumer`, read_committed, assigned every partition, reads all N;
//! * (b) sluice: a worker with an empty state directory gets one input record per
//!   partition, so every task restores its store (RocksDB, batches with checkpoints)
//!   side by side; timed from the first restore to the worker reporting N records
//!   restored (its start and group join are not counted).
//!
//! `cargo bench --bench restore_throughput` writes 1,000,000 records
//! (`SLUICE_RESTORE_RECORDS` overrides); as a test (`cargo test --bench`) it writes 20,000
//! once, to check that the harness works.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sluice_engine::{Serdes, Topology, TopologyBuilder};
use sluice_runtime::{ThreadStatus, Worker};

/// The allocator the `sluice` binary runs with (see src/main.rs), so every variant measured
/// here, bare loops included, allocates as a worker does.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const APP: &str = "restore-bench";
const STORE: &str = "restore-bench-counts";
const INPUT: &str = "restore-bench.in";
const PARTITIONS: i32 = 4;
const VALUE_BYTES: usize = 100;

fn changelog() -> String {
    format!("{APP}-{STORE}-changelog")
}

fn topology() -> Topology {
    let builder = TopologyBuilder::new("restore-bench");
    builder
        .source("in", &[INPUT], Serdes::string(), Serdes::string())
        .group_by_key(Serdes::string(), Serdes::string())
        .count("count", STORE)
        .to("out", "restore-bench.out", Serdes::string(), Serdes::i64());
    builder.build().unwrap()
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let records: u64 = if benching {
        std::env::var("SLUICE_RESTORE_RECORDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000)
    } else {
        20_000
    };
    let broker = support::TestBroker::start();
    broker.create_topics(&[INPUT, &changelog()], PARTITIONS);
    write_changelog(&broker.brokers, records);

    let bare = read_bare(&broker.brokers, records);
    let sluice = restore_with_sluice(&broker, records);
    let rate = |d: Duration| records as f64 / d.as_secs_f64();
    println!("restore of {records} records of {VALUE_BYTES} bytes over {PARTITIONS} partitions");
    println!("| variant | seconds | records/s |");
    println!("|---|---:|---:|");
    println!(
        "| (a) bare read_committed consumer | {:.2} | {:.0} |",
        bare.as_secs_f64(),
        rate(bare)
    );
    println!(
        "| (b) Sluice restore into RocksDB | {:.2} | {:.0} |",
        sluice.as_secs_f64(),
        rate(sluice)
    );
    println!("b/a = {:.2}", rate(sluice) / rate(bare));
}

/// N records with distinct keys (a compacted changelog keeps them all), round-robin.
fn write_changelog(brokers: &str, records: u64) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    let value = [7u8; VALUE_BYTES];
    let topic = changelog();
    for i in 0..records {
        let key = format!("key-{i:012}");
        let mut record = BaseRecord::to(&topic)
            .key(key.as_bytes())
            .payload(&value[..])
            .partition((i % PARTITIONS as u64) as i32);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();
}

fn read_bare(brokers: &str, records: u64) -> Duration {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "restore-bench-bare")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        // The restore consumer's fetch settings (engine/runtime/src/restore.rs), so the
        // ceiling is read the way a restore reads.
        .set("fetch.error.backoff.ms", "10")
        .set("fetch.queue.backoff.ms", "10")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment
            .add_partition_offset(&changelog(), p, Offset::Beginning)
            .unwrap();
    }
    let started = Instant::now();
    consumer.assign(&assignment).unwrap();
    let mut read = 0;
    while read < records {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            read += 1;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "bare read stalled"
        );
    }
    started.elapsed()
}

fn restore_with_sluice(broker: &support::TestBroker, records: u64) -> Duration {
    let dir = std::env::temp_dir().join(format!("sluice-restore-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = broker.worker_config(APP, &dir, &[]);
    let worker = Worker::start(topology(), config).unwrap();
    // One record per partition: each task starts, and restores its store first.
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &broker.brokers)
        .create()
        .unwrap();
    for p in 0..PARTITIONS {
        producer
            .send(BaseRecord::to(INPUT).key("k").payload("v").partition(p))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    // Timed from the first restore, not from the worker's start and group join.
    let health = worker.health().clone();
    let stats = worker.stats().clone();
    let waiting = Instant::now();
    while health.state(0) != Some(ThreadStatus::Restoring)
        && stats.restored.load(Ordering::Relaxed) == 0
    {
        assert!(
            waiting.elapsed() < Duration::from_secs(120),
            "no restore began"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let started = Instant::now();
    while stats.restored.load(Ordering::Relaxed) < records {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "restore stalled at {} of {records}",
            stats.restored.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = started.elapsed();
    worker.stop();
    worker.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    elapsed
}
