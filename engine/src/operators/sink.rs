//! to: writes a stream to a topic.
//!
//! The sink encodes key and value with its serdes and writes the record with the input's
//! headers, timestamp and lineage: envelope values are stamped with the correlation and
//! causation ids of the input that caused them, and every record gets `event-id`,
//! `correlation-id` and `causation-id` headers (see [`lineage`](crate::lineage)). A value
//! that does not encode sends the *input* to the error policy, naming the sink.
//!
//! An internal topic (a repartition's) is a hop inside the topology, not a new event: its
//! records carry the input's lineage unchanged, so what the topology finally writes names
//! the input that came in from outside as its cause, not the hop.
//!
//! [`Stream::to_without_lineage`] writes a topic whose readers want the records as the
//! topology made them and nothing more: a topic shared with a system outside the platform,
//! one kept byte for byte as an earlier producer wrote it, or a high-volume topic whose
//! readers never follow causes. Its records get no lineage headers and their envelopes are
//! not filled in; lineage headers the input carried are dropped, so an output never
//! passes off the input's ids as its own. The three headers are about 150 bytes a record,
//! which the producer, the broker and every reader pay for.
//!
//! Records written while handling one input are released together, only once the input
//! has been handled without error, so a failure never leaves half of an input's outputs
//! behind.
//!
//! ```
//! use sluice_engine::{Serdes, TestDriver, TopologyBuilder};
//!
//! let builder = TopologyBuilder::new("relay");
//! builder
//!     .source("in", &["in"], Serdes::string(), Serdes::string())
//!     .to("out", "out", Serdes::string(), Serdes::string());
//! let mut driver = TestDriver::new(builder.build().unwrap());
//! driver.pipe_raw("in", Some(b"k"), Some(b"v")).unwrap();
//!
//! let written = driver.read_raw("out");
//! assert_eq!(written[0].value.as_deref(), Some(&b"v"[..]));
//! // The input had no lineage: an id made of its source position names it, as the
//! // output's cause and as the start of the flow.
//! let cause = written[0].headers.get_str("causation-id").unwrap();
//! assert_eq!(written[0].headers.get_str("correlation-id"), Some(cause));
//! assert_ne!(written[0].headers.get_str("event-id"), Some(cause));
//! ```

use std::marker::PhantomData;
use std::sync::Arc;

use super::{Context, Processor};
use crate::error::{ErrorKind, ProcessError};
use crate::lineage::{
    CAUSATION_ID_HEADER, CORRELATION_ID_HEADER, EVENT_ID_HEADER, derived_id_text, stamp_headers,
};
use crate::processor::{self, ProcessorFactory};
use crate::record::{ProducerRecord, Record};
use crate::serde::{Serde, SharedSerde};
use crate::topology::{NodeSpec, Retarget, Stream};

impl<K, V> Stream<K, V>
where
    K: Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    /// Writes every record of this stream to `topic`.
    pub fn to(
        &self,
        name: &str,
        topic: &str,
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
    ) {
        let factory = sink_factory(name, topic, key_serde, value_serde, Hop::Out);
        let _: Stream<(), ()> = self.add_node(NodeSpec::sink(name, topic, factory));
    }

    /// Writes every record of this stream to `topic` without lineage: no `event-id`,
    /// `correlation-id` or `causation-id` headers (the input's are dropped), and envelope
    /// values as the topology made them. For readers outside the platform; see the
    /// module's documentation.
    ///
    /// ```
    /// use sluice_engine::{Headers, ProducerRecord, Serdes, TestDriver, TopologyBuilder};
    ///
    /// let builder = TopologyBuilder::new("export");
    /// builder
    ///     .source("in", &["in"], Serdes::string(), Serdes::string())
    ///     .to_without_lineage("out", "out", Serdes::string(), Serdes::string());
    /// let mut driver = TestDriver::new(builder.build().unwrap());
    /// let mut headers = Headers::new();
    /// headers.add("event-id", "evt-1");
    /// headers.add("tenant", "north");
    /// driver
    ///     .pipe_record(ProducerRecord {
    ///         topic: "in".into(),
    ///         partition: Some(0),
    ///         key: Some(b"k".to_vec()),
    ///         value: Some(b"v".to_vec()),
    ///         headers,
    ///         timestamp: 0,
    ///     })
    ///     .unwrap();
    ///
    /// let written = driver.read_raw("out");
    /// assert_eq!(written[0].headers.get_str("event-id"), None);
    /// assert_eq!(written[0].headers.get_str("tenant"), Some("north"));
    /// ```
    pub fn to_without_lineage(
        &self,
        name: &str,
        topic: &str,
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
    ) {
        let factory = sink_factory(name, topic, key_serde, value_serde, Hop::OutWithoutLineage);
        let _: Stream<(), ()> = self.add_node(NodeSpec::sink(name, topic, factory));
    }

    /// Writes every record of this stream to the topology's internal topic `topic`
    /// (named `<application.id>-<topic>` when the topology runs).
    pub(crate) fn to_internal(
        &self,
        name: &str,
        topic: &str,
        key_serde: Arc<dyn Serde<K>>,
        value_serde: Arc<dyn Serde<V>>,
    ) {
        let node = Arc::<str>::from(name);
        let retarget: Retarget = Arc::new(move |topic: &str| {
            sink_factory(
                &node,
                topic,
                SharedSerde(key_serde.clone()),
                SharedSerde(value_serde.clone()),
                Hop::Internal,
            )
        });
        let _: Stream<(), ()> = self.add_node(NodeSpec::internal_sink(name, topic, retarget));
    }
}

