//! The webhooks topology on a real broker, delivering to real HTTP receivers on loopback
//! (127.0.0.1 allow-listed through `webhooks.allow.cidrs`; other loopback addresses stand
//! for private ones). Tier delays are short (300, 600, 900, 1200 ms) instead of Svix's.

mod support;

#[path = "webhooks/endpoint.rs"]
mod endpoint;
#[path = "webhooks/harness.rs"]
mod harness;

use std::time::Duration;

use endpoint::{Receiver, Reply};
use harness::{DELAYS_MS, Harness};
use sluice_engine::policy::headers as dlq;
use sluice_topologies::webhooks::headers;
use sluice_topologies::webhooks::replay::{self, ReplayFilter, ReplaySummary};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// The delivery-attempt events of `webhook_id`, by attempt.
fn attempts_of(harness: &Harness, webhook_id: &str) -> Vec<serde_json::Value> {
    let mut events: Vec<serde_json::Value> = harness
        .attempts()
        .into_iter()
        .filter(|e| e["webhookId"] == webhook_id)
        .collect();
    events.sort_by_key(|e| e["attempt"].as_u64());
    events
}

#[test]
fn an_endpoint_failing_four_times_gets_exactly_one_2xx_on_the_tier_schedule_with_one_webhook_id() {
    let rt = runtime();
    let receiver = Receiver::start(&rt, "127.0.0.1", vec![Reply::Status(500); 4]);
    let harness = Harness::start(&[]);
    harness.send("evt-flaky", &receiver.url("/hook-secret-path?token=T"));

    harness.wait_until("a 2xx delivery", || {
        receiver.received().iter().any(|r| r.answered == 200)
    });
    harness.wait_until("five attempt events", || {
        attempts_of(&harness, "evt-flaky").len() == 5
    });
    // Nothing more comes: the 2xx ended it.
    std::thread::sleep(Duration::from_millis(1500));
    let received = receiver.received();
    let answered: Vec<u16> = received.iter().map(|r| r.answered).collect();
    assert_eq!(
        answered,
        [500, 500, 500, 500, 200],
        "exactly one 2xx, after four 500s"
    );
    for r in &received {
        assert_eq!(
            r.header("webhook-id"),
            "evt-flaky",
            "the id is stable across tiers"
        );
        assert_eq!(r.header("idempotency-key"), "evt-flaky");
        assert!(r.header("webhook-signature").starts_with("v1,"), "signed");
        assert!(!r.header("webhook-timestamp").is_empty());
        assert_eq!(r.path, "/hook-secret-path");
        assert_eq!(
            r.header("x-tenant"),
            "t1",
            "the event's own headers go along"
        );
        assert_eq!(&r.body[..], br#"{"patient":"PAYLOAD-SECRET"}"#);
    }
    // Attempt n + 1 waits for tier n's delay (±20% jitter), and not much longer.
    for (n, pair) in received.windows(2).enumerate() {
        let spacing = pair[1].at_ms - pair[0].at_ms;
        let delay = DELAYS_MS[n] as i64;
        assert!(
            spacing >= delay * 8 / 10 - 100 && spacing <= delay * 12 / 10 + 3_000,
            "retry {} came {spacing} ms after the attempt before; its tier waits {delay} ms ±20%",
            n + 1
        );
    }

    let events = attempts_of(&harness, "evt-flaky");
    let statuses: Vec<u64> = events
        .iter()
        .map(|e| e["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [500, 500, 500, 500, 200]);
    let tiers: Vec<u64> = events.iter().map(|e| e["tier"].as_u64().unwrap()).collect();
    assert_eq!(
        tiers,
        [0, 1, 2, 3, 4],
        "each retry was read from its own tier"
    );
    assert_eq!(events[4]["outcome"], "delivered");
    assert_eq!(events[0]["disposition"], "retry");
    assert_eq!(events[0]["endpoint"], "127.0.0.1");
    for event in &events {
        let text = event.to_string();
        assert!(
            !text.contains("PAYLOAD-SECRET"),
            "an attempt event carries the payload: {text}"
        );
        assert!(
            !text.contains("hook-secret-path"),
            "an attempt event carries the URL path: {text}"
        );
        assert!(event["latencyMs"].is_u64());
    }
    assert!(
        harness.dead_letters().is_empty(),
        "nothing was dead-lettered"
    );
}

#[test]
fn a_429_with_retry_after_is_retried_no_sooner_than_it_asks() {
    let rt = runtime();
    let receiver = Receiver::start(&rt, "127.0.0.1", vec![Reply::TooManyRequests(2)]);
    let harness = Harness::start(&[]);
    harness.send("evt-throttled", &receiver.url("/hook"));

    harness.wait_until("the retry", || receiver.received().len() == 2);
    let received = receiver.received();
    assert_eq!(received[0].answered, 429);
    assert_eq!(received[1].answered, 200);
    let waited = received[1].at_ms - received[0].at_ms;
    assert!(
        waited >= 1_900,
        "retried {waited} ms after a Retry-After of 2 s (the tier alone waits {} ms)",
        DELAYS_MS[0]
    );
    harness.wait_until("two attempt events", || {
        attempts_of(&harness, "evt-throttled").len() == 2
    });
    assert_eq!(
        attempts_of(&harness, "evt-throttled")[0]["errorClass"],
        "too-many-requests"
    );
}

#[test]
fn a_400_is_dead_lettered_at_once_with_what_the_attempt_came_to() {
    let rt = runtime();
    let receiver = Receiver::start(&rt, "127.0.0.1", vec![Reply::Status(400)]);
    let harness = Harness::start(&[]);
    harness.send("evt-rejected", &receiver.url("/hook-secret-path?token=T"));

    harness.wait_until("the dead letter", || !harness.dead_letters().is_empty());
    std::thread::sleep(Duration::from_millis(DELAYS_MS[0] * 3));
    assert_eq!(receiver.received().len(), 1, "a 400 is not retried");
    let dead = harness.dead_letters();
    assert_eq!(dead.len(), 1);
    let h = &dead[0];
    assert_eq!(h[headers::REASON], "permanent");
    assert_eq!(h[headers::ATTEMPTS], "1");
    assert_eq!(h[headers::LAST_STATUS], "400");
    assert_eq!(h[headers::LAST_ERROR_CLASS], "client-error");
    assert_eq!(h[headers::ENDPOINT_HOST], "127.0.0.1");
    assert_eq!(h[headers::WEBHOOK_ID], "evt-rejected");
    let first: i64 = h[headers::FIRST_ATTEMPT_AT].parse().unwrap();
    let last: i64 = h[headers::LAST_ATTEMPT_AT].parse().unwrap();
    assert_eq!(first, last, "one attempt");
    assert_eq!(h[dlq::ERROR_KIND], "processing");
    for value in h.values() {
        assert!(
            !value.contains("hook-secret-path") && !value.contains("token"),
            "{value}"
        );
    }
    // The dead letter is the event as read, for a replay.
    let record = &harness.committed(harness::DLQ)[0];
    let event: serde_json::Value = serde_json::from_slice(record.value.as_ref().unwrap()).unwrap();
    assert_eq!(event["metadata"]["eventId"], "evt-rejected");
    assert_eq!(event["payload"]["retryCount"], 0);
}

#[test]
fn a_stalled_endpoint_times_out_and_is_retried() {
    let rt = runtime();
    let receiver = Receiver::start(&rt, "127.0.0.1", vec![Reply::Stall(Duration::from_secs(3))]);
    let harness = Harness::start(&[]);
    harness.send("evt-stalled", &receiver.url("/hook"));

    harness.wait_until("two attempt events", || {
        attempts_of(&harness, "evt-stalled").len() == 2
    });
    let events = attempts_of(&harness, "evt-stalled");
    assert_eq!(events[0]["errorClass"], "timeout");
    assert_eq!(events[0]["disposition"], "retry");
    assert_eq!(events[1]["outcome"], "delivered");
    assert!(harness.dead_letters().is_empty());
}

#[test]
fn a_destination_not_allow_listed_is_dead_lettered_as_forbidden_without_a_connection() {
    let rt = runtime();
    // Loopback, but not 127.0.0.1: refused like any private address.
    let private = Receiver::start(&rt, "127.0.0.2", vec![]);
    let harness = Harness::start(&[]);
    harness.send("evt-private", &private.url("/hook"));
    harness.send("evt-ten", "http://10.0.0.1/hook");

    harness.wait_until("two dead letters", || harness.dead_letters().len() == 2);
    for h in harness.dead_letters() {
        assert_eq!(h[headers::REASON], "forbidden-destination", "{h:?}");
        assert_eq!(h[headers::LAST_STATUS], "none");
        assert_eq!(h[headers::ATTEMPTS], "1");
    }
    assert_eq!(
        private.connections(),
        0,
        "the guard refused before connecting"
    );
    assert!(private.received().is_empty());
}

#[test]
fn bad_input_is_dead_lettered_with_its_reason() {
    let harness = Harness::start(&[]);
    let cases: [(&str, &[u8], &str); 4] = [
        ("not-json", b"{not json", "value: invalid JSON"),
        (
            "no-url",
            br#"{"payload": {}}"#,
            "missing required field url",
        ),
        (
            "ftp",
            br#"{"url": "ftp://files.example/x", "payload": {}}"#,
            "field url is not an http(s) URL",
        ),
        (
            "headers",
            br#"{"url": "http://127.0.0.1:9/x", "headers": ["x"], "payload": {}}"#,
            "field headers is not a map of strings",
        ),
    ];
    for (key, value, _) in &cases {
        harness.send_raw(key, value);
    }
    harness.wait_until("four dead letters", || harness.dead_letters().len() == 4);
    let dead = harness.committed(harness::DLQ);
    for (key, value, reason) in cases {
        let record = dead
            .iter()
            .find(|r| r.key.as_deref() == Some(key))
            .unwrap_or_else(|| panic!("{key} was not dead-lettered"));
        let message = &record.headers[dlq::ERROR_MESSAGE];
        assert!(message.starts_with(reason), "{key}: {message:?}");
        assert_eq!(record.value.as_deref(), Some(value), "the input as read");
    }
    assert!(harness.attempts().is_empty(), "no attempt for bad input");
}

#[test]
fn replay_brings_one_endpoints_dead_letters_back_with_fresh_retry_counts() {
    let rt = runtime();
    // Rejects the first request, then takes everything: fixed by its owner.
    let receiver = Receiver::start(&rt, "127.0.0.1", vec![Reply::Status(400)]);
    let harness = Harness::start(&[]);
    harness.send("evt-fixed", &receiver.url("/hook"));
    harness.send("evt-elsewhere", "http://10.0.0.1/hook");
    harness.wait_until("two dead letters", || harness.dead_letters().len() == 2);

    let filter = ReplayFilter {
        endpoint_host: Some("127.0.0.1".into()),
        ..ReplayFilter::default()
    };
    let summary = replay::replay(&harness.broker.brokers, &harness.config, &filter).unwrap();
    assert_eq!(
        summary,
        ReplaySummary {
            read: 2,
            replayed: 1
        }
    );

    harness.wait_until("the replayed delivery", || {
        receiver.received().iter().any(|r| r.answered == 200)
    });
    harness.wait_until("its attempt event", || {
        attempts_of(&harness, "evt-fixed").len() == 2
    });
    let events = attempts_of(&harness, "evt-fixed");
    assert_eq!(events[1]["outcome"], "delivered");
    assert_eq!(events[1]["attempt"], 1, "the retry count starts over");
    assert_eq!(events[1]["tier"], 0, "replayed onto the input topic");
    let received = receiver.received();
    assert_eq!(
        received[1].header("webhook-id"),
        "evt-fixed",
        "the same webhook id"
    );
    assert_eq!(
        harness.dead_letters().len(),
        2,
        "nothing new was dead-lettered"
    );
}

/// Standard Webhooks' signature of `id.timestamp.body` under `secret`, computed here rather
/// than by the deliverer: `v1,<base64 of HMAC-SHA256>`.
fn standard_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    use base64::Engine;
    use hmac::{Hmac, KeyInit, Mac};
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag)
    )
}

