//! to_dead_letters: writes records a topology has decided to dead-letter (a webhook whose
//! retries are exhausted) to the topology's dead-letter topic, beside what the error
//! policy writes there.
//!
//! The error policy dead-letters an input that *failed*, and drops everything that input
//! produced. A topology that dead-letters as an ordinary outcome keeps its other outputs
//! (a delivery-attempt event) and writes the dead letter through this sink, in the same
//! transaction. The record keeps its own headers and gets the policy's `sluice.*` ones,
//! so whoever reads the dead-letter topic reads one format: the error kind and message
//! come from the record's `sluice.error.kind` and `sluice.error.message` headers (set
//! upstream; `processing` and a message naming this sink otherwise), the source
//! coordinates from the input, the topology and operator from the graph (a record's own
//! `sluice.operator` header wins: it names the operator that decided).
//!
//! Only this sink may write to the dead-letter topic, and it may write nowhere else:
//! `build` checks both.

use std::sync::Arc;

use super::{Context, Processor};
use crate::error::{ErrorKind, ProcessError};
use crate::policy::headers;
use crate::processor;
use crate::record::Record;
use crate::serde::Serde;
use crate::topology::{NodeSpec, Stream};

impl<K, V> Stream<K, V>
where
    K: Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    /// Writes every record of this stream to `topic`, which must be the topology's
    /// dead-letter topic, as a dead letter (see the [module docs](self)).
    pub fn to_dead_letters(
        &self,
        name: &str,
        topic: &str,
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
    ) {
        let shared = Arc::new(Shared {
            name: Arc::from(name),
            topic: Arc::from(topic),
            topology: Arc::from(self.topology_name().as_str()),
            key_serde,
            value_serde,
        });
        let factory = processor::factory::<_, K, V>(move || DeadLetterSink(shared.clone()));
        let spec = NodeSpec::sink(name, topic, factory).dead_letters();
        let _: Stream<(), ()> = self.add_node(spec);
    }
}

struct Shared<KS, VS> {
    name: Arc<str>,
    topic: Arc<str>,
    topology: Arc<str>,
    key_serde: KS,
    value_serde: VS,
}

struct DeadLetterSink<KS, VS>(Arc<Shared<KS, VS>>);

impl<K, V, KS, VS> Processor<K, V> for DeadLetterSink<KS, VS>
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
        record: Record<K, V>,
        ctx: &mut Context<'_, (), ()>,
    ) -> Result<(), ProcessError> {
        let sink = &*self.0;
        let mut record = record;
        let h = &mut record.headers;
        if h.get(headers::ERROR_KIND).is_none() {
            h.insert(headers::ERROR_KIND, ErrorKind::Processing.as_str());
        }
        if h.get(headers::ERROR_MESSAGE).is_none() {
            h.insert(
                headers::ERROR_MESSAGE,
                format!("dead-lettered by {}", sink.name),
            );
        }
        if h.get(headers::OPERATOR).is_none() {
            h.insert(headers::OPERATOR, sink.name.to_string());
        }
        let origin = ctx.origin();
        h.insert(headers::SOURCE_TOPIC, &*origin.topic);
        h.insert(headers::SOURCE_PARTITION, origin.partition.to_string());
        h.insert(headers::SOURCE_OFFSET, origin.offset.to_string());
        h.insert(headers::TOPOLOGY, sink.topology.to_string());
        super::sink::produce_encoded(
            ctx,
            &sink.topic,
            (&sink.key_serde, &sink.value_serde),
            record,
        )
    }
}
