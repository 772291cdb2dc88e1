//! Lookups of reference data by key, and the in-process cache in front of them.
//!
//! Enrichment joins a record with data kept elsewhere: drug reference data by 11-digit NDC
//! (MongoDB `reference.drug_reference`), formulary status by (plan id, NDC). A [`Lookup`] is
//! that "elsewhere": an async key → optional value. The `enrich` operator calls it from the
//! worker's tokio runtime while the stream thread stays synchronous, and almost always
//! through a [`LookupCache`], because reference data changes slowly and the service behind
//! it is shared by every worker.
//!
//! * [`Lookup`]: the contract. `Ok(Some(v))`: found. `Ok(None)`: the service answered, and
//!   has no such key. `Err(`[`LookupError`]`)`: no answer, transient (retry the record) or
//!   permanent (the request itself is bad).
//! * [`StaticLookup`]: reference data held in a `HashMap`, for the `TestDriver`, tests and
//!   the demo (the embedded default, to be loaded from JSON-lines files).
//! * [`BoxLookup`]: any lookup behind one type, for a lookup chosen at run time.
//! * [`LookupCache`]: a bounded cache in front of a lookup, itself a `Lookup`.
//!
//! # What the cache keeps, and for how long
//!
//! | the lookup answered | kept | for ([`LookupCacheConfig`]) |
//! |---|---|---|
//! | `Ok(Some(value))` | yes | `ttl`, 24 h by default ([`DEFAULT_TTL`]) |
//! | `Ok(None)`: no such key | yes, as absent (*negative caching*) | `negative_ttl`, 5 min by default ([`DEFAULT_NEGATIVE_TTL`]) |
//! | `Err(_)`, transient or permanent | **never** | the next request for the key calls again |
//!
//! Absent keys are kept so that a stream of records naming an unknown NDC does not send one
//! query per record to the service; they are kept for less time than values because a
//! missing reference entry is the one most likely to be added soon. Errors are not kept: a
//! service that comes back is used at once, and a timeout never turns into "absent".
//!
//! The time to live counts from when the answer arrived, and a read does not extend it: an
//! entry read every second is still refreshed every 24 h. The cache is also bounded, by
//! entry count or by bytes through a weigher ([`LookupCacheConfig::max_entries`],
//! [`LookupCacheConfig::max_bytes`]); over its bound it drops the entries least likely to be
//! asked for again (moka's TinyLFU: frequency and recency), and a new entry unlikely to be
//! asked for again may be dropped straight away rather than push out a popular one.
//!
//! Freshness is judged on tokio's clock (`tokio::time::Instant`: the monotonic clock, except
//! on a paused test runtime), so a test moves past a 24-hour time to live with
//! `tokio::time::advance`, in no real time. moka's own expiry, which frees the memory of
//! entries nobody reads again about a second after their deadline, runs on a clock that
//! cannot be mocked from outside moka; it never decides what a request sees.
//!
//! # One call per key, however many ask at once
//!
//! Concurrent requests for a key the cache does not hold (or holds past its time to live)
//! share one call to the lookup: one request calls, the others wait for its answer. When
//! the call fails, every request that waited for it gets the same error, so an outage costs
//! one call per key and burst, not one per record. Requests for different keys never wait
//! for each other.
//!
//! # Metrics
//!
//! Labelled by the cache's name (the operator's name, given to [`LookupCache::new`]), never
//! by a key or a value:
//!
//! | metric | what |
//! |---|---|
//! | `sluice_cache_hits_total{cache}` | requests answered from the cache |
//! | `sluice_cache_misses_total{cache}` | requests that waited for a call, their own or a shared one |
//! | `sluice_cache_evictions_total{cache,reason}` | entries dropped: `size` (over the bound) or `expired` (past their time to live) |
//! | `sluice_lookup_duration_seconds{cache}` | time of each call to the lookup, failed calls included; its count is the number of calls |
//! | `sluice_lookup_errors_total{cache,reason}` | failed calls: `transient` or `permanent` |
//!
//! [`LookupCache::stats`] gives the same counts without a metrics recorder, with the hit
//! ratio.
//!
//! # Errors carry no patient or drug data
//!
//! A [`LookupError`]'s message travels into logs, errors and dead-letter headers, so it says
//! what failed and where (the service, the collection, the timeout) and never the key or
//! the value. The cache adds its own name, and nothing else, to the errors it passes on.

mod cache;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;

use crate::error::{ErrorKind, ProcessError};

pub use cache::{
    CacheStats, DEFAULT_MAX_ENTRIES, DEFAULT_NEGATIVE_TTL, DEFAULT_TTL, LookupCache,
    LookupCacheConfig,
};

