//! Typed, borrowed decoding of a feed's payload: only the fields normalization reads.
//!
//! A feed record is decoded once, straight from its bytes, into [`OrderInput`]: one slot per
//! top-level field that [`normalize`](super) may read, every other field skipped without
//! being built. A slot holds a [`Loose`] value, because a field may arrive in several JSON
//! types (an id as a string or an integer, a form as a string or a CodeableConcept) and the
//! rules, not the decoder, decide what is acceptable and say so by field name. Strings
//! borrow from the record's bytes unless they contain escapes, and objects are short
//! vectors searched in order: no per-record hashing and few allocations, where a
//! `serde_json::Value` builds an `IndexMap` with an owned key for every field of every
//! object (and hashes each with SipHash, since the MongoDB driver turns on serde_json's
//! `preserve_order` for the whole workspace).
//!
//! Semantics kept from JSON objects: when a key repeats inside a nested object the last one
//! wins; a repeated *top-level* field is refused by the decoder, which names it.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;
use serde_json::value::RawValue;
use sluice_engine::EventMetadata;

/// A JSON value whose strings borrow from the input where they can, and whose objects keep
/// their entries in order, unhashed.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Loose<'a> {
    Null,
    Bool(bool),
    Number(Number),
    Str(Cow<'a, str>),
    Array(Vec<Loose<'a>>),
    Object(Vec<(Cow<'a, str>, Loose<'a>)>),
}

impl<'a> Loose<'a> {
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Loose::Str(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn as_array(&self) -> Option<&[Loose<'a>]> {
        match self {
            Loose::Array(items) => Some(items),
            _ => None,
        }
    }

    pub(crate) fn is_object(&self) -> bool {
        matches!(self, Loose::Object(_))
    }

    /// The member `key` of an object (the last, if the key repeats); `None` for a missing
    /// key or a value that is not an object.
    pub(crate) fn get(&self, key: &str) -> Option<&Loose<'a>> {
        match self {
            Loose::Object(entries) => entries
                .iter()
                .rev()
                .find(|(name, _)| name == key)
                .map(|(_, value)| value),
            _ => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Loose<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LooseVisitor(PhantomData))
    }
}

struct LooseVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for LooseVisitor<'a> {
    type Value = Loose<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Loose::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Loose::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        Loose::deserialize(deserializer)
    }

    fn visit_bool<E>(self, value: bool) -> Result<Self::Value, E> {
        Ok(Loose::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Self::Value, E> {
        Ok(Loose::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Self::Value, E> {
        Ok(Loose::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Self::Value, E> {
        // JSON text has no NaN or infinity, so this is never Null for a parsed number.
        Ok(Number::from_f64(value).map_or(Loose::Null, Loose::Number))
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Borrowed(value)))
    }

    fn visit_str<E>(self, value: &str) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Owned(value.to_owned())))
    }

    fn visit_string<E>(self, value: String) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Owned(value)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Loose::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(4));
        while let Some(Key(key)) = map.next_key()? {
            entries.push((key, map.next_value()?));
        }
        Ok(Loose::Object(entries))
    }
}

/// An object key, borrowed from the input unless it contains escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for KeyVisitor<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(value)))
            }
            fn visit_str<E>(self, value: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(value.to_owned())))
            }
            fn visit_string<E>(self, value: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(value)))
            }
        }
        deserializer.deserialize_str(KeyVisitor(PhantomData))
    }
}

/// The top-level fields of a medication order that normalization reads. A JSON null
/// decodes as `None`, the same as a missing field.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OrderInput<'a> {
    #[serde(borrow)]
    order_id: Option<Loose<'a>>,
    #[serde(borrow)]
    id: Option<Loose<'a>>,
    #[serde(borrow)]
    patient_id: Option<Loose<'a>>,
    #[serde(borrow)]
    patient: Option<Loose<'a>>,
    #[serde(borrow)]
    subject: Option<Loose<'a>>,
    #[serde(borrow)]
    medication: Option<Loose<'a>>,
    #[serde(borrow)]
    quantity: Option<Loose<'a>>,
    #[serde(borrow)]
    prescriber_id: Option<Loose<'a>>,
    #[serde(borrow)]
    prescriber_npi: Option<Loose<'a>>,
    #[serde(borrow)]
    provider: Option<Loose<'a>>,
    #[serde(borrow)]
    pharmacy: Option<Loose<'a>>,
    #[serde(borrow)]
    status: Option<Loose<'a>>,
    #[serde(borrow)]
    created_at: Option<Loose<'a>>,
    #[serde(borrow)]
    order_date: Option<Loose<'a>>,
    #[serde(borrow)]
    updated_at: Option<Loose<'a>>,
    #[serde(borrow)]
    last_updated: Option<Loose<'a>>,
    /// With `payload`, the platform's event envelope; otherwise ignored.
    #[serde(borrow)]
    metadata: Option<&'a RawValue>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

