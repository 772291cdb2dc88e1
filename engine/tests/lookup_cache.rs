//! The lookup cache's behaviour, one test per rule.
//!
//! Expiry is tested on paused tokio time: the cache judges freshness by deadlines on
//! tokio's clock (moka's own clock cannot be mocked from outside moka), so
//! `tokio::time::advance` moves a test past a 24-hour time to live in no real time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_engine::lookup::{
    CacheStats, Lookup, LookupCache, LookupCacheConfig, LookupError, StaticLookup,
};
use sluice_engine::{ErrorKind, ProcessError};
use tokio::sync::Notify;

const NDC: &str = "00071015523";
const DRUG: &str = "atorvastatin calcium 10 mg oral tablet";
const UNKNOWN_NDC: &str = "99999999999";
const HOUR: Duration = Duration::from_secs(3600);

fn ndc(s: &str) -> String {
    s.to_string()
}

/// A lookup that answers from a script, counts its calls, and can be held until released.
#[derive(Clone, Default)]
struct Scripted {
    inner: Arc<ScriptedInner>,
}

#[derive(Default)]
struct ScriptedInner {
    data: Mutex<HashMap<String, String>>,
    /// Answers to give before the data, one per call (errors, mostly).
    queued: Mutex<Vec<Result<Option<String>, LookupError>>>,
    calls: AtomicUsize,
    /// When set, each call waits for `release` before answering.
    hold: std::sync::atomic::AtomicBool,
    called: Notify,
    release: Notify,
}

impl Scripted {
    fn with(entries: &[(&str, &str)]) -> Self {
        let s = Self::default();
        s.inner
            .data
            .lock()
            .unwrap()
            .extend(entries.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        s
    }

    fn then_answer(&self, answer: Result<Option<String>, LookupError>) {
        self.inner.queued.lock().unwrap().insert(0, answer);
    }

    fn held(self) -> Self {
        self.inner.hold.store(true, Ordering::SeqCst);
        self
    }

    fn calls(&self) -> usize {
        self.inner.calls.load(Ordering::SeqCst)
    }
}

impl Lookup for Scripted {
    type Key = String;
    type Value = String;

    async fn lookup(&self, key: &String) -> Result<Option<String>, LookupError> {
        let inner = &self.inner;
        inner.calls.fetch_add(1, Ordering::SeqCst);
        if inner.hold.load(Ordering::SeqCst) {
            let released = inner.release.notified();
            inner.called.notify_one();
            released.await;
        }
        if let Some(answer) = inner.queued.lock().unwrap().pop() {
            return answer;
        }
        Ok(inner.data.lock().unwrap().get(key).cloned())
    }
}

fn cache(lookup: Scripted, config: LookupCacheConfig<String, String>) -> LookupCache<Scripted> {
    LookupCache::new("drug-reference", lookup, config)
}

#[tokio::test]
async fn a_hit_after_a_miss_makes_one_call() {
    let lookup = Scripted::with(&[(NDC, DRUG)]);
    let cache = cache(lookup.clone(), LookupCacheConfig::default());

    assert_eq!(cache.get(&ndc(NDC)).await, Ok(Some(DRUG.to_string())));
    assert_eq!(cache.get(&ndc(NDC)).await, Ok(Some(DRUG.to_string())));

    assert_eq!(lookup.calls(), 1);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.calls), (1, 1, 1));
    assert_eq!(stats.hit_ratio(), Some(0.5));
}