/// An async key → optional value: a lookup of reference data.
///
/// `lookup` returns `impl Future + Send` rather than a boxed future, so a lookup, the cache
/// in front of it and the operator calling it are one concrete future with no allocation
/// per record; the `Send` bound lets the operator run it on a multi-threaded runtime. The
/// price is that `dyn Lookup` is not a type: a lookup chosen at run time goes in a
/// [`BoxLookup`], which boxes one future per call.
///
/// An implementation decides what is transient: a timeout, a refused connection, a server
/// error, and an authentication or configuration failure are not the record's fault and
/// are transient (retried, never dead-lettered), even when they last; only a request this
/// key makes bad is permanent.
///
/// ```
/// use std::future::Future;
/// use sluice_engine::lookup::{Lookup, LookupError};
///
/// /// Formulary status by (plan id, NDC), from a service that may be down.
/// struct Formulary {
///     up: bool,
/// }
///
/// impl Lookup for Formulary {
///     type Key = (String, String);
///     type Value = &'static str;
///
///     fn lookup(
///         &self,
///         key: &Self::Key,
///     ) -> impl Future<Output = Result<Option<Self::Value>, LookupError>> + Send {
///         let (plan, ndc) = key.clone();
///         let up = self.up;
///         async move {
///             if !up {
///                 // What failed and where; never the plan or the NDC.
///                 return Err(LookupError::transient("formulary service: connection refused"));
///             }
///             Ok((plan == "PLAN-A" && ndc == "00071015523").then_some("preferred"))
///         }
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let key = ("PLAN-A".to_string(), "00071015523".to_string());
/// assert_eq!(Formulary { up: true }.lookup(&key).await, Ok(Some("preferred")));
/// let down = Formulary { up: false }.lookup(&key).await.unwrap_err();
/// assert!(down.is_transient());
/// # });
/// ```
pub trait Lookup: Send + Sync + 'static {
    type Key: Hash + Eq + Clone + Send + Sync + 'static;
    type Value: Clone + Send + Sync + 'static;

    /// `Ok(Some(value))` when the key is known, `Ok(None)` when the service answered that
    /// it is not, `Err` when there is no answer.
    fn lookup(
        &self,
        key: &Self::Key,
    ) -> impl Future<Output = Result<Option<Self::Value>, LookupError>> + Send;
}

/// A lookup that could not answer. Its message says what failed and where, never the key
/// or the value (they are patient and drug data).
///
/// Transient errors (service down, timeout) mean "retry the record later"; permanent ones
/// mean "this request will never succeed". Converted into a [`ProcessError`] with `?` (or
/// `From`), a transient error keeps its `transient` flag, so the task retries the record
/// with backoff and never dead-letters it; a permanent one becomes an
/// [`ErrorKind::Processing`] error that the topology's error policy handles.
///
/// ```
/// use sluice_engine::ProcessError;
/// use sluice_engine::lookup::LookupError;
///
/// let e = LookupError::transient("no answer within 2s").context("mongodb reference.drug_reference");
/// assert_eq!(
///     e.to_string(),
///     "lookup unavailable (transient): mongodb reference.drug_reference: no answer within 2s"
/// );
/// let p = ProcessError::from(e);
/// assert!(p.transient);
/// assert!(!ProcessError::from(LookupError::permanent("malformed filter")).transient);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupError {
    transient: bool,
    message: String,
}

impl LookupError {
    /// The service did not answer (down, timed out, refused, overloaded): retry later.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            transient: true,
            message: message.into(),
        }
    }

    /// The service answered that this request is bad and will stay bad.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            transient: false,
            message: message.into(),
        }
    }

    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// What failed and where, without the `lookup unavailable` / `lookup failed` prefix.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Says where the error came from: `where_` goes in front of the message (a service, a
    /// collection, a cache's name; never a key).
    pub fn context(self, where_: &str) -> Self {
        Self {
            message: format!("{where_}: {}", self.message),
            ..self
        }
    }
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.transient {
            write!(f, "lookup unavailable (transient): {}", self.message)
        } else {
            write!(f, "lookup failed: {}", self.message)
        }
    }
}

impl std::error::Error for LookupError {}

impl From<LookupError> for ProcessError {
    fn from(e: LookupError) -> Self {
        if e.transient {
            ProcessError::unavailable(e.to_string())
        } else {
            ProcessError::new(ErrorKind::Processing, e.to_string())
        }
    }
}

/// Reference data held in memory: a lookup over a `HashMap`, that never fails.
///
/// For the `TestDriver`, tests and the demo, and the embedded default where no service is
/// configured. Cloning it shares the map.
///
/// ```
/// use sluice_engine::lookup::{Lookup, StaticLookup};
///
/// let drugs: StaticLookup<String, String> =
///     [("00071015523".to_string(), "atorvastatin 10 mg tablet".to_string())]
///         .into_iter()
///         .collect();
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// assert_eq!(
///     drugs.lookup(&"00071015523".to_string()).await,
///     Ok(Some("atorvastatin 10 mg tablet".to_string()))
/// );
/// assert_eq!(drugs.lookup(&"99999999999".to_string()).await, Ok(None));
/// # });
/// ```
#[derive(Debug)]
pub struct StaticLookup<K, V> {
    entries: Arc<HashMap<K, V>>,
}

