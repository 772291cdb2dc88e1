//! Sluice's RocksDB store against raw RocksDB, in the same bench and with the same options
//! (shared block cache and write-buffer manager, write-ahead log off).
//!
//! * `put`: 10,000 100-byte values. Sluice writes them as a task does: into the
//!   transaction's overlay, then one `WriteBatch` with the checkpoint at each commit
//!   (every 1,000 writes here). Raw is one `put` per key.
//! * `get`: 10,000 point reads of present keys, through the (empty) overlay for Sluice.
//! * `range`: 100 scans of 100 consecutive keys.
//! * `restore`: 100,000 changelog records of 100 bytes applied in batches of 10,000 with a
//!   checkpoint per batch, the store side of restoring from a changelog.
//!
//! The ratio raw-time / Sluice-time is the share of raw RocksDB's speed the store keeps.

use std::hint::black_box;
use std::ops::Bound;
use std::path::PathBuf;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rocksdb::{DB, WriteOptions};
use sluice_state::{
    CHECKPOINT_FAMILY, KeyValueStore, RocksDbStore, StateBudget, TransactionalStore,
};

const KEYS: u32 = 10_000;
const VALUE: [u8; 100] = [42; 100];

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sluice-bench-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn key(i: u32) -> [u8; 8] {
    // Spread over the key space like hashed ids, but reproducible.
    (u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_be_bytes()
}

fn budget() -> StateBudget {
    StateBudget::new(64 << 20, 32 << 20)
}

/// A raw RocksDB instance opened with the options the store uses (the same shared cache
/// and write-buffer manager), so the comparison is the layer, not the tuning.
fn raw_db(budget: &StateBudget) -> DB {
    let options = budget.options();
    DB::open_cf(&options, temp_dir("raw"), ["default", CHECKPOINT_FAMILY]).unwrap()
}

fn filled_store(budget: &StateBudget) -> TransactionalStore {
    let mut store = TransactionalStore::new(Box::new(
        RocksDbStore::open(&temp_dir("store"), "s", budget).unwrap(),
    ));
    for i in 0..KEYS {
        store.put(&key(i), VALUE.to_vec());
    }
    store.commit(Some(i64::from(KEYS))).unwrap();
    store
}

fn no_wal() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.disable_wal(true);
    w
}

fn bench(c: &mut Criterion) {
    let budget = budget();
    let mut group = c.benchmark_group("state_store");
    group.throughput(Throughput::Elements(u64::from(KEYS)));

    let mut store = TransactionalStore::new(Box::new(
        RocksDbStore::open(&temp_dir("put"), "s", &budget).unwrap(),
    ));
    let mut offset = 0i64;
    group.bench_function("put/sluice", |b| {
        b.iter(|| {
            for i in 0..KEYS {
                store.put(&key(i), VALUE.to_vec());
                if i % 1000 == 999 {
                    offset += 1000;
                    store.commit(Some(offset)).unwrap();
                }
            }
        })
    });
    let raw = raw_db(&budget);
    let write = no_wal();
    group.bench_function("put/raw-rocksdb", |b| {
        b.iter(|| {
            for i in 0..KEYS {
                raw.put_opt(key(i), VALUE, &write).unwrap();
            }
        })
    });

    // Reads go to stores written once: the put benches above leave many versions of each
    // key behind, which would slow whichever side read them.
    let store = filled_store(&budget);
    let raw = raw_db(&budget);
    for i in 0..KEYS {
        raw.put_opt(key(i), VALUE, &write).unwrap();
    }
    group.bench_function("get/sluice", |b| {
        b.iter(|| {
            for i in 0..KEYS {
                black_box(store.get(&key(i)).unwrap());
            }
        })
    });
    group.bench_function("get/raw-rocksdb", |b| {
        b.iter(|| {
            for i in 0..KEYS {
                black_box(raw.get_pinned(key(i)).unwrap().map(|v| v.to_vec()));
            }
        })
    });

    group.bench_function("range/sluice", |b| {
        b.iter(|| {
            for scan in 0..100u32 {
                let from = key(scan * 97);
                let entries = store.range(Bound::Included(&from), Bound::Unbounded);
                black_box(entries.take(100).map(Result::unwrap).count());
            }
        })
    });
    group.bench_function("range/raw-rocksdb", |b| {
        b.iter(|| {
            for scan in 0..100u32 {
                let from = key(scan * 97);
                let mut iterator = raw.raw_iterator();
                iterator.seek(from);
                let mut n = 0;
                while iterator.valid() && n < 100 {
                    black_box((
                        iterator.key().unwrap().to_vec(),
                        iterator.value().unwrap().to_vec(),
                    ));
                    iterator.next();
                    n += 1;
                }
            }
        })
    });

    const RESTORED: u32 = 100_000;
    group.throughput(Throughput::Elements(u64::from(RESTORED)));
    let records: Vec<([u8; 8], [u8; 100])> = (0..RESTORED).map(|i| (key(i), VALUE)).collect();
    group.bench_function("restore/sluice", |b| {
        b.iter_batched(
            || RocksDbStore::open(&temp_dir("restore"), "s", &budget).unwrap(),
            |mut store| {
                for (n, chunk) in records.chunks(10_000).enumerate() {
                    let mut changes = chunk.iter().map(|(k, v)| (&k[..], Some(&v[..])));
                    store
                        .write(&mut changes, Some(((n + 1) * 10_000) as i64))
                        .unwrap();
                }
                store
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
