//! What happens to a record that cannot be decoded or processed.
//!
//! * [`ErrorPolicy::DeadLetter`] (the default, topic `<topology>.dlq`): the *input* record,
//!   key, value and headers exactly as read, is written to the dead-letter topic with
//!   headers saying why and where from (see [`headers`]). Nothing is lost, and the topology
//!   goes on. Under exactly-once the dead-letter record is part of the same transaction as
//!   the input's offset.
//! * [`ErrorPolicy::Skip`]: the input is dropped and counted in
//!   `sluice_records_dropped_total{reason="error-skipped"}`.
//! * [`ErrorPolicy::Fail`]: the task stops with an error naming the input's coordinates and
//!   the operator; nothing of that input is written.
//!
//! Dead-letter headers and errors name fields and rules, never values: the record's bytes
//! are the only place patient data goes.

use std::str::FromStr;
use std::sync::Arc;

use crate::error::{ErrorKind, ProcessError};
use crate::record::{Headers, Origin, ProducerRecord};

/// Header names of a dead-letter record.
pub mod headers {
    pub const ERROR_KIND: &str = "sluice.error.kind";
    pub const ERROR_MESSAGE: &str = "sluice.error.message";
    pub const SOURCE_TOPIC: &str = "sluice.source.topic";
    pub const SOURCE_PARTITION: &str = "sluice.source.partition";
    pub const SOURCE_OFFSET: &str = "sluice.source.offset";
    pub const TOPOLOGY: &str = "sluice.topology";
    pub const OPERATOR: &str = "sluice.operator";
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorPolicy {
    DeadLetter { topic: String },
    Skip,
    Fail,
}

impl ErrorPolicy {
    pub fn dead_letter(topic: impl Into<String>) -> Self {
        ErrorPolicy::DeadLetter {
            topic: topic.into(),
        }
    }

    pub fn dead_letter_topic(&self) -> Option<&str> {
        match self {
            ErrorPolicy::DeadLetter { topic } => Some(topic),
            _ => None,
        }
    }
}

/// Parses the config form: `dlq` (with the default topic, filled in by the caller), `skip`
/// or `fail`.
impl FromStr for ErrorPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dlq" => Ok(ErrorPolicy::dead_letter(String::new())),
            "skip" => Ok(ErrorPolicy::Skip),
            "fail" => Ok(ErrorPolicy::Fail),
            other => Err(format!(
                "unknown error policy `{other}`: use one of dlq, skip, fail"
            )),
        }
    }
}

/// A dead-letter record, read back: why it failed, where it came from, and the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub kind: ErrorKind,
    pub message: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub topology: String,
    pub operator: String,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Every header, the input's own followed by the `sluice.*` ones.
    pub headers: Headers,
}

impl DeadLetter {
    /// Reads a dead-letter record; `None` when a `sluice.*` header is missing or malformed.
    pub fn from_record(record: &ProducerRecord) -> Option<Self> {
        let h = &record.headers;
        Some(Self {
            kind: ErrorKind::parse(h.get_str(headers::ERROR_KIND)?)?,
            message: h.get_str(headers::ERROR_MESSAGE)?.to_string(),
            source_topic: h.get_str(headers::SOURCE_TOPIC)?.to_string(),
            source_partition: h.get_str(headers::SOURCE_PARTITION)?.parse().ok()?,
            source_offset: h.get_str(headers::SOURCE_OFFSET)?.parse().ok()?,
            topology: h.get_str(headers::TOPOLOGY)?.to_string(),
            operator: h.get_str(headers::OPERATOR)?.to_string(),
            key: record.key.clone(),
            value: record.value.clone(),
            headers: h.clone(),
        })
    }
}

/// The input that failed, as the task still has it.
pub(crate) struct FailedInput<'a> {
    pub(crate) origin: &'a Origin,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) value: Option<&'a [u8]>,
    pub(crate) headers: &'a Headers,
    pub(crate) timestamp: i64,
}

pub(crate) fn dead_letter_record(
    dlq_topic: &Arc<str>,
    input: &FailedInput<'_>,
    topology: &str,
    operator: &str,
    error: &ProcessError,
) -> ProducerRecord {
    let mut h = input.headers.clone();
    h.insert(headers::ERROR_KIND, error.kind.as_str());
    h.insert(headers::ERROR_MESSAGE, error.message.as_str());
    h.insert(headers::SOURCE_TOPIC, &*input.origin.topic);
    h.insert(
        headers::SOURCE_PARTITION,
        input.origin.partition.to_string(),
    );
    h.insert(headers::SOURCE_OFFSET, input.origin.offset.to_string());
    h.insert(headers::TOPOLOGY, topology);
    h.insert(headers::OPERATOR, operator);
    ProducerRecord {
        topic: dlq_topic.clone(),
        partition: None,
        key: input.key.map(<[u8]>::to_vec),
        value: input.value.map(<[u8]>::to_vec),
        headers: h,
        timestamp: input.timestamp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_record_reads_back_with_every_field() {
        let origin = Origin {
            topic: Arc::from("orders"),
            partition: 4,
            offset: 99,
        };
        let mut input_headers = Headers::new();
        input_headers.add("source-system", "ehr");
        let input = FailedInput {
            origin: &origin,
            key: Some(b"k"),
            value: Some(b"{bad"),
            headers: &input_headers,
            timestamp: 5,
        };
        let error = ProcessError::missing_field("orderId");
        let record = dead_letter_record(&Arc::from("t.dlq"), &input, "t", "normalize", &error);
        let dead = DeadLetter::from_record(&record).unwrap();
        assert_eq!(dead.kind, ErrorKind::Validation);
        assert_eq!(dead.message, "missing required field orderId");
        assert_eq!(
            (
                dead.source_topic.as_str(),
                dead.source_partition,
                dead.source_offset
            ),
            ("orders", 4, 99)
        );
        assert_eq!(
            (dead.topology.as_str(), dead.operator.as_str()),
            ("t", "normalize")
        );
        assert_eq!(dead.value.as_deref(), Some(&b"{bad"[..]));
        assert_eq!(dead.headers.get_str("source-system"), Some("ehr"));
    }

    #[test]
    fn policy_names_parse_and_an_unknown_one_lists_the_choices() {
        assert_eq!("skip".parse::<ErrorPolicy>(), Ok(ErrorPolicy::Skip));
        assert_eq!("fail".parse::<ErrorPolicy>(), Ok(ErrorPolicy::Fail));
        let err = "drop".parse::<ErrorPolicy>().unwrap_err();
        assert!(err.contains("dlq, skip, fail"), "{err}");
    }
}
