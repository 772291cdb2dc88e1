//! The harness's webhook variants: (w) `sluice-webhooks`, the webhooks topology delivering
//! a backlog of webhooks to a fast local endpoint, against (wb) `bare-reqwest`, a bare
//! reqwest loop POSTing the same bodies to the same kind of endpoint at the same
//! concurrency.
//!
//! * The endpoint is an axum server in the variant's own process (one tokio worker
//!   thread), answering every POST 200 at once: what is measured is the cost of delivery,
//!   not of a receiver. Each child runs its own, so both pay for one on the same cores.
//! * (w): the backlog's webhooks name the endpoint by id (`"endpointId": "bench"`); the
//!   child writes the endpoints file that points the id at its endpoint. Exactly-once,
//!   one stream thread, 8 partitions, `webhooks.max.in.flight` 8 a task: 64 deliveries in
//!   flight, the endpoint's concurrency limit 64, no rate limit. Every delivery also
//!   writes its attempt event, in the transaction of the consumed offset.
//! * (wb): 64 tasks on a tokio runtime share one reqwest client and POST the backlog's
//!   bodies, each waiting for its answer before the next: no Kafka at all. It is the
//!   ceiling of HTTP delivery on this machine.
//! * (wa) `sluice-webhooks-alos`: (w) under at-least-once, against (wk)
//!   `bare-kafka-reqwest`: an rdkafka consumer reading the same backlog, each webhook's
//!   payload POSTed (64 in flight, one reqwest client) and an attempt event produced per
//!   answer, offsets committed every 5 s once the deliveries before them are answered. No
//!   engine: wa/wk is what Sluice costs over the same Kafka and HTTP work, where w/wb also
//!   counts the broker, the consumer and the producer, which share these two cores.
//!
//! Latency: with the backlog delivered, 2,000 more webhooks are sent at 1,000 a second,
//! each body carrying its send time; the endpoint takes its arrival time minus that. For
//! (w) the send is a Kafka produce, so the p99 includes the input's commit and fetch; for
//! (wb) it is the POST itself. The difference is the latency Sluice adds.
//!
//! These variants read a backlog of `SLUICE_E2E_CALL_RECORDS` webhooks (default 20,000).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::serve::ListenerExt;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sluice_runtime::{ConfigBuilder, Worker};
use sluice_topologies::demo::send_waiting;
use sluice_topologies::webhooks::{self, WebhooksConfig};

use super::{LATENCY_RATE, LATENCY_RECORDS, Measured, Progress, partitions, peak_rss_mb, quantile};

/// The input of the (w) variant: its own, so the tiers and attempts are its own too.
pub const INPUT_TOPIC: &str = "e2e.webhooks";
/// Deliveries in flight, in both variants.
pub const CONCURRENCY: usize = 64;
/// The endpoint id the backlog names.
const ENDPOINT_ID: &str = "bench";

/// The variants of this module, in table order, with their table letters.
pub const VARIANTS: [(&str, &str); 4] = [
    ("wb", "bare-reqwest"),
    ("w", "sluice-webhooks"),
    ("wk", "bare-kafka-reqwest"),
    ("wa", "sluice-webhooks-alos"),
];

pub fn variants() -> Vec<String> {
    VARIANTS.iter().map(|(_, v)| v.to_string()).collect()
}

pub fn is_webhooks(variant: &str) -> bool {
    VARIANTS.iter().any(|(_, v)| *v == variant)
}

/// The payload of webhook `n`: a 200-byte body like the map variants' records, with the
/// time it was sent (epoch ms) for the latency phase.
fn payload(n: u64, sent_at_ms: i64) -> serde_json::Value {
    let mut filler = String::new();
    while filler.len() < 120 {
        filler.push((b'a' + ((filler.len() as u64 * 7 + n) % 26) as u8) as char);
    }
    serde_json::json!({"seq": n, "sentAt": sent_at_ms, "body": filler})
}

fn webhook(n: u64, sent_at_ms: i64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "endpointId": ENDPOINT_ID,
        "payload": payload(n, sent_at_ms),
        "retryConfig": {"maxRetries": 3},
    }))
    .unwrap()
}

