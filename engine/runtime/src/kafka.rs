//! What the runtime knows of Kafka's clients, in one place: the client configurations
//! the guarantees rest on, the one call into librdkafka's C API, the conversion of a
//! fetched message into the engine's [`RawRecord`], and the metadata Sluice keeps beside
//! committed offsets. The roles around it (stream thread, record collector, commit) speak
//! in these terms and never build a client property or a raw pointer themselves.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers as _, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sluice_engine::record::{Headers, Origin, RawRecord};

use crate::config::{KafkaClient, ProcessingGuarantee, WorkerConfig, is_secret};

/// How long a Kafka call that must finish before the loop goes on may take.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How often librdkafka reports statistics (consumer lag), unless
/// `kafka.consumer.statistics.interval.ms` says otherwise.
const STATISTICS_INTERVAL_MS: &str = "5000";

/// How long librdkafka waits before fetching a partition again after finding its prefetch
/// queue full (`queued.min.messages`, 100,000 records), unless
/// `kafka.consumer.fetch.queue.backoff.ms` says otherwise. For a subscribed consumer the
/// queue counted is the one consumer queue every partition forwards to, so all partitions
/// back off together. librdkafka's default, 1 s, is longer than a consumer takes to drain
/// 100,000 records at 100,000 a second or more: it then waits with nothing to read, and
/// that wait set the pace. On the test broker it held restores to a quarter of their rate
/// and stream threads to between a third and a half (BENCHMARKS.md). Checking a full
/// queue every 10 ms instead costs nothing measurable.
pub(crate) const FETCH_QUEUE_BACKOFF_MS: &str = "10";

/// The prefix of the stream time in committed offsets' metadata (versioned, so a later
/// format can tell itself apart).
const STREAM_TIME_METADATA: &str = "sluice.v1.stream-time=";

/// librdkafka's configuration errors quote the rejected value: hide it when the key is secret.
pub fn redact_kafka_error(e: KafkaError) -> KafkaError {
    match e {
        KafkaError::ClientConfig(res, desc, key, _) if is_secret(&key) => {
            KafkaError::ClientConfig(res, desc, key, "<redacted>".into())
        }
        other => other,
    }
}

/// The configuration of a stream thread's consumer: a member of the application's group
/// that never commits by itself, reading committed data only under exactly-once.
pub(crate) fn consumer_config(
    config: &WorkerConfig,
    index: usize,
    process_id: &str,
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.bootstrap_servers)
        .set("group.id", &config.application_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // Range assignment gives partition p of every co-partitioned topic to one member,
        // so a task sees all of its inputs.
        .set("partition.assignment.strategy", "range")
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MS)
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
        // Prefetch keeps librdkafka's defaults (up to 100,000 records per partition): under
        // a backlog of small records it is most of a worker's memory (each queued record
        // costs a few hundred bytes of bookkeeping besides its payload), but bounding it
        // to 10,000 cut exactly-once throughput on the test broker 3.6x (fetches could not
        // keep up). Memory-bound deployments set kafka.consumer.queued.min.messages.
        .set(
            "isolation.level",
            match config.processing_guarantee {
                ProcessingGuarantee::ExactlyOnceV2 => "read_committed",
                ProcessingGuarantee::AtLeastOnce => "read_uncommitted",
            },
        );
    if config.static_membership {
        // A restarted worker (same state dir, so same process id) takes its old place in
        // the group at once, with the same partitions, instead of waiting for the dead
        // member's session to expire.
        c.set(
            "group.instance.id",
            format!("{}-{process_id}-{index}", config.application_id),
        );
    }
    for (key, value) in config.kafka_for(KafkaClient::Consumer) {
        c.set(key, value);
    }
    c
}

/// The configuration of a stream thread's producer: transactional under exactly-once
/// (one transactional id per thread and process, so a restarted process fences its own
/// zombie), idempotent under at-least-once.
pub(crate) fn producer_config(
    config: &WorkerConfig,
    index: usize,
    process_id: &str,
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.bootstrap_servers)
        // Java's partitioner: keys land where Kafka Streams and Java clients put them.
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5");
    if config.processing_guarantee == ProcessingGuarantee::ExactlyOnceV2 {
        c.set(
            "transactional.id",
            format!("{}-{process_id}-{index}", config.application_id),
        )
        .set("transaction.timeout.ms", "10000");
    } else {
        c.set("enable.idempotence", "true");
    }
    for (key, value) in config.kafka_for(KafkaClient::Producer) {
        c.set(key, value);
    }
    c
}

/// The high watermark librdkafka last saw for a partition, from its cache (no request).
pub(crate) fn cached_high_watermark<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid for the consumer's lifetime; the topic is a
    // NUL-terminated string that outlives the call, which copies into the two locals.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}

