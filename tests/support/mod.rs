//! Shared by the integration tests that need a real Kafka-protocol broker.
//!
//! Every test starts its own broker (crabka-broker, installed by `scripts/test.sh`) on a
//! loopback address of its own, so tests never see each other's topics or groups and may
//! run in parallel. The broker stops when the test's [`TestBroker`] is dropped.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers as _, Message};
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sluice_runtime::{ConfigBuilder, WorkerConfig, admin};
use sluice_topologies::demo::send_waiting;
use sluice_topologies::generator::{OrderGenerator, SampleRecord};
use sluice_topologies::normalization::{EHR_TOPIC, PHARMACY_TOPIC};

fn project_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A broker of this test's own, on a loopback address no other test uses.
pub struct TestBroker {
    pub brokers: String,
    host: String,
    /// Dropped after `Drop::drop` has stopped the broker.
    dir: ScratchDir,
}

impl TestBroker {
    pub fn start() -> Self {
        // Spread processes over 127.0.x.y; the controller's fixed port 9093 tells which
        // addresses are taken.
        let first = std::process::id() as usize % 200;
        for attempt in 0..200 {
            let n = (first + attempt) % 200 + 20;
            let host = format!("127.0.{}.{}", n / 250 + 1, n % 250 + 2);
            if TcpListener::bind((host.as_str(), 9093)).is_err() {
                continue;
            }
            let dir = std::env::temp_dir().join(format!("sluice-test-broker-{host}"));
            let out = Command::new("bash")
                .arg(project_dir().join("scripts/broker.sh"))
                .arg("start")
                .env("SLUICE_BROKER_HOST", &host)
                .env("SLUICE_BROKER_DIR", &dir)
                .output()
                .expect("bash runs scripts/broker.sh");
            if out.status.success() {
                let stdout = String::from_utf8_lossy(&out.stdout);
                let brokers = stdout
                    .lines()
                    .find_map(|l| l.strip_prefix("SLUICE_BROKERS="))
                    .expect("broker.sh prints SLUICE_BROKERS=")
                    .trim()
                    .to_string();
                let dir = ScratchDir::at(dir);
                return Self { brokers, host, dir };
            }
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !stderr.contains("not installed") && !stderr.contains("install-broker"),
                "the test broker is not installed: run `bash scripts/test.sh` (it runs scripts/install-broker.sh)\n{stderr}"
            );
        }
        panic!("no free loopback address for a test broker");
    }

    /// Where the broker keeps its log and its own output.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A worker configuration for this broker; `settings` override the defaults.
    pub fn worker_config(
        &self,
        application_id: &str,
        state_dir: &Path,
        settings: &[(&str, &str)],
    ) -> WorkerConfig {
        let mut b = ConfigBuilder::new();
        b.set("application.id", application_id, "test")
            .set("bootstrap.servers", self.brokers.clone(), "test")
            .set("state.dir", state_dir.display().to_string(), "test");
        for (key, value) in base_settings().iter().chain(settings) {
            b.set(key, *value, "test");
        }
        b.build().expect("the test's configuration is valid")
    }

    pub fn create_topics(&self, topics: &[&str], partitions: i32) {
        let config = self.worker_config("admin", &std::env::temp_dir(), &[]);
        let admin = admin::admin_client(&config).unwrap();
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        admin::create_topics(&admin, &topics, partitions, 1, Duration::from_secs(30)).unwrap();
    }
}

impl Drop for TestBroker {
    /// Stops the broker; its log goes with its [`ScratchDir`]: a full test run wrote over
    /// a gigabyte of them to the temporary directory, and the harness's benches several
    /// more. A failing test keeps its broker's log to look at, and says where it is.
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(project_dir().join("scripts/broker.sh"))
            .arg("stop")
            .env("SLUICE_BROKER_HOST", &self.host)
            .env("SLUICE_BROKER_DIR", self.dir.path())
            .output();
    }
}

