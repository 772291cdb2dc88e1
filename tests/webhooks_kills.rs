//! Webhook delivery under SIGKILL: 20,000 webhooks to a flaky receiver (30% of requests
//! answered 500) while the worker process is killed 10 times, on a real broker with
//! exactly_once_v2.
//!
//! The receiver (axum on 127.0.0.1, in this process) answers 500 to a random 30% of
//! requests, but never to an event that has already failed three times: with four retry
//! tiers a webhook can then never run out of retries, so a dead letter can only come from
//! a fault of the pipeline, not from bad luck. It logs every request's `webhook-id` and
//! body, and whether it answered 2xx. It shows:
//!
//! * every event is delivered with a 2xx at least once, and none is dead-lettered;
//! * every request for an event carries that event's id as `webhook-id`: a repeat (an
//!   attempt in flight at a kill, made again after it) is a repeat of the same webhook;
//! * an event answered 2xx more than once had its first 2xx shortly before a kill: its
//!   outcome was not yet committed when the worker died. A repeat at any other time
//!   would be the pipeline's own duplicate;
//! * in read_committed, each event's path through the tiers is exactly once: one
//!   `delivered` attempt event, and at most one record per tier.
//!
//! The worker is this test binary run again (`webhook_worker_child`, which returns at
//! once unless `SLUICE_WEBHOOK_WORKER` is set), as in `kafka_async_calls`.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use rand::Rng;
use sluice_runtime::{ConfigBuilder, Worker};
use sluice_topologies::webhooks::{self, WebhooksConfig};

const CHILD_TRIGGER: &str = "SLUICE_WEBHOOK_WORKER";
const WEBHOOKS: usize = 20_000;
/// How long before a kill an attempt's 2xx can be and still be repeated: its outcome
/// waits for the next commit (every 100 ms) and that commit's transaction. Measured at
/// under 200 ms here; ten times that leaves room for a loaded machine and stays shorter
/// than the time between kills, so a repeat the pipeline made on its own would show.
const UNCOMMITTED_WINDOW: Duration = Duration::from_secs(2);
const KILLS: usize = 10;
const PARTITIONS: i32 = 4;
const INPUT: &str = "api.webhooks.outbound";
const DLQ: &str = "api.webhooks.outbound.dlq";
const ATTEMPTS: &str = "api.webhooks.delivery-attempts";
const DELAYS_MS: &str = "100,200,300,400";
const TIERS: u32 = 4;
const GROUP: &str = "webhooks-kills";