/// Writes the (w) backlog: `records` webhooks, keyed by their number.
pub fn write_backlog(producer: &ThreadedProducer<DefaultProducerContext>, records: u64) {
    for n in 0..records {
        send_waiting(producer, INPUT_TOPIC, &format!("w{n}"), &webhook(n, 0));
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// What the endpoint has seen: deliveries, and the latencies of those sent with a time
/// since the latency phase began.
#[derive(Default)]
struct Seen {
    delivered: AtomicU64,
    /// Epoch ms: the start of this variant's latency phase (0 until then). The input topic
    /// also holds the latency webhooks of the variants before this one, which it delivers
    /// too: they do not count.
    latency_from: std::sync::atomic::AtomicI64,
    latencies_ms: std::sync::Mutex<Vec<i64>>,
}

/// Starts the endpoint on a runtime of its own; returns its URL and what it sees.
fn start_endpoint() -> (String, Arc<Seen>, tokio::runtime::Runtime) {
    let runtime = one_thread_runtime();
    let seen = Arc::new(Seen::default());
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let counted = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let seen = counted.clone();
            async move {
                seen.delivered.fetch_add(1, Ordering::Relaxed);
                let sent_at = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|b| b["sentAt"].as_i64())
                    .unwrap_or(0);
                let from = seen.latency_from.load(Ordering::Relaxed);
                if from > 0 && sent_at >= from {
                    seen.latencies_ms.lock().unwrap().push(now_ms() - sent_at);
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    // Without TCP_NODELAY, delayed ACKs would hold answers back by up to 40 ms.
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen, runtime)
}

/// Runs (w) or (wb) in this child process over a backlog of `records`.
pub fn run_child(variant: &str, brokers: &str, run: u64, records: u64) -> Measured {
    let (url, seen, _endpoint) = start_endpoint();
    let (seconds, running) = match variant {
        "bare-reqwest" => {
            let started = Instant::now();
            post_all(&url, records);
            (started.elapsed().as_secs_f64(), Running::Nothing)
        }
        "bare-kafka-reqwest" => {
            let (seconds, bare) = bare_kafka_loop(brokers, run, records, &url);
            (seconds, Running::BareLoop(bare))
        }
        _ => {
            let guarantee = match variant {
                "sluice-webhooks-alos" => "at_least_once",
                _ => "exactly_once_v2",
            };
            let (seconds, worker) = deliver_backlog(brokers, run, records, &url, guarantee);
            (seconds, Running::Worker(worker))
        }
    };
    let delivered_backlog = seen.delivered.load(Ordering::Relaxed);
    eprintln!("{variant}: {records} webhooks in {seconds:.1} s; measuring latency");
    seen.latency_from.store(now_ms(), Ordering::Relaxed);
    match running {
        Running::Nothing => post_paced(&url),
        _ => produce_paced(brokers, records),
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while (seen.latencies_ms.lock().unwrap().len() as u64) < LATENCY_RECORDS {
        assert!(
            Instant::now() < deadline,
            "{variant}: latency webhooks not all delivered"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    match running {
        Running::Worker(worker) => {
            worker.stop();
            worker.join().unwrap();
        }
        Running::BareLoop((stop, handle)) => {
            stop.store(true, Ordering::Relaxed);
            handle.join().unwrap();
        }
        Running::Nothing => {}
    }
    let mut latencies = seen.latencies_ms.lock().unwrap().clone();
    latencies.sort_unstable();
    Measured {
        records,
        seconds,
        bytes: records * 200,
        p50_ms: quantile(&latencies, 0.50),
        p99_ms: quantile(&latencies, 0.99),
        peak_rss_mb: peak_rss_mb(),
        outputs: delivered_backlog,
        lookup_p99_ms: 0.0,
        // Not measured: the work is in another process (Quix) or in HTTP calls (webhooks).
        cpu: Default::default(),
    }
}

/// What keeps delivering through the latency phase.
enum Running {
    Nothing,
    Worker(Worker),
    BareLoop((Arc<AtomicBool>, std::thread::JoinHandle<()>)),
}

/// (wk): the bare Kafka loop on a thread of its own until stopped; returns the seconds from
/// its first record consumed to its `records`th answer, and how to stop it.
fn bare_kafka_loop(
    brokers: &str,
    run: u64,
    records: u64,
    url: &str,
) -> (f64, (Arc<AtomicBool>, std::thread::JoinHandle<()>)) {
    let progress = Arc::new(Progress::default());
    let stop = Arc::new(AtomicBool::new(false));
    let handle = {
        let (brokers, url) = (brokers.to_string(), url.to_string());
        let (progress, stop) = (progress.clone(), stop.clone());
        std::thread::spawn(move || deliver_bare(&brokers, run, &url, &progress, &stop))
    };
    let deadline = Instant::now() + Duration::from_secs(3600);
    while progress.consumed.load(Ordering::Relaxed) < records {
        assert!(
            Instant::now() < deadline,
            "bare-kafka-reqwest took over an hour"
        );
        assert!(!handle.is_finished(), "bare-kafka-reqwest stopped early");
        std::thread::sleep(Duration::from_millis(2));
    }
    (progress.seconds(false), (stop, handle))
}

/// The loop of (wk). `progress` counts answers as consumed, and commits.
fn deliver_bare(brokers: &str, run: u64, url: &str, progress: &Progress, stop: &AtomicBool) {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("e2e-bare-kafka-reqwest-{run}"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[INPUT_TOPIC]).unwrap();
    let producer: Arc<ThreadedProducer<DefaultProducerContext>> = Arc::new(
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "5")
            .set("enable.idempotence", "true")
            .create()
            .unwrap(),
    );
    let attempts = format!("e2e.bare-kafka-reqwest.attempts.{run}");
    let runtime = one_thread_runtime();
    let client = client();
    let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let answered = Arc::new(AtomicU64::new(0));
    let mut offsets: HashMap<i32, i64> = HashMap::new();
    let mut last_commit = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if let Some(message) = consumer.poll(Duration::from_millis(20)) {
            let message = message.unwrap();
            let webhook: serde_json::Value =
                serde_json::from_slice(message.payload().unwrap_or_default()).unwrap();
            let body = serde_json::to_vec(&webhook["payload"]).unwrap();
            let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
            let permit = runtime.block_on(permits.clone().acquire_owned()).unwrap();
            let (client, url, producer) = (client.clone(), url.to_string(), producer.clone());
            let (attempts, answered) = (attempts.clone(), answered.clone());
            runtime.spawn(async move {
                let started = Instant::now();
                let answer = client.post(&url).body(body).send().await.unwrap();
                let event = serde_json::json!({"webhookId": key, "status": answer.status().as_u16(),
                    "latencyMs": started.elapsed().as_millis() as u64});
                send_waiting(
                    &producer,
                    &attempts,
                    &key,
                    &serde_json::to_vec(&event).unwrap(),
                );
                answered.fetch_add(1, Ordering::Relaxed);
                drop(permit);
            });
            offsets.insert(message.partition(), message.offset() + 1);
        }
        progress.observe(answered.load(Ordering::Relaxed), 0);
        if last_commit.elapsed() >= Duration::from_secs(5) && !offsets.is_empty() {
            // At-least-once: an offset is committed once every delivery before it answered.
            let all = runtime
                .block_on(permits.acquire_many(CONCURRENCY as u32))
                .unwrap();
            producer.flush(Duration::from_secs(30)).unwrap();
            drop(all);
            let mut committed = TopicPartitionList::new();
            for (partition, offset) in offsets.drain() {
                committed
                    .add_partition_offset(INPUT_TOPIC, partition, Offset::Offset(offset))
                    .unwrap();
            }
            consumer.commit(&committed, CommitMode::Sync).unwrap();
            last_commit = Instant::now();
        }
    }
}

/// Waits until the `n`th paced send is due, at [`LATENCY_RATE`] a second.
fn pace(started: Instant, n: u64) {
    let due = started + Duration::from_secs_f64((n + 1) as f64 / LATENCY_RATE);
    if let Some(wait) = due.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
}

/// A runtime of one worker thread: the endpoint's, and the bare loop's.
fn one_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .unwrap()
}

/// (wb): the backlog's bodies, [`CONCURRENCY`] POSTs at a time.
fn post_all(url: &str, records: u64) {
    let runtime = one_thread_runtime();
    let client = client();
    let next = Arc::new(AtomicU64::new(0));
    runtime.block_on(async {
        let mut posters = tokio::task::JoinSet::new();
        for _ in 0..CONCURRENCY {
            let (client, next, url) = (client.clone(), next.clone(), url.to_string());
            posters.spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= records {
                        break;
                    }
                    let body = serde_json::to_vec(&payload(n, 0)).unwrap();
                    let answer = client.post(&url).body(body).send().await.unwrap();
                    assert!(answer.status().is_success());
                }
            });
        }
        while let Some(done) = posters.join_next().await {
            done.unwrap();
        }
    });
}

