//! The order-activity topology: how many canonical events each medication order has had.
//!
//! ```text
//! canonical.medication-orders --> count per orderId (store order-activity) --> medication-orders.activity
//! ```
//!
//! Every change of an order (new, modified, cancelled, refilled) is one canonical event
//! keyed by `orderId`, so counting per key needs no repartition. An order whose count
//! climbs fast is churning between systems, which integration teams want to see; the
//! output is the running count per order (8-byte big-endian, as Kafka's `LongSerializer`
//! writes), one update per event. The count lives in the RocksDB store `order-activity`,
//! backed by the changelog topic `<application.id>-order-activity-changelog`, so it is
//! exact across crashes and rebalances under exactly-once. Values are not decoded: the
//! count depends only on the key, and events of any schema version count the same.

use sluice_engine::serde::Serdes;
use sluice_engine::{Topology, TopologyBuilder};

pub const NAME: &str = "order-activity";
pub const INPUT_TOPIC: &str = crate::normalization::OUTPUT_TOPIC;
pub const OUTPUT_TOPIC: &str = "medication-orders.activity";
pub const STORE: &str = "order-activity";

pub fn topology() -> Topology {
    let builder = TopologyBuilder::new(NAME);
    builder
        .source(
            "canonical-orders",
            &[INPUT_TOPIC],
            Serdes::string(),
            Serdes::bytes(),
        )
        .group_by_key(Serdes::string(), Serdes::bytes())
        .count("count-events", STORE)
        .to("activity", OUTPUT_TOPIC, Serdes::string(), Serdes::i64());
    builder
        .build()
        .expect("the order-activity topology is valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_engine::TestDriver;

    #[test]
    fn each_event_of_an_order_raises_its_count_by_one() {
        let mut driver = TestDriver::new(topology());
        for order in ["ord-1", "ord-2", "ord-1", "ord-1"] {
            driver
                .pipe_raw(INPUT_TOPIC, Some(order.as_bytes()), Some(b"\0\0\0\0\x01"))
                .unwrap();
        }
        let counts: Vec<(String, i64)> = driver
            .read(OUTPUT_TOPIC, &Serdes::string(), &Serdes::i64())
            .unwrap()
            .into_iter()
            .map(|r| (r.key, r.value))
            .collect();
        assert_eq!(
            counts,
            [
                ("ord-1".into(), 1),
                ("ord-2".into(), 1),
                ("ord-1".into(), 2),
                ("ord-1".into(), 3)
            ]
        );
    }
}
