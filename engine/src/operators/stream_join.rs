//! join_stream and left_join_stream: records of two streams with the same key joined when
//! their timestamps are close enough ([`JoinWindows`]).
//!
//! Each side buffers its records in a window store of its own, named by the topology
//! author ([`StreamJoined`]); a record arriving on one side is joined with every buffered
//! record of the other side with the same key inside the window, then buffered itself. So
//! every matching pair is emitted exactly once, whichever side arrives first, and out of
//! order records still find their partners. The joined record takes the later of the two
//! timestamps, as in Kafka Streams.
//!
//! *Stream time* is the task's largest record timestamp. A record is late when stream
//! time is past its timestamp by more than the grace period: it is dropped and counted
//! (`sluice_records_dropped_total{reason="late"}`) or, with
//! [`JoinWindows::late_records_to_dead_letter`], sent to the error policy. A buffered
//! record is kept exactly as long as a partner that is not late could still arrive for it
//! (its timestamp, plus the window on the other side, plus the grace period).
//!
//! A left join also emits each record of this stream that found no partner, joined with
//! `None`, when its window closes: never a `None` result that a partner arriving in time
//! would contradict.
//!
//! Both streams must be co-partitioned (same key, same partition count): the join runs in
//! one task per partition and sees partition p of both inputs.
//!
//! ```
//! use std::time::Duration;
//! use sluice_engine::operators::{JoinWindows, StreamJoined};
//! use sluice_engine::{Headers, Record, Serdes, TestDriver, TopologyBuilder};
//!
//! let builder = TopologyBuilder::new("order-fills");
//! let fills = builder.source("fills", &["fills"], Serdes::string(), Serdes::string());
//! builder
//!     .source("orders", &["orders"], Serdes::string(), Serdes::string())
//!     .join_stream(
//!         "order-with-fill",
//!         &fills,
//!         JoinWindows::of(Duration::from_secs(60)),
//!         StreamJoined::new("orders-buffer", "fills-buffer", Serdes::string(), Serdes::string(), Serdes::string()),
//!         |_order_id, order, fill| format!("{order} filled by {fill}"),
//!     )
//!     .to("out", "filled-orders", Serdes::string(), Serdes::string());
//! let mut driver = TestDriver::new(builder.build().unwrap());
//! let at = |value: &str, ms| Record { key: "o-1".to_string(), value: value.to_string(),
//!                                     headers: Headers::new(), timestamp: ms };
//! let s = Serdes::string();
//! driver.pipe("orders", &s, &s, &at("order", 0)).unwrap();
//! driver.pipe("fills", &s, &s, &at("pharmacy A", 30_000)).unwrap();
//! driver.pipe("fills", &s, &s, &at("pharmacy B", 90_000)).unwrap(); // 90 s later: too late
//!
//! let out = driver.read("filled-orders", &s, &s).unwrap();
//! assert_eq!(out.len(), 1);
//! assert_eq!(out[0].value, "order filled by pharmacy A");
//! assert_eq!(out[0].timestamp, 30_000);
//! ```

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use super::lateness::{LateRecords, Lateness};
use super::{Context, Processor, encode_key, millis};
use crate::error::{ErrorKind, ProcessError};
use crate::processor;
use crate::record::Record;
use crate::serde::Serde;
use crate::topology::{NodeSpec, Stream};
use sluice_state::{WindowEntry, WindowStore};

/// How close in time two records must be to join: a record of this stream at `t` joins
/// records of the other stream from `t - before` to `t + after`, both inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JoinWindows {
    before_ms: i64,
    after_ms: i64,
    lateness: Lateness,
}

impl JoinWindows {
    /// Records at most `distance` apart join, in either order; no grace period.
    pub fn of(distance: Duration) -> Self {
        let ms = millis(distance);
        Self {
            before_ms: ms,
            after_ms: ms,
            lateness: Lateness::default(),
        }
    }

    /// How much earlier than a record of this stream the other stream's record may be.
    pub fn before(self, before: Duration) -> Self {
        Self {
            before_ms: millis(before),
            ..self
        }
    }

    /// How much later than a record of this stream the other stream's record may be.
    pub fn after(self, after: Duration) -> Self {
        Self {
            after_ms: millis(after),
            ..self
        }
    }