/// (wb)'s latency phase: one POST every millisecond, each on its own task.
fn post_paced(url: &str) {
    let runtime = one_thread_runtime();
    let client = client();
    let started = Instant::now();
    let mut posts = Vec::new();
    for n in 0..LATENCY_RECORDS {
        let body = serde_json::to_vec(&payload(n, now_ms())).unwrap();
        posts.push(runtime.spawn(client.post(url).body(body).send()));
        pace(started, n);
    }
    for post in posts {
        runtime.block_on(post).unwrap().unwrap();
    }
}

/// (w)'s latency phase: a webhook produced every millisecond, numbered after the backlog.
fn produce_paced(brokers: &str, records: u64) {
    let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "0")
        .create()
        .unwrap();
    let started = Instant::now();
    for n in 0..LATENCY_RECORDS {
        let value = webhook(records + n, now_ms());
        send_waiting(&producer, INPUT_TOPIC, &format!("lat{n}"), &value);
        pace(started, n);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// (w): runs the webhooks worker until the backlog's offsets are committed; returns the
/// seconds from the first record consumed to the last commit, and the running worker.
fn deliver_backlog(
    brokers: &str,
    run: u64,
    records: u64,
    url: &str,
    guarantee: &str,
) -> (f64, Worker) {
    let application_id = format!("e2e-sluice-webhooks-{guarantee}-{run}");
    let dir = std::env::temp_dir().join(format!("sluice-e2e-{application_id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let endpoints = dir.join("endpoints.json");
    std::fs::write(
        &endpoints,
        serde_json::json!({"endpoints": [{"id": ENDPOINT_ID, "url": url}]}).to_string(),
    )
    .unwrap();
    let per_task = (CONCURRENCY / partitions() as usize).to_string();
    let attempts = format!("e2e.webhooks.attempts.{guarantee}.{run}");
    let concurrency = CONCURRENCY.to_string();
    let config = WebhooksConfig::from_map([
        ("webhooks.input.topic", INPUT_TOPIC),
        ("webhooks.attempts.topic", attempts.as_str()),
        ("webhooks.endpoints.file", endpoints.to_str().unwrap()),
        ("webhooks.allow.cidrs", "127.0.0.1/32"),
        ("webhooks.max.in.flight", per_task.as_str()),
        ("webhooks.endpoint.concurrency", concurrency.as_str()),
        ("webhooks.pool.max.idle.per.endpoint", concurrency.as_str()),
    ])
    .unwrap();
    let worker_config = ConfigBuilder::new()
        .set("application.id", application_id.clone(), "e2e")
        .set("bootstrap.servers", brokers, "e2e")
        .set("processing.guarantee", guarantee, "e2e")
        .set("state.dir", dir.join("state").display().to_string(), "e2e")
        .set("topic.replication.factor", "1", "e2e")
        .set("metrics.address", "off", "e2e")
        .env(std::env::vars().filter(|(k, _)| k.starts_with(sluice_runtime::config::ENV_PREFIX)))
        .build()
        .unwrap();
    let worker = Worker::start(webhooks::topology(config), worker_config).unwrap();
    let stats = worker.stats().clone();
    let progress = Progress::default();
    let deadline = Instant::now() + Duration::from_secs(3600);
    while progress.committed.load(Ordering::Relaxed) < records {
        assert!(
            Instant::now() < deadline,
            "sluice-webhooks took over an hour"
        );
        progress.observe(
            stats.consumed.load(Ordering::Relaxed),
            stats.committed.load(Ordering::Relaxed),
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // Exactly-once to the last commit; at-least-once to the last record processed, as the
    // other variants are timed.
    (progress.seconds(guarantee != "at_least_once"), worker)
}
