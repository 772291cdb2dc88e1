//! session_windowed_by, then count or aggregate: an aggregate per key and *session*, a
//! burst of activity that ends after an inactivity gap.
//!
//! A session runs from its first record's timestamp to its last one's, both inclusive
//! ([`Windowed::start_ms`], [`Windowed::end_ms`]). A record at most the gap away from a
//! session of its key joins it; a record that falls between two sessions closer than the
//! gap to both merges them into one, and their aggregates with `merge`. Every change is
//! emitted: the session's new aggregate, and a `None` for each session merged away (a
//! tombstone, so a compacted topic keyed by session ends up holding the live sessions
//! only). Send the stream to a topic with [`Serdes::optional`](crate::Serdes::optional).
//!
//! Stream time and grace work as for time windows: a session closes when stream time
//! passes its end plus the inactivity gap (no record can extend it any more) plus the
//! grace period; a record that could only land in closed sessions is late (dropped with `sluice_records_dropped_total{reason="late"}`, or sent to the
//! error policy with [`SessionWindows::late_records_to_dead_letter`]). Sessions leave the
//! store once no record could extend them any more.
//!
//! ```
//! use std::time::Duration;
//! use sluice_engine::operators::{SessionWindows, WindowedSerde};
//! use sluice_engine::{Headers, Record, Serdes, TestDriver, TopologyBuilder};
//!
//! let builder = TopologyBuilder::new("app-sessions");
//! builder
//!     .source("events", &["app-events"], Serdes::string(), Serdes::string())
//!     .group_by_key(Serdes::string(), Serdes::string())
//!     .session_windowed_by(SessionWindows::with_inactivity_gap(Duration::from_secs(60)))
//!     .count("count", "app-sessions")
//!     .to("sessions", "sessions", WindowedSerde::new(Serdes::string()), Serdes::optional(Serdes::i64()));
//! let mut driver = TestDriver::new(builder.build().unwrap());
//! for second in [0, 30, 200] {
//!     let event = Record { key: "device-1".to_string(), value: "tap".to_string(),
//!                          headers: Headers::new(), timestamp: second * 1000 };
//!     driver.pipe("app-events", &Serdes::string(), &Serdes::string(), &event).unwrap();
//! }
//! let out = driver.read("sessions", &WindowedSerde::new(Serdes::string()), &Serdes::optional(Serdes::i64())).unwrap();
//! let changes: Vec<(i64, i64, Option<i64>)> =
//!     out.iter().map(|r| (r.key.start_ms, r.key.end_ms, r.value)).collect();
//! assert_eq!(changes, [
//!     (0, 0, Some(1)),
//!     (0, 0, None),            // the one-record session, merged away...
//!     (0, 30_000, Some(2)),    // ...into this one
//!     (200_000, 200_000, Some(1)),
//! ]);
//! ```

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use super::aggregate::GroupedStream;
use super::lateness::{LateRecords, Lateness};
use super::{Context, Processor, Windowed, encode_key, millis};
use crate::error::{ErrorKind, ProcessError};
use crate::processor;
use crate::record::Record;
use crate::serde::{I64Serde, Serde};
use crate::topology::{NodeSpec, Stream};
use sluice_state::WindowStore;

/// Sessions of activity separated by an inactivity gap, on event time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionWindows {
    gap_ms: i64,
    lateness: Lateness,
}

impl SessionWindows {
    /// Records of one key at most `gap` apart are one session; no grace period.
    ///
    /// # Panics
    /// If `gap` is under a millisecond.
    pub fn with_inactivity_gap(gap: Duration) -> Self {
        let gap_ms = millis(gap);
        assert!(gap_ms > 0, "a session gap is at least a millisecond");
        Self {
            gap_ms,
            lateness: Lateness::default(),
        }
    }

    /// How long after a session's end records for it are still accepted (event time).
    pub fn grace(self, grace: Duration) -> Self {
        Self {
            lateness: self.lateness.with_grace(grace),
            ..self
        }
    }

