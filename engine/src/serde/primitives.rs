//! Serdes for plain strings, bytes, unit keys and nullable values.

use std::marker::PhantomData;

use super::Serde;
use crate::error::SerdeError;

/// UTF-8 strings. A null is an error: use [`OptionalSerde`] where null is meaningful.
#[derive(Clone, Copy, Debug, Default)]
pub struct StringSerde;

impl Serde<String> for StringSerde {
    fn serialize(&self, _topic: &str, value: &String) -> Result<Option<Vec<u8>>, SerdeError> {
        Ok(Some(value.as_bytes().to_vec()))
    }

    fn serialize_owned(&self, _topic: &str, value: String) -> Result<Option<Vec<u8>>, SerdeError> {
        Ok(Some(value.into_bytes()))
    }

    fn deserialize(&self, _topic: &str, bytes: Option<&[u8]>) -> Result<String, SerdeError> {
        let bytes = bytes.ok_or_else(|| SerdeError::new("null where a string was expected"))?;
        String::from_utf8(bytes.to_vec()).map_err(|e| {
            SerdeError::new(format!(
                "invalid UTF-8 at byte {}",
                e.utf8_error().valid_up_to()
            ))
        })
    }
}

/// Raw bytes, passed through. A null decodes as empty bytes and empty bytes encode as null,
/// so that a tombstone survives a pass-through topology.
#[derive(Clone, Copy, Debug, Default)]
pub struct BytesSerde;

impl Serde<Vec<u8>> for BytesSerde {
    fn serialize(&self, _topic: &str, value: &Vec<u8>) -> Result<Option<Vec<u8>>, SerdeError> {
        Ok((!value.is_empty()).then(|| value.clone()))
    }

    fn serialize_owned(&self, _topic: &str, value: Vec<u8>) -> Result<Option<Vec<u8>>, SerdeError> {
        Ok((!value.is_empty()).then_some(value))
    }

    fn deserialize(&self, _topic: &str, bytes: Option<&[u8]>) -> Result<Vec<u8>, SerdeError> {
        Ok(bytes.map(<[u8]>::to_vec).unwrap_or_default())
    }
}

/// For keys that a topology ignores: reads anything as `()`, writes null.
#[derive(Clone, Copy, Debug, Default)]
pub struct UnitSerde;

impl Serde<()> for UnitSerde {
    fn serialize(&self, _topic: &str, _value: &()) -> Result<Option<Vec<u8>>, SerdeError> {
        Ok(None)
    }

    fn deserialize(&self, _topic: &str, _bytes: Option<&[u8]>) -> Result<(), SerdeError> {
        Ok(())
    }
}

/// Makes null a value: `None` for null, `Some` of the inner serde's value otherwise.
pub struct OptionalSerde<T, S> {
    inner: S,
    _marker: PhantomData<fn() -> T>,
}

impl<T, S> OptionalSerde<T, S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            _marker: PhantomData,
        }
    }
}

impl<T: 'static, S: Serde<T>> Serde<Option<T>> for OptionalSerde<T, S> {
    fn serialize(&self, topic: &str, value: &Option<T>) -> Result<Option<Vec<u8>>, SerdeError> {
        match value {
            Some(v) => self.inner.serialize(topic, v),
            None => Ok(None),
        }
    }

    fn serialize_owned(
        &self,
        topic: &str,
        value: Option<T>,
    ) -> Result<Option<Vec<u8>>, SerdeError> {
        match value {
            Some(v) => self.inner.serialize_owned(topic, v),
            None => Ok(None),
        }
    }

    fn deserialize(&self, topic: &str, bytes: Option<&[u8]>) -> Result<Option<T>, SerdeError> {
        bytes
            .map(|b| self.inner.deserialize(topic, Some(b)))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_encoding_writes_the_same_bytes_as_borrowed() {
        let text = "Rx 42".to_string();
        assert_eq!(
            StringSerde.serialize_owned("t", text.clone()).unwrap(),
            StringSerde.serialize("t", &text).unwrap()
        );
        for bytes in [b"\x00\xff".to_vec(), Vec::new()] {
            assert_eq!(
                BytesSerde.serialize_owned("t", bytes.clone()).unwrap(),
                BytesSerde.serialize("t", &bytes).unwrap()
            );
        }
        let optional = OptionalSerde::new(StringSerde);
        for value in [Some(text.clone()), None] {
            assert_eq!(
                optional.serialize_owned("t", value.clone()).unwrap(),
                optional.serialize("t", &value).unwrap()
            );
        }
    }

    #[test]
    fn string_serde_rejects_null_and_invalid_utf8_without_quoting_bytes() {
        let err = StringSerde.deserialize("t", None).unwrap_err();
        assert!(err.message.contains("null"));
        let err = StringSerde
            .deserialize("t", Some(&[b'o', b'k', 0xff]))
            .unwrap_err();
        assert_eq!(err.message, "invalid UTF-8 at byte 2");
    }

    #[test]
    fn optional_serde_maps_null_to_none_both_ways() {
        let serde = OptionalSerde::new(StringSerde);
        assert_eq!(serde.deserialize("t", None).unwrap(), None);
        assert_eq!(serde.serialize("t", &None).unwrap(), None);
        assert_eq!(
            serde.deserialize("t", Some(b"x")).unwrap(),
            Some("x".to_string())
        );
    }

    #[test]
    fn bytes_serde_keeps_tombstones() {
        assert_eq!(BytesSerde.deserialize("t", None).unwrap(), Vec::<u8>::new());
        assert_eq!(BytesSerde.serialize("t", &Vec::new()).unwrap(), None);
    }
}

/// A signed 64-bit integer as 8 big-endian bytes, as Kafka's `LongSerializer` writes it:
/// counts and sums read by Java consumers too.
#[derive(Clone, Copy, Debug, Default)]
pub struct I64Serde;

impl Serde<i64> for I64Serde {
    fn serialize(&self, _topic: &str, value: &i64) -> Result<Option<Vec<u8>>, SerdeError> {
        Ok(Some(value.to_be_bytes().to_vec()))
    }

    fn deserialize(&self, _topic: &str, bytes: Option<&[u8]>) -> Result<i64, SerdeError> {
        let bytes = bytes.ok_or_else(|| SerdeError::new("a 64-bit integer is null"))?;
        let array: [u8; 8] = bytes.try_into().map_err(|_| {
            SerdeError::new(format!(
                "a 64-bit integer is 8 bytes, these are {}",
                bytes.len()
            ))
        })?;
        Ok(i64::from_be_bytes(array))
    }
}
