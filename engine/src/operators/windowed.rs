//! windowed_by, then count or aggregate: an aggregate per key and time window, for
//! tumbling and hopping windows on event time, with a grace period for late records.
//!
//! A record belongs to every window `[start, start + size)` that holds its timestamp;
//! window starts are multiples of the advance (tumbling windows advance by their size).
//! The task's *stream time* is the largest record timestamp it has seen; the runtime
//! commits it with the task's offsets and a restarted task resumes it, so a window closed
//! before a crash stays closed after it. A window closes
//! when stream time reaches its end plus the grace period: records for it that arrive out
//! of order before that still count; a record all of whose windows are closed is late. A
//! late record is dropped and counted (`sluice_records_dropped_total{reason="late"}`), or,
//! with [`TimeWindows::late_records_to_dead_letter`], sent to the error policy like any
//! record that cannot be processed. Closed windows are deleted from the store (and
//! tombstoned in its changelog), so state stays bounded by the windows still open.
//!
//! ```
//! use std::time::Duration;
//! use sluice_engine::operators::{TimeWindows, WindowedSerde};
//! use sluice_engine::{Headers, Record, Serdes, TestDriver, TopologyBuilder};
//!
//! let builder = TopologyBuilder::new("orders-per-minute");
//! builder
//!     .source("orders", &["orders"], Serdes::string(), Serdes::string())
//!     .group_by_key(Serdes::string(), Serdes::string())
//!     .windowed_by(TimeWindows::tumbling(Duration::from_secs(60)))
//!     .count("count", "orders-per-minute")
//!     .to("counts", "counts", WindowedSerde::new(Serdes::string()), Serdes::i64());
//! let mut driver = TestDriver::new(builder.build().unwrap());
//! for (patient, second) in [("p1", 5), ("p1", 30), ("p1", 65)] {
//!     let record = Record { key: patient.to_string(), value: "order".to_string(),
//!                           headers: Headers::new(), timestamp: second * 1000 };
//!     driver.pipe("orders", &Serdes::string(), &Serdes::string(), &record).unwrap();
//! }
//! let counts = driver.read("counts", &WindowedSerde::new(Serdes::string()), &Serdes::i64()).unwrap();
//! let windows: Vec<(i64, i64)> = counts.iter().map(|r| (r.key.start_ms, r.value)).collect();
//! assert_eq!(windows, [(0, 1), (0, 2), (60_000, 1)]);
//! ```

use std::marker::PhantomData;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use super::aggregate::GroupedStream;
use super::lateness::{LateRecords, Lateness};
use super::{Context, Processor, encode_key, millis, read_value, write_value};
use crate::error::{ProcessError, SerdeError};
use crate::processor;
use crate::record::Record;
use crate::serde::{I64Serde, Serde};
use crate::topology::{NodeSpec, Stream};

/// Fixed-size windows on event time: tumbling (advance = size) or hopping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeWindows {
    size_ms: i64,
    advance_ms: i64,
    lateness: Lateness,
}

impl TimeWindows {
    /// Back-to-back windows of `size`; no grace period.
    pub fn tumbling(size: Duration) -> Self {
        Self::hopping(size, size)
    }

    /// Windows of `size` starting every `advance` (overlapping when `advance < size`).
    ///
    /// # Panics
    /// If `size` or `advance` is under a millisecond, or `advance` exceeds `size`.
    pub fn hopping(size: Duration, advance: Duration) -> Self {
        let (size_ms, advance_ms) = (millis(size), millis(advance));
        assert!(
            size_ms > 0 && advance_ms > 0 && advance_ms <= size_ms,
            "windows need 0 < advance <= size (in whole milliseconds)"
        );
        Self {
            size_ms,
            advance_ms,
            lateness: Lateness::default(),
        }
    }

    /// How long after a window's end records for it are still accepted (event time).
    pub fn grace(self, grace: Duration) -> Self {
        Self {
            lateness: self.lateness.with_grace(grace),
            ..self
        }
    }

    /// Sends records that arrive after all their windows closed to the topology's error
    /// policy (the dead-letter topic by default) instead of dropping them with a metric.
    pub fn late_records_to_dead_letter(self) -> Self {
        Self {
            lateness: self.lateness.to_dead_letter(),
            ..self
        }
    }

    /// The first window start still open at `stream_time`: a window closes once stream
    /// time reaches its end plus the grace period.
    fn open_from(&self, stream_time: i64) -> i64 {
        stream_time
            .saturating_sub(self.size_ms.saturating_add(self.lateness.grace_ms))
            .saturating_add(1)
    }