    /// How long after a window closes out-of-order records are still joined.
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

/// The stores and serdes of a stream-stream join: each side's buffer is a window store of
/// its own, encoded with these serdes.
pub struct StreamJoined<K, V, V2> {
    this_store: String,
    other_store: String,
    key_serde: Arc<dyn Serde<K>>,
    this_serde: Arc<dyn Serde<V>>,
    other_serde: Arc<dyn Serde<V2>>,
}

impl<K, V, V2> StreamJoined<K, V, V2> {
    pub fn new(
        this_store: &str,
        other_store: &str,
        key_serde: impl Serde<K>,
        this_value_serde: impl Serde<V>,
        other_value_serde: impl Serde<V2>,
    ) -> Self {
        Self {
            this_store: this_store.to_string(),
            other_store: other_store.to_string(),
            key_serde: Arc::new(key_serde),
            this_serde: Arc::new(this_value_serde),
            other_serde: Arc::new(other_value_serde),
        }
    }
}

/// A record of either input, as the join node receives it.
#[derive(Clone)]
enum Side<V, V2> {
    This(V),
    Other(V2),
}

/// Buffered values start with one byte: whether the record has found a partner yet.
const UNMATCHED: u8 = 0;
const MATCHED: u8 = 1;

impl<K, V> Stream<K, V>
where
    K: Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Joins records of this stream and `other` with the same key within `windows`;
    /// `joiner` makes each joined value.
    pub fn join_stream<V2, VO, F>(
        &self,
        name: &str,
        other: &Stream<K, V2>,
        windows: JoinWindows,
        joined: StreamJoined<K, V, V2>,
        joiner: F,
    ) -> Stream<K, VO>
    where
        V2: Clone + Send + Sync + 'static,
        VO: Clone + Send + Sync + 'static,
        F: Fn(&K, &V, &V2) -> VO + Send + Sync + 'static,
    {
        self.stream_join(
            name,
            "join-stream",
            other,
            windows,
            joined,
            false,
            move |k, v, o| o.map(|o| joiner(k, v, o)),
        )
    }