#[test]
fn a_webhook_naming_a_configured_endpoint_goes_there_signed_with_its_referenced_secrets() {
    const ROTATED: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let rt = runtime();
    let receiver = Receiver::start(&rt, "127.0.0.1", Vec::new());
    let dir = support::ScratchDir::new("sluice-endpoints");
    let (endpoints, secrets) = (
        dir.path().join("endpoints.json"),
        dir.path().join("secrets.json"),
    );
    std::fs::write(
        &endpoints,
        serde_json::json!({"endpoints": [{"id": "partner-rx", "url": receiver.url("/partner?token=T"),
            "secretRef": "partner", "headers": {"x-partner": "sluice"}}]})
        .to_string(),
    )
    .unwrap();
    // Two secrets while the partner rotates: the new one first.
    std::fs::write(
        &secrets,
        serde_json::json!({"partner": [ROTATED, harness::SECRET]}).to_string(),
    )
    .unwrap();
    let harness = Harness::start(&[
        ("webhooks.endpoints.file", endpoints.to_str().unwrap()),
        ("webhooks.secrets.file", secrets.to_str().unwrap()),
    ]);
    harness.send_raw(
        "named",
        br#"{"endpointId": "partner-rx", "payload": {"n": 1}}"#,
    );
    harness.send_raw(
        "unknown",
        br#"{"endpointId": "nobody", "payload": {"n": 2}}"#,
    );
    harness.wait_until("the delivery and the dead letter", || {
        !receiver.received().is_empty() && harness.dead_letters().len() == 1
    });

    let request = &receiver.received()[0];
    assert_eq!(request.path, "/partner");
    assert_eq!(
        request.header("x-partner"),
        "sluice",
        "the endpoint's own header"
    );
    let (id, timestamp) = (
        request.header("webhook-id"),
        request.header("webhook-timestamp"),
    );
    let expected: Vec<String> = [ROTATED, harness::SECRET]
        .iter()
        .map(|secret| standard_signature(secret, id, timestamp, &request.body))
        .collect();
    assert_eq!(request.header("webhook-signature"), expected.join(" "));

    let attempt = &harness.attempts()[0];
    assert_eq!(
        attempt["endpoint"], "partner-rx",
        "known by its id, not its host"
    );
    let dead = &harness.dead_letters()[0];
    assert!(
        dead[dlq::ERROR_MESSAGE].contains("field endpointId \"nobody\" names no endpoint"),
        "{:?}",
        dead[dlq::ERROR_MESSAGE]
    );
}