    /// Starts of the windows holding `timestamp`, oldest first.
    fn starts(&self, timestamp: i64) -> impl Iterator<Item = i64> + use<> {
        let last = timestamp - timestamp.rem_euclid(self.advance_ms);
        let (size, advance) = (self.size_ms, self.advance_ms);
        let first = last - ((size - 1) / advance) * advance;
        (0..)
            .map(move |i| first + i * advance)
            .take_while(move |start| *start <= last)
            .filter(move |start| timestamp < start + size)
    }
}

/// A key and the window it is aggregated in.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Windowed<K> {
    pub key: K,
    /// Inclusive start, in milliseconds since the epoch.
    pub start_ms: i64,
    /// Exclusive end for time windows; for a session, its last record's timestamp.
    pub end_ms: i64,
}

/// Writes a windowed key as the inner key's bytes followed by the window's start and end
/// (8 bytes each, big-endian).
pub struct WindowedSerde<S> {
    inner: S,
}

impl<S> WindowedSerde<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<K, S: Serde<K>> Serde<Windowed<K>> for WindowedSerde<S> {
    fn serialize(&self, topic: &str, value: &Windowed<K>) -> Result<Option<Vec<u8>>, SerdeError> {
        let mut bytes = self.inner.serialize(topic, &value.key)?.unwrap_or_default();
        bytes.extend_from_slice(&value.start_ms.to_be_bytes());
        bytes.extend_from_slice(&value.end_ms.to_be_bytes());
        Ok(Some(bytes))
    }

    fn deserialize(&self, topic: &str, bytes: Option<&[u8]>) -> Result<Windowed<K>, SerdeError> {
        let bytes = bytes.ok_or_else(|| SerdeError::new("a windowed key is null"))?;
        let Some(split) = bytes.len().checked_sub(16) else {
            return Err(SerdeError::new(format!(
                "a windowed key ends with 16 bytes of window, this one has {}",
                bytes.len()
            )));
        };
        let (key, window) = bytes.split_at(split);
        let number = |b: &[u8]| i64::from_be_bytes(b.try_into().expect("8 bytes"));
        Ok(Windowed {
            key: self.inner.deserialize(topic, Some(key))?,
            start_ms: number(&window[..8]),
            end_ms: number(&window[8..]),
        })
    }
}

/// A grouped stream cut into time windows, ready to aggregate.
pub struct WindowedStream<K, V> {
    grouped: GroupedStream<K, V>,
    windows: TimeWindows,
}

impl<K, V> GroupedStream<K, V>
where
    K: Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Aggregates per key and time window.
    pub fn windowed_by(&self, windows: TimeWindows) -> WindowedStream<K, V> {
        WindowedStream {
            grouped: self.clone(),
            windows,
        }
    }
}

impl<K, V> WindowedStream<K, V>
where
    K: Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Records per key and window.
    pub fn count(&self, name: &str, store: &str) -> Stream<Windowed<K>, i64> {
        self.aggregate_as(
            name,
            "windowed-count",
            store,
            || 0,
            |_, _, n| n + 1,
            I64Serde,
        )
    }

    /// Folds each record into its key's aggregate in each of its windows, starting from
    /// `initial()` in every window.
    pub fn aggregate<A, I, F>(
        &self,
        name: &str,
        store: &str,
        initial: I,
        fold: F,
        aggregate_serde: impl Serde<A>,
    ) -> Stream<Windowed<K>, A>
    where
        A: Clone + Send + Sync + 'static,
        I: Fn() -> A + Send + Sync + 'static,
        F: Fn(&K, V, A) -> A + Send + Sync + 'static,
    {
        self.aggregate_as(
            name,
            "windowed-aggregate",
            store,
            initial,
            fold,
            aggregate_serde,
        )
    }

    fn aggregate_as<A, I, F>(
        &self,
        name: &str,
        operator: &'static str,
        store: &str,
        initial: I,
        fold: F,
        aggregate_serde: impl Serde<A>,
    ) -> Stream<Windowed<K>, A>
    where
        A: Clone + Send + Sync + 'static,
        I: Fn() -> A + Send + Sync + 'static,
        F: Fn(&K, V, A) -> A + Send + Sync + 'static,
    {
        let shared = Arc::new(WindowedAggregation {
            store: Arc::from(store),
            windows: self.windows,
            key_serde: self.grouped.key_serde(),
            aggregate_serde,
            initial,
            fold,
            _marker: PhantomData,
        });
        let stream = self.grouped.stream();
        let topology = stream.topology_name();
        let node = name.to_string();
        let lateness = self.windows.lateness;
        let factory = processor::factory::<_, K, V>(move || WindowedAggregate {
            shared: shared.clone(),
            expired_before: i64::MIN,
            late: LateRecords::new(lateness, &topology, &node),
            null_keys: crate::metrics::dropped(&topology, &node, "null-key"),
        });
        stream.add_node(NodeSpec::processor(name, operator, factory).stores(&[store]))
    }
}

