//! Window stores: values kept per key *and time*, fetched by a key and a time range, and
//! expired by time.
//!
//! Stream-stream joins buffer each side's records by key and timestamp; session windows
//! keep each session by key and end time. Both ask the same two things of a store: "the
//! entries of this key between these times" and "drop everything older than this". A
//! window store answers both over an ordered key-value store with two kinds of keys:
//!
//! * a *data* key, `0x01 | key length (u32) | key | time | sequence` → the value, so one
//!   key's entries are one contiguous range in time order;
//! * an *expiry* key, `0x02 | time | key length | key | sequence` → nothing, so everything
//!   older than a time is one range at the front of the index.
//!
//! Times and sequence numbers are stored big-endian with the sign bit flipped, so byte
//! order is numeric order across zero. The sequence tells apart entries of one key at
//! one time (two records in the same millisecond); what it means is up to the caller
//! (an input offset for a join buffer, a session's start for a session store).
//!
//! Both kinds of keys are ordinary writes of the underlying store, so they reach its
//! changelog and are restored with it.

use std::ops::Bound;

use crate::{StoreError, TransactionalStore};

const DATA: u8 = 0x01;
const EXPIRY: u8 = 0x02;

/// One entry of a window store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowEntry {
    pub key: Vec<u8>,
    pub time: i64,
    pub sequence: i64,
    pub value: Vec<u8>,
}

/// Values by key and time, over an ordered key-value store.
pub trait WindowStore {
    /// Stores `value` for `key` at `time`, replacing an entry with the same sequence.
    fn put_window(&mut self, key: &[u8], time: i64, sequence: i64, value: Vec<u8>);

    /// Removes the entry of `key` at `time` with `sequence`, if there is one.
    fn delete_window(&mut self, key: &[u8], time: i64, sequence: i64);

    /// The entries of `key` with `from <= time <= to`, in time (then sequence) order.
    fn fetch_windows(&self, key: &[u8], from: i64, to: i64)
    -> Result<Vec<WindowEntry>, StoreError>;

    /// Removes every entry with a time before `before` and returns them, oldest first.
    fn expire_windows(&mut self, before: i64) -> Result<Vec<WindowEntry>, StoreError>;
}

fn ordered(n: i64) -> [u8; 8] {
    ((n as u64) ^ (1 << 63)).to_be_bytes()
}

fn number(bytes: &[u8]) -> i64 {
    (u64::from_be_bytes(bytes.try_into().expect("8 bytes")) ^ (1 << 63)) as i64
}

fn data_key(key: &[u8], time: i64, sequence: i64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(21 + key.len());
    bytes.push(DATA);
    bytes.extend_from_slice(&(key.len() as u32).to_be_bytes());
    bytes.extend_from_slice(key);
    bytes.extend_from_slice(&ordered(time));
    bytes.extend_from_slice(&ordered(sequence));
    bytes
}

fn expiry_key(key: &[u8], time: i64, sequence: i64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(21 + key.len());
    bytes.push(EXPIRY);
    bytes.extend_from_slice(&ordered(time));
    bytes.extend_from_slice(&(key.len() as u32).to_be_bytes());
    bytes.extend_from_slice(key);
    bytes.extend_from_slice(&ordered(sequence));
    bytes
}

/// (key, time, sequence) of an expiry key; `None` for a key this module did not write.
fn parse_expiry_key(bytes: &[u8]) -> Option<(&[u8], i64, i64)> {
    let rest = bytes.strip_prefix(&[EXPIRY])?;
    let (time, rest) = rest.split_at_checked(8)?;
    let (len, rest) = rest.split_at_checked(4)?;
    let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
    let (key, sequence) = rest.split_at_checked(len)?;
    (sequence.len() == 8).then(|| (key, number(time), number(sequence)))
}

impl WindowStore for TransactionalStore {
    fn put_window(&mut self, key: &[u8], time: i64, sequence: i64, value: Vec<u8>) {
        self.put(&data_key(key, time, sequence), value);
        self.put(&expiry_key(key, time, sequence), Vec::new());
    }

    fn delete_window(&mut self, key: &[u8], time: i64, sequence: i64) {
        self.delete(&data_key(key, time, sequence));
        self.delete(&expiry_key(key, time, sequence));
    }