impl<K, V> StaticLookup<K, V> {
    pub fn new(entries: HashMap<K, V>) -> Self {
        Self {
            entries: Arc::new(entries),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

// By hand: a derived Clone would ask K and V to be Clone, and only the Arc is cloned.
impl<K, V> Clone for StaticLookup<K, V> {
    fn clone(&self) -> Self {
        Self {
            entries: Arc::clone(&self.entries),
        }
    }
}

impl<K: Hash + Eq, V> FromIterator<(K, V)> for StaticLookup<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self::new(iter.into_iter().collect())
    }
}

impl<K, V> Lookup for StaticLookup<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    type Key = K;
    type Value = V;

    fn lookup(&self, key: &K) -> impl Future<Output = Result<Option<V>, LookupError>> + Send {
        std::future::ready(Ok(self.entries.get(key).cloned()))
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`Lookup`] with its future boxed: what lets `dyn` stand for a lookup.
trait ErasedLookup<K, V>: Send + Sync + 'static {
    fn lookup_boxed<'a>(&'a self, key: &'a K) -> BoxFuture<'a, Result<Option<V>, LookupError>>;
}

impl<L: Lookup> ErasedLookup<L::Key, L::Value> for L {
    fn lookup_boxed<'a>(
        &'a self,
        key: &'a L::Key,
    ) -> BoxFuture<'a, Result<Option<L::Value>, LookupError>> {
        Box::pin(self.lookup(key))
    }
}

/// Any lookup with these key and value types, as one type: for a lookup picked at run time
/// (the embedded data in tests and the demo, MongoDB in production). One allocation per
/// call; put the [`LookupCache`] in front of the `BoxLookup`, so only misses pay it.
///
/// ```
/// use sluice_engine::lookup::{BoxLookup, Lookup, LookupCache, LookupCacheConfig, StaticLookup};
///
/// let embedded: StaticLookup<String, u32> = [("00071015523".to_string(), 30)].into_iter().collect();
/// let lookup: BoxLookup<String, u32> = BoxLookup::new(embedded);
/// let cache = LookupCache::new("days-supply", lookup, LookupCacheConfig::default());
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// assert_eq!(cache.lookup(&"00071015523".to_string()).await, Ok(Some(30)));
/// # });
/// ```
pub struct BoxLookup<K, V> {
    inner: Arc<dyn ErasedLookup<K, V>>,
}

impl<K, V> BoxLookup<K, V> {
    pub fn new<L: Lookup<Key = K, Value = V>>(lookup: L) -> Self {
        Self {
            inner: Arc::new(lookup),
        }
    }
}

impl<K, V> Clone for BoxLookup<K, V> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, V> fmt::Debug for BoxLookup<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BoxLookup")
    }
}

impl<K, V> Lookup for BoxLookup<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    type Key = K;
    type Value = V;

    // `async fn`, not the boxed future returned as is: that box lives as long as the
    // shorter of `self` and `key`, a lifetime an `impl Trait` cannot name.
    async fn lookup(&self, key: &K) -> Result<Option<V>, LookupError> {
        self.inner.lookup_boxed(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transient_error_becomes_a_transient_process_error() {
        let e = LookupError::transient("no answer within 2s").context("formulary service");
        let p = ProcessError::from(e);
        assert!(p.transient);
        assert_eq!(p.kind, ErrorKind::Processing);
        assert_eq!(
            p.message,
            "lookup unavailable (transient): formulary service: no answer within 2s"
        );
    }

    #[test]
    fn a_permanent_error_becomes_a_processing_error_for_the_error_policy() {
        let p = ProcessError::from(LookupError::permanent("request rejected as malformed"));
        assert!(!p.transient);
        assert_eq!(p.kind, ErrorKind::Processing);
        assert_eq!(p.message, "lookup failed: request rejected as malformed");
    }

    #[tokio::test]
    async fn a_static_lookup_finds_what_it_holds_and_nothing_else() {
        let lookup: StaticLookup<u64, &str> = [(1, "one")].into_iter().collect();
        assert_eq!(lookup.len(), 1);
        assert_eq!(lookup.lookup(&1).await, Ok(Some("one")));
        assert_eq!(lookup.lookup(&2).await, Ok(None));
        // A boxed lookup answers as the lookup inside it.
        let boxed = BoxLookup::new(lookup.clone());
        assert_eq!(boxed.lookup(&1).await, Ok(Some("one")));
        assert_eq!(boxed.lookup(&2).await, Ok(None));
    }
}
