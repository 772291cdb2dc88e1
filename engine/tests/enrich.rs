//! enrich: orders joined with drug reference data by NDC, through the operator's cache.
//! Hits make no call and never wait in flight unless an older call holds them back by
//! order; absent keys are joined as absent; lookup errors are retried or dead-lettered,
//! never turned into "absent"; cached answers expire on tokio's clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sluice_engine::lookup::{Lookup, LookupCacheConfig, LookupError};
use sluice_engine::operators::AsyncOptions;
use sluice_engine::task::{Outcome, TaskError};
use sluice_engine::{Serdes, Task, TestDriver, Topology, TopologyBuilder};

const ATORVASTATIN: &str = "00071015523";
const LISINOPRIL: &str = "00093711101";
/// An NDC the reference data does not have.
const UNKNOWN: &str = "99999999999";
/// An NDC whose lookup takes 10 ms.
const SLOW: &str = "00000000010";
/// An NDC the service cannot answer for: it is down.
const DOWN: &str = "00000000503";
/// An NDC the service refuses as a bad request.
const REFUSED: &str = "00000000400";

/// Drug reference data behind a service that answers after yielding once (as any call
/// over a socket does), counting its calls.
#[derive(Clone, Default)]
struct DrugReference {
    calls: Arc<AtomicUsize>,
}

impl DrugReference {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Lookup for DrugReference {
    type Key = String;
    type Value = String;

    fn lookup(
        &self,
        ndc: &String,
    ) -> impl Future<Output = Result<Option<String>, LookupError>> + Send {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let ndc = ndc.clone();
        async move {
            tokio::task::yield_now().await;
            let names: HashMap<&str, &str> = [
                (ATORVASTATIN, "atorvastatin"),
                (LISINOPRIL, "lisinopril"),
                (SLOW, "slow-release"),
            ]
            .into();
            match ndc.as_str() {
                DOWN => Err(LookupError::transient("drug service: connection refused")),
                REFUSED => Err(LookupError::permanent("drug service: 400 bad request")),
                SLOW => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    Ok(Some(names[SLOW].to_string()))
                }
                ndc => Ok(names.get(ndc).map(|name| name.to_string())),
            }
        }
    }
}

/// Orders keyed by order id whose value is an NDC (empty: none), enriched to
/// `<drug name>` or `absent`.
fn topology(
    reference: DrugReference,
    cache: LookupCacheConfig<String, String>,
    options: AsyncOptions,
) -> Topology {
    let builder = TopologyBuilder::new("enrichment");
    builder
        .source("in", &["orders"], Serdes::string(), Serdes::string())
        .enrich(
            "drug-reference",
            reference,
            cache,
            options,
            |order| (!order.value.is_empty()).then(|| order.value.clone()),
            |order, drug| Ok(order.with_value(drug.unwrap_or_else(|| "absent".to_string()))),
        )
        .to("out", "orders.enriched", Serdes::string(), Serdes::string());
    builder.build().unwrap()
}

fn default_topology(reference: &DrugReference) -> Topology {
    topology(
        reference.clone(),
        LookupCacheConfig::default(),
        AsyncOptions::new(),
    )
}

fn outputs(driver: &mut TestDriver) -> Vec<(String, String)> {
    driver
        .read("orders.enriched", &Serdes::string(), &Serdes::string())
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.value))
        .collect()
}

fn order(id: &str, ndc: &str, offset: i64) -> sluice_engine::RawRecord {
    sluice_engine::RawRecord {
        key: Some(id.as_bytes().to_vec()),
        value: Some(ndc.as_bytes().to_vec()),
        headers: sluice_engine::Headers::new(),
        timestamp: 1,
        origin: sluice_engine::Origin {
            topic: Arc::from("orders"),
            partition: 0,
            offset,
        },
    }
}

#[test]
fn a_cached_drug_makes_no_call_and_its_order_is_never_in_flight() {
    let reference = DrugReference::default();
    let topology = default_topology(&reference);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut task = Task::new(&topology, 0, 0).with_runtime(runtime.handle().clone());
    let mut out = Vec::new();

    assert_eq!(
        task.process(&order("o1", ATORVASTATIN, 0), &mut out)
            .unwrap(),
        Outcome::InFlight,
        "a miss calls the service"
    );
    runtime.block_on(std::future::poll_fn(|cx| task.poll_calls(cx)));
    assert_eq!(task.complete_calls(&mut out).unwrap(), 1);

    assert_eq!(
        task.process(&order("o2", ATORVASTATIN, 1), &mut out)
            .unwrap(),
        Outcome::Processed,
        "a hit goes on at once"
    );
    assert_eq!(out.len(), 2);
    assert_eq!(reference.calls(), 1);
    assert_eq!(task.in_flight(), 0);
    let committable: Vec<i64> = task.committable_offsets().map(|(_, o)| o).collect();
    assert_eq!(committable, [2]);
}

#[test]
fn a_cached_drug_waits_behind_an_older_miss_in_input_order() {
    let reference = DrugReference::default();
    let mut driver = TestDriver::with_paused_time(default_topology(&reference));
    driver
        .pipe_raw("orders", Some(b"o0"), Some(ATORVASTATIN.as_bytes()))
        .unwrap();
    driver
        .pipe_all(
            "orders",
            vec![
                (Some(&b"o1"[..]), Some(SLOW.as_bytes())),
                (Some(&b"o2"[..]), Some(ATORVASTATIN.as_bytes())),
            ],
        )
        .unwrap();
    let order_ids: Vec<String> = outputs(&mut driver).into_iter().map(|(k, _)| k).collect();
    assert_eq!(order_ids, ["o0", "o1", "o2"]);
}