    /// Sends late records to the topology's error policy instead of dropping them with a
    /// metric.
    pub fn late_records_to_dead_letter(self) -> Self {
        Self {
            lateness: self.lateness.to_dead_letter(),
            ..self
        }
    }
}

impl SessionWindows {
    /// Sessions ending before this are closed at `stream_time`: no record can extend them
    /// (the gap has passed) and the grace period is over.
    fn open_from(&self, stream_time: i64) -> i64 {
        stream_time.saturating_sub(self.gap_ms.saturating_add(self.lateness.grace_ms))
    }
}

/// A grouped stream cut into sessions, ready to aggregate.
pub struct SessionWindowedStream<K, V> {
    grouped: GroupedStream<K, V>,
    windows: SessionWindows,
}

impl<K, V> GroupedStream<K, V>
where
    K: Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Aggregates per key and session.
    pub fn session_windowed_by(&self, windows: SessionWindows) -> SessionWindowedStream<K, V> {
        SessionWindowedStream {
            grouped: self.clone(),
            windows,
        }
    }
}

impl<K, V> SessionWindowedStream<K, V>
where
    K: Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Records per key and session; `None` for a session merged into another.
    pub fn count(&self, name: &str, store: &str) -> Stream<Windowed<K>, Option<i64>> {
        self.aggregate_as(
            name,
            "session-count",
            store,
            || 0,
            |_, _, n| n + 1,
            |_, a, b| a + b,
            I64Serde,
        )
    }

    /// Folds each record into its session's aggregate, starting from `initial()`; when a
    /// record joins sessions, `merge` combines their aggregates (oldest first) before the
    /// record is folded in.
    pub fn aggregate<A, I, F, M>(
        &self,
        name: &str,
        store: &str,
        initial: I,
        fold: F,
        merge: M,
        aggregate_serde: impl Serde<A>,
    ) -> Stream<Windowed<K>, Option<A>>
    where
        A: Clone + Send + Sync + 'static,
        I: Fn() -> A + Send + Sync + 'static,
        F: Fn(&K, V, A) -> A + Send + Sync + 'static,
        M: Fn(&K, A, A) -> A + Send + Sync + 'static,
    {
        self.aggregate_as(
            name,
            "session-aggregate",
            store,
            initial,
            fold,
            merge,
            aggregate_serde,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn aggregate_as<A, I, F, M>(
        &self,
        name: &str,
        operator: &'static str,
        store: &str,
        initial: I,
        fold: F,
        merge: M,
        aggregate_serde: impl Serde<A>,
    ) -> Stream<Windowed<K>, Option<A>>
    where
        A: Clone + Send + Sync + 'static,
        I: Fn() -> A + Send + Sync + 'static,
        F: Fn(&K, V, A) -> A + Send + Sync + 'static,
        M: Fn(&K, A, A) -> A + Send + Sync + 'static,
    {
        let shared = Arc::new(SessionAggregation {
            store: Arc::from(store),
            windows: self.windows,
            key_serde: self.grouped.key_serde(),
            aggregate_serde: Arc::new(aggregate_serde) as Arc<dyn Serde<A>>,
            initial,
            fold,
            merge,
            _marker: PhantomData,
        });
        let stream = self.grouped.stream();
        let topology = stream.topology_name();
        let node = name.to_string();
        let lateness = self.windows.lateness;
        let factory = processor::factory::<_, K, V>(move || SessionAggregate {
            shared: shared.clone(),
            expired_before: i64::MIN,
            late: LateRecords::new(lateness, &topology, &node),
            null_keys: crate::metrics::dropped(&topology, &node, "null-key"),
        });
        stream.add_node(NodeSpec::processor(name, operator, factory).stores(&[store]))
    }
}

struct SessionAggregation<K, V, A, I, F, M> {
    store: Arc<str>,
    windows: SessionWindows,
    key_serde: Arc<dyn Serde<K>>,
    aggregate_serde: Arc<dyn Serde<A>>,
    initial: I,
    fold: F,
    merge: M,
    _marker: PhantomData<fn(V)>,
}

struct SessionAggregate<K, V, A, I, F, M> {
    shared: Arc<SessionAggregation<K, V, A, I, F, M>>,
    /// Sessions ending before this are gone from the store.
    expired_before: i64,
    late: LateRecords,
    null_keys: metrics::Counter,
}

impl<K, V, A, I, F, M> Processor<K, V> for SessionAggregate<K, V, A, I, F, M>
where
    K: Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    A: Clone + Send + Sync + 'static,
    I: Fn() -> A + Send + Sync + 'static,
    F: Fn(&K, V, A) -> A + Send + Sync + 'static,
    M: Fn(&K, A, A) -> A + Send + Sync + 'static,
{
    type KeyOut = Windowed<K>;
    type ValueOut = Option<A>;

    fn process(
        &mut self,
        record: Record<K, V>,
        ctx: &mut Context<'_, Windowed<K>, Option<A>>,
    ) -> Result<(), ProcessError> {
        let shared = self.shared.clone();
        let gap = shared.windows.gap_ms;
        let Some(key) = encode_key(&*shared.key_serde, &shared.store, &record.key, "group key")?
        else {
            self.null_keys.increment(1);
            return Ok(());
        };
        let ts = record.timestamp;
        let open_from = shared
            .windows
            .open_from(ctx.stream_time().unwrap_or(i64::MIN));
        let store = ctx.store(0);
        // Sessions are stored under (end, start); those ending at most a gap before the
        // record and starting at most a gap after it take it in.
        let merged: Vec<_> = store
            .fetch_windows(&key, ts.saturating_sub(gap), i64::MAX)
            .map_err(ProcessError::state)?
            .into_iter()
            .filter(|s| s.sequence <= ts.saturating_add(gap))
            .collect();
        let start = merged.iter().map(|s| s.sequence).fold(ts, i64::min);
        let end = merged.iter().map(|s| s.time).fold(ts, i64::max);
        if end < open_from {
            return self
                .late
                .reject("the record is later than its session's grace period");
        }
        let mut aggregate = (shared.initial)();
        let mut superseded = Vec::new();
        for session in merged {
            let value = shared
                .aggregate_serde
                .deserialize(&shared.store, Some(&session.value))
                .map_err(|e| {
                    ProcessError::from_serde(ErrorKind::Deserialization, "stored session", e)
                })?;
            aggregate = (shared.merge)(&record.key, aggregate, value);
            store.delete_window(&key, session.time, session.sequence);
            if (session.sequence, session.time) != (start, end) {
                superseded.push((session.sequence, session.time));
            }
        }
        let aggregate = (shared.fold)(&record.key, record.value, aggregate);
        let bytes = shared
            .aggregate_serde
            .serialize(&shared.store, &aggregate)
            .map_err(|e| ProcessError::from_serde(ErrorKind::Serialization, "aggregate", e))?
            .unwrap_or_default();
        store.put_window(&key, end, start, bytes);
        if open_from > self.expired_before {
            store
                .expire_windows(open_from)
                .map_err(ProcessError::state)?;
            self.expired_before = open_from;
        }
        let windowed = |start_ms, end_ms| Windowed {
            key: record.key.clone(),
            start_ms,
            end_ms,
        };
        for (old_start, old_end) in superseded {
            ctx.forward(Record {
                key: windowed(old_start, old_end),
                value: None::<A>,
                headers: record.headers.clone(),
                timestamp: ts,
            });
        }
        ctx.forward(Record {
            key: windowed(start, end),
            value: Some(aggregate),
            headers: record.headers,
            timestamp: end,
        });
        Ok(())
    }
}
