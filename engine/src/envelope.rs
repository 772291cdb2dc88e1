//! The platform's event envelope: `{ "metadata": {...}, "payload": {...} }`.
//!
//! Topologies that read and write envelopes use [`EnvelopeSerde`](crate::serde::EnvelopeSerde),
//! through which the engine reads an input's lineage from its metadata and fills the
//! correlation and causation ids of every envelope a sink writes.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::lineage::Lineage;

/// Metadata of one platform event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventMetadata {
    pub event_id: String,
    pub event_type: String,
    pub event_source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// RFC 3339 time at which the event happened.
    pub timestamp: String,
    pub version: String,
}

impl EventMetadata {
    /// Reads metadata from its JSON text (an envelope's `metadata` member). The error names
    /// the field that is missing or mistyped, never a value.
    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(metadata_error)
    }

    /// The lineage these metadata give the event they describe.
    pub fn lineage(&self) -> Lineage {
        Lineage {
            event_id: Some(self.event_id.clone()),
            correlation_id: self.correlation_id.clone(),
            causation_id: self.causation_id.clone(),
        }
    }
}

/// Why metadata did not decode, in schema words only.
fn metadata_error(e: serde_json::Error) -> String {
    let text = e.to_string();
    if text.starts_with("missing field") {
        let field = text.split(" at line").next().unwrap_or(&text);
        format!("the event envelope's metadata has a {field}")
    } else {
        "the event envelope's metadata does not match the platform's shape \
         (eventId, eventType, eventSource, timestamp and version are strings)"
            .to_string()
    }
}

/// An event of the platform: metadata and a typed payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<P> {
    pub metadata: EventMetadata,
    pub payload: P,
}

impl<P> Envelope<P> {
    /// A new event with a fresh id. Correlation and causation stay empty: the sink fills
    /// them from the input that caused this event.
    pub fn new(
        event_type: impl Into<String>,
        event_source: impl Into<String>,
        version: impl Into<String>,
        payload: P,
    ) -> Self {
        Self {
            metadata: EventMetadata {
                event_id: Uuid::new_v4().to_string(),
                event_type: event_type.into(),
                event_source: event_source.into(),
                correlation_id: None,
                causation_id: None,
                timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                version: version.into(),
            },
            payload,
        }
    }

    pub fn lineage(&self) -> Lineage {
        self.metadata.lineage()
    }

    /// Fills what the author left empty: the flow's correlation id, and the cause's event
    /// id as causation id — unless this is the cause itself passed through unchanged.
    pub fn stamp(&mut self, cause: &Lineage) {
        let is_the_cause = cause.event_id.as_deref() == Some(self.metadata.event_id.as_str());
        if is_the_cause {
            return;
        }
        if self.metadata.correlation_id.is_none() {
            self.metadata.correlation_id = cause.correlation_for_derived().map(str::to_owned);
        }
        if self.metadata.causation_id.is_none() {
            self.metadata.causation_id = cause.event_id.clone();
        }
    }
}

/// A JSON event as the platform's feeds send it: inside the envelope, or a bare payload.
/// Read with [`JsonEventSerde`](crate::serde::JsonEventSerde), which takes the lineage of an
/// enveloped event from its metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct JsonEvent {
    /// The envelope's metadata; `None` for a bare payload.
    pub metadata: Option<EventMetadata>,
    pub payload: serde_json::Value,
}

impl JsonEvent {
    /// Splits a decoded JSON value: an object with both `metadata` (an object) and
    /// `payload` is an envelope, whose metadata must then be complete; anything else is a
    /// bare payload. The error names the metadata field, never a value.
    pub fn from_value(mut value: serde_json::Value) -> Result<Self, String> {
        let enveloped = value.as_object().is_some_and(|object| {
            object
                .get("metadata")
                .is_some_and(serde_json::Value::is_object)
                && object.contains_key("payload")
        });
        if !enveloped {
            return Ok(Self {
                metadata: None,
                payload: value,
            });
        }
        let object = value.as_object_mut().expect("checked above");
        let payload = object.remove("payload").expect("checked above");
        let metadata = object.remove("metadata").expect("checked above");
        let metadata = EventMetadata::deserialize(metadata).map_err(metadata_error)?;
        Ok(Self {
            metadata: Some(metadata),
            payload,
        })
    }

    /// The lineage an enveloped event carries.
    pub fn lineage(&self) -> Option<Lineage> {
        self.metadata.as_ref().map(EventMetadata::lineage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_reads_the_platform_json_shape() {
        let json = r#"{"metadata":{"eventId":"e1","eventType":"MedicationOrderCreated",
            "eventSource":"ehr","correlationId":"c1","timestamp":"2026-01-01T00:00:00Z",
            "version":"1.0"},"payload":{"orderId":"o1"}}"#;
        let env: Envelope<serde_json::Value> = serde_json::from_str(json).unwrap();
        assert_eq!(env.metadata.correlation_id.as_deref(), Some("c1"));
        assert_eq!(env.metadata.causation_id, None);
        assert_eq!(env.payload["orderId"], "o1");
    }

    #[test]
    fn a_json_event_is_an_envelope_when_it_has_metadata_and_payload() {
        let json = serde_json::json!({"metadata":{"eventId":"e1","eventType":"medication-order",
            "eventSource":"ehr","correlationId":"c1","timestamp":"2026-01-01T00:00:00Z",
            "version":"1.0"},"payload":{"orderId":"o1"}});
        let event = JsonEvent::from_value(json).unwrap();
        assert_eq!(event.payload, serde_json::json!({"orderId": "o1"}));
        let lineage = event.lineage().unwrap();
        assert_eq!(lineage.event_id.as_deref(), Some("e1"));
        assert_eq!(lineage.correlation_id.as_deref(), Some("c1"));
    }

    #[test]
    fn a_json_event_without_envelope_is_its_own_payload() {
        let json = serde_json::json!({"orderId": "o1", "metadata": "not an object"});
        let event = JsonEvent::from_value(json.clone()).unwrap();
        assert_eq!(event.metadata, None);
        assert_eq!(event.payload, json);
        assert_eq!(event.lineage(), None);
    }

    #[test]
    fn an_envelope_with_incomplete_metadata_names_the_missing_field() {
        let json = serde_json::json!({"metadata":{"eventType":"x","eventSource":"ehr",
            "timestamp":"t","version":"1"},"payload":{"patientId":"PATIENT-SECRET"}});
        let err = JsonEvent::from_value(json).unwrap_err();
        assert_eq!(
            err,
            "the event envelope's metadata has a missing field `eventId`"
        );
    }

    #[test]
    fn stamping_a_derived_event_sets_correlation_and_causation() {
        let cause = Lineage {
            event_id: Some("e1".into()),
            correlation_id: Some("c1".into()),
            causation_id: None,
        };
        let mut derived = Envelope::new("Derived", "sluice", "1", ());
        derived.stamp(&cause);
        assert_eq!(derived.metadata.correlation_id.as_deref(), Some("c1"));
        assert_eq!(derived.metadata.causation_id.as_deref(), Some("e1"));
    }

    #[test]
    fn stamping_the_cause_itself_changes_nothing() {
        let mut original = Envelope::new("Original", "ehr", "1", ());
        let cause = original.lineage();
        original.stamp(&cause);
        assert_eq!(original.metadata.causation_id, None);
        assert_eq!(original.metadata.correlation_id, None);
    }
}
