//! The source serde of the two order feeds: decodes and normalizes a record in one pass.

use sluice_engine::{Lineage, ProcessError, Serde, SerdeError};

use super::input;
use crate::canonical::{MedicationOrder, SourceSystem};

/// One record of an order feed, read by [`OrderFeedSerde`]: the lineage its envelope
/// carried, and the canonical order or the rule the payload broke.
///
/// A broken rule is kept here, not raised by the serde, so the topology's map step reports
/// it as a validation error (the payload was JSON; it was the order that was wrong), exactly
/// as a map over a decoded `serde_json::Value` would.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedOrder {
    pub lineage: Option<Lineage>,
    pub order: Result<MedicationOrder, ProcessError>,
}

/// Reads `external.ehr.medication-orders` or `external.pharmacy.prescriptions`, bare or in
/// the platform's envelope, decoding only the fields normalization reads.
///
/// Not JSON, or an envelope whose metadata is incomplete, is a deserialization error, as with
/// [`JsonEventSerde`](sluice_engine::serde::JsonEventSerde).
#[derive(Clone, Copy, Debug)]
pub struct OrderFeedSerde {
    source_system: SourceSystem,
}

impl OrderFeedSerde {
    /// The serde of `external.ehr.medication-orders`.
    pub fn ehr() -> Self {
        Self {
            source_system: SourceSystem::Ehr,
        }
    }

    /// The serde of `external.pharmacy.prescriptions`.
    pub fn pharmacy() -> Self {
        Self {
            source_system: SourceSystem::Pharmacy,
        }
    }
}

impl Serde<FeedOrder> for OrderFeedSerde {
    fn serialize(&self, topic: &str, _value: &FeedOrder) -> Result<Option<Vec<u8>>, SerdeError> {
        // The feeds' producers are the EHR and pharmacy systems: nothing in Sluice writes one.
        Err(SerdeError::new(format!(
            "{topic}: an order feed is only read; write its payloads with a JSON serde"
        )))
    }

    fn deserialize(&self, _topic: &str, bytes: Option<&[u8]>) -> Result<FeedOrder, SerdeError> {
        let bytes = bytes.ok_or_else(|| SerdeError::new("null where JSON was expected"))?;
        let mut order = input::OrderInput::new();
        let input = input::decode(bytes, &mut order).map_err(SerdeError::new)?;
        Ok(FeedOrder {
            lineage: input.metadata.as_ref().map(|m| m.lineage()),
            order: super::normalize(input.is_order.then_some(&order), self.source_system),
        })
    }

    fn lineage(&self, value: &FeedOrder) -> Option<Lineage> {
        value.lineage.clone()
    }
}