    fn fetch_windows(
        &self,
        key: &[u8],
        from: i64,
        to: i64,
    ) -> Result<Vec<WindowEntry>, StoreError> {
        if from > to {
            return Ok(Vec::new());
        }
        let (low, high) = (data_key(key, from, i64::MIN), data_key(key, to, i64::MAX));
        self.range(Bound::Included(&low), Bound::Included(&high))
            .map(|entry| {
                let (stored, value) = entry?;
                let suffix = &stored[stored.len() - 16..];
                Ok(WindowEntry {
                    key: key.to_vec(),
                    time: number(&suffix[..8]),
                    sequence: number(&suffix[8..]),
                    value,
                })
            })
            .collect()
    }

    fn expire_windows(&mut self, before: i64) -> Result<Vec<WindowEntry>, StoreError> {
        let end = [&[EXPIRY][..], &ordered(before)].concat();
        let expired: Vec<Vec<u8>> = self
            .range(Bound::Included(&[EXPIRY][..]), Bound::Excluded(&end))
            .map(|entry| entry.map(|(k, _)| k))
            .collect::<Result<_, _>>()?;
        let mut entries = Vec::with_capacity(expired.len());
        for index_key in expired {
            let Some((key, time, sequence)) = parse_expiry_key(&index_key) else {
                continue;
            };
            let data = data_key(key, time, sequence);
            if let Some(value) = self.get(&data)? {
                entries.push(WindowEntry {
                    key: key.to_vec(),
                    time,
                    sequence,
                    value,
                });
            }
            self.delete(&data);
            self.delete(&index_key);
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InMemoryKeyValueStore;

    fn store() -> TransactionalStore {
        TransactionalStore::new(Box::new(InMemoryKeyValueStore::new("windows")))
    }

    #[test]
    fn a_fetch_returns_only_the_key_and_times_asked_for_in_time_order() {
        let mut s = store();
        s.put_window(b"a", 10, 0, b"a10".to_vec());
        s.put_window(b"a", -5, 0, b"a-5".to_vec());
        s.put_window(b"a", 20, 0, b"a20".to_vec());
        s.put_window(b"ab", 10, 0, b"ab10".to_vec());
        s.put_window(b"a", 10, 1, b"a10-second".to_vec());
        let got: Vec<(i64, Vec<u8>)> = s
            .fetch_windows(b"a", -5, 10)
            .unwrap()
            .into_iter()
            .map(|e| (e.time, e.value))
            .collect();
        assert_eq!(
            got,
            [
                (-5, b"a-5".to_vec()),
                (10, b"a10".to_vec()),
                (10, b"a10-second".to_vec())
            ]
        );
    }

    #[test]
    fn expiring_removes_every_older_entry_of_every_key_and_returns_it() {
        let mut s = store();
        s.put_window(b"a", 1, 7, b"old-a".to_vec());
        s.put_window(b"bb", 2, 0, b"old-b".to_vec());
        s.put_window(b"a", 5, 0, b"kept".to_vec());
        let expired = s.expire_windows(5).unwrap();
        assert_eq!(
            expired,
            [
                WindowEntry {
                    key: b"a".to_vec(),
                    time: 1,
                    sequence: 7,
                    value: b"old-a".to_vec()
                },
                WindowEntry {
                    key: b"bb".to_vec(),
                    time: 2,
                    sequence: 0,
                    value: b"old-b".to_vec()
                },
            ]
        );
        assert!(
            s.fetch_windows(b"bb", i64::MIN, i64::MAX)
                .unwrap()
                .is_empty()
        );
        assert_eq!(s.fetch_windows(b"a", i64::MIN, i64::MAX).unwrap().len(), 1);
        // Both kinds of keys are gone: one data key and one expiry key remain.
        s.commit(None).unwrap();
        assert_eq!(s.approximate_len(), 2);
    }

    #[test]
    fn a_deleted_entry_is_neither_fetched_nor_expired() {
        let mut s = store();
        s.put_window(b"k", 3, 3, b"v".to_vec());
        s.delete_window(b"k", 3, 3);
        assert!(s.fetch_windows(b"k", 0, 10).unwrap().is_empty());
        assert!(s.expire_windows(100).unwrap().is_empty());
    }
}
