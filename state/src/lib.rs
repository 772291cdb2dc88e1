//! sluice-state: the state stores that Sluice tasks keep, and how they stay consistent
//! with committed Kafka offsets.
//!
//! This crate starts with the key-value store contract and its in-memory implementation;
//! the RocksDB stores, changelogs and restoration build on the same trait.

use std::collections::BTreeMap;

/// An ordered key-value store of bytes, owned by one task.
pub trait KeyValueStore: Send {
    fn name(&self) -> &str;
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
    fn put(&mut self, key: &[u8], value: &[u8]);
    fn delete(&mut self, key: &[u8]);
    /// Entries with keys in `range`, in key order.
    fn range<'a>(
        &'a self,
        range: (std::ops::Bound<&[u8]>, std::ops::Bound<&[u8]>),
    ) -> Box<dyn Iterator<Item = (Vec<u8>, Vec<u8>)> + 'a>;
    fn approximate_len(&self) -> u64;
}

/// A key-value store in memory: for the TestDriver and for small state that may be
/// rebuilt from its changelog at every start.
#[derive(Debug, Default)]
pub struct InMemoryKeyValueStore {
    name: String,
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl InMemoryKeyValueStore {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            entries: BTreeMap::new(),
        }
    }
}

impl KeyValueStore for InMemoryKeyValueStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.entries.get(key).cloned()
    }

    fn put(&mut self, key: &[u8], value: &[u8]) {
        self.entries.insert(key.to_vec(), value.to_vec());
    }

    fn delete(&mut self, key: &[u8]) {
        self.entries.remove(key);
    }

    fn range<'a>(
        &'a self,
        range: (std::ops::Bound<&[u8]>, std::ops::Bound<&[u8]>),
    ) -> Box<dyn Iterator<Item = (Vec<u8>, Vec<u8>)> + 'a> {
        let bounds = (range.0.map(<[u8]>::to_vec), range.1.map(<[u8]>::to_vec));
        Box::new(
            self.entries
                .range(bounds)
                .map(|(k, v)| (k.clone(), v.clone())),
        )
    }

    fn approximate_len(&self) -> u64 {
        self.entries.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::Bound;

    #[test]
    fn range_returns_entries_in_key_order_within_bounds() {
        let mut store = InMemoryKeyValueStore::new("s");
        for k in [b"c", b"a", b"d", b"b"] {
            store.put(k, k);
        }
        let keys: Vec<Vec<u8>> = store
            .range((Bound::Included(b"b"), Bound::Excluded(b"d")))
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, [b"b".to_vec(), b"c".to_vec()]);
    }

    #[test]
    fn delete_removes_and_get_sees_the_latest_put() {
        let mut store = InMemoryKeyValueStore::new("s");
        store.put(b"k", b"1");
        store.put(b"k", b"2");
        assert_eq!(store.get(b"k"), Some(b"2".to_vec()));
        store.delete(b"k");
        assert_eq!(store.get(b"k"), None);
        assert_eq!(store.approximate_len(), 0);
    }
}
