//! The floor of the map variants: (a) and (b), a consume→produce loop on rdkafka with no
//! engine, transactional or not; and (al) and (bl), the same loops writing the three
//! lineage headers every Sluice output carries, so that they put the same bytes on the wire.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::{INPUT_TOPIC, Progress, transform};

/// The floor: one consumer, one producer, the same map, no engine; with `lineage`, each
/// output carries an event, correlation and causation id as Sluice's sinks write them
/// (36-character UUIDs; here derived from the input's position, without hashing).
pub fn bare_loop(
    brokers: &str,
    group: &str,
    output: &str,
    transactional: bool,
    lineage: bool,
    progress: &Progress,
    stop: &AtomicBool,
) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "range")
        // As a stream thread's consumer sets it (engine/runtime/src/kafka.rs).
        .set("fetch.queue.backoff.ms", "10")
        .set(
            "isolation.level",
            if transactional {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .create()
        .unwrap();
    consumer.subscribe(&[INPUT_TOPIC]).unwrap();
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5");
    if transactional {
        config.set("transactional.id", format!("{group}-bare"));
    } else {
        config.set("enable.idempotence", "true");
    }
    let producer: ThreadedProducer<DefaultProducerContext> = config.create().unwrap();
    let timeout = Duration::from_secs(30);
    let interval = Duration::from_millis(if transactional { 100 } else { 5000 });
    if transactional {
        producer.init_transactions(timeout).unwrap();
    }
    let mut offsets: HashMap<i32, i64> = HashMap::new();
    let (mut consumed, mut committed) = (0u64, 0u64);
    let mut transaction_open = false;
    let mut last_commit = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if let Some(message) = consumer.poll(Duration::from_millis(20)) {
            let message = message.unwrap();
            if transactional && !transaction_open {
                producer.begin_transaction().unwrap();
                transaction_open = true;
            }
            let value = transform(message.payload().unwrap_or_default());
            let mut record = BaseRecord::<[u8], [u8]>::to(output)
                .payload(&value)
                .timestamp(message.timestamp().to_millis().unwrap_or(0));
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            if lineage {
                record = record.headers(lineage_headers(message.partition(), message.offset()));
            }
            let mut record = Some(record);
            while let Some(r) = record.take() {
                if let Err((_, back)) = producer.send(r) {
                    record = Some(back);
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            offsets.insert(message.partition(), message.offset() + 1);
            consumed += 1;
            progress.observe(consumed, committed);
        }
        if last_commit.elapsed() >= interval && !offsets.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (partition, offset) in offsets.drain() {
                tpl.add_partition_offset(INPUT_TOPIC, partition, Offset::Offset(offset))
                    .unwrap();
            }
            if transactional {
                flush(&producer, timeout);
                let metadata = consumer.group_metadata().unwrap();
                producer
                    .send_offsets_to_transaction(&tpl, &metadata, timeout)
                    .unwrap();
                producer.commit_transaction(timeout).unwrap();
                transaction_open = false;
            } else {
                flush(&producer, timeout);
                consumer.commit(&tpl, CommitMode::Sync).unwrap();
            }
            committed = consumed;
            progress.observe(consumed, committed);
            last_commit = Instant::now();
        }
    }
}

/// librdkafka's flush, as the engine's record collector flushes (`TopicProducer::flush` in the
/// runtime says why): rust-rdkafka's `flush`, also called first by its
/// `commit_transaction`, waits in 100 ms steps. Like for like, the bare loop flushes the
/// same way.
fn flush(producer: &ThreadedProducer<DefaultProducerContext>, timeout: Duration) {
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: the client pointer is valid for the producer's lifetime.
    let err =
        unsafe { rdkafka::bindings::rd_kafka_flush(producer.client().native_ptr(), timeout_ms) };
    assert_eq!(
        err,
        rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
        "flushing the bare loop's producer"
    );
}

/// The three lineage headers of an output, the size Sluice writes them.
fn lineage_headers(partition: i32, offset: i64) -> OwnedHeaders {
    let id = |kind: u64| {
        uuid::Uuid::from_u64_pair(kind << 32 | partition as u64, offset as u64)
            .hyphenated()
            .to_string()
    };
    let (event, cause) = (id(1), id(2));
    OwnedHeaders::new_with_capacity(3)
        .insert(Header {
            key: "correlation-id",
            value: Some(&cause),
        })
        .insert(Header {
            key: "causation-id",
            value: Some(&cause),
        })
        .insert(Header {
            key: "event-id",
            value: Some(&event),
        })
}
