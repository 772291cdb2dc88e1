//! Async calls under SIGKILL: a `map_async` operator calling a real HTTP service while its
//! worker process is killed again and again, on a real Kafka-protocol broker.
//!
//! The test process runs a small HTTP service (axum, on 127.0.0.1) that answers each
//! request after a random 1–20 ms and logs every call: the input it was asked about and
//! the `Idempotency-Key` header it got. A worker process runs a topology whose one
//! `map_async` operator (capacity 100 per task) asks the service about every input and
//! writes its answer. 100,000 inputs over 8 partitions (keys from a set of 1,000) arrive
//! for about 75 s while the worker is SIGKILLed 12 times, each at a random moment 1.5–6 s
//! into a worker's processing, with calls in flight; a last worker then finishes. The
//! inputs carry no `event-id` header, so the idempotency key is the one the engine derives
//! from the input's topic, partition and offset. It shows, under exactly_once_v2:
//!
//! * the read_committed output holds every input exactly once, with the service's answer,
//!   in the input partition's order (default) or in order within each key
//!   ([`AsyncOptions::key_ordered`], where keys do overtake each other);
//! * every input was called for; an input called more than once was called again only
//!   after a kill that came after its earlier call, while its output was not yet
//!   committed, and every call for it carried the same idempotency key (and no other
//!   input's); no call came for an input whose output was already committed.
//!
//! The worker is this test binary run again: `async_worker_child` is a test that returns
//! at once unless `SLUICE_ASYNC_WORKER` is set, and then runs the topology until it is
//! killed (or stopped by SIGTERM). So the topology lives in the test, not in the CLI.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use rand::Rng;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sluice_engine::operators::AsyncOptions;
use sluice_engine::{ProcessError, Serdes, Topology, TopologyBuilder};
use sluice_runtime::{ConfigBuilder, Worker};
use sluice_topologies::demo::send_waiting;
use support::TestBroker;

const INPUT_TOPIC: &str = "async-calls.in";
const OUTPUT_TOPIC: &str = "async-calls.out";
const INPUTS: usize = 100_000;
const PARTITIONS: i32 = 8;
/// Few enough keys that each repeats ~100 times within its partition, so that key order
/// is a real constraint.
const KEYS: u32 = 1_000;
/// Inputs of a task in flight at once: at ~170 inputs/s per partition and ~10 ms a call
/// there is nearly always one in flight, and a restarted worker catching up fills it.
const CAPACITY: usize = 100;
const KILLS: usize = 12;
/// How long the inputs take to arrive: longer than 12 kills 1.5–6 s apart, so every kill
/// comes while records flow.
const PRODUCE_FOR: Duration = Duration::from_secs(75);
const COMMIT_INTERVAL_MS: &str = "500";
const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Set (to the order mode) in the environment of a worker child.
const CHILD_TRIGGER: &str = "SLUICE_ASYNC_WORKER";
/// How long after a worker's death a request it sent may still reach the service's
/// handler (bytes already in the socket). Far shorter than a worker's start, so no call of
/// the next worker falls inside it.
const DEATH_SLACK: Duration = Duration::from_millis(200);
/// The last worker normally catches up within a second or two of the last input.
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(120);
const WORKER_START_DEADLINE: Duration = Duration::from_secs(60);
/// Kills that must find a worker with calls in flight or results not yet committed (seen
/// as inputs called again after them). Every kill should; the margin is for a kill that
/// lands in the instant after a commit, before the next call.
const MIN_KILLS_HITTING_CALLS: usize = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    Input,
    Key,
}

impl Order {
    fn as_str(self) -> &'static str {
        match self {
            Order::Input => "input",
            Order::Key => "key",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "input" => Order::Input,
            "key" => Order::Key,
            other => panic!("{CHILD_TRIGGER}={other}: expected `input` or `key`"),
        }
    }
}

#[test]
fn input_ordered_calls_survive_kill_9s_exactly_once_in_partition_order() {
    run_with_kills(Order::Input);
}

#[test]
fn key_ordered_calls_survive_kill_9s_exactly_once_in_key_order() {
    run_with_kills(Order::Key);
}

/// The worker process of the tests above; returns at once in a normal test run.
#[test]
fn async_worker_child() {
    if let Ok(order) = std::env::var(CHILD_TRIGGER) {
        run_worker(Order::parse(&order));
    }
}

