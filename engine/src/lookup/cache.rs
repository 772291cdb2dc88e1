//! [`LookupCache`]: moka in front of a [`Lookup`], with positive and negative time to live.
//!
//! # Two clocks, and why
//!
//! moka expires entries on its own clock, `std::time::Instant`, which a program cannot
//! replace (moka's mock clock exists only for moka's own tests). A cache whose expiry
//! could only be tested by sleeping 24 hours would have untested expiry, so each entry also
//! carries its deadline on tokio's clock, and a read past that deadline counts as a miss:
//! the deadline decides what a request sees. moka's own per-entry expiry, set to the same
//! durations, only frees the memory of entries nobody reads again. Outside a paused tokio
//! runtime the two clocks are the same monotonic clock, so they agree; in a test on paused
//! time, `tokio::time::advance` moves the deadline check and moka never expires anything
//! (no real time goes by), so what the test sees is decided by the deadlines alone. moka
//! frees expired entries as its timer wheel turns, about a second after their deadline.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::Expiry;
use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::ops::compute::{CompResult, Op};
use tokio::time::Instant;

use super::{Lookup, LookupError};
use crate::metrics::CacheMetrics;

/// How long a value found by the lookup is kept: reference data changes daily at most.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// How long "no such key" is kept: long enough that a burst of records with an unknown key
/// makes one call, short enough that a newly added reference entry is seen soon.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(5 * 60);

/// The default bound, per cache: reference data on the scale of the NDC directory (some
/// 10^5 products) fits whole. Give [`LookupCacheConfig::max_bytes`] for large values.
pub const DEFAULT_MAX_ENTRIES: u64 = 100_000;

type Weigher<K, V> = Arc<dyn Fn(&K, Option<&V>) -> u32 + Send + Sync>;

enum Bound<K, V> {
    Entries(u64),
    Bytes { max: u64, weigher: Weigher<K, V> },
}

/// How long a [`LookupCache`] keeps answers and how much it holds.
///
/// ```
/// use std::time::Duration;
/// use sluice_engine::lookup::LookupCacheConfig;
///
/// // Drug reference documents by NDC: 24 h, unknown NDCs 5 min (the defaults), and at
/// // most 64 MiB of keys and documents.
/// let config = LookupCacheConfig::<String, String>::default()
///     .ttl(Duration::from_secs(24 * 3600))
///     .negative_ttl(Duration::from_secs(300))
///     .max_bytes(64 << 20, |ndc, doc| (ndc.len() + doc.map_or(0, |d| d.len())) as u32);
/// ```
pub struct LookupCacheConfig<K, V> {
    ttl: Duration,
    negative_ttl: Duration,
    bound: Bound<K, V>,
}

impl<K, V> Default for LookupCacheConfig<K, V> {
    fn default() -> Self {
        Self {
            ttl: DEFAULT_TTL,
            negative_ttl: DEFAULT_NEGATIVE_TTL,
            bound: Bound::Entries(DEFAULT_MAX_ENTRIES),
        }
    }
}

impl<K, V> LookupCacheConfig<K, V> {
    /// How long a found value is kept, counted from when it arrived ([`DEFAULT_TTL`]).
    pub fn ttl(self, ttl: Duration) -> Self {
        Self { ttl, ..self }
    }

    /// How long "no such key" is kept ([`DEFAULT_NEGATIVE_TTL`]). `Duration::ZERO` keeps
    /// no absent key (concurrent requests still share one call).
    pub fn negative_ttl(self, negative_ttl: Duration) -> Self {
        Self {
            negative_ttl,
            ..self
        }
    }

    /// Holds at most `max` entries, absent keys included ([`DEFAULT_MAX_ENTRIES`]).
    pub fn max_entries(self, max: u64) -> Self {
        Self {
            bound: Bound::Entries(max),
            ..self
        }
    }

