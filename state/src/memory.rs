//! A key-value store in memory.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::store::{Entry, KeyValueStore, StoreError};

/// A key-value store in memory: for the TestDriver and for small state that may be
/// rebuilt from its changelog at every start. It starts empty and unchecked, so a worker
/// restores it from the beginning of its changelog.
#[derive(Debug, Default)]
pub struct InMemoryKeyValueStore {
    name: String,
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
    bytes: u64,
    checkpoint: Option<i64>,
}

impl InMemoryKeyValueStore {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }
}

impl KeyValueStore for InMemoryKeyValueStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.entries.get(key).cloned())
    }

    fn range<'a>(
        &'a self,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
    ) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + 'a> {
        let bounds = (from.map(<[u8]>::to_vec), to.map(<[u8]>::to_vec));
        Box::new(
            self.entries
                .range(bounds)
                .map(|(k, v)| Ok((k.clone(), v.clone()))),
        )
    }

    fn write(
        &mut self,
        changes: &mut dyn Iterator<Item = (&[u8], Option<&[u8]>)>,
        checkpoint: Option<i64>,
    ) -> Result<(), StoreError> {
        for (key, value) in changes {
            let old = match value {
                Some(value) => {
                    self.bytes += (key.len() + value.len()) as u64;
                    self.entries.insert(key.to_vec(), value.to_vec())
                }
                None => self.entries.remove(key),
            };
            if let Some(old) = old {
                self.bytes -= (key.len() + old.len()) as u64;
            }
        }
        if checkpoint.is_some() {
            self.checkpoint = checkpoint;
        }
        Ok(())
    }

    fn checkpoint(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.checkpoint)
    }

    fn approximate_len(&self) -> u64 {
        self.entries.len() as u64
    }

    fn approximate_bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(store: &mut InMemoryKeyValueStore, key: &[u8], value: Option<&[u8]>) {
        store
            .write(&mut std::iter::once((key, value)), None)
            .unwrap();
    }

    #[test]
    fn range_returns_entries_in_key_order_within_bounds() {
        let mut store = InMemoryKeyValueStore::new("s");
        for k in [b"c", b"a", b"d", b"b"] {
            put(&mut store, k, Some(k));
        }
        let keys: Vec<Vec<u8>> = store
            .range(Bound::Included(b"b"), Bound::Excluded(b"d"))
            .map(|e| e.unwrap().0)
            .collect();
        assert_eq!(keys, [b"b".to_vec(), b"c".to_vec()]);
    }

    #[test]
    fn a_none_value_deletes_and_get_sees_the_latest_write() {
        let mut store = InMemoryKeyValueStore::new("s");
        put(&mut store, b"k", Some(b"1"));
        put(&mut store, b"k", Some(b"22"));
        assert_eq!(store.get(b"k").unwrap(), Some(b"22".to_vec()));
        assert_eq!(store.approximate_bytes(), 3);
        put(&mut store, b"k", None);
        assert_eq!(store.get(b"k").unwrap(), None);
        assert_eq!((store.approximate_len(), store.approximate_bytes()), (0, 0));
    }

    #[test]
    fn the_checkpoint_moves_only_when_a_write_gives_one() {
        let mut store = InMemoryKeyValueStore::new("s");
        assert_eq!(store.checkpoint().unwrap(), None);
        store
            .write(&mut std::iter::once((&b"k"[..], Some(&b"v"[..]))), Some(7))
            .unwrap();
        put(&mut store, b"k", Some(b"w"));
        assert_eq!(store.checkpoint().unwrap(), Some(7));
    }
}