/// A fetched message as the engine's input record; `topic` is the shared name of its topic.
pub(crate) fn raw_record(message: &BorrowedMessage<'_>, topic: Arc<str>) -> RawRecord {
    let mut headers = Headers::new();
    if let Some(h) = message.headers() {
        for header in h.iter() {
            headers.add(header.key.to_string(), header.value.unwrap_or_default());
        }
    }
    RawRecord {
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers,
        timestamp: message.timestamp().to_millis().unwrap_or(0),
        origin: Origin {
            topic,
            partition: message.partition(),
            offset: message.offset(),
        },
    }
}

/// A list of one partition, for pause, resume and the like.
pub(crate) fn partition_list(topic: &str, partition: i32) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    tpl
}

/// Stops fetching a partition. A failure is harmless: a record fetched anyway is dropped
/// by its caller and read again after the resume's seek.
pub(crate) fn pause<C: ConsumerContext>(consumer: &BaseConsumer<C>, topic: &str, partition: i32) {
    let _ = consumer.pause(&partition_list(topic, partition));
}

/// Fetches a paused partition again.
pub(crate) fn resume<C: ConsumerContext>(consumer: &BaseConsumer<C>, topic: &str, partition: i32) {
    let _ = consumer.resume(&partition_list(topic, partition));
}

/// The offset of an element of a partition list, if it is a concrete one.
pub(crate) fn concrete(offset: Offset) -> Option<i64> {
    match offset {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

/// The metadata of a committed offset: the stream time of the task that committed it, and
/// the inputs after the offset that the task had done already (behind an input still in
/// flight), which a task reading them again skips.
pub(crate) fn offset_metadata(stream_time: Option<i64>, done_ahead: &[i64]) -> String {
    let mut metadata = String::new();
    if let Some(stream_time) = stream_time {
        metadata.push_str(&format!("{STREAM_TIME_METADATA}{stream_time}"));
    }
    if !done_ahead.is_empty() {
        if !metadata.is_empty() {
            metadata.push(';');
        }
        metadata.push_str(DONE_AHEAD_METADATA);
        metadata.push_str(&encode_offsets(done_ahead));
    }
    metadata
}

/// The stream time in a committed offset's metadata, if Sluice wrote it.
pub(crate) fn parse_stream_time(metadata: &str) -> Option<i64> {
    metadata
        .split(';')
        .find_map(|part| part.strip_prefix(STREAM_TIME_METADATA))?
        .parse()
        .ok()
}

/// The inputs done ahead in a committed offset's metadata (none if Sluice wrote none).
pub(crate) fn parse_done_ahead(metadata: &str) -> Vec<i64> {
    metadata
        .split(';')
        .find_map(|part| part.strip_prefix(DONE_AHEAD_METADATA))
        .map(decode_offsets)
        .unwrap_or_default()
}

/// The prefix of the inputs done ahead in committed offsets' metadata.
const DONE_AHEAD_METADATA: &str = "sluice.v1.done-ahead=";

/// Sorted offsets as runs: `6-9,12`.
fn encode_offsets(offsets: &[i64]) -> String {
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for &offset in offsets {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == offset => *end = offset,
            _ => runs.push((offset, offset)),
        }
    }
    runs.iter()
        .map(|(start, end)| match start == end {
            true => start.to_string(),
            false => format!("{start}-{end}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn decode_offsets(text: &str) -> Vec<i64> {
    text.split(',')
        .filter_map(|run| match run.split_once('-') {
            Some((start, end)) => Some((start.parse().ok()?, end.parse().ok()?)),
            None => run.parse().ok().map(|o| (o, o)),
        })
        .flat_map(|(start, end): (i64, i64)| start..=end)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset_metadata_of(stream_time: i64) -> String {
        offset_metadata(Some(stream_time), &[])
    }

    #[test]
    fn stream_time_round_trips_through_offset_metadata() {
        assert_eq!(parse_stream_time(&offset_metadata_of(-5)), Some(-5));
        assert_eq!(
            parse_stream_time(&offset_metadata_of(1_700_000_000_123)),
            Some(1_700_000_000_123)
        );
    }

    #[test]
    fn inputs_done_ahead_round_trip_through_offset_metadata_as_runs() {
        let metadata = offset_metadata(Some(42), &[6, 7, 8, 9, 12, 20, 21]);
        assert_eq!(
            metadata,
            "sluice.v1.stream-time=42;sluice.v1.done-ahead=6-9,12,20-21"
        );
        assert_eq!(parse_stream_time(&metadata), Some(42));
        assert_eq!(parse_done_ahead(&metadata), [6, 7, 8, 9, 12, 20, 21]);
        assert_eq!(parse_done_ahead(&offset_metadata_of(1)), Vec::<i64>::new());
    }

    #[test]
    fn metadata_that_sluice_did_not_write_is_no_stream_time() {
        assert_eq!(parse_stream_time(""), None);
        assert_eq!(parse_stream_time("sluice.v2.stream-time=5"), None);
        assert_eq!(parse_stream_time("sluice.v1.stream-time=soon"), None);
    }
}
