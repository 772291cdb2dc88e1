//! The end-to-end throughput harness: Sluice against bare rdkafka loops on a real
//! Kafka-protocol broker, in the same run.
//!
//! A backlog of N 200-byte records over 8 partitions (by default) is written once; then
//! each variant consumes all of it, applies the same stateless map and writes it to a topic
//! of its own:
//!
//! * (a) `bare-eos`: a consume→produce loop on rdkafka with transactions committed every
//!   100 ms (offsets through `send_offsets_to_transaction`), read_committed; (al)
//!   `bare-eos-lineage`: the same, each output with the three lineage headers, as (bl)
//!   below is to (b);
//! * (b) `bare-alos`: the same loop without transactions, offsets committed after a flush
//!   every 5 s; (bl) `bare-alos-lineage`: the same, each output with the three lineage
//!   headers every Sluice output carries (about 150 bytes), so the broker takes the same
//!   bytes from it as from (d);
//! * (c) `sluice-eos`: a Sluice stateless `map_values` topology under exactly_once_v2
//!   (commit.interval.ms 100);
//! * (d) `sluice-alos`: the same under at_least_once (commit.interval.ms 5000);
//! * (cn) `sluice-eos-no-lineage` and (dn) `sluice-alos-no-lineage`: (c) and (d) writing
//!   through `to_without_lineage`, so their outputs carry no lineage headers and the
//!   broker takes the same bytes from them as from (a) and (b);
//! * (e) `sluice-normalization`: the normalization topology under exactly_once_v2, over a
//!   backlog of N generated EHR and pharmacy orders (their own sizes); (ea)
//!   `sluice-normalization-alos`: the same under at_least_once (commit.interval.ms 5000);
//! * (f) `sluice-calls-<capacity>`: `map_async` calling a local HTTP service that answers
//!   in 5 ms, at capacity 1, 10, 100 and 1000, against 8 × capacity ÷ 5 ms;
//! * (g) `sluice-enrich` and `sluice-enrich-keyed`: `enrich` at about 95% cache hits, in
//!   input and in key order, against (c). See
//!   [`async_calls`] for both.
//! * (h) `sluice-enrichment`: the enrichment topology on canonical orders, reference data
//!   in process behind its caches (over 95% hits), against (e); (hc)
//!   `sluice-enrichment-cold`: the same against MongoDB with caches that keep nothing,
//!   with the lookups' p99. See [`enrichment`].
//! * (w) `sluice-webhooks`: the webhooks topology delivering to a fast local endpoint,
//!   against (wb) `bare-reqwest`, a bare reqwest loop at the same concurrency, with the
//!   p99 latency Sluice adds. See [`webhooks`].
//! * (qe) `quix-normalization-eos` and (qa) `quix-normalization-alos`: the same
//!   normalization written for Quix Streams (`benches/quix/normalize.py`, Python, installed
//!   pinned by `benches/quix/install.sh`, which the harness runs once), against (e) and (ea):
//!   the table ends with Sluice normalization ÷ Quix per guarantee. See [`quix`].
//!
//! Every variant runs as a child process of this one, one stream thread each, so its peak
//! RSS is its own. Throughput is counted from the first record consumed to the commit of
//! the last under exactly-once, and to the processing of the last under at-least-once
//! (whose 5 s commit schedule would otherwise decide the figure); the run still waits for
//! every record to be committed. Then, with the variant caught up, 2,000 records are written at 1,000 a second
//! and read back (read_committed) from the variant's output: their end-to-end latency is
//! the reader's clock minus the input record's timestamp, which every variant keeps.
//!
//! `cargo bench --bench e2e_throughput` runs N = `SLUICE_E2E_RECORDS` (default 1,000,000)
//! `SLUICE_E2E_RUNS` times (default 3), over `SLUICE_E2E_PARTITIONS` partitions (default 8),
//! and prints the medians and the ratios c/a and d/b
//! (and e/qe, ea/qa: Sluice normalization ÷ Quix), each with its ratio in every run and
//! how far the farthest run lies from the median. Every other run takes the variants in
//! reverse order, so a drift over a run favours neither side of a ratio.
//! With `SLUICE_E2E_BASELINE=<path>`, the e2e_throughput bench binary of another build
//! (an earlier commit, say) runs the Sluice variants too, right after this build's, on the
//! same broker and backlog: the table then shows both builds' c/a and d/b side by side.
//! Run as a test (`cargo test --bench e2e_throughput`) it processes 20,000 records once
//! and checks that every variant wrote every record.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "e2e_throughput/async_calls.rs"]
mod async_calls;