    /// Like [`Stream::join_stream`], and a record of this stream that finds no partner
    /// before its window closes is emitted once, joined with `None`.
    pub fn left_join_stream<V2, VO, F>(
        &self,
        name: &str,
        other: &Stream<K, V2>,
        windows: JoinWindows,
        joined: StreamJoined<K, V, V2>,
        joiner: F,
    ) -> Stream<K, VO>
    where
        V2: Clone + Send + Sync + 'static,
        VO: Clone + Send + Sync + 'static,
        F: Fn(&K, &V, Option<&V2>) -> VO + Send + Sync + 'static,
    {
        self.stream_join(
            name,
            "left-join-stream",
            other,
            windows,
            joined,
            true,
            move |k, v, o| Some(joiner(k, v, o)),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn stream_join<V2, VO, F>(
        &self,
        name: &str,
        operator: &'static str,
        other: &Stream<K, V2>,
        windows: JoinWindows,
        joined: StreamJoined<K, V, V2>,
        left: bool,
        joiner: F,
    ) -> Stream<K, VO>
    where
        V2: Clone + Send + Sync + 'static,
        VO: Clone + Send + Sync + 'static,
        F: Fn(&K, &V, Option<&V2>) -> Option<VO> + Send + Sync + 'static,
    {
        // Each input is tagged with its side, and both feed the one join node.
        let this: Stream<K, Side<V, V2>> = self.map_values(&format!("{name}-this"), Side::This);
        let that: Stream<K, Side<V, V2>> = other.map_values(&format!("{name}-other"), Side::Other);
        let topology = self.topology_name();
        let node_name = name.to_string();
        let stores = [joined.this_store.clone(), joined.other_store.clone()];
        let shared = Arc::new(JoinShared {
            windows,
            left,
            joiner,
            joined,
        });
        let factory = processor::factory::<_, K, Side<V, V2>>(move || StreamJoin {
            shared: shared.clone(),
            expired_before: [i64::MIN, i64::MIN],
            late: LateRecords::new(windows.lateness, &topology, &node_name),
            null_keys: crate::metrics::dropped(&topology, &node_name, "null-key"),
            last_input: None,
            ordinal: 0,
            _marker: PhantomData,
        });
        let spec = NodeSpec::processor(name, operator, factory)
            .stores(&[stores[0].as_str(), stores[1].as_str()]);
        this.add_node_fed_by(&that, spec)
    }
}

struct JoinShared<K, V, V2, F> {
    windows: JoinWindows,
    left: bool,
    joiner: F,
    joined: StreamJoined<K, V, V2>,
}

struct StreamJoin<K, V, V2, VO, F> {
    shared: Arc<JoinShared<K, V, V2, F>>,
    /// Per side (this, other): entries before this time have been expired already.
    expired_before: [i64; 2],
    late: LateRecords,
    null_keys: metrics::Counter,
    /// The input last buffered (its topic, the topic's hash bits, its offset), and how
    /// many records it buffered.
    last_input: Option<(Arc<str>, i64, i64)>,
    ordinal: u16,
    _marker: PhantomData<fn() -> VO>,
}

const THIS: usize = 0;
const OTHER: usize = 1;

fn decode<T: 'static>(serde: &dyn Serde<T>, store: &str, bytes: &[u8]) -> Result<T, ProcessError> {
    serde.deserialize(store, Some(bytes)).map_err(|e| {
        ProcessError::from_serde(ErrorKind::Deserialization, "buffered join record", e)
    })
}

/// A buffered value: the matched flag, then the value's bytes.
fn encode<T: 'static>(
    serde: &dyn Serde<T>,
    store: &str,
    value: &T,
    flag: u8,
) -> Result<Vec<u8>, ProcessError> {
    let bytes = serde
        .serialize(store, value)
        .map_err(|e| ProcessError::from_serde(ErrorKind::Serialization, "buffered join record", e))?
        .unwrap_or_default();
    let mut out = Vec::with_capacity(bytes.len() + 1);
    out.push(flag);
    out.extend_from_slice(&bytes);
    Ok(out)
}

impl<K, V, V2, VO, F> Processor<K, Side<V, V2>> for StreamJoin<K, V, V2, VO, F>
where
    K: Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    V2: Clone + Send + Sync + 'static,
    VO: Clone + Send + Sync + 'static,
    F: Fn(&K, &V, Option<&V2>) -> Option<VO> + Send + Sync + 'static,
{
    type KeyOut = K;
    type ValueOut = VO;

    fn process(
        &mut self,
        record: Record<K, Side<V, V2>>,
        ctx: &mut Context<'_, K, VO>,
    ) -> Result<(), ProcessError> {
        let shared = self.shared.clone();
        let JoinShared {
            windows: w,
            joiner,
            joined,
            ..
        } = &*shared;
        let Some(key) = encode_key(
            &*joined.key_serde,
            &joined.this_store,
            &record.key,
            "join key",
        )?
        else {
            self.null_keys.increment(1);
            return Ok(());
        };
        let ts = record.timestamp;
        // One rule for both sides: a record is late once stream time has passed it by more
        // than the grace period. Buffers keep each record as long as a partner that is not
        // late could still arrive for it (see `expire`).
        if ts.saturating_add(w.lateness.grace_ms) < ctx.stream_time().unwrap_or(i64::MIN) {
            return self
                .late
                .reject("the record is later than the join window's grace period");
        }
        let sequence = self.sequence(ctx);
        let mut outputs = Vec::new();
        match &record.value {
            Side::This(value) => {
                let partners = ctx
                    .store(OTHER)
                    .fetch_windows(
                        &key,
                        ts.saturating_sub(w.before_ms),
                        ts.saturating_add(w.after_ms),
                    )
                    .map_err(ProcessError::state)?;
                for partner in &partners {
                    let other: V2 = decode(
                        &*joined.other_serde,
                        &joined.other_store,
                        &partner.value[1..],
                    )?;
                    if let Some(out) = joiner(&record.key, value, Some(&other)) {
                        outputs.push((out, ts.max(partner.time)));
                    }
                }
                let flag = if partners.is_empty() {
                    UNMATCHED
                } else {
                    MATCHED
                };
                let bytes = encode(&*joined.this_serde, &joined.this_store, value, flag)?;
                ctx.store(THIS).put_window(&key, ts, sequence, bytes);
            }
            Side::Other(other) => {
                let partners = ctx
                    .store(THIS)
                    .fetch_windows(
                        &key,
                        ts.saturating_sub(w.after_ms),
                        ts.saturating_add(w.before_ms),
                    )
                    .map_err(ProcessError::state)?;
                for partner in partners {
                    let value: V =
                        decode(&*joined.this_serde, &joined.this_store, &partner.value[1..])?;
                    if let Some(out) = joiner(&record.key, &value, Some(other)) {
                        outputs.push((out, ts.max(partner.time)));
                    }
                    if partner.value[0] == UNMATCHED {
                        let mut flagged = partner.value;
                        flagged[0] = MATCHED;
                        ctx.store(THIS)
                            .put_window(&key, partner.time, partner.sequence, flagged);
                    }
                }
                let bytes = encode(&*joined.other_serde, &joined.other_store, other, MATCHED)?;
                ctx.store(OTHER).put_window(&key, ts, sequence, bytes);
            }
        }
        for (value, timestamp) in outputs {
            ctx.forward(Record {
                key: record.key.clone(),
                value,
                headers: record.headers.clone(),
                timestamp,
            });
        }
        self.expire(ctx)
    }
}

