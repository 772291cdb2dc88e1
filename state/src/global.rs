//! Global stores: a global table's rows, the whole topic on every worker.
//!
//! A global store is written by one thread of the worker, which follows the table's topic,
//! and read by every task of every stream thread; reads take a shared lock, a write an
//! exclusive one for the length of one batch. All partitions of the topic go into one
//! key-value store, so a key has one row whichever partition its latest record came
//! from; each partition's checkpoint (the offset it has been read to) is kept beside the
//! rows and written in the same batch as them. A restart therefore reads only what it has
//! not seen yet, exactly like a changelog restore, through [`GlobalStore::partition`].
//!
//! The topic itself is the global store's log: there is no changelog, and the store is
//! never written inside a transaction. Reads may see a row a little before or after the
//! stream record that asks for it; a global table is for reference data (drug codes,
//! formularies, endpoint settings), not for state that must move in step with a stream.

use std::ops::Bound;
use std::sync::{PoisonError, RwLock};

use crate::store::{Entry, KeyValueStore, StoreError};

/// A store that can be read from several threads at once.
pub type SharedKeyValueStore = Box<dyn KeyValueStore + Sync>;

/// Rows are stored under this byte and their topic key.
const ROW: u8 = 0x00;
/// A partition's checkpoint is stored under this byte and the partition number.
const CHECKPOINT: u8 = 0x01;

fn row_key(key: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(key.len() + 1);
    bytes.push(ROW);
    bytes.extend_from_slice(key);
    bytes
}

fn checkpoint_key(partition: usize) -> [u8; 5] {
    let mut bytes = [CHECKPOINT; 5];
    bytes[1..].copy_from_slice(&(partition as u32).to_be_bytes());
    bytes
}

/// The rows of one global table.
pub struct GlobalStore {
    name: String,
    store: RwLock<SharedKeyValueStore>,
    partitions: usize,
}

impl GlobalStore {
    /// A global store of a topic with `partitions` partitions, over `store`.
    pub fn new(name: impl Into<String>, store: SharedKeyValueStore, partitions: usize) -> Self {
        Self {
            name: name.into(),
            store: RwLock::new(store),
            partitions,
        }
    }

