//! Serdes: how keys and values become bytes and back.
//!
//! A [`Serde<T>`] is shared by every task of a topology, so it is `Send + Sync` and keeps
//! whatever it caches behind its own synchronisation. Kafka keys and values may be null;
//! a serde sees that as `None` and decides whether null is a value of `T` (see
//! [`OptionalSerde`]) or an error.
//!
//! Errors never quote the bytes they failed on: they name a position, a field or a schema
//! id, because the bytes are patient data.

mod avro;
mod avro_datum;
mod avro_decoder;
mod json;
mod primitives;
pub mod registry;
mod schemas;

pub use avro::{AvroSerde, WIRE_MAGIC_BYTE};
pub use avro_datum::DatumWriter;
pub use json::{EnvelopeSerde, JsonEventSerde, JsonSerde, MAX_NESTING, describe_json_error};
pub use primitives::{BytesSerde, I64Serde, OptionalSerde, StringSerde, UnitSerde};
pub use schemas::{Schemas, SubjectOptions, value_subject};

use crate::error::SerdeError;
use crate::lineage::Lineage;

/// Encodes and decodes one type for Kafka.
pub trait Serde<T>: Send + Sync + 'static {
    /// Encodes `value` for `topic`; `None` writes a null (a tombstone when it is a value).
    fn serialize(&self, topic: &str, value: &T) -> Result<Option<Vec<u8>>, SerdeError>;

    /// Encodes a value the caller gives up, as a sink does with what it writes: a serde
    /// whose encoding is the value's own bytes (bytes, strings) hands them over instead
    /// of copying them. The bytes are those of [`serialize`](Serde::serialize).
    fn serialize_owned(&self, topic: &str, value: T) -> Result<Option<Vec<u8>>, SerdeError> {
        self.serialize(topic, &value)
    }

    /// Decodes the bytes read from `topic`; `None` is a null key or value.
    fn deserialize(&self, topic: &str, bytes: Option<&[u8]>) -> Result<T, SerdeError>;

    /// The lineage a value carries inside itself (an event envelope's metadata). The engine
    /// prefers it to lineage headers when it decodes an input.
    fn lineage(&self, _value: &T) -> Option<Lineage> {
        None
    }

    /// Fills the lineage fields of a value that is about to be written, from the input
    /// that caused it. Only serdes of self-describing events (envelopes) do anything here.
    fn stamp(&self, _value: &mut T, _cause: &Lineage) {}
}

/// A serde shared behind an `Arc`, for operators that encode one type in several places
/// (a table's source and its store, a grouped stream's values and a reduce's store).
pub(crate) struct SharedSerde<T>(pub(crate) std::sync::Arc<dyn Serde<T>>);

impl<T: 'static> Serde<T> for SharedSerde<T> {
    fn serialize(&self, topic: &str, value: &T) -> Result<Option<Vec<u8>>, SerdeError> {
        self.0.serialize(topic, value)
    }

    fn serialize_owned(&self, topic: &str, value: T) -> Result<Option<Vec<u8>>, SerdeError> {
        self.0.serialize_owned(topic, value)
    }

    fn deserialize(&self, topic: &str, bytes: Option<&[u8]>) -> Result<T, SerdeError> {
        self.0.deserialize(topic, bytes)
    }
}

/// Shorthands for the serdes that come with the engine.
pub struct Serdes;

impl Serdes {
    pub fn string() -> StringSerde {
        StringSerde
    }

    pub fn bytes() -> BytesSerde {
        BytesSerde
    }

    pub fn unit() -> UnitSerde {
        UnitSerde
    }

    pub fn i64() -> I64Serde {
        I64Serde
    }

    pub fn json<T>() -> JsonSerde<T> {
        JsonSerde::new()
    }

    pub fn optional<T, S: Serde<T>>(inner: S) -> OptionalSerde<T, S> {
        OptionalSerde::new(inner)
    }
}