#[tokio::test(start_paused = true)]
async fn a_value_is_kept_for_its_ttl_and_looked_up_again_after_it() {
    let lookup = Scripted::with(&[(NDC, DRUG)]);
    let cache = cache(lookup.clone(), LookupCacheConfig::default().ttl(24 * HOUR));
    cache.get(&ndc(NDC)).await.unwrap();

    tokio::time::advance(24 * HOUR - Duration::from_millis(1)).await;
    assert_eq!(cache.get(&ndc(NDC)).await, Ok(Some(DRUG.to_string())));
    assert_eq!(lookup.calls(), 1, "still fresh just before the ttl");

    // The reference entry changed meanwhile; past the ttl the new one is seen.
    lookup
        .inner
        .data
        .lock()
        .unwrap()
        .insert(ndc(NDC), "atorvastatin 10 mg (relabelled)".into());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(
        cache.get(&ndc(NDC)).await,
        Ok(Some("atorvastatin 10 mg (relabelled)".to_string()))
    );
    assert_eq!(lookup.calls(), 2, "expired at the ttl");
    assert_eq!(
        cache.stats().evictions,
        1,
        "the stale entry counts as expired"
    );

    // The new answer has a ttl of its own, counted from when it arrived.
    tokio::time::advance(23 * HOUR).await;
    cache.get(&ndc(NDC)).await.unwrap();
    assert_eq!(lookup.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn reads_do_not_extend_the_ttl() {
    let lookup = Scripted::with(&[(NDC, DRUG)]);
    let cache = cache(lookup.clone(), LookupCacheConfig::default().ttl(HOUR));
    for _ in 0..6 {
        cache.get(&ndc(NDC)).await.unwrap();
        tokio::time::advance(Duration::from_secs(10 * 60)).await;
    }
    assert_eq!(lookup.calls(), 1);
    cache.get(&ndc(NDC)).await.unwrap();
    assert_eq!(
        lookup.calls(),
        2,
        "an hour after the first answer, however often read"
    );
}

#[tokio::test(start_paused = true)]
async fn an_absent_key_is_kept_as_absent_for_the_negative_ttl_only() {
    let lookup = Scripted::with(&[(NDC, DRUG)]);
    let cache = cache(
        lookup.clone(),
        LookupCacheConfig::default()
            .ttl(24 * HOUR)
            .negative_ttl(Duration::from_secs(5 * 60)),
    );
    assert_eq!(cache.get(&ndc(UNKNOWN_NDC)).await, Ok(None));
    assert_eq!(cache.get(&ndc(NDC)).await, Ok(Some(DRUG.to_string())));
    assert_eq!(lookup.calls(), 2);

    tokio::time::advance(Duration::from_secs(5 * 60 - 1)).await;
    for _ in 0..10 {
        assert_eq!(cache.get(&ndc(UNKNOWN_NDC)).await, Ok(None));
    }
    assert_eq!(lookup.calls(), 2, "absent, from the cache, for 5 minutes");

    // The NDC was added to the reference data; once the negative ttl is over it is found,
    // while the value found earlier is still kept for its own, longer ttl.
    lookup
        .inner
        .data
        .lock()
        .unwrap()
        .insert(ndc(UNKNOWN_NDC), "new product".into());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        cache.get(&ndc(UNKNOWN_NDC)).await,
        Ok(Some("new product".to_string()))
    );
    assert_eq!(cache.get(&ndc(NDC)).await, Ok(Some(DRUG.to_string())));
    assert_eq!(lookup.calls(), 3);
}

#[tokio::test]
async fn a_zero_negative_ttl_keeps_no_absent_key() {
    let lookup = Scripted::with(&[(NDC, DRUG)]);
    let cache = cache(
        lookup.clone(),
        LookupCacheConfig::default().negative_ttl(Duration::ZERO),
    );
    assert_eq!(cache.get(&ndc(UNKNOWN_NDC)).await, Ok(None));
    assert_eq!(cache.get(&ndc(UNKNOWN_NDC)).await, Ok(None));
    assert_eq!(lookup.calls(), 2);
}

#[tokio::test]
async fn errors_are_not_cached() {
    let lookup = Scripted::with(&[(NDC, DRUG)]);
    lookup.then_answer(Err(LookupError::transient("no answer within 2s")));
    lookup.then_answer(Err(LookupError::permanent("request rejected")));
    let cache = cache(lookup.clone(), LookupCacheConfig::default());

    let first = cache.get(&ndc(NDC)).await.unwrap_err();
    assert!(first.is_transient());
    let second = cache.get(&ndc(NDC)).await.unwrap_err();
    assert!(!second.is_transient());
    assert_eq!(cache.get(&ndc(NDC)).await, Ok(Some(DRUG.to_string())));
    assert_eq!(cache.get(&ndc(NDC)).await, Ok(Some(DRUG.to_string())));

    assert_eq!(lookup.calls(), 3, "each error is followed by a new call");
    let stats = cache.stats();
    assert_eq!((stats.calls, stats.errors, stats.hits), (3, 2, 1));
}

/// Spawns `n` requests for `key` on a cache whose lookup holds its first call, and waits
/// until that call has been made and every request has had its turn on this single-threaded
/// runtime: each has then either made the call or is waiting on it.
async fn requests_held_on_one_call(
    cache: &LookupCache<Scripted>,
    lookup: &Scripted,
    key: &str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Result<Option<String>, LookupError>>> {
    let called = lookup.inner.called.notified();
    let requests = (0..n)
        .map(|_| {
            let cache = cache.clone();
            let key = key.to_string();
            tokio::spawn(async move { cache.get(&key).await })
        })
        .collect();
    called.await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    requests
}

#[tokio::test]
async fn a_hundred_concurrent_misses_for_one_key_make_exactly_one_call() {
    let lookup = Scripted::with(&[(NDC, DRUG)]).held();
    let cache = cache(lookup.clone(), LookupCacheConfig::default());

    let requests = requests_held_on_one_call(&cache, &lookup, NDC, 100).await;
    assert_eq!(lookup.calls(), 1);
    assert_eq!(
        cache.stats().misses,
        100,
        "all 100 arrived before the answer"
    );
    lookup.inner.release.notify_one();

    for request in requests {
        assert_eq!(request.await.unwrap(), Ok(Some(DRUG.to_string())));
    }
    assert_eq!(lookup.calls(), 1);
    assert_eq!(
        cache.stats(),
        CacheStats {
            hits: 0,
            misses: 100,
            calls: 1,
            errors: 0,
            evictions: 0,
        }
    );
}

#[tokio::test]
async fn concurrent_misses_share_one_failed_call_and_the_next_request_calls_again() {
    let lookup = Scripted::with(&[(NDC, DRUG)]).held();
    lookup.then_answer(Err(LookupError::transient("connection refused")));
    let cache = cache(lookup.clone(), LookupCacheConfig::default());

    let requests = requests_held_on_one_call(&cache, &lookup, NDC, 100).await;
    lookup.inner.release.notify_one();
    for request in requests {
        let error = request.await.unwrap().unwrap_err();
        assert!(error.is_transient());
    }
    assert_eq!(
        lookup.calls(),
        1,
        "an outage costs one call per key and burst"
    );

    lookup.inner.hold.store(false, Ordering::SeqCst);
    assert_eq!(cache.get(&ndc(NDC)).await, Ok(Some(DRUG.to_string())));
    assert_eq!(lookup.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_on_many_threads_make_one_call_per_key() {
    let lookup = Scripted::with(&[(NDC, DRUG)]);
    let cache = cache(lookup.clone(), LookupCacheConfig::default());
    let keys = [NDC, UNKNOWN_NDC];
    let requests: Vec<_> = (0..200)
        .map(|i| {
            let cache = cache.clone();
            let key = keys[i % 2].to_string();
            tokio::spawn(async move { (cache.get(&key).await, key) })
        })
        .collect();
    for request in requests {
        let (answer, key) = request.await.unwrap();
        let expected = (key == NDC).then(|| DRUG.to_string());
        assert_eq!(answer, Ok(expected));
    }
    assert_eq!(lookup.calls(), 2);
    let stats = cache.stats();
    assert_eq!(stats.hits + stats.misses, 200);
}

#[tokio::test(start_paused = true)]
async fn concurrent_requests_for_an_expired_entry_make_one_call() {
    let lookup = Scripted::with(&[(NDC, DRUG)]);
    let cache = cache(lookup.clone(), LookupCacheConfig::default().ttl(HOUR));
    cache.get(&ndc(NDC)).await.unwrap();
    tokio::time::advance(HOUR).await;

    lookup.inner.hold.store(true, Ordering::SeqCst);
    let requests = requests_held_on_one_call(&cache, &lookup, NDC, 50).await;
    lookup.inner.release.notify_one();
    for request in requests {
        assert_eq!(request.await.unwrap(), Ok(Some(DRUG.to_string())));
    }
    assert_eq!(lookup.calls(), 2, "one call to load, one to reload");
    assert_eq!(cache.stats().evictions, 1);
}

#[tokio::test]
async fn the_cache_holds_at_most_max_entries_and_counts_what_it_evicts() {
    let data: Vec<(String, String)> = (0..100)
        .map(|i| (format!("{i:011}"), format!("drug {i}")))
        .collect();
    let lookup: StaticLookup<String, String> = data.iter().cloned().collect();
    let cache = LookupCache::new(
        "drug-reference",
        lookup,
        LookupCacheConfig::default().max_entries(10),
    );
    for (key, value) in &data {
        assert_eq!(cache.get(key).await, Ok(Some(value.clone())));
    }
    cache.run_pending_tasks().await;

    let held = cache.entry_count();
    assert!(held <= 10, "holds {held} entries");
    assert_eq!(cache.stats().evictions, 100 - held);
}

#[tokio::test]
async fn the_cache_holds_at_most_max_bytes_as_the_weigher_counts_them() {
    let data: Vec<(String, String)> = (0..50)
        .map(|i| (format!("{i:011}"), "x".repeat(89)))
        .collect();
    let lookup: StaticLookup<String, String> = data.iter().cloned().collect();
    let cache = LookupCache::new(
        "drug-reference",
        lookup,
        // 11-byte key + 89-byte value: 100 bytes an entry, so 10 entries fit in 1000.
        LookupCacheConfig::default().max_bytes(1000, |key: &String, value: Option<&String>| {
            (key.len() + value.map_or(0, String::len)) as u32
        }),
    );
    for (key, _) in &data {
        cache.get(key).await.unwrap();
    }
    cache.run_pending_tasks().await;

    let bytes = cache.weighted_size();
    assert!(bytes <= 1000, "holds {bytes} bytes");
    assert_eq!(bytes, cache.entry_count() * 100);
    assert_eq!(cache.stats().evictions, 50 - cache.entry_count());
}

#[tokio::test]
async fn errors_name_what_failed_and_where_never_the_key_or_the_value() {
    let lookup = Scripted::with(&[(NDC, DRUG)]);
    // A well-behaved lookup's errors, as the cache passes them on.
    lookup.then_answer(Err(LookupError::transient(
        "mongodb reference.drug_reference: no answer within 2s",
    )
    .context("drug-lookup")));
    lookup.then_answer(Err(LookupError::permanent(
        "mongodb reference.drug_reference: filter rejected",
    )));
    let cache = cache(lookup, LookupCacheConfig::default());

    for _ in 0..2 {
        let error = cache.get(&ndc(NDC)).await.unwrap_err();
        let process_error = ProcessError::from(error.clone());
        assert_eq!(process_error.kind, ErrorKind::Processing);
        assert_eq!(process_error.transient, error.is_transient());
        for text in [
            error.to_string(),
            format!("{error:?}"),
            process_error.to_string(),
            format!("{process_error:?}"),
        ] {
            assert!(text.contains("drug-reference"), "names the cache: {text}");
            assert!(
                text.contains("reference.drug_reference"),
                "names the service: {text}"
            );
            assert!(!text.contains(NDC), "has the key: {text}");
            assert!(!text.contains(DRUG), "has the value: {text}");
        }
    }
}

#[tokio::test]
async fn metrics_are_labelled_by_cache_never_by_key() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    // Handles are taken when the cache is built: built under this recorder, the cache
    // records to it wherever it runs.
    let lookup = Scripted::with(&[(NDC, DRUG)]);
    lookup.then_answer(Err(LookupError::transient("connection refused")));
    let cache = metrics::with_local_recorder(&recorder, || {
        LookupCache::new(
            "drug-reference",
            lookup,
            LookupCacheConfig::default().max_entries(1),
        )
    });
    assert!(cache.get(&ndc(NDC)).await.is_err());
    cache.get(&ndc(NDC)).await.unwrap();
    cache.get(&ndc(NDC)).await.unwrap();
    cache.get(&ndc(UNKNOWN_NDC)).await.unwrap();
    cache.run_pending_tasks().await;

    let text = handle.render();
    for line in [
        r#"sluice_cache_hits_total{cache="drug-reference"} 1"#,
        r#"sluice_cache_misses_total{cache="drug-reference"} 3"#,
        r#"sluice_cache_evictions_total{cache="drug-reference",reason="size"} 1"#,
        r#"sluice_cache_evictions_total{cache="drug-reference",reason="expired"} 0"#,
        r#"sluice_lookup_duration_seconds_count{cache="drug-reference"} 3"#,
        r#"sluice_lookup_errors_total{cache="drug-reference",reason="transient"} 1"#,
        r#"sluice_lookup_errors_total{cache="drug-reference",reason="permanent"} 0"#,
    ] {
        assert!(text.contains(line), "no `{line}` in:\n{text}");
    }
    // The label sets only: the numbers can hold any digits (a sum of 3.1539999999999998e-6
    // contains 99999999999, the unknown NDC).
    for labels in text
        .lines()
        .filter_map(|l| Some(l.split_once('{')?.1.split_once('}')?.0))
    {
        for data in [NDC, UNKNOWN_NDC, DRUG] {
            assert!(!labels.contains(data), "{data} in a label: {labels}");
        }
    }
}

#[tokio::test]
async fn a_cache_is_a_lookup_and_composes() {
    let drugs: StaticLookup<String, String> = [(ndc(NDC), DRUG.to_string())].into_iter().collect();
    let inner = LookupCache::new("inner", drugs, LookupCacheConfig::default());
    let outer = LookupCache::new("outer", inner.clone(), LookupCacheConfig::default());
    assert_eq!(outer.lookup(&ndc(NDC)).await, Ok(Some(DRUG.to_string())));
    assert_eq!(outer.lookup(&ndc(NDC)).await, Ok(Some(DRUG.to_string())));
    assert_eq!((outer.stats().hits, outer.stats().calls), (1, 1));
    assert_eq!(inner.stats().calls, 1);
}

/// Off paused time the deadlines and moka's own expiry run on the same clock: an entry past
/// its time to live is also dropped from memory, and counted as expired, without a read.
/// (The one test on real time: about a second, for moka's timer wheel.)
#[tokio::test]
async fn on_real_time_expired_entries_are_freed_without_being_read() {
    let lookup = Scripted::with(&[(NDC, DRUG)]);
    let cache = cache(
        lookup.clone(),
        LookupCacheConfig::default()
            .ttl(Duration::from_millis(20))
            .negative_ttl(Duration::from_millis(20)),
    );
    cache.get(&ndc(NDC)).await.unwrap();
    cache.get(&ndc(UNKNOWN_NDC)).await.unwrap();
    cache.run_pending_tasks().await;
    assert_eq!(cache.entry_count(), 2);

    // moka frees expired entries as its timer wheel turns, in steps of about a second.
    let started = std::time::Instant::now();
    while cache.entry_count() > 0 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cache.run_pending_tasks().await;
    }
    assert_eq!(cache.entry_count(), 0);
    assert_eq!(cache.stats().evictions, 2);
    cache.get(&ndc(NDC)).await.unwrap();
    assert_eq!(lookup.calls(), 3);
}
