//! The RocksDB key-value store, and the memory budget all of a worker's stores share.
//!
//! Each (task, store) is its own RocksDB instance, at
//! `<state.dir>/<application.id>/<task>/<store>`, so a task's state moves, is wiped or is
//! restored on its own. Keys and values live in the default column family; the
//! checkpoint lives in a column family of its own, written in the same `WriteBatch` as the
//! data it describes.
//!
//! The write-ahead log is off: the changelog topic is the log. A crash loses what was
//! only in memtables, data and checkpoint together (flushes are atomic across both column
//! families), so the store falls back to an older consistent point and the restore
//! replays the changelog from that point's checkpoint.

use std::ops::Bound;
use std::path::{Path, PathBuf};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, DBCompressionType, FlushOptions, Options,
    ReadOptions, WriteBatch, WriteBufferManager, WriteOptions,
};

use crate::store::{Entry, KeyValueStore, StoreError};

/// The column family holding the checkpoint.
pub const CHECKPOINT_FAMILY: &str = "sluice.checkpoint";
const CHECKPOINT_KEY: &[u8] = b"changelog-offset";
/// Memtable size of one store: small, because a worker holds many stores and the shared
/// write-buffer manager bounds them all together anyway.
const WRITE_BUFFER_BYTES: usize = 8 << 20;
/// Memtable size of the checkpoint family, which holds one key. A memtable takes memory in
/// blocks of an eighth of its size once its first 2 KiB are used (about 30 commits), so
/// the default would hold a 1 MiB block per store for one 8-byte offset.
const CHECKPOINT_WRITE_BUFFER_BYTES: usize = 64 << 10;

/// The memory every RocksDB store of one worker shares: one LRU block cache (data, index
/// and filter blocks) and one write-buffer manager (memtables). Cloning shares it.
#[derive(Clone)]
pub struct StateBudget {
    cache: Cache,
    write_buffers: WriteBufferManager,
    cache_bytes: usize,
    write_buffer_bytes: usize,
}

impl StateBudget {
    /// `cache_bytes` for blocks read (`state.cache.max.bytes`) and `write_buffer_bytes`
    /// for memtables (`state.write.buffer.max.bytes`).
    ///
    /// Memtables past the budget make the store being written flush; writes never wait
    /// for memory (RocksDB's `allow_stall` is off, as in Kafka Streams' bounded-memory
    /// setup). Waiting would let a worker stop for good: a stalled write is freed only by
    /// flushes, a budget-triggered flush only flushes the store being written, and with
    /// every stream thread waiting on a store that holds little, the memtables of the
    /// others are never flushed. The bound is therefore soft by what is being flushed.
    pub fn new(cache_bytes: usize, write_buffer_bytes: usize) -> Self {
        Self {
            cache: Cache::new_lru_cache(cache_bytes),
            write_buffers: WriteBufferManager::new_write_buffer_manager(write_buffer_bytes, false),
            cache_bytes,
            write_buffer_bytes,
        }
    }

    /// The configured bound: block cache plus write buffers.
    pub fn bytes(&self) -> usize {
        self.cache_bytes + self.write_buffer_bytes
    }

    /// Bytes in use now: blocks cached plus memtables.
    pub fn usage(&self) -> usize {
        self.cache.get_usage() + self.write_buffers.get_usage()
    }

    /// The options every store of this budget opens with (public so that benches can
    /// open raw RocksDB the same way).
    pub fn options(&self) -> Options {
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&self.cache);
        // Index and filter blocks count against the shared cache too, so table readers'
        // memory is bounded with everything else instead of growing with the data.
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        table.set_bloom_filter(10.0, false);
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_block_based_table_factory(&table);
        options.set_write_buffer_manager(&self.write_buffers);
        options.set_write_buffer_size(WRITE_BUFFER_BYTES.min(self.write_buffer_bytes.max(1 << 20)));
        options.set_max_write_buffer_number(2);
        options.set_compression_type(DBCompressionType::Lz4);
        options.set_bottommost_compression_type(DBCompressionType::Zstd);
        options.set_level_compaction_dynamic_level_bytes(true);
        // Data and checkpoint reach disk together, or neither does.
        options.set_atomic_flush(true);
        options
    }

    /// The checkpoint family's options: the store's, with a memtable sized for one key.
    fn checkpoint_options(&self) -> Options {
        let mut options = self.options();
        options.set_write_buffer_size(CHECKPOINT_WRITE_BUFFER_BYTES);
        options
    }
}

