//! The webhooks topology in the TestDriver, on its wall clock: the retry schedule without
//! waiting for it. A real HTTP receiver answers (loopback, allow-listed); the attempts'
//! clock is the driver's wall clock, and the tiers' delays are exact (no jitter), so each
//! retry is held until exactly its due time and not a millisecond less.

#[path = "webhooks/endpoint.rs"]
mod endpoint;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use endpoint::{Receiver, Reply};
use sluice_engine::TestDriver;
use sluice_topologies::webhooks::{self, Clock, WebhooksConfig, headers};

#[test]
fn each_retry_waits_exactly_its_tiers_delay_on_the_wall_clock() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let receiver = Receiver::start(&rt, "127.0.0.1", vec![Reply::Status(500); 2]);
    let now = Arc::new(AtomicI64::new(TestDriver::DEFAULT_START_MS));
    let mut config = WebhooksConfig::from_map([
        ("webhooks.retry.delays.ms", "1000,2000,3000"),
        ("webhooks.retry.jitter", "0"),
        ("webhooks.allow.cidrs", "127.0.0.1/32"),
    ])
    .unwrap();
    let clock = now.clone();
    config.clock = Clock::new(move || clock.load(Ordering::SeqCst));
    let mut driver = TestDriver::new(webhooks::topology(config));
    // Moves the topology's clock with the driver's, before the driver runs what is due.
    let advance = |driver: &mut TestDriver, ms: u64| {
        now.fetch_add(ms as i64, Ordering::SeqCst);
        driver
            .advance_wall_clock(Duration::from_millis(ms))
            .unwrap();
    };

    let input = serde_json::json!({"url": receiver.url("/hook"), "payload": {"n": 1}});
    driver
        .pipe_raw(
            webhooks::INPUT_TOPIC,
            Some(b"k"),
            Some(&serde_json::to_vec(&input).unwrap()),
        )
        .unwrap();
    assert_eq!(receiver.received().len(), 1, "the first attempt at once");

    let tier_1 = driver.read_raw("api.webhooks.outbound.retry-1");
    assert_eq!(tier_1.len(), 1);
    let start = TestDriver::DEFAULT_START_MS;
    assert_eq!(
        tier_1[0].headers.get_str(headers::DUE_AT),
        Some((start + 1_000).to_string().as_str())
    );
    let moved: serde_json::Value =
        serde_json::from_slice(tier_1[0].value.as_deref().unwrap()).unwrap();
    assert_eq!(moved["retryCount"], 1);

    advance(&mut driver, 999);
    assert_eq!(
        receiver.received().len(),
        1,
        "retried before tier 1's delay"
    );
    advance(&mut driver, 1);
    assert_eq!(receiver.received().len(), 2, "tier 1 retried when due");

    advance(&mut driver, 1_999);
    assert_eq!(
        receiver.received().len(),
        2,
        "retried before tier 2's delay"
    );
    advance(&mut driver, 1);
    let received = receiver.received();
    assert_eq!(
        received.iter().map(|r| r.answered).collect::<Vec<_>>(),
        [500, 500, 200]
    );
    // Without an event id or secrets, the idempotency key is the input's position, the
    // same on every attempt.
    let key = received[0].header("idempotency-key").to_string();
    assert!(key.starts_with("sluice:api.webhooks.outbound:0:0"), "{key}");
    assert!(received.iter().all(|r| r.header("idempotency-key") == key));

    let attempts: Vec<serde_json::Value> = driver
        .read_raw(webhooks::ATTEMPTS_TOPIC)
        .iter()
        .map(|r| serde_json::from_slice(r.value.as_deref().unwrap()).unwrap())
        .collect();
    let at: Vec<i64> = attempts
        .iter()
        .map(|a| a["attemptedAt"].as_i64().unwrap())
        .collect();
    assert_eq!(at, [start, start + 1_000, start + 3_000]);
    assert_eq!(attempts[2]["disposition"], "delivered");
    assert!(driver.read_raw("api.webhooks.outbound.dlq").is_empty());
}

#[test]
fn ordered_by_key_a_webhook_waits_for_its_keys_earlier_ones_through_their_retries() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let receiver = Receiver::start(&rt, "127.0.0.1", Vec::new());
    receiver.fail("/a1", 2);
    receiver.fail("/keyless", 1);
    let config = WebhooksConfig::from_map([
        ("webhooks.ordering", "key"),
        ("webhooks.retry.delays.ms", "100,200,300"),
        ("webhooks.retry.jitter", "0"),
        ("webhooks.allow.cidrs", "127.0.0.1/32"),
    ])
    .unwrap();
    // Real time: the retries in place wait 100 and 200 ms for a real receiver.
    let mut driver = TestDriver::new(webhooks::topology(config));
    let hook = |path: &str| {
        serde_json::to_vec(&serde_json::json!({"url": receiver.url(path), "payload": {}})).unwrap()
    };
    let inputs = [
        (Some(&b"a"[..]), hook("/a1")),
        (Some(&b"a"[..]), hook("/a2")),
        (Some(&b"b"[..]), hook("/b1")),
        (Some(&b"a"[..]), hook("/a3")),
        (None, hook("/keyless")),
    ];
    driver
        .pipe_all(
            webhooks::INPUT_TOPIC,
            inputs
                .iter()
                .map(|(key, value)| (*key, Some(value.as_slice()))),
        )
        .unwrap();

    let received = receiver.received();
    let order: Vec<(&str, u16)> = received
        .iter()
        .map(|r| (r.path.as_str(), r.answered))
        .collect();
    let of_a: Vec<_> = order.iter().filter(|(p, _)| p.starts_with("/a")).collect();
    assert_eq!(
        of_a,
        [
            &("/a1", 500),
            &("/a1", 500),
            &("/a1", 200),
            &("/a2", 200),
            &("/a3", 200)
        ],
        "key a in order, a1's retries before a2: {order:?}"
    );
    let at = |path: &str, answered: u16| {
        order
            .iter()
            .position(|x| *x == (path, answered))
            .unwrap_or_else(|| panic!("{path} {answered} in {order:?}"))
    };
    assert!(
        at("/b1", 200) < at("/a1", 200),
        "key b waited for key a: {order:?}"
    );

    // Retried in place, a keyed webhook never reaches a tier; every attempt is reported.
    let tier_1 = driver.read_raw("api.webhooks.outbound.retry-1");
    assert_eq!(tier_1.len(), 1, "only the keyless webhook uses the tiers");
    assert!(tier_1[0].key.is_none());
    let attempts: Vec<serde_json::Value> = driver
        .read_raw(webhooks::ATTEMPTS_TOPIC)
        .iter()
        .map(|r| serde_json::from_slice(r.value.as_deref().unwrap()).unwrap())
        .collect();
    let a1_id = received[at("/a1", 200)]
        .header("idempotency-key")
        .to_string();
    let a1: Vec<_> = attempts
        .iter()
        .filter(|a| a["webhookId"] == a1_id.as_str())
        .map(|a| {
            (
                a["attempt"].as_u64().unwrap(),
                a["disposition"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        a1,
        [
            (1, "retry".to_string()),
            (2, "retry".to_string()),
            (3, "delivered".to_string())
        ]
    );
    let first_a1 = order.iter().position(|x| x.0 == "/a1").unwrap();
    let waited = received[at("/a1", 200)].at_ms - received[first_a1].at_ms;
    assert!(
        waited >= 300,
        "a1's retries waited 100 + 200 ms, not {waited} ms"
    );
    assert!(driver.read_raw("api.webhooks.outbound.dlq").is_empty());
}