#[test]
fn key_ordered_a_cached_drug_overtakes_a_miss_of_another_order() {
    let reference = DrugReference::default();
    let options = AsyncOptions::new().key_ordered();
    let mut driver = TestDriver::with_paused_time(topology(
        reference.clone(),
        LookupCacheConfig::default(),
        options,
    ));
    driver
        .pipe_raw("orders", Some(b"o0"), Some(ATORVASTATIN.as_bytes()))
        .unwrap();
    driver
        .pipe_all(
            "orders",
            vec![
                (Some(&b"o1"[..]), Some(SLOW.as_bytes())),
                (Some(&b"o2"[..]), Some(ATORVASTATIN.as_bytes())),
                // Same order as the slow one: it keeps its place behind it.
                (Some(&b"o1"[..]), Some(ATORVASTATIN.as_bytes())),
            ],
        )
        .unwrap();
    assert_eq!(
        outputs(&mut driver),
        [
            ("o0", "atorvastatin"),
            ("o2", "atorvastatin"),
            ("o1", "slow-release"),
            ("o1", "atorvastatin")
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );
}

#[test]
fn an_unknown_ndc_and_an_order_without_one_are_joined_with_nothing() {
    let reference = DrugReference::default();
    let mut driver = TestDriver::new(default_topology(&reference));
    driver
        .pipe_raw("orders", Some(b"o1"), Some(UNKNOWN.as_bytes()))
        .unwrap();
    driver
        .pipe_raw("orders", Some(b"o2"), Some(UNKNOWN.as_bytes()))
        .unwrap();
    driver.pipe_raw("orders", Some(b"o3"), Some(b"")).unwrap();
    assert_eq!(
        outputs(&mut driver),
        [("o1", "absent"), ("o2", "absent"), ("o3", "absent")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    assert_eq!(
        reference.calls(),
        1,
        "the unknown NDC is kept as absent; an order without an NDC makes no call"
    );
    assert!(driver.dead_letters().is_empty());
}

#[test]
fn a_refused_lookup_dead_letters_the_order_naming_the_operator_not_the_ndc() {
    let reference = DrugReference::default();
    let mut driver = TestDriver::new(default_topology(&reference));
    driver
        .pipe_raw("orders", Some(b"o1"), Some(REFUSED.as_bytes()))
        .unwrap();
    let dead = driver.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].operator, "drug-reference");
    assert!(
        dead[0].message.contains("400 bad request"),
        "{}",
        dead[0].message
    );
    assert!(!dead[0].message.contains(REFUSED), "{}", dead[0].message);
    assert!(outputs(&mut driver).is_empty());
}

#[test]
fn a_drug_service_down_past_the_timeout_leaves_the_order_unavailable_after_retries() {
    let reference = DrugReference::default();
    let options = AsyncOptions::new()
        .timeout(Duration::from_secs(2))
        .retry_backoff(Duration::from_millis(100), Duration::from_millis(400));
    let mut driver = TestDriver::with_paused_time(topology(
        reference.clone(),
        LookupCacheConfig::default(),
        options,
    ));
    let error = driver
        .pipe_raw("orders", Some(b"o1"), Some(DOWN.as_bytes()))
        .unwrap_err();
    let TaskError::Unavailable {
        operator, error, ..
    } = error
    else {
        panic!("not unavailable: {error}");
    };
    assert_eq!(operator, "drug-reference");
    assert!(error.transient);
    assert!(
        reference.calls() > 3,
        "retried within the timeout, errors never cached: {} calls",
        reference.calls()
    );
    assert!(driver.dead_letters().is_empty(), "never dead-lettered");
}

#[test]
fn a_cached_drug_is_looked_up_again_after_its_time_to_live_and_an_absent_one_sooner() {
    let reference = DrugReference::default();
    let cache = LookupCacheConfig::default()
        .ttl(Duration::from_secs(24 * 3600))
        .negative_ttl(Duration::from_secs(300));
    let mut driver =
        TestDriver::with_paused_time(topology(reference.clone(), cache, AsyncOptions::new()));
    let pipe = |driver: &mut TestDriver, ndc: &str| {
        driver
            .pipe_raw("orders", Some(b"o"), Some(ndc.as_bytes()))
            .unwrap();
    };
    pipe(&mut driver, LISINOPRIL);
    pipe(&mut driver, UNKNOWN);
    assert_eq!(reference.calls(), 2);

    driver.advance_wall_clock(Duration::from_secs(299)).unwrap();
    pipe(&mut driver, LISINOPRIL);
    pipe(&mut driver, UNKNOWN);
    assert_eq!(reference.calls(), 2, "both fresh");

    driver.advance_wall_clock(Duration::from_secs(2)).unwrap();
    pipe(&mut driver, LISINOPRIL);
    pipe(&mut driver, UNKNOWN);
    assert_eq!(
        reference.calls(),
        3,
        "absent past its 5 minutes, the drug not"
    );

    driver
        .advance_wall_clock(Duration::from_secs(24 * 3600))
        .unwrap();
    pipe(&mut driver, LISINOPRIL);
    assert_eq!(reference.calls(), 4, "the drug past its 24 hours");
    assert_eq!(outputs(&mut driver).len(), 7);
}