/// A key-value store in one RocksDB instance.
pub struct RocksDbStore {
    name: String,
    path: PathBuf,
    db: DB,
    write_options: WriteOptions,
}

impl RocksDbStore {
    /// Opens (or creates) the store at `path`, within `budget`.
    pub fn open(path: &Path, name: &str, budget: &StateBudget) -> Result<Self, StoreError> {
        let error = |what, e: rocksdb::Error| StoreError {
            store: name.to_string(),
            what,
            reason: format!("{e} (at {})", path.display()),
        };
        std::fs::create_dir_all(path).map_err(|e| StoreError {
            store: name.to_string(),
            what: "creating its directory",
            reason: format!("{e} (at {})", path.display()),
        })?;
        let options = budget.options();
        let families = [
            ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, options.clone()),
            ColumnFamilyDescriptor::new(CHECKPOINT_FAMILY, budget.checkpoint_options()),
        ];
        let db = DB::open_cf_descriptors(&options, path, families)
            .map_err(|e| error("opening RocksDB", e))?;
        let mut write_options = WriteOptions::default();
        write_options.disable_wal(true);
        Ok(Self {
            name: name.to_string(),
            path: path.to_path_buf(),
            db,
            write_options,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, what: &'static str, e: rocksdb::Error) -> StoreError {
        StoreError {
            store: self.name.clone(),
            what,
            reason: e.to_string(),
        }
    }

    fn property(&self, name: &str) -> u64 {
        self.db.property_int_value(name).ok().flatten().unwrap_or(0)
    }

    /// Writes memtables to disk (data and checkpoint together).
    pub fn flush(&self) -> Result<(), StoreError> {
        let checkpoint = self
            .db
            .cf_handle(CHECKPOINT_FAMILY)
            .expect("opened with the checkpoint family");
        let data = self
            .db
            .cf_handle(rocksdb::DEFAULT_COLUMN_FAMILY_NAME)
            .expect("the default family exists");
        let mut options = FlushOptions::default();
        options.set_wait(true);
        self.db
            .flush_cfs_opt(&[&data, &checkpoint], &options)
            .map_err(|e| self.error("flushing", e))
    }
}

impl Drop for RocksDbStore {
    /// A graceful close keeps everything: with the write-ahead log off, only a flush
    /// makes the memtables durable.
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            log::warn!("{e}; the next start restores more of the changelog");
        }
    }
}

