//! What the runtime knows of Kafka's clients, in one place: the client configurations
//! the guarantees rest on, the few calls into librdkafka's C API that rust-rdkafka does not
//! make the way the runtime needs (a cached watermark, a flush, a send by topic handle),
//! the conversion of a fetched message into the engine's [`RawRecord`], and the metadata
//! Sluice keeps beside committed offsets. The roles around it (stream thread, record
//! collector, commit) speak in these terms and never build a client property or a raw
//! pointer themselves.

use foldhash::{HashMap, HashMapExt};
use std::ffi::{CString, c_void};
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::producer::{Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::IntoOpaque;
use sluice_engine::record::{Headers, Origin, ProducerRecord, RawRecord};

use crate::config::{KafkaClient, ProcessingGuarantee, WorkerConfig, is_secret};
use crate::fetch::FetchedRecord;

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

/// A threaded producer that sends each record through a handle of its topic, kept for the
/// producer's lifetime, and flushes with librdkafka's flush (also before committing a
/// transaction); everything else is the producer's own (it derefs to it).
///
/// rust-rdkafka's `send` names the topic on every call: it allocates a C string of the
/// name, and librdkafka looks the topic up under the client's write lock, which the
/// client's broker threads take as well. On the stream thread that was about 3.5% of its
/// time and, on this 2-core machine, waits on that lock of 6% more (BENCHMARKS.md). With a
/// handle, librdkafka only counts a reference. Records are produced as rust-rdkafka
/// produces them otherwise: copied, partitioned by the configured partitioner, with the
/// delivery opaque its delivery reports hand back.
pub(crate) struct TopicProducer<C: ProducerContext<DeliveryOpaque = usize> + 'static> {
    /// Dropped before the producer, as librdkafka requires of topic handles (fields drop
    /// in order).
    topics: HashMap<Arc<str>, TopicHandle>,
    producer: ThreadedProducer<C>,
}

/// A topic handle of one client, released when dropped.
struct TopicHandle(*mut rdsys::rd_kafka_topic_t);

// SAFETY: librdkafka's topic handles may be used and released from any thread.
unsafe impl Send for TopicHandle {}

impl Drop for TopicHandle {
    fn drop(&mut self) {
        // SAFETY: the handle came from rd_kafka_topic_new and is released once, before its
        // client (see `TopicProducer::topics`).
        unsafe { rdsys::rd_kafka_topic_destroy(self.0) }
    }
}

