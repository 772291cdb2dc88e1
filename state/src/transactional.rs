//! The overlay that keeps a store in step with Kafka transactions.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::store::{Entry, KeyValueStore, StoreError};

/// An overlay entry: a value, or `None` for a delete.
type Pending = Option<Vec<u8>>;

/// A store as operators see it inside a transaction.
///
/// Writes go to an in-memory overlay that reads see; the store underneath keeps only
/// what has been committed. The task sends [`TransactionalStore::changes`] to the store's
/// changelog inside the Kafka transaction; once that transaction has committed,
/// [`TransactionalStore::commit`] writes the overlay and the new checkpoint to the store in
/// one batch. If the transaction aborts, [`TransactionalStore::abort`] drops the overlay.
///
/// Within a transaction, the writes of one input record can be undone on their own: the
/// task calls [`TransactionalStore::begin_input`] before each input and
/// [`TransactionalStore::rollback_input`] if any operator failed on it, so a dead-lettered
/// record leaves no trace in state, as it leaves none in the output topics.
pub struct TransactionalStore {
    base: Box<dyn KeyValueStore>,
    pending: BTreeMap<Vec<u8>, Pending>,
    /// The overlay entries the current input replaced (`None`: the key had none), in
    /// write order.
    undo: Vec<(Vec<u8>, Option<Pending>)>,
}

impl TransactionalStore {
    pub fn new(base: Box<dyn KeyValueStore>) -> Self {
        Self {
            base,
            pending: BTreeMap::new(),
            undo: Vec::new(),
        }
    }

    pub fn name(&self) -> &str {
        self.base.name()
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.pending.get(key) {
            Some(value) => Ok(value.clone()),
            None => self.base.get(key),
        }
    }

    pub fn put(&mut self, key: &[u8], value: Vec<u8>) {
        self.set(key, Some(value));
    }

    pub fn delete(&mut self, key: &[u8]) {
        self.set(key, None);
    }

    fn set(&mut self, key: &[u8], value: Option<Vec<u8>>) {
        let replaced = self.pending.insert(key.to_vec(), value);
        self.undo.push((key.to_vec(), replaced));
    }

    /// Entries within the bounds, in key order, as this transaction sees them: the
    /// committed store's entries merged with the overlay's, lazily, so a scan that stops
    /// early reads only what it used.
    pub fn range<'a>(
        &'a self,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
    ) -> impl Iterator<Item = Result<Entry, StoreError>> + 'a {
        Merged {
            committed: self.base.range(from, to).peekable(),
            overlay: self.pending.range::<[u8], _>((from, to)).peekable(),
        }
    }

    /// Starts the writes of one input record.
    pub fn begin_input(&mut self) {
        self.undo.clear();
    }

    /// Undoes the writes since [`TransactionalStore::begin_input`].
    pub fn rollback_input(&mut self) {
        for (key, replaced) in self.undo.drain(..).rev() {
            match replaced {
                Some(previous) => {
                    self.pending.insert(key, previous);
                }
                None => {
                    self.pending.remove(&key);
                }
            }
        }
    }

    /// The latest write of each key since the last commit, in key order: what the
    /// changelog must receive in this transaction (`None` is a tombstone).
    pub fn changes(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.pending
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
    }

    pub fn has_changes(&self) -> bool {
        !self.pending.is_empty()
    }

    /// After the transaction committed: writes the overlay and the checkpoint (the
    /// changelog offset after this transaction's records) to the store, in one batch.
    pub fn commit(&mut self, checkpoint: Option<i64>) -> Result<(), StoreError> {
        if self.pending.is_empty() && checkpoint.is_none() {
            return Ok(());
        }
        let mut changes = self
            .pending
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()));
        self.base.write(&mut changes, checkpoint)?;
        self.pending.clear();
        self.undo.clear();
        Ok(())
    }

    /// After the transaction aborted: forgets every write since the last commit.
    pub fn abort(&mut self) {
        self.pending.clear();
        self.undo.clear();
    }

    /// The committed store underneath, for restoring it from the changelog.
    pub fn committed(&mut self) -> &mut dyn KeyValueStore {
        &mut *self.base
    }

    pub fn checkpoint(&self) -> Result<Option<i64>, StoreError> {
        self.base.checkpoint()
    }

    pub fn approximate_len(&self) -> u64 {
        self.base.approximate_len()
    }

    pub fn approximate_bytes(&self) -> u64 {
        self.base.approximate_bytes()
    }
}

