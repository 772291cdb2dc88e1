//! Why a stream thread stopped, or why its transaction must be aborted.
//!
//! The stream thread sorts these in two: errors no retry can help (the topology asked to
//! fail, a record too large, a broken store) stop the thread; the rest abort the
//! transaction and rewind to the last commit, replacing the producer when it is fenced or
//! fatally failed ([`StreamThreadError::is_fatal`], [`StreamThreadError::producer_unusable`]).

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use sluice_engine::task::TaskError;
use sluice_state::StoreError;

use crate::kafka::redact_kafka_error;
use crate::restore::RestoreError;

/// Why a stream thread stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum StreamThreadError {
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(
        "stream thread {thread}: the consumer has no group metadata to fence the transaction with"
    )]
    NoGroupMetadata { thread: usize },
    #[error(
        "stream thread {thread}: a record for topic `{topic}` (from input {input}) is larger than the producer's message.max.bytes: raise kafka.producer.message.max.bytes (and the topic's max.message.bytes) or make the operator emit smaller records"
    )]
    RecordTooLarge {
        thread: usize,
        topic: String,
        input: String,
    },
    #[error("stream thread {thread}: {what}: {source}")]
    Kafka {
        thread: usize,
        what: &'static str,
        source: KafkaError,
    },
    #[error("stream thread {thread}: {source}")]
    State { thread: usize, source: StoreError },
    #[error("stream thread {thread}: {source}")]
    Restore {
        thread: usize,
        source: Box<RestoreError>,
    },
}

impl StreamThreadError {
    /// A Kafka client's failure, its message redacted of secret values.
    pub(crate) fn kafka(thread: usize, what: &'static str, source: KafkaError) -> Self {
        StreamThreadError::Kafka {
            thread,
            what,
            source: redact_kafka_error(source),
        }
    }

    /// Whether no abort and retry can help: the thread stops.
    pub(crate) fn is_fatal(&self) -> bool {
        matches!(
            self,
            // The topology asked to stop on this error, or no retry can help.
            StreamThreadError::Task(TaskError::Failed { .. })
                | StreamThreadError::RecordTooLarge { .. }
                | StreamThreadError::State { .. }
                | StreamThreadError::Restore { .. }
                | StreamThreadError::Kafka {
                    source: KafkaError::MessageConsumptionFatal(_),
                    ..
                }
        )
    }

    /// Whether the producer can no longer be used (fenced, or fatally failed), so the
    /// thread must replace it before it goes on.
    pub(crate) fn producer_unusable(&self) -> bool {
        match self {
            StreamThreadError::Kafka {
                source: KafkaError::Transaction(e),
                ..
            } => e.is_fatal(),
            StreamThreadError::Kafka { source, .. } => {
                source.rdkafka_error_code().is_some_and(|c| {
                    c == RDKafkaErrorCode::Fenced || c == RDKafkaErrorCode::ProducerFenced
                })
            }
            StreamThreadError::Task(_)
            | StreamThreadError::NoGroupMetadata { .. }
            | StreamThreadError::RecordTooLarge { .. }
            | StreamThreadError::State { .. }
            | StreamThreadError::Restore { .. } => false,
        }
    }
}