impl<'a> OrderInput<'a> {
    /// The top-level field `name`, if normalization reads it and it is present.
    pub(crate) fn field(&self, name: &str) -> Option<&Loose<'a>> {
        match name {
            "orderId" => self.order_id.as_ref(),
            "id" => self.id.as_ref(),
            "patientId" => self.patient_id.as_ref(),
            "patient" => self.patient.as_ref(),
            "subject" => self.subject.as_ref(),
            "medication" => self.medication.as_ref(),
            "quantity" => self.quantity.as_ref(),
            "prescriberId" => self.prescriber_id.as_ref(),
            "prescriberNpi" => self.prescriber_npi.as_ref(),
            "provider" => self.provider.as_ref(),
            "pharmacy" => self.pharmacy.as_ref(),
            "status" => self.status.as_ref(),
            "createdAt" => self.created_at.as_ref(),
            "orderDate" => self.order_date.as_ref(),
            "updatedAt" => self.updated_at.as_ref(),
            "lastUpdated" => self.last_updated.as_ref(),
            _ => unreachable!("normalization reads no top-level field {name:?}"),
        }
    }
}

/// A decoded feed record: the envelope's metadata when it came in one, and the order
/// payload, or `None` when the payload is not a JSON object (a validation error, reported
/// by normalization like any other broken rule).
pub(crate) struct FeedInput<'a> {
    pub(crate) metadata: Option<EventMetadata>,
    pub(crate) order: Option<OrderInput<'a>>,
}

/// Decodes a feed record, bare or in the platform's envelope, as
/// [`JsonEvent`](sluice_engine::JsonEvent) does: an object with both `metadata` (an object)
/// and `payload` is an envelope. The error is the decoder's reason, free of values.
pub(crate) fn decode(bytes: &[u8]) -> Result<FeedInput<'_>, String> {
    // One check of the whole text costs a fraction of serde_json's check of each string
    // in turn, which `from_slice` makes and `from_str` skips.
    let text = std::str::from_utf8(bytes).map_err(|e| {
        format!(
            "invalid JSON: not UTF-8 at byte {} of {}",
            e.valid_up_to(),
            bytes.len()
        )
    })?;
    if !starts_an_object(bytes) {
        // Rare: keep the decoder's verdict on malformed or too deeply nested JSON, which a
        // skipped value would not give.
        serde_json::from_slice::<serde_json::Value>(bytes)
            .map_err(|e| sluice_engine::serde::describe_json_error(&e))?;
        return Ok(FeedInput {
            metadata: None,
            order: None,
        });
    }
    let top: OrderInput =
        serde_json::from_str(text).map_err(|e| sluice_engine::serde::describe_json_error(&e))?;
    let (Some(metadata), Some(payload)) = (top.metadata, top.payload) else {
        return Ok(FeedInput {
            metadata: None,
            order: Some(top),
        });
    };
    if !starts_an_object(metadata.get().as_bytes()) {
        return Ok(FeedInput {
            metadata: None,
            order: Some(top),
        });
    }
    let metadata = EventMetadata::from_json(metadata.get())?;
    let payload = payload.get();
    let order = if starts_an_object(payload.as_bytes()) {
        Some(
            serde_json::from_str(payload)
                .map_err(|e| sluice_engine::serde::describe_json_error(&e))?,
        )
    } else {
        None
    };
    Ok(FeedInput {
        metadata: Some(metadata),
        order,
    })
}

/// Whether the JSON text starts with `{` after any whitespace.
fn starts_an_object(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{')
}
