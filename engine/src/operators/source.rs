//! source: decodes the records of one or more topics into a typed stream.
//!
//! A source decodes the key and the value with its serdes and reads the input's lineage:
//! from the value when its serde understands an envelope, else from the `event-id`,
//! `correlation-id` and `causation-id` headers. A record that does not decode is handed,
//! whole and undecoded, to the topology's error policy (by default its dead-letter topic),
//! with this source named as the operator.
//!
//! ```
//! use sluice_engine::{Serdes, TestDriver, TopologyBuilder};
//! use sluice_engine::serde::JsonSerde;
//!
//! let builder = TopologyBuilder::new("counts");
//! builder
//!     .source("readings", &["readings"], Serdes::string(), JsonSerde::<u32>::new())
//!     .to("out", "readings.out", Serdes::string(), JsonSerde::<u32>::new());
//! let mut driver = TestDriver::new(builder.build().unwrap());
//!
//! driver.pipe_raw("readings", Some(b"k"), Some(b"42")).unwrap();
//! driver.pipe_raw("readings", Some(b"k"), Some(b"not a number")).unwrap();
//!
//! assert_eq!(driver.read_raw("readings.out").len(), 1);
//! let dead = driver.dead_letters();
//! assert_eq!(dead[0].operator, "readings");
//! assert_eq!(dead[0].value.as_deref(), Some(&b"not a number"[..]));
//! ```

use std::marker::PhantomData;
use std::sync::Arc;

use super::Relay;
use crate::error::{ErrorKind, ProcessError};
use crate::lineage::Lineage;
use crate::processor::{Decoder, DynRecord};
use crate::record::{RawRecord, Record};
use crate::serde::Serde;
use crate::topology::{NodeSpec, Stream, TopologyBuilder};

impl TopologyBuilder {
    /// A stream of the records of `topics`, decoded with the given serdes. A record that
    /// does not decode goes to the error policy, naming this source as the operator.
    pub fn source<K, V>(
        &self,
        name: &str,
        topics: &[&str],
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
    ) -> Stream<K, V>
    where
        K: Clone + Send + 'static,
        V: Clone + Send + 'static,
    {
        let decoder = Arc::new(SourceDecoder::new(key_serde, value_serde));
        self.add_node(NodeSpec::source(
            name,
            topics,
            decoder,
            Relay::<K, V>::factory(),
        ))
    }
}

/// Decodes a source's records with its serdes: the decoded record then enters the
/// source node, whose processor relays it to the source's children.
pub(crate) struct SourceDecoder<K, V, KS, VS> {
    key_serde: KS,
    value_serde: VS,
    _marker: PhantomData<fn() -> (K, V)>,
}

impl<K, V, KS, VS> SourceDecoder<K, V, KS, VS> {
    pub(crate) fn new(key_serde: KS, value_serde: VS) -> Self {
        Self {
            key_serde,
            value_serde,
            _marker: PhantomData,
        }
    }
}

impl<K, V, KS, VS> Decoder for SourceDecoder<K, V, KS, VS>
where
    K: Send + 'static,
    V: Send + 'static,
    KS: Serde<K>,
    VS: Serde<V>,
{
    fn decode(&self, raw: &RawRecord) -> Result<(DynRecord, Lineage), ProcessError> {
        let topic = &raw.origin.topic;
        let key = self
            .key_serde
            .deserialize(topic, raw.key.as_deref())
            .map_err(|e| ProcessError::from_serde(ErrorKind::Deserialization, "key", e))?;
        let value = self
            .value_serde
            .deserialize(topic, raw.value.as_deref())
            .map_err(|e| ProcessError::from_serde(ErrorKind::Deserialization, "value", e))?;
        let lineage = self
            .value_serde
            .lineage(&value)
            .unwrap_or_else(|| Lineage::from_headers(&raw.headers));
        let record = Record {
            key,
            value,
            headers: raw.headers.clone(),
            timestamp: raw.timestamp,
        };
        Ok((DynRecord::from_typed(record), lineage))
    }
}
