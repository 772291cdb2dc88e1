//! merge: one stream out of two of the same types.
//!
//! Records of both inputs flow on in the order they are processed; nothing is reordered
//! or deduplicated.
//!
//! ```
//! use sluice_engine::{Serdes, TestDriver, TopologyBuilder};
//!
//! let builder = TopologyBuilder::new("all-orders");
//! let ehr = builder.source("ehr", &["ehr.orders"], Serdes::string(), Serdes::string());
//! let pharmacy = builder.source("pharmacy", &["pharmacy.orders"], Serdes::string(), Serdes::string());
//! ehr.merge("both", &pharmacy)
//!     .to("out", "orders", Serdes::string(), Serdes::string());
//! let topology = builder.build().unwrap();
//! // Merging joins the two sources into one sub-topology.
//! assert_eq!(topology.subtopologies().len(), 1);
//!
//! let mut driver = TestDriver::new(topology);
//! driver.pipe_raw("ehr.orders", Some(b"1"), Some(b"from ehr")).unwrap();
//! driver.pipe_raw("pharmacy.orders", Some(b"2"), Some(b"from pharmacy")).unwrap();
//! assert_eq!(driver.read_raw("orders").len(), 2);
//! ```

use super::Relay;
use crate::topology::{NodeSpec, Stream};

impl<K, V> Stream<K, V>
where
    K: Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    /// The records of this stream and of `other`, as one stream.
    pub fn merge(&self, name: &str, other: &Stream<K, V>) -> Stream<K, V> {
        let spec = NodeSpec::processor(name, "merge", Relay::<K, V>::factory());
        self.add_node_fed_by(other, spec)
    }
}
