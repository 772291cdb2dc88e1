//! Records: what flows through a topology.
//!
//! A record read from Kafka arrives as a [`RawRecord`]: key and value bytes, headers, a
//! timestamp and its [`Origin`] (topic, partition, offset). A source operator decodes it
//! into a typed [`Record<K, V>`], operators transform typed records, and a sink encodes
//! them back into a [`ProducerRecord`] bound for a topic.
//!
//! The origin is not part of a typed record: it belongs to the *input* being processed
//! and the task keeps it beside the record, so that a dead-letter record or a derived
//! event id can always name the exact input it came from.

use std::borrow::Cow;
use std::sync::Arc;

use smallvec::SmallVec;

/// Kafka record headers, in order. Keys may repeat, as in Kafka.
///
/// Keys are `Cow<'static, str>`: the engine's own header names (lineage, dead-letter
/// reasons) are static strings and cost no allocation per record. Values of up to
/// [`INLINE_HEADER_BYTES`] bytes are kept inline: the three lineage ids every output
/// carries, and the short types and names topologies set, cost none either.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(Vec<(Cow<'static, str>, HeaderValue)>);

/// The longest header value kept without an allocation: a 36-character UUID fits.
pub const INLINE_HEADER_BYTES: usize = 40;

type HeaderValue = SmallVec<[u8; INLINE_HEADER_BYTES]>;

impl Headers {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Appends a header, keeping any earlier one with the same key.
    pub fn add(&mut self, key: impl Into<Cow<'static, str>>, value: impl AsRef<[u8]>) {
        self.push(key.into(), value.as_ref());
    }

    /// Sets a header: removes every earlier header with this key, then appends.
    pub fn insert(&mut self, key: impl Into<Cow<'static, str>>, value: impl AsRef<[u8]>) {
        let key = key.into();
        self.remove(&key);
        self.push(key, value.as_ref());
    }

    fn push(&mut self, key: Cow<'static, str>, value: &[u8]) {
        if self.0.capacity() == 0 {
            // Every output gets three lineage headers, and topologies set a few of their
            // own: room for six at once saves growing the list twice.
            self.0.reserve_exact(6);
        }
        self.0.push((key, HeaderValue::from_slice(value)));
    }

    /// The last value of `key`, as Kafka clients read a header that was set more than once.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// The last value of `key` when it is UTF-8.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn remove(&mut self, key: &str) {
        // Setting a header that is not there yet is the common case: look before rewriting.
        if self.0.iter().any(|(k, _)| k == key) {
            self.0.retain(|(k, _)| k != key);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v.as_slice()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<Cow<'static, str>>, V: AsRef<[u8]>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .map(|(k, v)| (k.into(), HeaderValue::from_slice(v.as_ref())))
                .collect(),
        )
    }
}

/// Where an input record was read: its coordinates in Kafka.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

/// A typed record inside a topology.
#[derive(Clone, Debug, PartialEq)]
pub struct Record<K, V> {
    pub key: K,
    pub value: V,
    pub headers: Headers,
    /// Event time in milliseconds since the Unix epoch.
    pub timestamp: i64,
}

impl<K, V> Record<K, V> {
    pub fn new(key: K, value: V, timestamp: i64) -> Self {
        Self {
            key,
            value,
            headers: Headers::new(),
            timestamp,
        }
    }

    /// The same record with another key and value; headers and timestamp are kept.
    pub fn with_key_value<K2, V2>(self, key: K2, value: V2) -> Record<K2, V2> {
        Record {
            key,
            value,
            headers: self.headers,
            timestamp: self.timestamp,
        }
    }

    /// The same record with another value; key, headers and timestamp are kept.
    pub fn with_value<V2>(self, value: V2) -> Record<K, V2> {
        Record {
            key: self.key,
            value,
            headers: self.headers,
            timestamp: self.timestamp,
        }
    }
}

/// A record as read from a topic: bytes, not yet decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Headers,
    pub timestamp: i64,
    pub origin: Origin,
}

/// A record bound for a topic: what a sink or the dead-letter path hands to the producer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerRecord {
    pub topic: Arc<str>,
    /// `None` lets the producer's partitioner choose from the key.
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Headers,
    pub timestamp: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_every_earlier_header_with_the_key() {
        let mut h = Headers::new();
        h.add("a", "1");
        h.add("a", "2");
        h.insert("a", "3");
        assert_eq!(h.len(), 1);
        assert_eq!(h.get_str("a"), Some("3"));
    }

    #[test]
    fn values_inline_or_not_read_back_as_written() {
        let long = vec![7_u8; INLINE_HEADER_BYTES + 1];
        let at_limit = vec![8_u8; INLINE_HEADER_BYTES];
        let mut h = Headers::new();
        h.add("long", &long);
        h.add("at-limit", &at_limit);
        h.add("empty", "");
        assert_eq!(h.get("long"), Some(&long[..]));
        assert_eq!(h.get("at-limit"), Some(&at_limit[..]));
        assert_eq!(h.get("empty"), Some(&b""[..]));
        let cloned = h.clone();
        assert_eq!(cloned, h);
        assert_eq!(cloned.get("long"), Some(&long[..]));
    }

    #[test]
    fn get_returns_the_last_value_of_a_repeated_key() {
        let h: Headers = [("k", "first"), ("k", "second")].into_iter().collect();
        assert_eq!(h.get_str("k"), Some("second"));
        assert_eq!(h.get("missing"), None);
    }
}