impl KeyValueStore for RocksDbStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db
            .get_pinned(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| self.error("reading", e))
    }

    fn range<'a>(
        &'a self,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
    ) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + 'a> {
        let mut options = ReadOptions::default();
        if let Bound::Excluded(end) = to {
            options.set_iterate_upper_bound(end.to_vec());
        }
        let mut iterator = self.db.raw_iterator_opt(options);
        match from {
            Bound::Included(start) | Bound::Excluded(start) => iterator.seek(start),
            Bound::Unbounded => iterator.seek_to_first(),
        }
        let skip_first = match from {
            Bound::Excluded(start) => Some(start.to_vec()),
            _ => None,
        };
        let included_end = match to {
            Bound::Included(end) => Some(end.to_vec()),
            _ => None,
        };
        let mut done = false;
        let mut skip_first = skip_first;
        Box::new(std::iter::from_fn(move || {
            loop {
                if done {
                    return None;
                }
                if !iterator.valid() {
                    done = true;
                    return match iterator.status() {
                        Ok(()) => None,
                        Err(e) => Some(Err(self.error("iterating", e))),
                    };
                }
                let key = iterator.key().expect("a valid iterator has a key");
                if skip_first.take().is_some_and(|s| s == key) {
                    iterator.next();
                    continue;
                }
                if included_end.as_deref().is_some_and(|end| key > end) {
                    done = true;
                    return None;
                }
                let entry = (
                    key.to_vec(),
                    iterator
                        .value()
                        .expect("a valid iterator has a value")
                        .to_vec(),
                );
                iterator.next();
                return Some(Ok(entry));
            }
        }))
    }

    fn write(
        &mut self,
        changes: &mut dyn Iterator<Item = (&[u8], Option<&[u8]>)>,
        checkpoint: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for (key, value) in changes {
            match value {
                Some(value) => batch.put(key, value),
                None => batch.delete(key),
            }
        }
        if let Some(offset) = checkpoint {
            let family = self
                .db
                .cf_handle(CHECKPOINT_FAMILY)
                .expect("opened with the checkpoint family");
            batch.put_cf(family, CHECKPOINT_KEY, offset.to_be_bytes());
        }
        self.db
            .write_opt(batch, &self.write_options)
            .map_err(|e| self.error("writing a batch", e))
    }

    fn checkpoint(&self) -> Result<Option<i64>, StoreError> {
        let family = self
            .db
            .cf_handle(CHECKPOINT_FAMILY)
            .expect("opened with the checkpoint family");
        let value = self
            .db
            .get_pinned_cf(family, CHECKPOINT_KEY)
            .map_err(|e| self.error("reading the checkpoint", e))?;
        Ok(value.and_then(|v| <[u8; 8]>::try_from(&v[..]).ok().map(i64::from_be_bytes)))
    }

    fn approximate_len(&self) -> u64 {
        self.property("rocksdb.estimate-num-keys")
    }

    fn approximate_bytes(&self) -> u64 {
        self.property("rocksdb.estimate-live-data-size")
            + self.property("rocksdb.cur-size-all-mem-tables")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sluice-state-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn budget() -> StateBudget {
        StateBudget::new(8 << 20, 8 << 20)
    }

    fn write(
        store: &mut RocksDbStore,
        changes: &[(&[u8], Option<&[u8]>)],
        checkpoint: Option<i64>,
    ) {
        store
            .write(&mut changes.iter().copied(), checkpoint)
            .unwrap();
    }

    #[test]
    fn data_and_checkpoint_survive_a_reopen() {
        let dir = temp_dir("reopen");
        let budget = budget();
        {
            let mut store = RocksDbStore::open(&dir, "counts", &budget).unwrap();
            assert_eq!(
                store.checkpoint().unwrap(),
                None,
                "a new store has no checkpoint"
            );
            write(
                &mut store,
                &[(b"a", Some(b"1")), (b"b", Some(b"2"))],
                Some(41),
            );
            write(&mut store, &[(b"a", None)], Some(42));
        }
        let store = RocksDbStore::open(&dir, "counts", &budget).unwrap();
        assert_eq!(store.checkpoint().unwrap(), Some(42));
        assert_eq!(store.get(b"a").unwrap(), None);
        assert_eq!(store.get(b"b").unwrap(), Some(b"2".to_vec()));
    }

    #[test]
    fn range_honours_each_kind_of_bound() {
        let dir = temp_dir("range");
        let mut store = RocksDbStore::open(&dir, "s", &budget()).unwrap();
        let keys: [&[u8]; 5] = [b"a", b"b", b"c", b"d", b"e"];
        let changes: Vec<(&[u8], Option<&[u8]>)> = keys.iter().map(|k| (*k, Some(*k))).collect();
        write(&mut store, &changes, None);
        let keys_in =
            |from, to| -> Vec<Vec<u8>> { store.range(from, to).map(|e| e.unwrap().0).collect() };
        assert_eq!(
            keys_in(Bound::Included(b"b"), Bound::Excluded(b"d")),
            [b"b".to_vec(), b"c".to_vec()]
        );
        assert_eq!(
            keys_in(Bound::Excluded(b"b"), Bound::Included(b"d")),
            [b"c".to_vec(), b"d".to_vec()]
        );
        assert_eq!(keys_in(Bound::Unbounded, Bound::Unbounded).len(), 5);
        assert_eq!(
            keys_in(Bound::Included(b"d"), Bound::Unbounded),
            [b"d".to_vec(), b"e".to_vec()]
        );
    }

    #[test]
    fn stores_of_one_budget_share_its_cache() {
        let budget = budget();
        let mut a = RocksDbStore::open(&temp_dir("share-a"), "a", &budget).unwrap();
        let b = RocksDbStore::open(&temp_dir("share-b"), "b", &budget).unwrap();
        let value = vec![7u8; 1000];
        let changes: Vec<(Vec<u8>, Vec<u8>)> = (0..5000u32)
            .map(|i| (i.to_be_bytes().to_vec(), value.clone()))
            .collect();
        a.write(
            &mut changes.iter().map(|(k, v)| (&k[..], Some(&v[..]))),
            Some(1),
        )
        .unwrap();
        a.flush().unwrap();
        for (k, _) in &changes {
            assert!(a.get(k).unwrap().is_some());
        }
        assert!(b.get(b"missing").unwrap().is_none());
        assert!(budget.usage() > 0, "blocks read are in the shared cache");
        assert!(
            budget.usage() <= budget.bytes() + (1 << 20),
            "usage {} stays within the budget {}",
            budget.usage(),
            budget.bytes()
        );
        assert!(a.approximate_len() > 4000, "{}", a.approximate_len());
    }
}