    /// A global store in memory (for the TestDriver), with `partitions` partitions.
    pub fn in_memory(name: impl Into<String>, partitions: usize) -> Self {
        let name = name.into();
        let store = Box::new(crate::InMemoryKeyValueStore::new(name.clone()));
        Self::new(name, store, partitions)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn partitions(&self) -> usize {
        self.partitions
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, SharedKeyValueStore> {
        self.store.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The row of `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.read().get(&row_key(key))
    }

    /// One partition of the topic, as a [`KeyValueStore`] whose checkpoint is that
    /// partition's: the thread following the topic restores each partition through it,
    /// while tasks keep reading.
    ///
    /// # Panics
    /// If `partition` is not below [`GlobalStore::partitions`].
    pub fn partition(&self, partition: usize) -> PartitionStore<'_> {
        assert!(partition < self.partitions, "no such partition");
        PartitionStore {
            global: self,
            partition,
        }
    }

    /// Estimated rows.
    pub fn approximate_len(&self) -> u64 {
        self.read()
            .approximate_len()
            .saturating_sub(self.partitions as u64)
    }
}

/// One partition of a [`GlobalStore`]: its rows go into the shared store, its checkpoint
/// is its own.
pub struct PartitionStore<'a> {
    global: &'a GlobalStore,
    partition: usize,
}

impl KeyValueStore for PartitionStore<'_> {
    fn name(&self) -> &str {
        &self.global.name
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.global.get(key)
    }

    /// Rows of the whole table (not only this partition's), collected under the lock: a
    /// range over a global store is for tests and tools.
    fn range<'a>(
        &'a self,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
    ) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + 'a> {
        let (from, to) = (from.map(row_key), to.map(row_key));
        let rows_end = [CHECKPOINT];
        let to = match to {
            Bound::Unbounded => Bound::Excluded(rows_end.to_vec()),
            bound => bound,
        };
        let entries: Vec<_> = self
            .global
            .read()
            .range(
                from.as_ref().map(Vec::as_slice),
                to.as_ref().map(Vec::as_slice),
            )
            .map(|entry| entry.map(|(k, v)| (k[1..].to_vec(), v)))
            .collect();
        Box::new(entries.into_iter())
    }

    /// Writes the rows and this partition's checkpoint in one batch.
    fn write(
        &mut self,
        changes: &mut dyn Iterator<Item = (&[u8], Option<&[u8]>)>,
        checkpoint: Option<i64>,
    ) -> Result<(), StoreError> {
        let rows: Vec<(Vec<u8>, Option<&[u8]>)> = changes.map(|(k, v)| (row_key(k), v)).collect();
        let offset = checkpoint.map(i64::to_be_bytes);
        let checkpoint_key = checkpoint_key(self.partition);
        let mut all = rows
            .iter()
            .map(|(k, v)| (k.as_slice(), *v))
            .chain(offset.as_ref().map(|o| (&checkpoint_key[..], Some(&o[..]))));
        self.global
            .store
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .write(&mut all, None)
    }

    fn checkpoint(&self) -> Result<Option<i64>, StoreError> {
        let bytes = self.global.read().get(&checkpoint_key(self.partition))?;
        Ok(bytes
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(i64::from_be_bytes))
    }

    fn approximate_len(&self) -> u64 {
        self.global.approximate_len()
    }

    fn approximate_bytes(&self) -> u64 {
        self.global.read().approximate_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_found_in_whichever_partition_holds_it() {
        let global = GlobalStore::in_memory("drugs", 3);
        global
            .partition(2)
            .write(
                &mut [(&b"ndc-1"[..], Some(&b"aspirin"[..]))].into_iter(),
                Some(1),
            )
            .unwrap();
        assert_eq!(global.get(b"ndc-1").unwrap(), Some(b"aspirin".to_vec()));
        assert_eq!(global.get(b"ndc-2").unwrap(), None);
        assert_eq!(global.partition(2).checkpoint().unwrap(), Some(1));
        assert_eq!(global.partition(0).checkpoint().unwrap(), None);
    }

    #[test]
    fn readers_on_other_threads_see_each_batch_whole() {
        let global = std::sync::Arc::new(GlobalStore::in_memory("drugs", 1));
        let reader = {
            let global = global.clone();
            std::thread::spawn(move || {
                for _ in 0..10_000 {
                    // Both keys are written in one batch: either both or neither.
                    let a = global.get(b"a").unwrap();
                    let b = global.get(b"b").unwrap();
                    if a.is_some() {
                        assert!(b.is_some(), "`a` was visible before the rest of its batch");
                    }
                }
            })
        };
        for i in 0..1_000u32 {
            let v = i.to_be_bytes();
            global
                .partition(0)
                .write(
                    &mut [(&b"a"[..], Some(&v[..])), (&b"b"[..], Some(&v[..]))].into_iter(),
                    Some(i64::from(i)),
                )
                .unwrap();
        }
        reader.join().unwrap();
        assert_eq!(global.approximate_len(), 2);
    }

    #[test]
    fn a_key_whose_latest_record_came_from_another_partition_has_that_value() {
        let global = GlobalStore::in_memory("drugs", 2);
        global
            .partition(0)
            .write(
                &mut [(&b"ndc-1"[..], Some(&b"old"[..]))].into_iter(),
                Some(1),
            )
            .unwrap();
        // The producer's partitioner changed: the key's next records land in partition 1.
        global
            .partition(1)
            .write(
                &mut [(&b"ndc-1"[..], Some(&b"new"[..]))].into_iter(),
                Some(1),
            )
            .unwrap();
        assert_eq!(global.get(b"ndc-1").unwrap(), Some(b"new".to_vec()));
        global
            .partition(1)
            .write(&mut [(&b"ndc-1"[..], None)].into_iter(), Some(2))
            .unwrap();
        assert_eq!(
            global.get(b"ndc-1").unwrap(),
            None,
            "a delete is not shadowed"
        );
        assert_eq!(global.partition(0).checkpoint().unwrap(), Some(1));
        assert_eq!(global.partition(1).checkpoint().unwrap(), Some(2));
    }
}
