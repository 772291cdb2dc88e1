//! Replay: webhooks dead-lettered for a delivery reason (retries exhausted, an endpoint
//! disabled or failing, a permanent answer) written back to the input topic, with fresh
//! retry counts, once the endpoint is fixed. The library side of
//! `sluice webhooks replay`.
//!
//! Which dead letters: all delivery dead letters, or those of one endpoint host, or those
//! whose last attempt falls in a time range. Bad input (not JSON, no URL) is never
//! replayed: it would only fail again. The dead-letter topic is a log: replayed records
//! stay there too, and replaying the same selection twice delivers them twice (with the
//! same `webhook-id`, for receivers to de-duplicate on); narrow the time range to replay
//! only what came since the last replay.
//!
//! A replayed record is the dead letter's value with `retryCount` 0, its key, and its
//! headers but for the dead letter's own (`sluice.*`, and every `webhook-*` but
//! `webhook-id`): a new first attempt with the same webhook id.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers as _, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sluice_engine::serde::JsonEventSerde;
use sluice_engine::{Headers, Serde};

use super::WebhooksConfig;
use super::headers;

/// Which dead letters to replay; every field that is set must match.
#[derive(Clone, Debug, Default)]
pub struct ReplayFilter {
    /// The endpoint's host, as the `webhook-endpoint-host` header has it.
    pub endpoint_host: Option<String>,
    /// Last attempt at or after this time (epoch milliseconds).
    pub since_ms: Option<i64>,
    /// Last attempt before this time (epoch milliseconds).
    pub until_ms: Option<i64>,
}

/// What a replay did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Dead letters read.
    pub read: usize,
    /// Written back to the input topic.
    pub replayed: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("replaying webhooks: {what}: {source}")]
    Kafka {
        what: &'static str,
        #[source]
        source: KafkaError,
    },
}

/// The record to write back for a dead letter, or `None` when it is not replayed (not a
/// delivery dead letter, not selected, or a value that no longer reads).
pub fn replayed(
    headers: &Headers,
    value: Option<&[u8]>,
    filter: &ReplayFilter,
) -> Option<(Vec<u8>, Headers)> {
    // Only the router's dead letters carry a reason; bad input does not.
    headers.get_str(headers::REASON)?;
    if let Some(host) = &filter.endpoint_host
        && headers.get_str(headers::ENDPOINT_HOST) != Some(host.as_str())
    {
        return None;
    }
    let last: i64 = headers.get_str(headers::LAST_ATTEMPT_AT)?.parse().ok()?;
    if filter.since_ms.is_some_and(|since| last < since)
        || filter.until_ms.is_some_and(|until| last >= until)
    {
        return None;
    }
    let mut event = JsonEventSerde.deserialize("", value).ok()?;
    event
        .payload
        .as_object_mut()?
        .insert("retryCount".into(), 0.into());
    let value = JsonEventSerde.serialize("", &event).ok()??;
    let mut kept = Headers::new();
    for (name, value) in headers.iter() {
        let own = name.starts_with("sluice.") || name.starts_with("webhook-");
        if !own || name == headers::WEBHOOK_ID {
            kept.add(name.to_string(), value);
        }
    }
    Some((value, kept))
}