// ---------------------------------------------------------------------------------------
// The worker child

/// The service's answer about an input: what the topology writes as its output.
fn answer_for(input: &str) -> String {
    format!("answered:{input}")
}

/// The topology under test: each input's value is sent to the service, with the call's
/// idempotency key; the answer replaces the value.
fn topology(order: Order, service_url: &str) -> Topology {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("a reqwest client");
    let url: Arc<str> = Arc::from(service_url);
    let mut options = AsyncOptions::new()
        .capacity(CAPACITY)
        .timeout(Duration::from_secs(10));
    if order == Order::Key {
        options = options.key_ordered();
    }
    let builder = TopologyBuilder::new("async-calls");
    builder
        .source("in", &[INPUT_TOPIC], Serdes::string(), Serdes::string())
        .map_async("ask-service", options, move |record, call| {
            let request = client
                .post(&*url)
                .header(IDEMPOTENCY_HEADER, call.idempotency_key())
                .body(record.value.clone());
            async move {
                // The service down or failing is not the record's fault: transient, so the
                // engine retries and never dead-letters.
                let unavailable =
                    |e: reqwest::Error| ProcessError::unavailable(format!("the service: {e}"));
                let response = request
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(unavailable)?;
                let answer = response.text().await.map_err(unavailable)?;
                Ok(record.with_value(answer))
            }
        })
        .to("out", OUTPUT_TOPIC, Serdes::string(), Serdes::string());
    builder.build().expect("the topology builds")
}