/// Where a sink's records go, and so what lineage they carry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hop {
    /// A topic others read: every record is a new event, caused by the input.
    Out,
    /// A topic others read, whose records carry no lineage.
    OutWithoutLineage,
    /// The topology's internal topic: records carry the input's lineage unchanged.
    Internal,
}

fn sink_factory<K, V>(
    name: &str,
    topic: &str,
    key_serde: impl Serde<K>,
    value_serde: impl Serde<V>,
    hop: Hop,
) -> ProcessorFactory
where
    K: Send + 'static,
    V: Send + 'static,
{
    let shared = Arc::new(SinkShared {
        name: Arc::from(name),
        topic: Arc::from(topic),
        key_serde,
        value_serde,
        hop,
        _marker: PhantomData,
    });
    processor::factory::<_, K, V>(move || Sink(shared.clone()))
}

struct SinkShared<K, V, KS, VS> {
    name: Arc<str>,
    topic: Arc<str>,
    key_serde: KS,
    value_serde: VS,
    hop: Hop,
    _marker: PhantomData<fn(K, V)>,
}

/// A sink holds nothing per task, so every task shares one [`SinkShared`]. It forwards
/// nothing: what it makes leaves the topology through [`Context::produce`].
struct Sink<K, V, KS, VS>(Arc<SinkShared<K, V, KS, VS>>);

impl<K, V, KS, VS> Processor<K, V> for Sink<K, V, KS, VS>
where
    K: Send + 'static,
    V: Send + 'static,
    KS: Serde<K>,
    VS: Serde<V>,
{
    type KeyOut = ();
    type ValueOut = ();

    fn process(
        &mut self,
        mut record: Record<K, V>,
        ctx: &mut Context<'_, (), ()>,
    ) -> Result<(), ProcessError> {
        let sink = &*self.0;
        // Numbered before encoding, so a record that fails to encode still takes its number.
        let index = ctx.next_output_index();
        match sink.hop {
            Hop::OutWithoutLineage => {
                for header in [EVENT_ID_HEADER, CORRELATION_ID_HEADER, CAUSATION_ID_HEADER] {
                    record.headers.remove(header);
                }
            }
            // A hop inside the topology: the input's lineage, as it came in.
            Hop::Internal => ctx
                .lineage()
                .identified(ctx.origin())
                .write_headers(&mut record.headers),
            Hop::Out => {
                // Every output names a cause: an input without lineage is named by its
                // position.
                let cause = ctx.lineage().identified(ctx.origin());
                sink.value_serde.stamp(&mut record.value, &cause);
                match sink.value_serde.lineage(&record.value) {
                    Some(own) => own.write_headers(&mut record.headers),
                    None => {
                        let event_id = derived_id_text(ctx.origin(), &sink.name, index);
                        stamp_headers(&mut record.headers, &cause, &event_id);
                    }
                }
            }
        }
        produce_encoded(
            ctx,
            &sink.topic,
            (&sink.key_serde, &sink.value_serde),
            record,
        )
    }
}

/// Encodes `record` for `topic` and produces it with its headers and timestamp. A part
/// that does not encode fails the input as a serialization error naming the part.
pub(super) fn produce_encoded<K, V>(
    ctx: &mut Context<'_, (), ()>,
    topic: &Arc<str>,
    (key_serde, value_serde): (&impl Serde<K>, &impl Serde<V>),
    record: Record<K, V>,
) -> Result<(), ProcessError> {
    let encode_error = |what: &str, e: crate::SerdeError| {
        ProcessError::from_serde(ErrorKind::Serialization, what, e)
    };
    let key = key_serde
        .serialize_owned(topic, record.key)
        .map_err(|e| encode_error("key", e))?;
    let value = value_serde
        .serialize_owned(topic, record.value)
        .map_err(|e| encode_error("value", e))?;
    ctx.produce(ProducerRecord {
        topic: topic.clone(),
        partition: None,
        key,
        value,
        headers: record.headers,
        timestamp: record.timestamp,
    });
    Ok(())
}