impl<C: ProducerContext<DeliveryOpaque = usize> + 'static> TopicProducer<C> {
    pub(crate) fn new(producer: ThreadedProducer<C>) -> Self {
        Self {
            topics: HashMap::new(),
            producer,
        }
    }

    /// Waits until every record given to the producer is acknowledged or has failed, and
    /// its delivery report has been served; at most `timeout`. Records still lingering are
    /// sent at once.
    ///
    /// rust-rdkafka's own `flush`, which its `commit_transaction` also calls first, waits in
    /// steps of 100 ms: it polls the producer's queue for 100 ms at a time, and each poll
    /// runs out its whole timeout however early the last report arrives. Every exactly-once
    /// commit thus stood about 100 ms idle, half of the stream thread's time at the default
    /// 100 ms commit interval (BENCHMARKS.md). librdkafka's flush, with delivery reports
    /// delivered as events as rust-rdkafka configures them, waits instead on the count of
    /// records not yet reported, which the threaded producer's polling thread brings to zero
    /// as it serves the reports, and returns the moment it does.
    pub(crate) fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: the client pointer is valid for the producer's lifetime, and
        // rd_kafka_flush may be called from any thread.
        let err = unsafe { rdsys::rd_kafka_flush(self.producer.client().native_ptr(), timeout_ms) };
        match err {
            rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => Ok(()),
            err => Err(KafkaError::Flush(RDKafkaErrorCode::from(err))),
        }
    }

    /// Commits the open transaction after flushing it with [`TopicProducer::flush`], so
    /// that rust-rdkafka's own flush inside the commit finds nothing left to wait for.
    pub(crate) fn commit_transaction(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.flush(timeout)?;
        self.producer.commit_transaction(timeout)
    }

    /// Hands `record` to the producer with the delivery opaque `opaque`; fails as
    /// rust-rdkafka's `send` does (`KafkaError::MessageProduction` with librdkafka's
    /// code: a full queue, a record too large, ...). Nothing is kept of a failed send.
    pub(crate) fn send(
        &mut self,
        record: &ProducerRecord,
        opaque: usize,
    ) -> Result<(), KafkaError> {
        let rk = self.producer.client().native_ptr();
        let topic = match self.topics.get(&record.topic) {
            Some(handle) => handle.0,
            None => {
                let name = CString::new(record.topic.as_bytes()).map_err(KafkaError::Nul)?;
                // SAFETY: the client pointer is valid for the producer's lifetime; the name
                // is NUL-terminated and outlives the call, which copies it.
                let handle =
                    unsafe { rdsys::rd_kafka_topic_new(rk, name.as_ptr(), std::ptr::null_mut()) };
                if handle.is_null() {
                    // SAFETY: reads this thread's last librdkafka error.
                    let code = unsafe { rdsys::rd_kafka_last_error() };
                    return Err(KafkaError::MessageProduction(code.into()));
                }
                self.topics
                    .insert(record.topic.clone(), TopicHandle(handle));
                handle
            }
        };
        // A record without headers is sent without a list (the last entry of `values`).
        let headers = if record.headers.is_empty() {
            std::ptr::null_mut()
        } else {
            // SAFETY: a new, empty list that this function owns until librdkafka takes it.
            unsafe { rdsys::rd_kafka_headers_new(record.headers.len()) }
        };
        for (key, value) in record.headers.iter() {
            // SAFETY: names and values are passed with their lengths and copied.
            unsafe {
                rdsys::rd_kafka_header_add(
                    headers,
                    key.as_ptr().cast(),
                    key.len() as isize,
                    value.as_ptr().cast(),
                    value.len() as isize,
                );
            }
        }
        let bytes = |b: &Option<Vec<u8>>| match b {
            Some(b) => rdsys::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 {
                ptr: b.as_ptr() as *mut c_void,
                size: b.len(),
            },
            None => rdsys::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 {
                ptr: std::ptr::null_mut(),
                size: 0,
            },
        };
        use rdsys::rd_kafka_vtype_t as T;
        use rdsys::rd_kafka_vu_s__bindgen_ty_1 as U;
        let vu = |vtype: T, u: U| rdsys::rd_kafka_vu_t { vtype, u };
        let values = [
            vu(T::RD_KAFKA_VTYPE_RKT, U { rkt: topic }),
            vu(
                T::RD_KAFKA_VTYPE_PARTITION,
                U {
                    i32_: record.partition.unwrap_or(-1),
                },
            ),
            vu(
                T::RD_KAFKA_VTYPE_MSGFLAGS,
                U {
                    i: rdsys::RD_KAFKA_MSG_F_COPY,
                },
            ),
            vu(
                T::RD_KAFKA_VTYPE_VALUE,
                U {
                    mem: bytes(&record.value),
                },
            ),
            vu(
                T::RD_KAFKA_VTYPE_KEY,
                U {
                    mem: bytes(&record.key),
                },
            ),
            vu(
                T::RD_KAFKA_VTYPE_OPAQUE,
                U {
                    ptr: opaque.into_ptr(),
                },
            ),
            vu(
                T::RD_KAFKA_VTYPE_TIMESTAMP,
                U {
                    i64_: record.timestamp,
                },
            ),
            vu(T::RD_KAFKA_VTYPE_HEADERS, U { headers }),
        ];
        // SAFETY: every pointer in `values` outlives the call; the payload and key are
        // copied (F_COPY); the topic handle stays valid while `self.topics` holds it.
        let count = values.len() - usize::from(headers.is_null());
        let error = unsafe { rdsys::rd_kafka_produceva(rk, values.as_ptr(), count) };
        if error.is_null() {
            // librdkafka owns the headers now.
            return Ok(());
        }
        // SAFETY: a failed produce leaves the headers to the caller; the error is read
        // and released once.
        let code = unsafe {
            if !headers.is_null() {
                rdsys::rd_kafka_headers_destroy(headers);
            }
            let code = rdsys::rd_kafka_error_code(error);
            rdsys::rd_kafka_error_destroy(error);
            code
        };
        Err(KafkaError::MessageProduction(code.into()))
    }
}

impl<C: ProducerContext<DeliveryOpaque = usize> + 'static> Deref for TopicProducer<C> {
    type Target = ThreadedProducer<C>;

    fn deref(&self) -> &Self::Target {
        &self.producer
    }
}