#[path = "e2e_throughput/enrichment.rs"]
mod enrichment;

#[path = "e2e_throughput/quix.rs"]
mod quix;
#[path = "e2e_throughput/webhooks.rs"]
mod webhooks;

#[path = "e2e_throughput/bare.rs"]
mod bare;
#[path = "e2e_throughput/cpu.rs"]
mod cpu;
#[path = "e2e_throughput/latency.rs"]
mod latency;
#[path = "e2e_throughput/progress.rs"]
mod progress;
#[path = "e2e_throughput/table.rs"]
mod table;

use bare::bare_loop;
use cpu::{CpuPerRecord, CpuSnapshot};
use latency::measure_latency;
use progress::Progress;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sluice_engine::{Serdes, Topology, TopologyBuilder};
use sluice_runtime::config::ENV_PREFIX;
use sluice_runtime::{BuildContext, BuildError, ConfigBuilder, Worker, admin};
use sluice_topologies::demo::send_waiting;
use sluice_topologies::generator::OrderGenerator;
use sluice_topologies::normalization::{self, EHR_TOPIC, PHARMACY_TOPIC};

/// The allocator the `sluice` binary runs with (see src/main.rs), so every variant measured
/// here, bare loops included, allocates as a worker does.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const INPUT_TOPIC: &str = "e2e.input";
/// Partitions of every input topic: `SLUICE_E2E_PARTITIONS`, 8 unless set. One shows what
/// one stream thread does when nothing is split by partition (fetches, produce batches).
fn partitions() -> i32 {
    static PARTITIONS: OnceLock<i32> = OnceLock::new();
    *PARTITIONS.get_or_init(|| {
        std::env::var("SLUICE_E2E_PARTITIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|p| *p > 0)
            .unwrap_or(8)
    })
}
const VALUE_BYTES: usize = 200;
const LATENCY_RECORDS: u64 = 2_000;
const LATENCY_RATE: f64 = 1_000.0;

const VARIANTS: [&str; 10] = [
    "bare-eos",
    "bare-eos-lineage",
    "bare-alos",
    "bare-alos-lineage",
    "sluice-eos",
    "sluice-alos",
    "sluice-eos-no-lineage",
    "sluice-alos-no-lineage",
    "sluice-normalization",
    "sluice-normalization-alos",
];

/// The table letters of [`VARIANTS`], in order.
const VARIANT_LETTERS: [&str; 10] = ["a", "al", "b", "bl", "c", "d", "cn", "dn", "e", "ea"];

/// Whether a variant runs the normalization topology (Sluice's, under either guarantee).
fn is_sluice_normalization(variant: &str) -> bool {
    variant == "sluice-normalization" || variant == "sluice-normalization-alos"
}

/// The variants a baseline build runs too: those every build has.
const BASELINE_VARIANTS: [&str; 3] = ["sluice-eos", "sluice-alos", "sluice-normalization"];

/// What one variant measured, printed by the child as one line.
#[derive(Clone, Debug, Default)]
struct Measured {
    records: u64,
    seconds: f64,
    bytes: u64,
    p50_ms: f64,
    p99_ms: f64,
    peak_rss_mb: f64,
    outputs: u64,
    /// The p99 of the calls that reached the reference data, for the enrichment variants.
    lookup_p99_ms: f64,
    /// CPU per record while the backlog was processed (0 where not measured).
    cpu: CpuPerRecord,
}

impl Measured {
    fn records_per_second(&self) -> f64 {
        self.records as f64 / self.seconds
    }

    fn megabytes_per_second(&self) -> f64 {
        self.bytes as f64 / self.seconds / 1e6
    }

    fn to_line(&self) -> String {
        format!(
            "E2E-RESULT {} {} {} {} {} {} {} {} {} {} {}",
            self.records,
            self.seconds,
            self.bytes,
            self.p50_ms,
            self.p99_ms,
            self.peak_rss_mb,
            self.outputs,
            self.lookup_p99_ms,
            self.cpu.processing_us,
            self.cpu.clients_us,
            self.cpu.broker_us
        )
    }

    fn from_line(line: &str) -> Option<Self> {
        let f: Vec<&str> = line.strip_prefix("E2E-RESULT ")?.split(' ').collect();
        Some(Self {
            records: f[0].parse().ok()?,
            seconds: f[1].parse().ok()?,
            bytes: f[2].parse().ok()?,
            p50_ms: f[3].parse().ok()?,
            p99_ms: f[4].parse().ok()?,
            peak_rss_mb: f[5].parse().ok()?,
            outputs: f[6].parse().ok()?,
            // Absent from a baseline build that predates it.
            lookup_p99_ms: f.get(7).and_then(|v| v.parse().ok()).unwrap_or(0.0),
            cpu: CpuPerRecord {
                processing_us: f.get(8).and_then(|v| v.parse().ok()).unwrap_or(0.0),
                clients_us: f.get(9).and_then(|v| v.parse().ok()).unwrap_or(0.0),
                broker_us: f.get(10).and_then(|v| v.parse().ok()).unwrap_or(0.0),
            },
        })
    }
}

fn main() {
    if let Ok(variant) = std::env::var("SLUICE_E2E_CHILD") {
        let measured = run_child(&variant);
        println!("{}", measured.to_line());
        return;
    }
    let benching = std::env::args().any(|a| a == "--bench");
    let env_number = |key: &str, default: u64| {
        std::env::var(key)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (records, call_records, runs) = if benching {
        (
            env_number("SLUICE_E2E_RECORDS", 1_000_000),
            env_number("SLUICE_E2E_CALL_RECORDS", 20_000),
            env_number("SLUICE_E2E_RUNS", 3),
        )
    } else {
        (20_000, 1_000, 1)
    };
    println!(
        "end-to-end harness: {records} records of {VALUE_BYTES} bytes over {} partitions, {runs} run(s), one stream thread per variant",
        partitions()
    );
    let baseline = std::env::var_os("SLUICE_E2E_BASELINE").map(PathBuf::from);
    if let Some(path) = &baseline {
        println!("baseline build: {}", path.display());
    }
    let this_build = std::env::current_exe().unwrap();
    let service = async_calls::start_service();
    // SLUICE_E2E_ONLY=<variant>,...: only those, to look at some variants closely.
    let only = std::env::var("SLUICE_E2E_ONLY").ok();
    let variants: Vec<String> = VARIANTS
        .iter()
        .map(|v| v.to_string())
        .chain(async_calls::variants())
        .chain(enrichment::variants())
        .chain(webhooks::variants())
        .chain(quix::variants())
        .filter(|v| only.as_ref().is_none_or(|o| o.split(',').any(|x| x == v)))
        .collect();
    // The cold enrichment variant's MongoDB, loaded once; kept running until the end.
    let mongo = variants
        .iter()
        .any(|v| enrichment::is_cold(v))
        .then(enrichment::start_mongo);
    let mongo_uri = mongo.as_ref().map_or(String::new(), |(_, uri)| uri.clone());
    // Quix Streams, installed (pinned) once for all runs when a quix variant is selected.
    let quix_python = if variants.iter().any(|v| quix::is_quix(v)) {
        let installed = quix::install();
        println!(
            "Quix Streams {} (pinned by benches/quix/install.sh), {}",
            installed.version, installed.python
        );
        installed.python
    } else {
        String::new()
    };
    let mut results: HashMap<String, Vec<Measured>> = HashMap::new();
    for run in 0..runs {
        // A fresh broker per run: every run starts from the same empty log.
        let broker = support::TestBroker::start();
        write_backlog(&broker, records, call_records);
        // Every other run takes the variants in reverse order, so a drift of the machine
        // over a run (the host's load, the broker's growing log) favours neither side of
        // a ratio in the medians.
        let reversed = run % 2 == 1;
        let in_order: Vec<&String> = match reversed {
            false => variants.iter().collect(),
            true => variants.iter().rev().collect(),
        };
        for variant in in_order {
            let variant = variant.as_str();
            let records = match async_calls::capacity_of(variant) {
                Some(_) => call_records,
                None if enrichment::is_cold(variant) => call_records,
                None if webhooks::is_webhooks(variant) => call_records,
                None => records,
            };
            let mut builds = vec![(variant.to_string(), &this_build, run)];
            if let Some(path) = &baseline
                && BASELINE_VARIANTS.contains(&variant)
            {
                // Its own run number, so its output topic and group are its own.
                builds.push((baseline_name(variant), path, run + BASELINE_RUN_OFFSET));
                if reversed {
                    builds.reverse();
                }
            }
            for (name, binary, child_run) in builds {
                let measured = run_variant(
                    binary,
                    &broker,
                    &[
                        ("SLUICE_E2E_SERVICE", &service),
                        ("SLUICE_E2E_MONGODB", &mongo_uri),
                        (quix::PYTHON_ENV, &quix_python),
                    ],
                    variant,
                    child_run,
                    records,
                );
                let c = measured.cpu;
                println!(
                    "run {run} {name:<31} {:>9.0} rec/s {:>6.1} MB/s  p50 {:>6.1} ms  p99 {:>6.1} ms  peak RSS {:>6.1} MB  CPU µs/rec {:.2} + {:.2} + {:.2}",
                    measured.records_per_second(),
                    measured.megabytes_per_second(),
                    measured.p50_ms,
                    measured.p99_ms,
                    measured.peak_rss_mb,
                    c.processing_us,
                    c.clients_us,
                    c.broker_us
                );
                assert!(
                    measured.outputs >= records,
                    "{name} wrote {} of {records} records",
                    measured.outputs
                );
                results.entry(name).or_default().push(measured);
            }
        }
    }
    table::print_table(&results, runs, baseline.is_some());
}

/// Added to the run number of the baseline build's children.
const BASELINE_RUN_OFFSET: u64 = 1_000;

fn baseline_name(variant: &str) -> String {
    format!("baseline {variant}")
}

/// The `q` quantile of `sorted` latencies (ms).
fn quantile(sorted: &[i64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q) as usize] as f64
}

/// N records of 200 bytes to the map variants' input, and N generated orders (half per
/// feed) to the normalization inputs.
fn write_backlog(broker: &support::TestBroker, records: u64, call_records: u64) {
    broker.create_topics(
        &[
            INPUT_TOPIC,
            async_calls::CALLS_INPUT_TOPIC,
            EHR_TOPIC,
            PHARMACY_TOPIC,
        ]
        .into_iter()
        .chain(enrichment::input_topics())
        .chain([webhooks::INPUT_TOPIC])
        .collect::<Vec<_>>(),
        partitions(),
    );
    let producer = backlog_producer(&broker.brokers);
    enrichment::write_backlog(&producer, records, call_records);
    webhooks::write_backlog(&producer, call_records);
    for i in 0..records {
        send_waiting(&producer, INPUT_TOPIC, &format!("k{i}"), &value_of(i));
    }
    for i in 0..call_records {
        let topic = async_calls::CALLS_INPUT_TOPIC;
        send_waiting(&producer, topic, &format!("k{i}"), &value_of(i));
    }
    let mut generator = OrderGenerator::new(5);
    for _ in 0..records / 2 {
        let ehr = generator.next_ehr();
        send_waiting(&producer, EHR_TOPIC, &ehr.key, &ehr.value);
        let pharmacy = generator.next_pharmacy();
        send_waiting(&producer, PHARMACY_TOPIC, &pharmacy.key, &pharmacy.value);
    }
    producer.flush(Duration::from_secs(300)).unwrap();
}

fn backlog_producer(brokers: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "500000")
        .create()
        .unwrap()
}