/// The worker process of the test; returns at once in a normal test run.
#[test]
fn webhook_worker_child() {
    if std::env::var(CHILD_TRIGGER).is_err() {
        return;
    }
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .try_init();
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is set"));
    let mut config = ConfigBuilder::new();
    config
        .set("application.id", GROUP, "test")
        .set("bootstrap.servers", var("WEBHOOK_WORKER_BROKERS"), "test")
        .set("state.dir", var("WEBHOOK_WORKER_STATE_DIR"), "test")
        .set("processing.guarantee", "exactly_once_v2", "test")
        // A restarted worker takes its killed predecessor's place at once.
        .set("static.membership", "true", "test");
    for (key, value) in support::base_settings() {
        config.set(key, value, "test");
    }
    let webhooks = WebhooksConfig::from_map([
        ("webhooks.retry.delays.ms", DELAYS_MS),
        ("webhooks.allow.cidrs", "127.0.0.1/32"),
        ("webhooks.timeout.ms", "5000"),
        // Signed requests carry `webhook-id` (the spec's example secret).
        (
            "webhooks.signing.secrets",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ),
        // The breaker would move events on without a call while the receiver fails 30%.
        ("webhooks.breaker.consecutive.failures", "1000000"),
        ("webhooks.breaker.failure.ratio", "1"),
    ])
    .unwrap();
    let worker = Worker::start(webhooks::topology(webhooks), config.build().unwrap()).unwrap();
    signal_hook::flag::register(signal_hook::consts::SIGTERM, worker.stop_flag()).unwrap();
    let parent = std::os::unix::process::parent_id();
    while !worker.any_thread_finished() {
        // A test that failed and went away leaves no worker behind.
        if std::os::unix::process::parent_id() != parent {
            std::process::exit(3);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    worker.join().expect("the worker stops cleanly");
}

/// What the receiver saw.
#[derive(Default)]
struct Log {
    /// (webhook-id header, the event id in the body, answered 2xx, when).
    requests: Mutex<Vec<(String, String, bool, Instant)>>,
    failures: Mutex<HashMap<String, u32>>,
    count: AtomicUsize,
}

async fn receive(State(log): State<Arc<Log>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let in_body = body["id"].as_str().unwrap_or_default().to_string();
    let fail = {
        let mut failures = log.failures.lock().unwrap();
        let failed = failures.entry(in_body.clone()).or_default();
        let fail = *failed < 3 && rand::rng().random_bool(0.3);
        *failed += u32::from(fail);
        fail
    };
    log.requests
        .lock()
        .unwrap()
        .push((id, in_body, !fail, Instant::now()));
    log.count.fetch_add(1, Ordering::SeqCst);
    if fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

struct WorkerProcess(Child);

impl WorkerProcess {
    fn start(brokers: &str, state_dir: &Path) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(state_dir.join("worker.log"))
            .unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["webhook_worker_child", "--exact", "--nocapture"])
            .env(CHILD_TRIGGER, "1")
            .env("WEBHOOK_WORKER_BROKERS", brokers)
            .env("WEBHOOK_WORKER_STATE_DIR", state_dir)
            .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Self(child)
    }

    fn assert_running(&mut self, log: &Path) {
        if let Some(status) = self.0.try_wait().unwrap() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            panic!(
                "the worker exited on its own ({status}):\n{}",
                tail.join("\n")
            );
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Per webhook id, its committed attempt events that delivered it.
fn delivered_events(brokers: &str) -> HashMap<String, usize> {
    let mut delivered = HashMap::new();
    for record in support::read_committed(brokers, ATTEMPTS) {
        let event: serde_json::Value = serde_json::from_slice(&record.value.unwrap()).unwrap();
        if event["disposition"] == "delivered" {
            *delivered
                .entry(event["webhookId"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    delivered
}

fn produce(brokers: &str, url: &str) {
    let producer = support::producer(brokers);
    for i in 0..WEBHOOKS {
        let id = format!("evt-{i:05}");
        let value = serde_json::json!({
            "metadata": {"eventId": id, "eventType": "webhook", "eventSource": "api",
                "timestamp": "2026-01-01T00:00:00Z", "version": "1"},
            "payload": {"url": url, "payload": {"id": id}, "retryCount": 0}
        });
        sluice_topologies::demo::send_waiting(
            &producer,
            INPUT,
            &id,
            &serde_json::to_vec(&value).unwrap(),
        );
        // About 30 s of arrivals: the kills fall while webhooks keep coming.
        if i % 500 == 499 {
            std::thread::sleep(Duration::from_millis(750));
        }
    }
    use rdkafka::producer::Producer as _;
    producer.flush(Duration::from_secs(30)).unwrap();
}

#[test]
fn every_webhook_is_delivered_under_kill_9s_with_one_webhook_id_and_one_path_through_the_tiers() {
    let broker = support::TestBroker::start();
    let tiers: Vec<String> = (1..=TIERS).map(|n| format!("{INPUT}.retry-{n}")).collect();
    let mut topics: Vec<&str> = vec![INPUT, DLQ, ATTEMPTS];
    topics.extend(tiers.iter().map(String::as_str));
    broker.create_topics(&topics, PARTITIONS);
    let scratch = support::ScratchDir::new("sluice-webhook-kills");
    let state_dir = scratch.path();
    let worker_log = state_dir.join("worker.log");
    eprintln!("worker log {}", worker_log.display());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let log = Arc::new(Log::default());
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}/hooks/receive", listener.local_addr().unwrap());
    let app = Router::new().fallback(receive).with_state(log.clone());
    runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (brokers, target) = (broker.brokers.clone(), url.clone());
    let producer = std::thread::spawn(move || produce(&brokers, &target));
    let mut rng = rand::rng();
    let mut worker = WorkerProcess::start(&broker.brokers, state_dir);
    let mut kills = Vec::new();
    for _ in 0..KILLS {
        // Each kill comes while the worker delivers, not while it starts.
        let before = log.count.load(Ordering::SeqCst);
        support::wait_until("the worker delivering", Duration::from_secs(60), || {
            log.count.load(Ordering::SeqCst) > before
        });
        std::thread::sleep(Duration::from_millis(rng.random_range(500..2_500)));
        worker.assert_running(&worker_log);
        worker.0.kill().unwrap();
        worker.0.wait().unwrap();
        kills.push(Instant::now());
        worker = WorkerProcess::start(&broker.brokers, state_dir);
    }
    producer.join().unwrap();

    // Caught up: every input committed, and every event's delivery committed (the tiers
    // are written in transactions, so their committed offsets stop at the last marker,
    // short of their ends: what is committed there says nothing).
    support::wait_until(
        "the last worker caught up",
        Duration::from_secs(600),
        || {
            worker.assert_running(&worker_log);
            std::thread::sleep(Duration::from_secs(2));
            support::caught_up(&broker.brokers, GROUP, &[INPUT])
                && delivered_events(&broker.brokers).len() == WEBHOOKS
        },
    );
    let _ = Command::new("kill")
        .args(["-TERM", &worker.0.id().to_string()])
        .status();
    let _ = worker.0.wait();

    let requests = log.requests.lock().unwrap().clone();
    let all: HashSet<String> = (0..WEBHOOKS).map(|i| format!("evt-{i:05}")).collect();
    let delivered: HashSet<&String> = requests.iter().filter(|r| r.2).map(|r| &r.1).collect();
    let missing: Vec<&String> = all.iter().filter(|id| !delivered.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} events never got a 2xx: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    for (header, in_body, _, _) in &requests {
        assert_eq!(
            header, in_body,
            "a request carried another event's webhook-id"
        );
    }
    assert!(
        support::read_committed(&broker.brokers, DLQ).is_empty(),
        "an event was dead-lettered"
    );

    let delivered_events = delivered_events(&broker.brokers);
    assert_eq!(
        delivered_events.len(),
        WEBHOOKS,
        "a delivered attempt event per event"
    );
    let twice: Vec<_> = delivered_events.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "delivered twice in read_committed: {twice:?}"
    );
    for tier in &tiers {
        let mut seen = HashSet::new();
        for record in support::read_committed(&broker.brokers, tier) {
            let id = record.headers["webhook-id"].clone();
            assert!(
                seen.insert(id.clone()),
                "{id} is on {tier} twice in read_committed"
            );
        }
    }
    // A repeated 2xx is a repeat of an attempt whose outcome a kill kept from its commit.
    let mut first_2xx: HashMap<&String, Instant> = HashMap::new();
    let mut repeated = HashSet::new();
    for (_, id, ok, at) in &requests {
        if !*ok {
            continue;
        }
        match first_2xx.entry(id) {
            std::collections::hash_map::Entry::Occupied(_) => {
                repeated.insert(id);
            }
            std::collections::hash_map::Entry::Vacant(first) => {
                first.insert(*at);
            }
        }
    }
    let mut longest = Duration::ZERO;
    for id in &repeated {
        let at = first_2xx[id];
        let before_kill = kills
            .iter()
            .filter(|kill| **kill >= at)
            .map(|kill| *kill - at)
            .min();
        assert!(
            before_kill.is_some_and(|gap| gap <= UNCOMMITTED_WINDOW),
            "{id} got a second 2xx, but its first came {before_kill:?} before the next kill"
        );
        longest = longest.max(before_kill.unwrap_or_default());
    }
    let repeats = requests.len() - all.len() - requests.iter().filter(|r| !r.2).count();
    eprintln!(
        "{WEBHOOKS} webhooks, {KILLS} kills: {} requests, {} answered 500, {repeats} repeats of a 2xx or in-flight attempt, {} events answered 2xx twice (the first at most {longest:?} before a kill)",
        requests.len(),
        requests.iter().filter(|r| !r.2).count(),
        repeated.len()
    );
}