    /// Holds at most `max` bytes as `weigher` counts them: its estimate of an entry's key
    /// and value (`None` for an absent key). The cache counts an entry weighed 0 as 1, so
    /// absent keys still count toward the bound.
    pub fn max_bytes(
        self,
        max: u64,
        weigher: impl Fn(&K, Option<&V>) -> u32 + Send + Sync + 'static,
    ) -> Self {
        Self {
            bound: Bound::Bytes {
                max,
                weigher: Arc::new(weigher),
            },
            ..self
        }
    }
}

impl<K, V> Clone for LookupCacheConfig<K, V> {
    fn clone(&self) -> Self {
        Self {
            ttl: self.ttl,
            negative_ttl: self.negative_ttl,
            bound: match &self.bound {
                Bound::Entries(max) => Bound::Entries(*max),
                Bound::Bytes { max, weigher } => Bound::Bytes {
                    max: *max,
                    weigher: Arc::clone(weigher),
                },
            },
        }
    }
}

impl<K, V> fmt::Debug for LookupCacheConfig<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("LookupCacheConfig");
        d.field("ttl", &self.ttl)
            .field("negative_ttl", &self.negative_ttl);
        match &self.bound {
            Bound::Entries(max) => d.field("max_entries", max),
            Bound::Bytes { max, .. } => d.field("max_bytes", max),
        };
        d.finish()
    }
}

/// What a cache has done since it was built, for tests, the demo and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Requests answered from the cache.
    pub hits: u64,
    /// Requests that waited for a call: the one that called, and those that shared its call.
    pub misses: u64,
    /// Calls made to the lookup behind the cache (at most one per key at a time).
    pub calls: u64,
    /// Calls that failed (never cached).
    pub errors: u64,
    /// Entries dropped over the bound or past their time to live. Drops over the bound
    /// are counted when moka applies them: as reads and writes go by, or on
    /// [`LookupCache::run_pending_tasks`].
    pub evictions: u64,
}

impl CacheStats {
    /// `hits / (hits + misses)`; `None` before the first request.
    pub fn hit_ratio(&self) -> Option<f64> {
        let requests = self.hits + self.misses;
        (requests > 0).then(|| self.hits as f64 / requests as f64)
    }
}

#[derive(Default)]
struct Counts {
    hits: AtomicU64,
    misses: AtomicU64,
    calls: AtomicU64,
    errors: AtomicU64,
    evictions: AtomicU64,
}

/// One cached answer: the value, or `None` for "no such key", until its deadline.
#[derive(Clone)]
struct Slot<V> {
    value: Option<V>,
    /// On tokio's clock (see the module docs); `None`: a time to live too long to add.
    expires_at: Option<Instant>,
}

impl<V> Slot<V> {
    fn is_fresh(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|deadline| now < deadline)
    }
}

/// moka's per-entry expiry: the same durations as the deadlines, to free memory.
struct SlotExpiry {
    ttl: Duration,
    negative_ttl: Duration,
}

impl SlotExpiry {
    fn of<V>(&self, slot: &Slot<V>) -> Duration {
        if slot.value.is_some() {
            self.ttl
        } else {
            self.negative_ttl
        }
    }
}

impl<K, V> Expiry<K, Slot<V>> for SlotExpiry {
    fn expire_after_create(
        &self,
        _key: &K,
        slot: &Slot<V>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(self.of(slot))
    }

    fn expire_after_update(
        &self,
        _key: &K,
        slot: &Slot<V>,
        _updated_at: std::time::Instant,
        _until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.of(slot))
    }
}