fn value_of(i: u64) -> Vec<u8> {
    let mut value = format!("{{\"seq\":{i},\"body\":\"").into_bytes();
    while value.len() < VALUE_BYTES - 2 {
        value.push(b'a' + (value.len() as u64 * 7 + i) as u8 % 26);
    }
    value.extend_from_slice(b"\"}");
    value
}

/// The stateless map every map variant applies: the value with its ASCII letters in
/// upper case.
fn transform(value: &[u8]) -> Vec<u8> {
    value.to_ascii_uppercase()
}

fn output_topic(variant: &str, run: u64) -> String {
    format!("e2e.out.{variant}.{run}")
}

/// Runs one variant in a child process of `binary` (this bench, or a baseline build's).
fn run_variant(
    binary: &Path,
    broker: &support::TestBroker,
    services: &[(&str, &str)],
    variant: &str,
    run: u64,
    records: u64,
) -> Measured {
    let out = Command::new(binary)
        .env("SLUICE_E2E_CHILD", variant)
        .env("SLUICE_E2E_BROKERS", &broker.brokers)
        .envs(services.iter().copied())
        .env("SLUICE_E2E_RUN", run.to_string())
        .env("SLUICE_E2E_N", records.to_string())
        .env(
            "RUST_LOG",
            std::env::var("SLUICE_E2E_RUST_LOG").unwrap_or("warn,rdkafka=off".to_string()),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{variant} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in stdout.lines().filter(|l| l.contains(": CPU by thread: ")) {
        println!("{line}");
    }
    stdout
        .lines()
        .find_map(Measured::from_line)
        .unwrap_or_else(|| panic!("{variant} printed no result:\n{stdout}"))
}

/// Runs one variant in this (child) process.
fn run_child(variant: &str) -> Measured {
    // SLUICE_E2E_LOG_DIR=<dir>: the child logs (RUST_LOG's filter) to <dir>/<variant>.log.
    if let Ok(dir) = std::env::var("SLUICE_E2E_LOG_DIR") {
        let file = std::fs::File::create(Path::new(&dir).join(format!("{variant}.log"))).unwrap();
        let _ = env_logger::Builder::from_default_env()
            .target(env_logger::Target::Pipe(Box::new(file)))
            .try_init();
    }
    let brokers = std::env::var("SLUICE_E2E_BROKERS").unwrap();
    let run: u64 = std::env::var("SLUICE_E2E_RUN").unwrap().parse().unwrap();
    let records: u64 = std::env::var("SLUICE_E2E_N").unwrap().parse().unwrap();
    if webhooks::is_webhooks(variant) {
        return webhooks::run_child(variant, &brokers, run, records);
    }
    if quix::is_quix(variant) {
        return quix::run_child(variant, &brokers, run, records);
    }
    // A topic of each run's own, so that reading back the latency records never reads
    // earlier runs' outputs.
    let output = match variant {
        _ if enrichment::is_enrichment(variant) => enrichment::output_topic(variant, run),
        _ => output_topic(variant, run),
    };
    // What the worker commits for the records: the enrichment reads each twice, and
    // the coverage.
    let committed_target = match enrichment::is_enrichment(variant) {
        true => enrichment::committed_target(records),
        false => records,
    };
    let lookup_durations = Arc::new(std::sync::Mutex::new(Vec::new()));
    let application_id = format!("e2e-{variant}-{run}");
    let progress = Arc::new(Progress::default());
    let stop = Arc::new(AtomicBool::new(false));

    let processor: Box<dyn FnOnce() + Send> = match variant {
        "bare-eos" | "bare-eos-lineage" | "bare-alos" | "bare-alos-lineage" => {
            let settings = ConfigBuilder::new()
                .set("application.id", "admin", "e2e")
                .set("bootstrap.servers", brokers.clone(), "e2e")
                .build()
                .unwrap();
            let admin = admin::admin_client(&settings).unwrap();
            admin::create_topics(
                &admin,
                std::slice::from_ref(&output),
                partitions(),
                1,
                Duration::from_secs(30),
            )
            .unwrap();
            let (brokers, progress, stop, output) = (
                brokers.clone(),
                progress.clone(),
                stop.clone(),
                output.clone(),
            );
            let transactional = variant.starts_with("bare-eos");
            let lineage = variant.ends_with("-lineage");
            Box::new(move || {
                bare_loop(
                    &brokers,
                    &application_id,
                    &output,
                    transactional,
                    lineage,
                    &progress,
                    &stop,
                )
            })
        }
        _ => {
            type Build = Box<dyn FnOnce(&BuildContext<'_>) -> Result<Topology, BuildError> + Send>;
            let built = |topology: Topology| -> Build { Box::new(move |_| Ok(topology)) };
            let (topology, guarantee): (Build, &str) = match variant {
                _ if enrichment::is_enrichment(variant) => {
                    let mongo = std::env::var("SLUICE_E2E_MONGODB").ok();
                    let build =
                        enrichment::build(variant, &output, mongo, lookup_durations.clone());
                    (Box::new(build), "exactly_once_v2")
                }
                "sluice-eos" => (built(map_topology(&output, true)), "exactly_once_v2"),
                "sluice-alos" => (built(map_topology(&output, true)), "at_least_once"),
                "sluice-eos-no-lineage" => (built(map_topology(&output, false)), "exactly_once_v2"),
                "sluice-alos-no-lineage" => (built(map_topology(&output, false)), "at_least_once"),
                "sluice-enrich" => (
                    built(async_calls::enrich_topology(&output, false)),
                    "exactly_once_v2",
                ),
                "sluice-enrich-keyed" => (
                    built(async_calls::enrich_topology(&output, true)),
                    "exactly_once_v2",
                ),
                _ if async_calls::capacity_of(variant).is_some() => {
                    let service = std::env::var("SLUICE_E2E_SERVICE").unwrap();
                    let capacity = async_calls::capacity_of(variant).unwrap();
                    let topology = async_calls::calls_topology(&output, &service, capacity);
                    (built(topology), "exactly_once_v2")
                }
                "sluice-normalization-alos" => (
                    built(normalization::topology_to(
                        &output,
                        normalization::local_output_serde(),
                    )),
                    "at_least_once",
                ),
                _ => (
                    built(normalization::topology_to(
                        &output,
                        normalization::local_output_serde(),
                    )),
                    "exactly_once_v2",
                ),
            };
            let state_dir = std::env::temp_dir().join(format!("sluice-e2e-{application_id}"));
            let config = ConfigBuilder::new()
                .set("application.id", application_id.clone(), "e2e")
                .set("bootstrap.servers", brokers.clone(), "e2e")
                .set("processing.guarantee", guarantee, "e2e")
                .set("state.dir", state_dir.display().to_string(), "e2e")
                .set("topic.replication.factor", "1", "e2e")
                .set("metrics.address", "off", "e2e")
                // SLUICE_CONFIG_* variables apply, to try other settings in the same harness;
                // the cluster is always the harness's own broker.
                .env(std::env::vars().filter(|(k, _)| k.starts_with(ENV_PREFIX)))
                .build()
                .unwrap();
            let (progress, stop) = (progress.clone(), stop.clone());
            Box::new(move || {
                let worker = Worker::start_with(config, topology).unwrap();
                let stats = worker.stats().clone();
                while !stop.load(Ordering::Relaxed) {
                    progress.observe(
                        stats.consumed.load(Ordering::Relaxed),
                        stats.committed.load(Ordering::Relaxed),
                    );
                    // Every 10 ms (0.25% of a 4 s backlog): at 2 ms this thread cost the
                    // variant 0.3 µs of CPU a record on this 2-core machine, which the
                    // bare loops, counting inline, do not pay.
                    std::thread::sleep(Duration::from_millis(10));
                }
                worker.stop();
                worker.join().unwrap();
            })
        }
    };
    let cpu_before = CpuSnapshot::now(&brokers);
    // The bare loop runs on this thread; a worker's runs on its stream thread, and this
    // one only watches it.
    let thread_name = match variant.starts_with("bare-") {
        true => cpu::BARE_THREAD,
        false => "e2e-watcher",
    };
    let processing = std::thread::Builder::new()
        .name(thread_name.to_string())
        .spawn(processor)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(3600);
    while progress.committed.load(Ordering::Relaxed) < committed_target {
        assert!(Instant::now() < deadline, "{variant} took over an hour");
        assert!(!processing.is_finished(), "{variant} stopped early");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Exactly-once counts to the last commit (every 100 ms). At-least-once counts to the
    // last record processed: its commit comes on a 5 s schedule whose phase would
    // otherwise decide the figure.
    let seconds = progress.seconds(!variant.contains("alos"));
    let cpu = CpuSnapshot::now(&brokers).since(&cpu_before, records);
    if std::env::var_os("SLUICE_E2E_CPU_THREADS").is_some() {
        println!("{variant}: CPU by thread: {}", cpu::threads_report());
    }

    eprintln!("{variant}: {records} records in {seconds:.1} s; measuring latency");
    let latencies = measure_latency(&brokers, variant, &output);
    eprintln!("{variant}: latency measured; stopping");
    stop.store(true, Ordering::Relaxed);
    processing.join().unwrap();
    // The variant's peak, read before the checks below: they read whole topics into this
    // process (every output record with its headers), which would otherwise count.
    let peak_rss_mb = peak_rss_mb();
    let bytes = match variant {
        _ if is_sluice_normalization(variant) => {
            input_bytes(&brokers, &[EHR_TOPIC, PHARMACY_TOPIC])
        }
        _ => records * VALUE_BYTES as u64,
    };
    let outputs = committed_count(&brokers, &output);
    Measured {
        records,
        seconds,
        bytes,
        p50_ms: quantile(&latencies, 0.50),
        p99_ms: quantile(&latencies, 0.99),
        peak_rss_mb,
        outputs,
        lookup_p99_ms: enrichment::p99(&lookup_durations),
        cpu,
    }
}

fn map_topology(output: &str, lineage: bool) -> Topology {
    let builder = TopologyBuilder::new("e2e-map");
    let upper = builder
        .source("input", &[INPUT_TOPIC], Serdes::bytes(), Serdes::bytes())
        .map_values("upper", |v: Vec<u8>| transform(&v));
    match lineage {
        true => upper.to("output", output, Serdes::bytes(), Serdes::bytes()),
        false => upper.to_without_lineage("output", output, Serdes::bytes(), Serdes::bytes()),
    }
    builder.build().unwrap()
}

/// Records in the committed part of `topic`.
fn committed_count(brokers: &str, topic: &str) -> u64 {
    support::count_committed(brokers, topic, Duration::from_secs(600))
}

/// Bytes of the values in `topics` (the normalization inputs vary in size).
fn input_bytes(brokers: &str, topics: &[&str]) -> u64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "e2e-size-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    let mut remaining = 0i64;
    for topic in topics {
        for partition in 0..partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(10))
                .unwrap();
            remaining += high - low;
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .unwrap();
        }
    }
    consumer.assign(&assignment).unwrap();
    let mut bytes = 0u64;
    while remaining > 0 {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            bytes += m.payload().map_or(0, <[u8]>::len) as u64;
            remaining -= 1;
        }
    }
    bytes
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
