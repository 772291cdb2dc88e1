//! Global stores: a global table's rows, the whole topic on every worker.
//!
//! A global store is written by one thread of the worker, which follows the table's topic,
//! and read by every task of every stream thread; reads take a shared lock, a write an
//! exclusive one for the length of one batch. It keeps one key-value store per partition
//! of the topic: each is a plain prefix of its partition, checkpointed with the offset it
//! has reached, so a restart reads only what it has not seen yet, exactly like a
//! changelog restore. A key is looked up in every partition's store; a topic whose
//! producers key it consistently holds each key in one partition only.
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

/// The rows of one global table.
pub struct GlobalStore {
    name: String,
    partitions: Vec<RwLock<SharedKeyValueStore>>,
}

impl GlobalStore {
    /// A global store over one store per partition of its topic, in partition order.
    pub fn new(name: impl Into<String>, partitions: Vec<SharedKeyValueStore>) -> Self {
        Self {
            name: name.into(),
            partitions: partitions.into_iter().map(RwLock::new).collect(),
        }
    }

    /// A global store in memory (for the TestDriver), with `partitions` partitions.
    pub fn in_memory(name: impl Into<String>, partitions: usize) -> Self {
        let name = name.into();
        let stores = (0..partitions)
            .map(|_| Box::new(crate::InMemoryKeyValueStore::new(name.clone())) as _)
            .collect();
        Self::new(name, stores)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn partitions(&self) -> usize {
        self.partitions.len()
    }

    /// The value of `key`, from whichever partition holds it.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        for partition in &self.partitions {
            let store = partition.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(value) = store.get(key)? {
                return Ok(Some(value));
            }
        }
        Ok(None)
    }

    /// The store of one partition, as a [`KeyValueStore`] that locks for each call: the
    /// thread following the topic writes through it while tasks keep reading.
    ///
    /// # Panics
    /// If `partition` is not below [`GlobalStore::partitions`].
    pub fn partition(&self, partition: usize) -> PartitionStore<'_> {
        assert!(partition < self.partitions.len(), "no such partition");
        PartitionStore {
            global: self,
            partition,
        }
    }

    /// Estimated keys across partitions.
    pub fn approximate_len(&self) -> u64 {
        (0..self.partitions())
            .map(|p| self.partition(p).approximate_len())
            .sum()
    }
}

/// One partition's store of a [`GlobalStore`].
pub struct PartitionStore<'a> {
    global: &'a GlobalStore,
    partition: usize,
}

impl PartitionStore<'_> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, SharedKeyValueStore> {
        self.global.partitions[self.partition]
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl KeyValueStore for PartitionStore<'_> {
    fn name(&self) -> &str {
        &self.global.name
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.read().get(key)
    }

    /// Collected under the lock: a range over a global store is for tests and tools.
    fn range<'a>(
        &'a self,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
    ) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + 'a> {
        let entries: Vec<_> = self.read().range(from, to).collect();
        Box::new(entries.into_iter())
    }

    fn write(
        &mut self,
        changes: &mut dyn Iterator<Item = (&[u8], Option<&[u8]>)>,
        checkpoint: Option<i64>,
    ) -> Result<(), StoreError> {
        self.global.partitions[self.partition]
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .write(changes, checkpoint)
    }

    fn checkpoint(&self) -> Result<Option<i64>, StoreError> {
        self.read().checkpoint()
    }

    fn approximate_len(&self) -> u64 {
        self.read().approximate_len()
    }

    fn approximate_bytes(&self) -> u64 {
        self.read().approximate_bytes()
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
}