impl<K, V, V2, VO, F> StreamJoin<K, V, V2, VO, F>
where
    K: Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    V2: Clone + Send + Sync + 'static,
    VO: Clone + Send + Sync + 'static,
    F: Fn(&K, &V, Option<&V2>) -> Option<VO> + Send + Sync + 'static,
{
    /// Tells apart buffered records of one key in one millisecond: the input's offset,
    /// its topic (a side may read several), and how many records this input has buffered
    /// so far (a `flat_map` upstream may make several of one input).
    fn sequence(&mut self, ctx: &Context<'_, K, VO>) -> i64 {
        let origin = ctx.origin();
        let topic_bits = match &self.last_input {
            // Records of one topic share its `Arc`: hash a topic's name once per change.
            Some((topic, bits, offset)) if Arc::ptr_eq(topic, &origin.topic) => {
                if *offset == origin.offset {
                    self.ordinal = self.ordinal.wrapping_add(1);
                    return (offset << 20) | bits | i64::from(self.ordinal);
                }
                *bits
            }
            _ => {
                let hash = origin
                    .topic
                    .bytes()
                    .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
                i64::from(hash & 0xF) << 16
            }
        };
        self.last_input = Some((origin.topic.clone(), topic_bits, origin.offset));
        self.ordinal = 0;
        (origin.offset << 20) | topic_bits
    }

    /// Drops the buffered records no partner can reach any more; a left join emits those
    /// of this stream that never found one.
    fn expire(&mut self, ctx: &mut Context<'_, K, VO>) -> Result<(), ProcessError> {
        let shared = self.shared.clone();
        let w = shared.windows;
        let joined = &shared.joined;
        for (side, window_on_other_side) in [(THIS, w.after_ms), (OTHER, w.before_ms)] {
            let before = ctx
                .stream_time()
                .unwrap_or(i64::MIN)
                .saturating_sub(window_on_other_side.saturating_add(w.lateness.grace_ms));
            if before <= self.expired_before[side] {
                continue;
            }
            self.expired_before[side] = before;
            let expired = ctx
                .store(side)
                .expire_windows(before)
                .map_err(ProcessError::state)?;
            if side == THIS && shared.left {
                for WindowEntry {
                    key, time, value, ..
                } in expired
                {
                    if value[0] == MATCHED {
                        continue;
                    }
                    let k: K = decode(&*joined.key_serde, &joined.this_store, &key)?;
                    let v: V = decode(&*joined.this_serde, &joined.this_store, &value[1..])?;
                    if let Some(out) = (shared.joiner)(&k, &v, None) {
                        ctx.forward(Record {
                            key: k,
                            value: out,
                            headers: Default::default(),
                            timestamp: time,
                        });
                    }
                }
            }
        }
        Ok(())
    }
}