/// A directory of one test's own under the temporary directory (a worker's state
/// directory, its log), removed with its contents when the test passes. A failing test
/// keeps it to look at, and says where it is. RocksDB state directories are up to 16 MB
/// each; left behind, a full test run leaked about 74 MB.
///
/// No `Deref` to `Path`: `&ScratchDir::new(..)` in an argument would remove the directory
/// at the end of that statement, under a worker still using it. Bind it, pass `.path()`.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates `<temp>/<prefix>-<uuid>`.
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// Takes charge of `dir`, which something else made (a test broker's, by its script).
    pub fn at(dir: PathBuf) -> Self {
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the test's directory is kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Settings every test worker uses: a one-broker cluster, and a short session timeout so
/// that a killed worker's partitions move on within seconds.
pub fn base_settings() -> Vec<(&'static str, &'static str)> {
    vec![
        ("topic.replication.factor", "1"),
        // Tests run in parallel: each worker serves its metrics on a free port.
        ("metrics.address", "127.0.0.1:0"),
        ("startup.timeout.ms", "20000"),
        ("kafka.consumer.session.timeout.ms", "6000"),
        ("kafka.consumer.heartbeat.interval.ms", "1000"),
    ]
}

/// A plain producer of test records.
pub fn producer(brokers: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .unwrap()
}

/// Writes one record and waits until the broker has it.
pub fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    key: &str,
    value: &[u8],
) {
    send_waiting(producer, topic, key, value);
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// What was written to the normalization inputs.
pub struct Inputs {
    pub total: u64,
    /// orderId keys of the well-formed records.
    pub valid_keys: HashSet<String>,
    /// Key of each malformed record -> what its dead-letter reason must contain.
    pub malformed: HashMap<String, &'static str>,
}

/// Writes `orders` generated orders per feed (both feeds), `malformed` of them broken.
pub fn produce_orders(brokers: &str, orders: usize, malformed: f64, seed: u64) -> Inputs {
    produce_orders_paced(brokers, orders, malformed, seed, None)
}

/// Like [`produce_orders`], at most `per_second` records a second when given, so that
/// records keep flowing for a while.
pub fn produce_orders_paced(
    brokers: &str,
    orders: usize,
    malformed: f64,
    seed: u64,
    per_second: Option<u64>,
) -> Inputs {
    let started = Instant::now();
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "10")
        .set("queue.buffering.max.messages", "200000")
        .create()
        .unwrap();
    let mut generator = OrderGenerator::new(seed).with_malformed_ratio(malformed);
    let mut inputs = Inputs {
        total: 0,
        valid_keys: HashSet::new(),
        malformed: HashMap::new(),
    };
    let mut send = |topic: &str, sample: SampleRecord| {
        send_waiting(&producer, topic, &sample.key, &sample.value);
        inputs.total += 1;
        match sample.malformed {
            Some(m) => {
                inputs.malformed.insert(sample.key, m.expected_reason());
            }
            None => {
                assert!(
                    inputs.valid_keys.insert(sample.key),
                    "generated order ids are unique"
                );
            }
        }
    };
    for i in 0..orders as u64 {
        send(EHR_TOPIC, generator.next_ehr());
        send(PHARMACY_TOPIC, generator.next_pharmacy());
        if let Some(rate) = per_second {
            let due = started + Duration::from_secs_f64((2 * (i + 1)) as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    inputs
}

/// One record read back: where it was, its key and its `event-id` header.
pub struct ReadBack {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<Vec<u8>>,
    pub event_id: Option<String>,
    pub headers: HashMap<String, String>,
    /// Milliseconds since the epoch, as the record carries it.
    pub timestamp: Option<i64>,
}

/// Every committed record of `topic` (read_committed), read until each partition's end.
pub fn read_committed(brokers: &str, topic: &str) -> Vec<ReadBack> {
    read_all(brokers, topic, "read_committed")
}

/// Writes one record with `headers` to `partition` (the topic's partitioner's choice when
/// `None`) and waits until the broker has it.
pub fn send_with_headers(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    partition: Option<i32>,
    key: &str,
    value: &[u8],
    headers: &[(&str, &str)],
) {
    let mut owned = rdkafka::message::OwnedHeaders::new();
    for (name, value) in headers {
        owned = owned.insert(rdkafka::message::Header {
            key: name,
            value: Some(*value),
        });
    }
    let mut record = rdkafka::producer::BaseRecord::to(topic)
        .key(key)
        .payload(value)
        .headers(owned);
    if let Some(partition) = partition {
        record = record.partition(partition);
    }
    producer.send(record).map_err(|(e, _)| e).unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Every record of `topic` read with `isolation` (read_committed or read_uncommitted).
pub fn read_all(brokers: &str, topic: &str, isolation: &str) -> Vec<ReadBack> {
    let reader = TopicReader::new(brokers, topic, isolation);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut out = Vec::new();
    loop {
        if let Some(message) = reader.consumer.poll(Duration::from_millis(100)) {
            let m = message.unwrap();
            let headers: HashMap<String, String> = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_string(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(ReadBack {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                value: m.payload().map(<[u8]>::to_vec),
                event_id: headers.get("event-id").cloned(),
                headers,
                timestamp: m.timestamp().to_millis(),
            });
        }
        if reader.at_end() {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "reading {topic} back took over 2 minutes"
        );
    }
}

/// How many committed records `topic` holds (read_committed, to each partition's end),
/// counted, not kept, for topics of millions of records. The position is asked for per
/// 10,000 records and whenever a poll returns nothing, not per record.
pub fn count_committed(brokers: &str, topic: &str, timeout: Duration) -> u64 {
    let reader = TopicReader::new(brokers, topic, "read_committed");
    let deadline = Instant::now() + timeout;
    let mut count = 0_u64;
    loop {
        let polled = reader.consumer.poll(Duration::from_millis(100));
        if let Some(message) = &polled {
            message.as_ref().unwrap();
            count += 1;
        }
        if (polled.is_none() || count.is_multiple_of(10_000)) && reader.at_end() {
            return count;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: {count} records counted in {timeout:?}, not yet at the end"
        );
    }
}

/// A consumer of every partition of a topic from its beginning, and the high watermarks
/// it reads to.
struct TopicReader {
    consumer: BaseConsumer,
    ends: HashMap<i32, i64>,
}

impl TopicReader {
    fn new(brokers: &str, topic: &str, isolation: &str) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("test-reader-{}", uuid::Uuid::new_v4()))
            .set("isolation.level", isolation)
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        let mut assignment = TopicPartitionList::new();
        let mut ends = HashMap::new();
        for p in metadata.topics()[0].partitions() {
            let (_, high) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .unwrap();
            ends.insert(p.id(), high);
            assignment
                .add_partition_offset(topic, p.id(), Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&assignment).unwrap();
        Self { consumer, ends }
    }

    /// Whether the consumer's position has reached every partition's end.
    fn at_end(&self) -> bool {
        let position = self.consumer.position().unwrap();
        position.elements().iter().all(|e| match e.offset() {
            Offset::Offset(o) => o >= self.ends[&e.partition()],
            _ => self.ends[&e.partition()] == 0,
        })
    }
}

/// Whether group `group` has committed every input record of `topics`.
pub fn caught_up(brokers: &str, group: &str, topics: &[&str]) -> bool {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for topic in topics {
        let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) else {
            return false;
        };
        for p in metadata.topics()[0].partitions() {
            let Ok((_, high)) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            else {
                return false;
            };
            ends.insert((topic.to_string(), p.id()), high);
            tpl.add_partition(topic, p.id());
        }
    }
    let Ok(committed) = consumer.committed_offsets(tpl, Duration::from_secs(10)) else {
        return false;
    };
    committed.elements().iter().all(|e| {
        let end = ends[&(e.topic().to_string(), e.partition())];
        match e.offset() {
            Offset::Offset(o) => o >= end,
            _ => end == 0,
        }
    })
}

/// A `sluice run` child process of a test: `topology` on the test broker as
/// `application_id`, with the tests' base settings and the state dir, its log appended to
/// `<state_dir>/worker.log`. Add flags and start it with `spawn`.
pub fn worker_command(
    broker: &TestBroker,
    topology: &str,
    application_id: &str,
    state_dir: &Path,
) -> Command {
    std::fs::create_dir_all(state_dir).unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state_dir.join("worker.log"))
        .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .args(["run", topology, "--brokers", &broker.brokers])
        .args(["--application-id", application_id])
        .args(["--set", &format!("state.dir={}", state_dir.display())]);
    for (key, value) in base_settings() {
        command.args(["--set", &format!("{key}={value}")]);
    }
    command
        .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
        .stdout(std::process::Stdio::null())
        .stderr(log);
    command
}

/// Waits until `condition` holds, polling; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Checks the canonical output against the inputs: every valid order exactly once (by
/// event id and by key), and every malformed input in the dead-letter topic.
/// Returns (outputs, duplicates by event id).
pub fn output_summary(records: &[ReadBack]) -> (usize, usize) {
    let mut seen = HashSet::new();
    let mut duplicates = 0;
    for r in records {
        let id = r
            .event_id
            .clone()
            .expect("every output has an event-id header");
        if !seen.insert(id) {
            duplicates += 1;
        }
    }
    (records.len(), duplicates)
}
