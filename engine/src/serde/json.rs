//! JSON serdes (serde_json), and the envelope serde that carries lineage.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Serde;
use crate::envelope::{Envelope, JsonEvent};
use crate::error::SerdeError;
use crate::lineage::Lineage;

/// Any `T: Serialize + DeserializeOwned` as JSON; `serde_json::Value` for schemaless data.
pub struct JsonSerde<T> {
    _marker: PhantomData<fn() -> T>,
}

impl<T> JsonSerde<T> {
    pub fn new() -> Self {
        Self {
            _marker: PhantomData,
        }
    }
}

impl<T> Default for JsonSerde<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for JsonSerde<T> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<T: Serialize + DeserializeOwned + 'static> Serde<T> for JsonSerde<T> {
    fn serialize(&self, _topic: &str, value: &T) -> Result<Option<Vec<u8>>, SerdeError> {
        serde_json::to_vec(value).map(Some).map_err(|e| {
            SerdeError::new(format!("JSON encoding failed: {}", describe_json_error(&e)))
        })
    }

    fn deserialize(&self, _topic: &str, bytes: Option<&[u8]>) -> Result<T, SerdeError> {
        let bytes = bytes.ok_or_else(|| SerdeError::new("null where JSON was expected"))?;
        serde_json::from_slice(bytes).map_err(|e| SerdeError::new(describe_json_error(&e)))
    }
}

/// The nesting depth of arrays and objects at which serde_json stops reading (127 levels
/// are read).
pub const MAX_NESTING: usize = 128;

/// A serde_json error told without the data it failed on.
///
/// serde_json's own messages quote offending values (`invalid type: string "…"`), which
/// would put patient data into dead-letter headers and logs. Only messages made of schema
/// words (field names) are kept; the rest is reduced to its category and position.
pub fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let at = format!("at line {} column {}", e.line(), e.column());
    match e.classify() {
        // serde_json stops at 128 levels so that hostile input cannot overflow the stack;
        // such a record is not malformed, and its dead letter should say what was hit.
        Category::Syntax if e.to_string().starts_with("recursion limit exceeded") => {
            format!("JSON nesting reaches {MAX_NESTING} levels, the decoder's limit, {at}")
        }
        Category::Syntax => format!("invalid JSON {at}"),
        Category::Eof => format!("truncated JSON {at}"),
        Category::Io => "I/O error while reading JSON".to_string(),
        Category::Data => {
            let text = e.to_string();
            if text.starts_with("missing field") || text.starts_with("duplicate field") {
                let field = text.split(" at line").next().unwrap_or(&text);
                format!("{field} {at}")
            } else {
                format!("JSON does not match the expected type {at}")
            }
        }
    }
}

/// JSON envelopes (`{metadata, payload}`), read and written with their lineage.
pub struct EnvelopeSerde<P> {
    json: JsonSerde<Envelope<P>>,
}

impl<P> EnvelopeSerde<P> {
    pub fn new() -> Self {
        Self {
            json: JsonSerde::new(),
        }
    }
}

impl<P> Default for EnvelopeSerde<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Serialize + DeserializeOwned + 'static> Serde<Envelope<P>> for EnvelopeSerde<P> {
    fn serialize(&self, topic: &str, value: &Envelope<P>) -> Result<Option<Vec<u8>>, SerdeError> {
        self.json.serialize(topic, value)
    }

    fn deserialize(&self, topic: &str, bytes: Option<&[u8]>) -> Result<Envelope<P>, SerdeError> {
        self.json.deserialize(topic, bytes)
    }

    fn lineage(&self, value: &Envelope<P>) -> Option<Lineage> {
        Some(value.lineage())
    }

    fn stamp(&self, value: &mut Envelope<P>, cause: &Lineage) {
        value.stamp(cause);
    }
}

/// Schemaless JSON events, enveloped or bare ([`JsonEvent`]): what the platform's feeds
/// send. An envelope's metadata is the input's lineage; a bare payload's lineage comes from
/// the record's headers, as with [`JsonSerde`]. Written back in the shape it was read.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonEventSerde;

impl Serde<JsonEvent> for JsonEventSerde {
    fn serialize(&self, _topic: &str, value: &JsonEvent) -> Result<Option<Vec<u8>>, SerdeError> {
        let written = match &value.metadata {
            Some(metadata) => serde_json::to_vec(&Envelope {
                metadata: metadata.clone(),
                payload: &value.payload,
            }),
            None => serde_json::to_vec(&value.payload),
        };
        written.map(Some).map_err(|e| {
            SerdeError::new(format!("JSON encoding failed: {}", describe_json_error(&e)))
        })
    }

    fn deserialize(&self, topic: &str, bytes: Option<&[u8]>) -> Result<JsonEvent, SerdeError> {
        let value = JsonSerde::<serde_json::Value>::new().deserialize(topic, bytes)?;
        JsonEvent::from_value(value).map_err(SerdeError::new)
    }

    fn lineage(&self, value: &JsonEvent) -> Option<Lineage> {
        value.lineage()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Order {
        id: String,
        qty: u32,
    }

    #[test]
    fn json_nested_past_the_limit_says_the_limit_was_hit() {
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        let err = JsonSerde::<serde_json::Value>::new()
            .deserialize("t", Some(deep.as_bytes()))
            .unwrap_err();
        assert_eq!(
            err.message,
            "JSON nesting reaches 128 levels, the decoder's limit, at line 1 column 128"
        );
        // One level under the limit is read.
        let ok = "[".repeat(MAX_NESTING - 1) + &"]".repeat(MAX_NESTING - 1);
        assert!(
            JsonSerde::<serde_json::Value>::new()
                .deserialize("t", Some(ok.as_bytes()))
                .is_ok()
        );
    }

    #[test]
    fn round_trips_a_struct() {
        let serde = JsonSerde::<Order>::new();
        let order = Order {
            id: "o1".into(),
            qty: 2,
        };
        let bytes = serde.serialize("t", &order).unwrap();
        assert_eq!(serde.deserialize("t", bytes.as_deref()).unwrap(), order);
    }

    #[test]
    fn errors_name_the_field_but_never_quote_the_value() {
        let serde = JsonSerde::<Order>::new();
        let err = serde
            .deserialize("t", Some(br#"{"id":"PATIENT-SECRET","qty":"lots"}"#))
            .unwrap_err();
        assert!(!err.message.contains("PATIENT-SECRET"), "{}", err.message);
        assert!(!err.message.contains("lots"), "{}", err.message);
        assert!(err.message.contains("line 1"), "{}", err.message);

        let err = serde.deserialize("t", Some(br#"{"id":"x"}"#)).unwrap_err();
        assert!(
            err.message.starts_with("missing field `qty`"),
            "{}",
            err.message
        );

        let err = serde.deserialize("t", Some(b"{not json")).unwrap_err();
        assert!(err.message.starts_with("invalid JSON"), "{}", err.message);
    }
}