/// Runs the topology until SIGKILL, or SIGTERM (a graceful stop), or the test that
/// started it is gone.
fn run_worker(order: Order) {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .try_init();
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| panic!("{name} is set for a worker child"))
    };
    let mut config = ConfigBuilder::new();
    config
        .set("application.id", var("ASYNC_WORKER_GROUP"), "test")
        .set("bootstrap.servers", var("ASYNC_WORKER_BROKERS"), "test")
        .set("state.dir", var("ASYNC_WORKER_STATE_DIR"), "test")
        .set("processing.guarantee", "exactly_once_v2", "test")
        // A restarted worker takes its killed predecessor's place at once.
        .set("static.membership", "true", "test")
        .set("commit.interval.ms", COMMIT_INTERVAL_MS, "test");
    for (key, value) in support::base_settings() {
        config.set(key, value, "test");
    }
    let config = config.build().expect("the worker's configuration is valid");
    let worker = Worker::start(topology(order, &var("ASYNC_WORKER_SERVICE")), config)
        .expect("the worker starts");
    signal_hook::flag::register(signal_hook::consts::SIGTERM, worker.stop_flag())
        .expect("a SIGTERM handler");
    let parent = std::os::unix::process::parent_id();
    let mut last_report = Instant::now();
    while !worker.any_thread_finished() {
        // A test that failed and went away leaves no worker behind.
        if std::os::unix::process::parent_id() != parent {
            std::process::exit(3);
        }
        // Progress in the log, for a failure's diagnosis.
        if last_report.elapsed() >= Duration::from_secs(5) {
            let stats = worker.stats();
            let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            log::info!(
                "consumed {}, committed {}, produced {}, commits {}, aborts {}",
                get(&stats.consumed),
                get(&stats.committed),
                get(&stats.produced),
                get(&stats.commits),
                get(&stats.aborts)
            );
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    worker.join().expect("the worker stops cleanly");
}

/// What a worker child needs to know.
struct WorkerSpec {
    order: Order,
    brokers: String,
    service_url: String,
    group: String,
    state_dir: PathBuf,
}

/// A worker child, killed and reaped if the test ends early.
struct WorkerProcess(Child);

impl WorkerProcess {
    /// Starts this test binary as a worker; its log is appended to `<state_dir>/worker.log`.
    fn start(spec: &WorkerSpec) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(spec.state_dir.join("worker.log"))
            .unwrap();
        let child = Command::new(std::env::current_exe().expect("the test binary's path"))
            .args(["async_worker_child", "--exact", "--nocapture"])
            .env(CHILD_TRIGGER, spec.order.as_str())
            .env("ASYNC_WORKER_BROKERS", &spec.brokers)
            .env("ASYNC_WORKER_SERVICE", &spec.service_url)
            .env("ASYNC_WORKER_GROUP", &spec.group)
            .env("ASYNC_WORKER_STATE_DIR", &spec.state_dir)
            .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the test binary starts as a worker");
        Self(child)
    }

    /// Panics, with the end of the log, if the worker exited by itself.
    fn assert_running(&mut self, log: &Path) {
        if let Some(status) = self.0.try_wait().unwrap() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            panic!(
                "the worker exited on its own ({status}); last log lines, newest first:\n{}",
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

// ---------------------------------------------------------------------------------------
// The service

/// One request the service got.
struct ServiceCall {
    at: Instant,
    key: Option<String>,
    input: String,
}

#[derive(Default)]
struct CallLog {
    calls: Mutex<Vec<ServiceCall>>,
    in_flight: AtomicUsize,
}

/// Counts a request in flight until its handler ends or is dropped (the client gone).
struct InFlightGuard(Arc<CallLog>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn answer(State(log): State<Arc<CallLog>>, headers: HeaderMap, input: String) -> String {
    log.in_flight.fetch_add(1, Ordering::SeqCst);
    let _guard = InFlightGuard(log.clone());
    let key = headers
        .get(IDEMPOTENCY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    log.calls.lock().unwrap().push(ServiceCall {
        at: Instant::now(),
        key,
        input: input.clone(),
    });
    let pause = rand::rng().random_range(1..=20);
    tokio::time::sleep(Duration::from_millis(pause)).await;
    answer_for(&input)
}

/// The HTTP service, on a runtime of its own in the test process.
struct Service {
    url: String,
    log: Arc<CallLog>,
    _runtime: tokio::runtime::Runtime,
}

impl Service {
    /// Waits until the service gets a call made after `after` (and after the requests of a
    /// worker killed just before it could still arrive): the worker is processing.
    fn wait_for_call_after(&self, after: Instant, worker: &mut WorkerProcess, log: &Path) {
        let deadline = after + WORKER_START_DEADLINE;
        loop {
            let last = self.log.calls.lock().unwrap().last().map(|c| c.at);
            if last.is_some_and(|at| at > after + DEATH_SLACK) {
                return;
            }
            worker.assert_running(log);
            assert!(
                Instant::now() < deadline,
                "a worker made no call within {WORKER_START_DEADLINE:?} of its start; worker log {}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let log = Arc::new(CallLog::default());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("a free loopback port");
        let url = format!("http://{}/answer", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/answer", post(answer))
            .with_state(log.clone());
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            log,
            _runtime: runtime,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Inputs, and the output watched while the test runs

/// Writes the inputs, paced over [`PRODUCE_FOR`]: a random key of [`KEYS`], the sequence
/// number as the value.
fn produce(brokers: &str) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "10")
        .set("queue.buffering.max.messages", "200000")
        // Java's partitioner, as the worker's producer has: an output (same key) lands in
        // the partition number of its input, so one output partition holds all of an
        // input partition's outputs and their order can be checked whole.
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    let mut rng = rand::rng();
    let started = Instant::now();
    for seq in 0..INPUTS {
        let key = format!("k{:03}", rng.random_range(0..KEYS));
        send_waiting(&producer, INPUT_TOPIC, &key, seq.to_string().as_bytes());
        let due = started + PRODUCE_FOR.mul_f64((seq + 1) as f64 / INPUTS as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// The sequence number an output's value answers about.
fn answered_seq(value: &[u8]) -> Option<usize> {
    std::str::from_utf8(value)
        .ok()?
        .strip_prefix("answered:")?
        .parse()
        .ok()
        .filter(|seq| *seq < INPUTS)
}

/// Reads the output read_committed while the test runs: when each input's output was
/// first seen committed.
struct Observer {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<HashMap<usize, Instant>>>,
    thread: JoinHandle<()>,
}

impl Observer {
    fn start(brokers: &str) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("observer-{}", uuid::Uuid::new_v4()))
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut assignment = TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            assignment
                .add_partition_offset(OUTPUT_TOPIC, partition, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&assignment).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let thread = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else {
                        continue;
                    };
                    let now = Instant::now();
                    if let Some(seq) = message.payload().and_then(answered_seq) {
                        seen.lock().unwrap().entry(seq).or_insert(now);
                    }
                }
            })
        };
        Self { stop, seen, thread }
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn finish(self) -> HashMap<usize, Instant> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        Arc::try_unwrap(self.seen).unwrap().into_inner().unwrap()
    }
}

// ---------------------------------------------------------------------------------------
// The run

/// One SIGKILL of a worker.
struct Kill {
    /// Just before the signal.
    started: Instant,
    /// Once the killed worker was reaped.
    ended: Instant,
    /// Whether the producer was still writing inputs.
    records_flowing: bool,
    /// Requests the service was handling at that moment.
    calls_in_flight: usize,
}

/// One input, as read back from its topic.
struct Input {
    key: String,
    partition: i32,
    offset: i64,
}

fn run_with_kills(order: Order) {
    let test_started = Instant::now();
    let broker = TestBroker::start();
    broker.create_topics(&[INPUT_TOPIC, OUTPUT_TOPIC], PARTITIONS);
    let service = Service::start();
    let state_dir =
        std::env::temp_dir().join(format!("sluice-async-kill-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&state_dir).unwrap();
    let log = state_dir.join("worker.log");
    eprintln!("{order:?} order: worker log {}", log.display());
    let spec = WorkerSpec {
        order,
        brokers: broker.brokers.clone(),
        service_url: service.url.clone(),
        group: format!("async-calls-{}", order.as_str()),
        state_dir: state_dir.clone(),
    };
    let observer = Observer::start(&broker.brokers);

    let brokers = broker.brokers.clone();
    let producer = std::thread::spawn(move || produce(&brokers));
    let mut rng = rand::rng();
    let mut worker = WorkerProcess::start(&spec);
    let mut kills = Vec::new();
    for _ in 0..KILLS {
        // Each kill comes at a random moment of a worker's processing, not of its start:
        // a worker killed before its first call would test nothing.
        service.wait_for_call_after(Instant::now(), &mut worker, &log);
        std::thread::sleep(Duration::from_millis(rng.random_range(1_500..6_000)));
        worker.assert_running(&log);
        let records_flowing = !producer.is_finished();
        let calls_in_flight = service.log.in_flight.load(Ordering::SeqCst);
        let started = Instant::now();
        worker.0.kill().expect("SIGKILL the worker");
        worker.0.wait().unwrap();
        kills.push(Kill {
            started,
            ended: Instant::now(),
            records_flowing,
            calls_in_flight,
        });
        worker = WorkerProcess::start(&spec);
    }
    producer.join().expect("the producer wrote every input");
    let produced_at = test_started.elapsed();

    // The last worker catches up: every input offset committed, and with it (one
    // transaction) every output.
    let deadline = Instant::now() + CATCH_UP_DEADLINE;
    while !support::caught_up(&broker.brokers, &spec.group, &[INPUT_TOPIC]) {
        worker.assert_running(&log);
        if Instant::now() > deadline {
            let seen = observer.count();
            panic!(
                "the last worker did not catch up within {CATCH_UP_DEADLINE:?}: {seen} of \
                 {INPUTS} outputs committed ({} missing); input partitions whose committed \
                 offset stops short of their end: {:?}; worker log {}",
                INPUTS - seen,
                partitions_behind(&broker.brokers, &spec.group),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let caught_up_at = test_started.elapsed();
    let status = Command::new("kill")
        .args(["-TERM", &worker.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "SIGTERM sent to the last worker");
    let status = worker.0.wait().unwrap();
    assert!(
        status.success(),
        "the last worker stops cleanly on SIGTERM: {status}; worker log {}",
        log.display()
    );

    let inputs = read_inputs(&broker.brokers);
    let outputs = support::read_committed(&broker.brokers, OUTPUT_TOPIC);
    // The observer, reading alongside, sees the last commits a moment later.
    let deadline = Instant::now() + Duration::from_secs(30);
    while observer.count() < INPUTS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let visible = observer.finish();
    let calls = std::mem::take(&mut *service.log.calls.lock().unwrap());

    let flowing = kills.iter().filter(|k| k.records_flowing).count();
    assert!(
        flowing >= 10,
        "at least 10 kills hit a worker while records flowed: {flowing} of {KILLS} did"
    );
    let overtakes = check_outputs(order, &inputs, &outputs, &broker.brokers);
    // Without every output's commit time, the check of calls after a commit would be empty.
    assert_eq!(
        visible.len(),
        INPUTS,
        "the observer saw every input's output committed while the test ran"
    );
    let report = check_calls(&calls, &visible, &kills, test_started);
    eprintln!(
        "{order:?} order: {KILLS} kills ({flowing} while records flowed; calls in flight at each: {:?}); \
         inputs written by {:.0} s, all committed by {:.0} s; {} outputs, {overtakes} overtaking another key's; \
         {} calls for {INPUTS} inputs; {} inputs called more than once (at most {} could be: called, not yet \
         visibly committed, at a kill); repeats after each kill: {:?}",
        kills.iter().map(|k| k.calls_in_flight).collect::<Vec<_>>(),
        produced_at.as_secs_f64(),
        caught_up_at.as_secs_f64(),
        outputs.len(),
        calls.len(),
        report.repeated,
        report.at_risk,
        report.repeats_per_kill,
    );
    // Kept only when the test fails: the worker log is tens of MB (the test broker's fetch
    // replies make librdkafka log a protocol error per partition and fetch).
    let _ = std::fs::remove_dir_all(&state_dir);
}

/// The input partitions whose committed offset is short of their end, with the offset's
/// metadata (where the engine lists inputs done ahead of one in flight).
fn partitions_behind(brokers: &str, group: &str) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut partitions = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        partitions.add_partition(INPUT_TOPIC, partition);
    }
    let committed = match consumer.committed_offsets(partitions, Duration::from_secs(10)) {
        Ok(committed) => committed,
        Err(e) => return vec![format!("the committed offsets could not be read: {e}")],
    };
    committed
        .elements()
        .iter()
        .filter_map(|e| {
            let (_, end) = consumer
                .fetch_watermarks(INPUT_TOPIC, e.partition(), Duration::from_secs(10))
                .ok()?;
            let at = match e.offset() {
                Offset::Offset(o) => o,
                _ => -1,
            };
            (at < end).then(|| {
                format!(
                    "partition {} at {at} of {end} (metadata {:?})",
                    e.partition(),
                    e.metadata()
                )
            })
        })
        .collect()
}

/// The inputs as written, indexed by sequence number.
fn read_inputs(brokers: &str) -> Vec<Input> {
    let mut inputs: Vec<Option<Input>> = (0..INPUTS).map(|_| None).collect();
    for r in support::read_all(brokers, INPUT_TOPIC, "read_uncommitted") {
        let seq: usize = std::str::from_utf8(r.value.as_deref().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        let previous = inputs[seq].replace(Input {
            key: r.key.unwrap(),
            partition: r.partition,
            offset: r.offset,
        });
        assert!(previous.is_none(), "input {seq} was written once");
    }
    let written = inputs.iter().filter(|i| i.is_some()).count();
    assert_eq!(written, INPUTS, "every input is in its topic");
    inputs.into_iter().map(Option::unwrap).collect()
}

/// A few examples from a list, for failure messages.
fn first<T: std::fmt::Debug>(items: &[T]) -> String {
    format!("{:?}", &items[..items.len().min(5)])
}

/// Checks the read_committed output: every input exactly once, with the service's answer,
/// under its own key and in its input's partition, in order. Returns how many outputs came
/// before an earlier input of their partition (another key's, in key order).
fn check_outputs(
    order: Order,
    inputs: &[Input],
    outputs: &[support::ReadBack],
    brokers: &str,
) -> usize {
    let mut outputs: Vec<&support::ReadBack> = outputs.iter().collect();
    outputs.sort_by_key(|o| (o.partition, o.offset));
    let mut times = vec![0u32; INPUTS];
    let mut unknown = Vec::new();
    let mut moved = Vec::new();
    let mut answered: Vec<(&support::ReadBack, usize)> = Vec::new();
    for o in outputs {
        let Some(seq) = o.value.as_deref().and_then(answered_seq) else {
            unknown.push(String::from_utf8_lossy(
                o.value.as_deref().unwrap_or_default(),
            ));
            continue;
        };
        times[seq] += 1;
        let input = &inputs[seq];
        if o.key.as_deref() != Some(input.key.as_str()) || o.partition != input.partition {
            moved.push((seq, o.key.clone(), o.partition, input.partition));
        }
        answered.push((o, seq));
    }
    assert!(
        unknown.is_empty(),
        "{} outputs are not the service's answer about an input, e.g. {}",
        unknown.len(),
        first(&unknown)
    );
    let missing: Vec<usize> = (0..INPUTS).filter(|s| times[*s] == 0).collect();
    let duplicated: Vec<(usize, u32)> = (0..INPUTS)
        .filter(|s| times[*s] > 1)
        .map(|s| (s, times[s]))
        .collect();
    if !missing.is_empty() || !duplicated.is_empty() {
        let uncommitted = support::read_all(brokers, OUTPUT_TOPIC, "read_uncommitted");
        let anywhere: std::collections::HashSet<usize> = uncommitted
            .iter()
            .filter_map(|r| r.value.as_deref().and_then(answered_seq))
            .collect();
        let in_aborted = missing.iter().filter(|s| anywhere.contains(s)).count();
        panic!(
            "exactly once broken in read_committed output: {} of {INPUTS} inputs missing \
             ({in_aborted} of them only in aborted transactions), e.g. {}; {} duplicated \
             (input, times), e.g. {}",
            missing.len(),
            first(&missing),
            duplicated.len(),
            first(&duplicated)
        );
    }
    assert!(
        moved.is_empty(),
        "{} outputs did not keep their input's key and partition (both producers use Java's \
         partitioner over 8 partitions), e.g. (input, key, partition, input's partition) {}",
        moved.len(),
        first(&moved)
    );

    // Outputs are in their input's partition (checked above), so each output partition,
    // in offset order, is its input partition's outputs in the order they were committed.
    let mut last_of_partition: HashMap<i32, i64> = HashMap::new();
    let mut last_of_key: HashMap<&str, i64> = HashMap::new();
    let mut overtakes = Vec::new();
    let mut key_inversions = Vec::new();
    for (o, seq) in answered {
        let input = &inputs[seq];
        if let Some(before) = last_of_partition.insert(o.partition, input.offset)
            && before > input.offset
        {
            overtakes.push((o.partition, before, input.offset));
        }
        if let Some(before) = last_of_key.insert(&input.key, input.offset)
            && before > input.offset
        {
            key_inversions.push((input.key.clone(), before, input.offset));
        }
    }
    assert!(
        key_inversions.is_empty(),
        "{} outputs came after a later input of their key, e.g. (key, input offset written \
         before, input offset) {}",
        key_inversions.len(),
        first(&key_inversions)
    );
    match order {
        Order::Input => assert!(
            overtakes.is_empty(),
            "input order: {} outputs came after a later input of their partition, e.g. \
             (partition, input offset written before, input offset) {}",
            overtakes.len(),
            first(&overtakes)
        ),
        // With calls of 1–20 ms at random, keys overtake each other all the time; none
        // doing so would mean the key-ordered mode was not in effect.
        Order::Key => assert!(
            !overtakes.is_empty(),
            "key order: no output overtook another key's in {INPUTS} inputs"
        ),
    }
    overtakes.len()
}

/// What the service's call log showed.
struct CallReport {
    /// Inputs called more than once.
    repeated: usize,
    /// Inputs that could have been called again: called before a kill and not yet seen
    /// committed when it came.
    at_risk: usize,
    /// For each kill, the inputs called again after it.
    repeats_per_kill: Vec<usize>,
}

/// Checks the service's call log against the inputs, the kills and when each output was
/// first seen committed.
fn check_calls(
    calls: &[ServiceCall],
    visible: &HashMap<usize, Instant>,
    kills: &[Kill],
    test_started: Instant,
) -> CallReport {
    let ms = |t: Instant| t.duration_since(test_started).as_millis();
    let mut by_input: Vec<Vec<(Instant, &str)>> = vec![Vec::new(); INPUTS];
    let mut strange = Vec::new();
    for call in calls {
        match (call.input.parse::<usize>(), &call.key) {
            (Ok(seq), Some(key)) if seq < INPUTS => by_input[seq].push((call.at, key)),
            _ => strange.push((call.input.clone(), call.key.clone())),
        }
    }
    assert!(
        strange.is_empty(),
        "{} calls were not about an input or had no idempotency key, e.g. (input, key) {}",
        strange.len(),
        first(&strange)
    );
    for input_calls in &mut by_input {
        input_calls.sort_by_key(|(at, _)| *at);
    }

    // (1) Every input was called for.
    let never: Vec<usize> = (0..INPUTS).filter(|s| by_input[*s].is_empty()).collect();
    assert!(
        never.is_empty(),
        "{} of {INPUTS} inputs were never called for, e.g. {}",
        never.len(),
        first(&never)
    );

    // (2) One idempotency key per input, every time, and no input shares another's.
    let mut owner: HashMap<&str, usize> = HashMap::new();
    let mut changed = Vec::new();
    let mut shared = Vec::new();
    for (seq, input_calls) in by_input.iter().enumerate() {
        let key = input_calls[0].1;
        if input_calls.iter().any(|(_, k)| *k != key) {
            let keys: Vec<&str> = input_calls.iter().map(|(_, k)| *k).collect();
            changed.push((seq, keys));
        }
        if let Some(other) = owner.insert(key, seq) {
            shared.push((key.to_string(), other, seq));
        }
    }
    assert!(
        changed.is_empty(),
        "{} inputs called more than once got different idempotency keys, e.g. {}",
        changed.len(),
        first(&changed)
    );
    assert!(
        shared.is_empty(),
        "{} idempotency keys were sent for two inputs, e.g. (key, input, input) {}",
        shared.len(),
        first(&shared)
    );

    // (3) A repeat only after a kill: between an input's call and its next one, a worker
    // died (the earlier call was made before the kill's end, give or take requests still
    // in the socket, the later one after its start). A repeat with no kill in between
    // would mean the engine called twice on its own: a rewind, an aborted transaction, or
    // a retry of a failed request (the service never fails, so none is expected).
    let mut unexplained = Vec::new();
    let mut repeats_per_kill = vec![0; kills.len()];
    for (seq, input_calls) in by_input.iter().enumerate() {
        let mut counted = vec![false; kills.len()];
        for pair in input_calls.windows(2) {
            let (earlier, later) = (pair[0].0, pair[1].0);
            let straddling = kills
                .iter()
                .position(|k| earlier < k.ended + DEATH_SLACK && later > k.started);
            match straddling {
                Some(k) if !counted[k] => {
                    counted[k] = true;
                    repeats_per_kill[k] += 1;
                }
                Some(_) => {}
                None => unexplained.push((seq, ms(earlier), ms(later))),
            }
        }
    }
    assert!(
        unexplained.is_empty(),
        "{} repeated calls had no kill between them and the call before (a rewind, an abort \
         or a retry inside one worker), e.g. (input, ms, ms after the start) {}; kills at \
         {:?} ms",
        unexplained.len(),
        first(&unexplained),
        kills.iter().map(|k| ms(k.started)).collect::<Vec<_>>()
    );

    // (4) No call for an input whose output was committed already (as the observer saw it:
    // it sees a commit late, never early, so this misses nothing it claims).
    let late: Vec<(usize, u128, u128)> = by_input
        .iter()
        .enumerate()
        .filter_map(|(seq, input_calls)| {
            let seen = *visible.get(&seq)?;
            let (last, _) = input_calls.last()?;
            (*last > seen).then(|| (seq, ms(seen), ms(*last)))
        })
        .collect();
    assert!(
        late.is_empty(),
        "{} inputs were called for after their output was seen committed, e.g. (input, \
         committed at ms, called at ms) {}",
        late.len(),
        first(&late)
    );

    // (5) How many repeats there were, and the bound they keep. An input can be called
    // again only if a kill found it called but not committed: in flight (at most
    // CAPACITY per task) or done since the last commit. Here that set is measured rather
    // than estimated: called before the kill ended, and not seen committed before it
    // started. (3) and (4) already imply every repeated input is in it; counting it
    // shows how close the repeats come to it.
    let repeated = by_input.iter().filter(|c| c.len() > 1).count();
    let at_risk = by_input
        .iter()
        .enumerate()
        .filter(|(seq, input_calls)| {
            let first_call = input_calls[0].0;
            let seen = visible.get(seq).copied();
            kills.iter().any(|k| {
                first_call < k.ended + DEATH_SLACK && seen.is_none_or(|seen| seen > k.started)
            })
        })
        .count();
    assert!(
        repeated > 0,
        "no input was called twice in {} kills: none hit a call in flight or an uncommitted \
         result",
        kills.len()
    );
    let hitting = repeats_per_kill.iter().filter(|n| **n > 0).count();
    assert!(
        hitting >= MIN_KILLS_HITTING_CALLS,
        "only {hitting} of {} kills were followed by calls made again (repeats after each \
         kill: {repeats_per_kill:?}): the others hit no call in flight nor an uncommitted \
         result",
        kills.len()
    );
    assert!(
        repeated <= at_risk,
        "{repeated} inputs were called more than once, but only {at_risk} were called and \
         uncommitted at a kill"
    );
    CallReport {
        repeated,
        at_risk,
        repeats_per_kill,
    }
}