struct WindowedAggregation<K, V, A, S, I, F> {
    store: Arc<str>,
    windows: TimeWindows,
    key_serde: Arc<dyn Serde<K>>,
    aggregate_serde: S,
    initial: I,
    fold: F,
    _marker: PhantomData<fn(V) -> A>,
}

struct WindowedAggregate<K, V, A, S, I, F> {
    shared: Arc<WindowedAggregation<K, V, A, S, I, F>>,
    /// Windows starting before this are closed and gone from the store.
    expired_before: i64,
    late: LateRecords,
    null_keys: metrics::Counter,
}

/// Store key of a window: its start first (sign bit flipped, so byte order is time order)
/// then the group key, so closed windows are one range at the front of the store.
fn store_key(start: i64, key: &[u8]) -> Vec<u8> {
    let mut bytes = ((start as u64) ^ (1 << 63)).to_be_bytes().to_vec();
    bytes.extend_from_slice(key);
    bytes
}

impl<K, V, A, S, I, F> Processor<K, V> for WindowedAggregate<K, V, A, S, I, F>
where
    K: Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    A: Clone + Send + Sync + 'static,
    S: Serde<A>,
    I: Fn() -> A + Send + Sync + 'static,
    F: Fn(&K, V, A) -> A + Send + Sync + 'static,
{
    type KeyOut = Windowed<K>;
    type ValueOut = A;

    fn process(
        &mut self,
        record: Record<K, V>,
        ctx: &mut Context<'_, Windowed<K>, A>,
    ) -> Result<(), ProcessError> {
        let shared = &*self.shared;
        let windows = shared.windows;
        let Some(key) = encode_key(&*shared.key_serde, &shared.store, &record.key, "group key")?
        else {
            self.null_keys.increment(1);
            return Ok(());
        };
        let open_from = windows.open_from(ctx.stream_time().unwrap_or(i64::MIN));
        let open: Vec<i64> = windows
            .starts(record.timestamp)
            .filter(|start| *start >= open_from)
            .collect();
        if open.is_empty() {
            return self
                .late
                .reject("the record is later than its windows' grace period");
        }
        let store = ctx.store(0);
        let mut updates = Vec::with_capacity(open.len());
        for start in open {
            let bytes_key = store_key(start, &key);
            let current = read_value(
                store,
                &shared.aggregate_serde,
                &bytes_key,
                "stored aggregate",
            )?
            .unwrap_or_else(&shared.initial);
            let next = (shared.fold)(&record.key, record.value.clone(), current);
            write_value(
                store,
                &shared.aggregate_serde,
                &bytes_key,
                &next,
                "aggregate",
            )?;
            updates.push((start, next));
        }
        self.expire_closed_windows(open_from, ctx)?;
        for (start, value) in updates {
            ctx.forward(Record {
                key: Windowed {
                    key: record.key.clone(),
                    start_ms: start,
                    end_ms: start + windows.size_ms,
                },
                value,
                headers: record.headers.clone(),
                timestamp: record.timestamp,
            });
        }
        Ok(())
    }
}

impl<K, V, A, S, I, F> WindowedAggregate<K, V, A, S, I, F> {
    /// Deletes every window starting before `open_from`: stream time has closed them.
    fn expire_closed_windows<KO, VO>(
        &mut self,
        open_from: i64,
        ctx: &mut Context<'_, KO, VO>,
    ) -> Result<(), ProcessError> {
        if open_from <= self.expired_before {
            return Ok(());
        }
        let store = ctx.store(0);
        let end = store_key(open_from, &[]);
        let closed: Vec<Vec<u8>> = store
            .range(Bound::Unbounded, Bound::Excluded(&end))
            .map(|entry| entry.map(|(k, _)| k))
            .collect::<Result<_, _>>()
            .map_err(ProcessError::state)?;
        for key in closed {
            store.delete(&key);
        }
        self.expired_before = open_from;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timestamp_belongs_to_size_over_advance_hopping_windows() {
        let w = TimeWindows::hopping(Duration::from_millis(10), Duration::from_millis(5));
        assert_eq!(w.starts(12).collect::<Vec<_>>(), [5, 10]);
        assert_eq!(w.starts(10).collect::<Vec<_>>(), [5, 10]);
        assert_eq!(w.starts(9).collect::<Vec<_>>(), [0, 5]);
        let tumbling = TimeWindows::tumbling(Duration::from_millis(10));
        assert_eq!(tumbling.starts(19).collect::<Vec<_>>(), [10]);
        assert_eq!(tumbling.starts(-1).collect::<Vec<_>>(), [-10]);
    }

    #[test]
    fn store_keys_sort_by_window_start_across_zero() {
        assert!(store_key(-5, b"z") < store_key(0, b"a"));
        assert!(store_key(0, b"z") < store_key(1, b"a"));
    }
}
