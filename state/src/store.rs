//! The key-value store contract every store kind implements.

use std::ops::Bound;

/// One key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// A store that cannot be read or written. Never carries keys or values: those may be
/// patient data.
#[derive(Debug, thiserror::Error)]
#[error("state store `{store}`: {what}: {reason}")]
pub struct StoreError {
    pub store: String,
    pub what: &'static str,
    pub reason: String,
}

/// An ordered key-value store of bytes, owned by one task.
///
/// Writes come in atomic batches ([`KeyValueStore::write`]) that also move the store's
/// checkpoint: the offset in the store's changelog from which a restore must continue to
/// bring the store up to date.
pub trait KeyValueStore: Send {
    fn name(&self) -> &str;

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Entries with keys within the bounds, in key order.
    fn range<'a>(
        &'a self,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
    ) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + 'a>;

    /// Applies every change (a `None` value deletes the key) and, when given, sets the
    /// checkpoint: all of it or, after a crash, none of it.
    fn write(
        &mut self,
        changes: &mut dyn Iterator<Item = (&[u8], Option<&[u8]>)>,
        checkpoint: Option<i64>,
    ) -> Result<(), StoreError>;

    /// The changelog offset to restore from; `None` when the store has never been
    /// checkpointed (restore the whole changelog).
    fn checkpoint(&self) -> Result<Option<i64>, StoreError>;

    /// Estimated number of keys.
    fn approximate_len(&self) -> u64;

    /// Estimated bytes of live data.
    fn approximate_bytes(&self) -> u64;
}