/// Replays the dead letters `filter` selects, from `config`'s dead-letter topic to its
/// input topic, on the cluster at `brokers`; reads the dead-letter topic (read_committed)
/// up to its end as it was when the replay started.
pub fn replay(
    brokers: &str,
    config: &WebhooksConfig,
    filter: &ReplayFilter,
) -> Result<ReplaySummary, ReplayError> {
    let kafka = |what| move |source| ReplayError::Kafka { what, source };
    let timeout = Duration::from_secs(30);
    let dlq = config.dead_letter_topic();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "sluice-webhooks-replay")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(kafka("creating the consumer"))?;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .create()
        .map_err(kafka("creating the producer"))?;
    let metadata = consumer
        .fetch_metadata(Some(&dlq), timeout)
        .map_err(kafka("reading the dead-letter topic's partitions"))?;
    let mut assignment = TopicPartitionList::new();
    let mut ends = std::collections::HashMap::new();
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) = consumer
            .fetch_watermarks(&dlq, partition.id(), timeout)
            .map_err(kafka("reading the dead-letter topic's ends"))?;
        if high > low {
            ends.insert(partition.id(), high);
            assignment
                .add_partition_offset(&dlq, partition.id(), Offset::Offset(low))
                .map_err(kafka("assigning the dead-letter topic"))?;
        }
    }
    let mut summary = ReplaySummary::default();
    if ends.is_empty() {
        return Ok(summary);
    }
    consumer
        .assign(&assignment)
        .map_err(kafka("assigning the dead-letter topic"))?;
    let input = config.input_topic.clone();
    while !ends.is_empty() {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            // Transaction markers end a partition without a message: look at positions.
            let positions = consumer.position().map_err(kafka("reading positions"))?;
            for element in positions.elements() {
                if let Offset::Offset(at) = element.offset()
                    && ends.get(&element.partition()).is_some_and(|end| at >= *end)
                {
                    ends.remove(&element.partition());
                }
            }
            continue;
        };
        let message = message.map_err(kafka("reading the dead-letter topic"))?;
        if ends
            .get(&message.partition())
            .is_some_and(|end| message.offset() + 1 >= *end)
        {
            ends.remove(&message.partition());
        }
        summary.read += 1;
        let mut read = Headers::new();
        if let Some(h) = message.headers() {
            for header in h.iter() {
                read.add(header.key.to_string(), header.value.unwrap_or_default());
            }
        }
        let Some((value, kept)) = replayed(&read, message.payload(), filter) else {
            continue;
        };
        let mut out = OwnedHeaders::new();
        for (name, value) in kept.iter() {
            out = out.insert(Header {
                key: name,
                value: Some(value),
            });
        }
        let mut record = BaseRecord::<[u8], [u8]>::to(&input)
            .payload(&value)
            .headers(out);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        let mut record = record;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    // A full queue: let the producer deliver, then send again.
                    producer.poll(Duration::from_millis(10));
                    record = back;
                }
            }
        }
        summary.replayed += 1;
    }
    producer
        .flush(timeout)
        .map_err(kafka("writing the replayed webhooks"))?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead_letter(host: &str, last: i64) -> Headers {
        let mut h = Headers::new();
        h.add("x-app", "kept");
        h.add(headers::WEBHOOK_ID, "evt-1");
        h.add(headers::REASON, "exhausted");
        h.add(headers::ENDPOINT_HOST, host);
        h.add(headers::LAST_ATTEMPT_AT, last.to_string());
        h.add(headers::FIRST_ATTEMPT_AT, "1");
        h.add(headers::DUE_AT, "2");
        h.add("sluice.error.message", "webhook not delivered");
        h
    }

    const VALUE: &[u8] = br#"{"url":"https://h.example/x","payload":{},"retryCount":7}"#;

    #[test]
    fn a_replayed_dead_letter_starts_over_with_its_webhook_id_and_own_headers() {
        let (value, kept) = replayed(
            &dead_letter("h.example", 10),
            Some(VALUE),
            &ReplayFilter::default(),
        )
        .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&value).unwrap();
        assert_eq!(value["retryCount"], 0);
        assert_eq!(value["url"], "https://h.example/x");
        let names: Vec<&str> = kept.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["x-app", headers::WEBHOOK_ID]);
    }

    #[test]
    fn the_filter_selects_by_host_and_last_attempt_time_and_never_bad_input() {
        let select = |host: Option<&str>, since, until| ReplayFilter {
            endpoint_host: host.map(str::to_string),
            since_ms: since,
            until_ms: until,
        };
        let dead = dead_letter("h.example", 100);
        let picked = |filter: ReplayFilter| replayed(&dead, Some(VALUE), &filter).is_some();
        assert!(picked(select(Some("h.example"), None, None)));
        assert!(!picked(select(Some("other.example"), None, None)));
        assert!(picked(select(None, Some(100), Some(101))));
        assert!(!picked(select(None, Some(101), None)));
        assert!(!picked(select(None, None, Some(100))));
        let mut bad_input = Headers::new();
        bad_input.add("sluice.error.message", "missing required field url");
        assert!(replayed(&bad_input, Some(b"{}"), &ReplayFilter::default()).is_none());
    }
}