/// A fetched record as the engine's input record; `topic` is the shared name of its topic.
pub(crate) fn raw_record(record: FetchedRecord<'_>, topic: Arc<str>) -> RawRecord {
    let mut headers = Headers::new();
    for (name, value) in record.headers() {
        headers.add(
            String::from_utf8_lossy(name).into_owned(),
            value.unwrap_or_default(),
        );
    }
    RawRecord {
        key: record.key().map(<[u8]>::to_vec),
        value: record.payload().map(<[u8]>::to_vec),
        headers,
        timestamp: record.timestamp_ms(),
        origin: Origin {
            topic,
            partition: record.partition(),
            offset: record.offset(),
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
    use rdkafka::message::{Headers as _, Message};

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

    /// What a delivery report says of a record.
    #[derive(Debug, PartialEq)]
    struct Reported {
        opaque: usize,
        topic: String,
        partition: i32,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        headers: Vec<(String, Vec<u8>)>,
    }

    /// Keeps every delivery report's account of its record (a failed delivery's report
    /// carries no timestamp: `tests/kafka_exactly_once.rs` checks outputs' timestamps on a
    /// broker).
    struct KeepReports(Arc<std::sync::Mutex<Vec<Reported>>>);

    impl rdkafka::ClientContext for KeepReports {}

    impl ProducerContext for KeepReports {
        type DeliveryOpaque = usize;

        fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, opaque: usize) {
            let message = match result {
                Ok(m) => m,
                Err((_, m)) => m,
            };
            let headers = message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default();
            self.0.lock().unwrap().push(Reported {
                opaque,
                topic: message.topic().to_string(),
                partition: message.partition(),
                key: message.key().map(<[u8]>::to_vec),
                value: message.payload().map(<[u8]>::to_vec),
                headers,
            });
        }
    }

    /// A producer whose broker does not exist: every record fails after
    /// `message_timeout_ms`, and its report is kept.
    fn producer_without_broker(
        message_timeout_ms: &str,
        max_bytes: &str,
    ) -> (
        TopicProducer<KeepReports>,
        Arc<std::sync::Mutex<Vec<Reported>>>,
    ) {
        let reports = Arc::new(std::sync::Mutex::new(Vec::new()));
        let producer = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("message.timeout.ms", message_timeout_ms)
            .set("message.max.bytes", max_bytes)
            .set("log_level", "0")
            .create_with_context(KeepReports(reports.clone()))
            .unwrap();
        (TopicProducer::new(producer), reports)
    }

    fn record(topic: &str, headers: &[(&'static str, &str)]) -> ProducerRecord {
        let mut h = Headers::new();
        for (key, value) in headers {
            h.add(*key, value.as_bytes());
        }
        ProducerRecord {
            topic: Arc::from(topic),
            partition: Some(3),
            key: Some(b"k".to_vec()),
            value: Some(b"v".to_vec()),
            headers: h,
            timestamp: 1_700_000_000_123,
        }
    }

    #[test]
    fn a_flush_returns_once_every_delivery_report_has_been_served() {
        let (mut producer, reports) = producer_without_broker("200", "1000000");
        for _ in 0..3 {
            producer.send(&record("t", &[]), 0).unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        // The commit reads failures and changelog offsets from the reports right after
        // the flush: they must all have been served by then.
        assert_eq!(reports.lock().unwrap().len(), 3);
        producer.flush(Duration::ZERO).unwrap();
    }

    #[test]
    fn a_flush_that_runs_out_of_time_says_so() {
        let (mut producer, reports) = producer_without_broker("60000", "1000000");
        producer.send(&record("t", &[]), 0).unwrap();
        match producer.flush(Duration::from_millis(50)) {
            Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => {}
            other => panic!("expected a timed-out flush, got {other:?}"),
        }
        assert_eq!(reports.lock().unwrap().len(), 0);
    }

    #[test]
    fn a_record_sent_by_topic_handle_is_the_record_given() {
        let (mut producer, reports) = producer_without_broker("200", "1000000");
        let with_headers = record("out", &[("event-id", "e1"), ("correlation-id", "c1")]);
        producer.send(&with_headers, 1).unwrap();
        let mut bare = record("other", &[]);
        bare.key = None;
        bare.partition = None;
        producer.send(&bare, 0).unwrap();
        // A second record to the first topic goes through the handle kept for it.
        producer
            .send(&record("out", &[("event-id", "e2")]), 1)
            .unwrap();
        producer.flush(Duration::from_secs(10)).unwrap();
        let mut reports = std::mem::take(&mut *reports.lock().unwrap());
        reports.sort_by_key(|r| (r.topic.clone(), r.headers.clone()));
        let header = |k: &str, v: &str| (k.to_string(), v.as_bytes().to_vec());
        let out = |headers| Reported {
            opaque: 1,
            topic: "out".into(),
            partition: 3,
            key: Some(b"k".to_vec()),
            value: Some(b"v".to_vec()),
            headers,
        };
        assert_eq!(
            reports,
            [
                Reported {
                    opaque: 0,
                    topic: "other".into(),
                    partition: -1,
                    key: None,
                    value: Some(b"v".to_vec()),
                    headers: vec![],
                },
                out(vec![
                    header("event-id", "e1"),
                    header("correlation-id", "c1")
                ]),
                out(vec![header("event-id", "e2")]),
            ]
        );
    }

    #[test]
    fn a_record_too_large_is_refused_as_rust_rdkafka_refuses_it() {
        let (mut producer, reports) = producer_without_broker("200", "1000");
        let mut large = record("out", &[("event-id", "e1")]);
        large.value = Some(vec![b'x'; 2000]);
        match producer.send(&large, 1) {
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)) => {}
            other => panic!("expected a refusal for size, got {other:?}"),
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        assert!(
            reports.lock().unwrap().is_empty(),
            "a refused record is not reported"
        );
    }

    #[test]
    fn metadata_that_sluice_did_not_write_is_no_stream_time() {
        assert_eq!(parse_stream_time(""), None);
        assert_eq!(parse_stream_time("sluice.v2.stream-time=5"), None);
        assert_eq!(parse_stream_time("sluice.v1.stream-time=soon"), None);
    }
}