#[test]
fn a_disabled_endpoints_events_are_kept_and_replay_brings_them_back() {
    let rt = runtime();
    let receiver = Receiver::start(&rt, "127.0.0.1", Vec::new());
    receiver.fail("/down", 1_000);
    // Disabled after failing for 1 s: the first event's third attempt (0.9 s after its
    // first) or fourth finds it so.
    let mut harness = Harness::start(&[("webhooks.disable.after.ms", "1000")]);
    harness.send("evt-first", &receiver.url("/down"));
    harness.wait_until("the first event dead-lettered", || {
        harness.dead_letters().len() == 1
    });
    let requests_before = receiver.received().len();
    harness.send("evt-second", &receiver.url("/down"));
    harness.wait_until("the second event dead-lettered", || {
        harness.dead_letters().len() == 2
    });
    for dead in harness.dead_letters() {
        assert_eq!(dead[headers::REASON], "endpoint-disabled", "{dead:?}");
        assert_eq!(dead[headers::ENDPOINT_HOST], "127.0.0.1");
    }
    assert_eq!(
        receiver.received().len(),
        requests_before,
        "a disabled endpoint gets no call"
    );

    // Its owner fixes it; a new worker starts with the endpoint enabled; replay.
    receiver.fail("/down", 0);
    harness.restart_worker();
    let summary = replay::replay(
        &harness.broker.brokers,
        &harness.config,
        &ReplayFilter::default(),
    )
    .unwrap();
    assert_eq!(summary.replayed, 2);
    harness.wait_until("both delivered", || {
        receiver
            .received()
            .iter()
            .filter(|r| r.answered == 200)
            .count()
            == 2
    });
    let delivered: Vec<String> = receiver
        .received()
        .iter()
        .filter(|r| r.answered == 200)
        .map(|r| r.header("webhook-id").to_string())
        .collect();
    assert!(
        delivered.contains(&"evt-first".to_string()),
        "{delivered:?}"
    );
    assert!(
        delivered.contains(&"evt-second".to_string()),
        "{delivered:?}"
    );
    assert_eq!(harness.dead_letters().len(), 2, "nothing new dead-lettered");
}