/// A bounded, expiring cache in front of a [`Lookup`], and itself a `Lookup` with the same
/// key and value.
///
/// What it keeps and for how long, coalescing and metrics: see the [module
/// docs](crate::lookup). Cloning it shares the entries, the lookup and the counts, so one
/// cache can serve every task of a worker.
///
/// For large values, make the value an `Arc<T>`: a hit clones the value.
///
/// ```
/// use std::time::Duration;
/// use sluice_engine::lookup::{Lookup, LookupCache, LookupCacheConfig, StaticLookup};
///
/// let drugs: StaticLookup<String, String> =
///     [("00071015523".to_string(), "atorvastatin 10 mg tablet".to_string())]
///         .into_iter()
///         .collect();
/// let cache = LookupCache::new("drug-reference", drugs, LookupCacheConfig::default());
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let ndc = "00071015523".to_string();
/// let unknown = "99999999999".to_string();
/// assert_eq!(cache.get(&ndc).await.unwrap().as_deref(), Some("atorvastatin 10 mg tablet"));
/// assert_eq!(cache.get(&ndc).await.unwrap().as_deref(), Some("atorvastatin 10 mg tablet"));
/// assert_eq!(cache.get(&unknown).await, Ok(None)); // absent, and kept as absent
/// assert_eq!(cache.lookup(&unknown).await, Ok(None)); // the cache is a Lookup too
///
/// let stats = cache.stats();
/// assert_eq!((stats.hits, stats.misses, stats.calls), (2, 2, 2));
/// assert_eq!(stats.hit_ratio(), Some(0.5));
/// # });
/// ```
pub struct LookupCache<L: Lookup> {
    lookup: Arc<L>,
    entries: Cache<L::Key, Slot<L::Value>>,
    name: Arc<str>,
    ttl: Duration,
    negative_ttl: Duration,
    counts: Arc<Counts>,
    metrics: CacheMetrics,
}

impl<L: Lookup> Clone for LookupCache<L> {
    fn clone(&self) -> Self {
        Self {
            lookup: Arc::clone(&self.lookup),
            entries: self.entries.clone(),
            name: Arc::clone(&self.name),
            ttl: self.ttl,
            negative_ttl: self.negative_ttl,
            counts: Arc::clone(&self.counts),
            metrics: self.metrics.clone(),
        }
    }
}

impl<L: Lookup> fmt::Debug for LookupCache<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookupCache")
            .field("name", &self.name)
            .field("ttl", &self.ttl)
            .field("negative_ttl", &self.negative_ttl)
            .field("entries", &self.entries.entry_count())
            .finish_non_exhaustive()
    }
}

impl<L: Lookup> LookupCache<L> {
    /// A cache named `name` (the operator's name: it labels the metrics and prefixes the
    /// errors) in front of `lookup`.
    pub fn new(name: &str, lookup: L, config: LookupCacheConfig<L::Key, L::Value>) -> Self {
        let counts = Arc::new(Counts::default());
        let metrics = CacheMetrics::new(name);
        let LookupCacheConfig {
            ttl,
            negative_ttl,
            bound,
        } = config;

        let builder = Cache::builder()
            .name(name)
            .expire_after(SlotExpiry { ttl, negative_ttl })
            .eviction_listener({
                let counts = Arc::clone(&counts);
                let metrics = metrics.clone();
                move |_key, _slot, cause| {
                    // Replaced and Explicit are the cache's own doing (a new answer, a
                    // stale entry dropped before reloading, counted where it is dropped).
                    let counter = match cause {
                        RemovalCause::Size => &metrics.evicted_size,
                        RemovalCause::Expired => &metrics.evicted_expired,
                        RemovalCause::Explicit | RemovalCause::Replaced => return,
                    };
                    counter.increment(1);
                    counts.evictions.fetch_add(1, Ordering::Relaxed);
                }
            });
        let entries = match bound {
            Bound::Entries(max) => builder.max_capacity(max).build(),
            Bound::Bytes { max, weigher } => builder
                .max_capacity(max)
                .weigher(move |key, slot: &Slot<L::Value>| weigher(key, slot.value.as_ref()).max(1))
                .build(),
        };
        Self {
            lookup: Arc::new(lookup),
            entries,
            name: name.into(),
            ttl,
            negative_ttl,
            counts,
            metrics,
        }
    }

    /// The cache's name, as in its metrics and errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lookup behind the cache.
    pub fn inner(&self) -> &L {
        &self.lookup
    }

