//! repartition: sends a stream through an internal topic, so that records are partitioned
//! by their *current* key before the next operator sees them.
//!
//! After `map` or `select_key` changes keys, records of one key sit in many partitions,
//! and a stateful operator (or a join) downstream would keep a separate, partial state for
//! the key in each. `repartition` writes the stream to the topology's internal topic
//! `<application.id>-<name>-repartition` (created by the worker with the partition count
//! of the topology's input topics), keyed as it is now, and reads it back: everything after
//! it runs in a sub-topology of its own, whose task p sees every record whose key lands in
//! partition p. With exactly-once the hop is inside the same transactions as everything
//! else, so it adds no duplicates. [`Stream::group_by`] repartitions for you.
//!
//! The internal topic is named after the node name given here, never after the
//! operator's position, so changing the topology around it keeps the topic (and the
//! records in flight in it).
//!
//! ```
//! use sluice_engine::{Serdes, TestDriver, TopologyBuilder};
//!
//! let builder = TopologyBuilder::new("by-patient");
//! builder
//!     .source("orders", &["orders"], Serdes::string(), Serdes::string())
//!     // Orders are keyed by order id; the value starts with the patient id.
//!     .map("key-by-patient", |_order, v: String| (v.split(':').next().unwrap().to_string(), v))
//!     .repartition("orders-by-patient", Serdes::string(), Serdes::string())
//!     .to("out", "orders-by-patient", Serdes::string(), Serdes::string());
//! let topology = builder.build().unwrap();
//! assert_eq!(topology.subtopologies().len(), 2);
//!
//! let mut driver = TestDriver::new(topology);
//! driver.pipe_raw("orders", Some(b"order-1"), Some(b"patient-7:amoxicillin")).unwrap();
//! // The internal topic is named for the application (the topology's name in tests).
//! assert_eq!(driver.read_raw("by-patient-orders-by-patient-repartition").len(), 1);
//! let out = driver.read("orders-by-patient", &Serdes::string(), &Serdes::string()).unwrap();
//! assert_eq!(out[0].key, "patient-7");
//! ```

use std::sync::Arc;

use super::Relay;
use super::source::SourceDecoder;
use crate::serde::{Serde, SharedSerde};
use crate::topology::{NodeSpec, Stream};

impl<K, V> Stream<K, V>
where
    K: Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    /// Writes this stream to the internal topic `<application.id>-<name>-repartition`
    /// and continues from there, partitioned by the current key. Adds the nodes
    /// `<name>-sink` and `<name>-source`.
    pub fn repartition(
        &self,
        name: &str,
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
    ) -> Stream<K, V> {
        self.repartition_shared(name, Arc::new(key_serde), Arc::new(value_serde))
    }

    pub(crate) fn repartition_shared(
        &self,
        name: &str,
        key_serde: Arc<dyn Serde<K>>,
        value_serde: Arc<dyn Serde<V>>,
    ) -> Stream<K, V> {
        let topic = format!("{name}-repartition");
        self.to_internal(
            &format!("{name}-sink"),
            &topic,
            key_serde.clone(),
            value_serde.clone(),
        );
        let decoder = Arc::new(SourceDecoder::new(
            SharedSerde(key_serde),
            SharedSerde(value_serde),
        ));
        let source = NodeSpec::source(
            &format!("{name}-source"),
            &[topic.as_str()],
            decoder,
            Relay::<K, V>::factory(),
        );
        // The source starts a sub-topology of its own: no edge from this stream.
        self.builder().add_node(source)
    }
}