/// Two key-ordered streams merged; on equal keys the overlay wins, and an overlay delete
/// hides the committed entry.
struct Merged<'a, C: Iterator<Item = Result<Entry, StoreError>>> {
    committed: std::iter::Peekable<C>,
    overlay: std::iter::Peekable<std::collections::btree_map::Range<'a, Vec<u8>, Pending>>,
}

impl<C: Iterator<Item = Result<Entry, StoreError>>> Iterator for Merged<'_, C> {
    type Item = Result<Entry, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let order = match (self.committed.peek(), self.overlay.peek()) {
                (None, None) => return None,
                (Some(Err(_)), _) | (Some(Ok(_)), None) => return self.committed.next(),
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(Ok((committed, _))), Some((overlay, _))) => committed.cmp(*overlay),
            };
            match order {
                std::cmp::Ordering::Less => return self.committed.next(),
                std::cmp::Ordering::Equal => {
                    self.committed.next();
                }
                std::cmp::Ordering::Greater => {}
            }
            let (key, value) = self.overlay.next().expect("peeked");
            if let Some(value) = value {
                return Some(Ok((key.clone(), value.clone())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InMemoryKeyValueStore;

    fn store() -> TransactionalStore {
        TransactionalStore::new(Box::new(InMemoryKeyValueStore::new("s")))
    }

    #[test]
    fn reads_see_uncommitted_writes_the_store_underneath_does_not() {
        let mut s = store();
        s.put(b"k", b"1".to_vec());
        assert_eq!(s.get(b"k").unwrap(), Some(b"1".to_vec()));
        assert_eq!(s.committed().get(b"k").unwrap(), None);
        s.commit(Some(10)).unwrap();
        assert_eq!(s.committed().get(b"k").unwrap(), Some(b"1".to_vec()));
        assert_eq!(s.checkpoint().unwrap(), Some(10));
    }

    #[test]
    fn an_abort_forgets_everything_since_the_last_commit() {
        let mut s = store();
        s.put(b"a", b"1".to_vec());
        s.commit(Some(1)).unwrap();
        s.put(b"a", b"2".to_vec());
        s.delete(b"a");
        s.put(b"b", b"3".to_vec());
        s.abort();
        assert_eq!(s.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(s.get(b"b").unwrap(), None);
        assert!(!s.has_changes());
    }

    #[test]
    fn a_rolled_back_input_leaves_the_earlier_inputs_writes() {
        let mut s = store();
        s.begin_input();
        s.put(b"a", b"1".to_vec());
        s.begin_input();
        s.put(b"a", b"2".to_vec());
        s.put(b"b", b"x".to_vec());
        s.delete(b"a");
        s.rollback_input();
        assert_eq!(s.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(s.get(b"b").unwrap(), None);
        let changes: Vec<_> = s.changes().collect();
        assert_eq!(changes, [(&b"a"[..], Some(&b"1"[..]))]);
    }

    #[test]
    fn changes_hold_the_latest_write_per_key_with_tombstones() {
        let mut s = store();
        s.put(b"b", b"1".to_vec());
        s.put(b"a", b"1".to_vec());
        s.put(b"b", b"2".to_vec());
        s.delete(b"a");
        let changes: Vec<_> = s.changes().collect();
        assert_eq!(changes, [(&b"a"[..], None), (&b"b"[..], Some(&b"2"[..]))]);
    }

    #[test]
    fn range_merges_the_overlay_over_the_committed_store() {
        let mut s = store();
        s.put(b"a", b"1".to_vec());
        s.put(b"b", b"1".to_vec());
        s.put(b"c", b"1".to_vec());
        s.commit(None).unwrap();
        s.delete(b"b");
        s.put(b"c", b"2".to_vec());
        s.put(b"d", b"2".to_vec());
        s.delete(b"e");
        let entries: Vec<Entry> = s
            .range(Bound::Unbounded, Bound::Unbounded)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            entries,
            [
                (b"a".to_vec(), b"1".to_vec()),
                (b"c".to_vec(), b"2".to_vec()),
                (b"d".to_vec(), b"2".to_vec())
            ]
        );
    }
}