    /// The value for `key`: from the cache while fresh, otherwise from one call to the
    /// lookup shared by every request for `key` meanwhile. `Ok(None)`: no such key (kept
    /// for the negative time to live). An error is passed on, with the cache's name in
    /// front of its message, and not kept.
    pub async fn get(&self, key: &L::Key) -> Result<Option<L::Value>, LookupError> {
        let now = Instant::now();
        match self.entries.get(key).await {
            Some(slot) if slot.is_fresh(now) => {
                self.counts.hits.fetch_add(1, Ordering::Relaxed);
                self.metrics.hits.increment(1);
                return Ok(slot.value);
            }
            Some(_) => self.drop_if_stale(key, now).await,
            None => {}
        }
        self.counts.misses.fetch_add(1, Ordering::Relaxed);
        self.metrics.misses.increment(1);
        // moka runs `call` for the first request only; the others wait for its outcome,
        // the error included (shared as an Arc, cloned out for each).
        let entry = self
            .entries
            .entry_by_ref(key)
            .or_try_insert_with(self.call(key))
            .await
            .map_err(|shared| LookupError::clone(&shared))?;
        Ok(entry.into_value().value)
    }

    /// Drops the entry for `key` if it is still past its deadline. Through moka's compute,
    /// which runs one at a time per key: of many requests that found the same stale entry,
    /// the first drops it and the others see it gone (or already reloaded), so they never
    /// drop the fresh answer the first one loaded.
    async fn drop_if_stale(&self, key: &L::Key, now: Instant) {
        let outcome = self
            .entries
            .entry_by_ref(key)
            .and_compute_with(|current| {
                std::future::ready(match current {
                    Some(entry) if !entry.value().is_fresh(now) => Op::Remove,
                    _ => Op::Nop,
                })
            })
            .await;
        if let CompResult::Removed(_) = outcome {
            self.counts.evictions.fetch_add(1, Ordering::Relaxed);
            self.metrics.evicted_expired.increment(1);
        }
    }

    /// One call to the lookup, timed and counted; its answer with its deadline.
    async fn call(&self, key: &L::Key) -> Result<Slot<L::Value>, LookupError> {
        self.counts.calls.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let answer = self.lookup.lookup(key).await;
        self.metrics
            .lookup_duration
            .record(started.elapsed().as_secs_f64());
        match answer {
            Ok(value) => {
                let ttl = if value.is_some() {
                    self.ttl
                } else {
                    self.negative_ttl
                };
                // Counted from the answer, not the request: a slow call does not
                // shorten what it brought.
                let expires_at = Instant::now().checked_add(ttl);
                Ok(Slot { value, expires_at })
            }
            Err(e) => {
                self.counts.errors.fetch_add(1, Ordering::Relaxed);
                if e.is_transient() {
                    self.metrics.transient_errors.increment(1);
                } else {
                    self.metrics.permanent_errors.increment(1);
                }
                Err(e.context(&self.name))
            }
        }
    }

    /// The counts so far.
    pub fn stats(&self) -> CacheStats {
        let c = &self.counts;
        CacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            calls: c.calls.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
        }
    }

    /// Entries held, absent keys included; moka settles it as reads and writes go by (see
    /// [`run_pending_tasks`](Self::run_pending_tasks)).
    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// The sum of the entries' weights under [`LookupCacheConfig::max_bytes`], their
    /// count under [`LookupCacheConfig::max_entries`]; settled like `entry_count`.
    pub fn weighted_size(&self) -> u64 {
        self.entries.weighted_size()
    }

    /// Applies now what moka otherwise applies as reads and writes go by: evictions over
    /// the bound, removal of expired entries, and the counts of both.
    pub async fn run_pending_tasks(&self) {
        self.entries.run_pending_tasks().await;
    }
}

impl<L: Lookup> Lookup for LookupCache<L> {
    type Key = L::Key;
    type Value = L::Value;

    fn lookup(
        &self,
        key: &Self::Key,
    ) -> impl Future<Output = Result<Option<Self::Value>, LookupError>> + Send {
        self.get(key)
    }
}
