//! The Quix Streams variants of the end-to-end harness: Sluice's normalization beside the
//! same normalization written for Quix Streams, the Python stream-processing library.
//!
//! * (qe) `quix-normalization-eos`: `benches/quix/normalize.py`, a Quix Streams
//!   `Application` mapping the EHR and pharmacy orders onto the canonical medication order
//!   with normalize/mod.rs's rules and writing it as Avro in the Confluent wire format (schema
//!   id 1, as (e) writes it), under Quix's exactly-once (transactional checkpoints every
//!   100 ms), against (e) `sluice-normalization`;
//! * (qa) `quix-normalization-alos`: the same under Quix's at-least-once (commits every
//!   5 s), against (ea) `sluice-normalization-alos`.
//!
//! Both read the backlog's EHR and pharmacy topics (`write_backlog`), from the start, under
//! a consumer group of their own, and write to an output and a dead-letter topic of their
//! own, created here with the backlog's partition count before Python starts.
//!
//! Quix Streams is installed by `benches/quix/install.sh` into a virtualenv of its own,
//! pinned (the harness runs it once, [`install`], and prints the version); the child is
//! handed the venv's interpreter in `SLUICE_E2E_QUIX_PYTHON`.
//!
//! Timed as the Sluice variants are, from the first record: normalize.py notes how long
//! after its start its first record came (the interpreter, importing Quix Streams, joining
//! the group: about 4 s, printed but not counted), and the time runs from then to the
//! moment a read_committed reader of the output has seen N records. Under at-least-once
//! that is the last output readable rather than the last input processed (the reader sees
//! the records once the producer has sent them: linger 5 ms), a few milliseconds against
//! Quix.
//!
//! The peak RSS is the Python process's own (VmHWM in `/proc/<pid>/status`, read just
//! before it is stopped with SIGTERM), not this child's.
//!
//! normalize.py was checked against (e) on the demo's orders (`sluice demo`, 1% malformed):
//! every canonical record equal field for field by key, in the same partition with the
//! same timestamp and headers (lineage ids aside, see normalize.py), and every dead letter
//! with the same reason, operator and input.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sluice_runtime::{ConfigBuilder, admin};
use sluice_topologies::normalization::{EHR_TOPIC, PHARMACY_TOPIC};

use super::{Measured, partitions, quantile};

/// Quix Streams' exactly-once variant.
pub const EOS: &str = "quix-normalization-eos";
/// Quix Streams' at-least-once variant.
pub const ALOS: &str = "quix-normalization-alos";

/// The environment variable that hands the child the venv's interpreter.
pub const PYTHON_ENV: &str = "SLUICE_E2E_QUIX_PYTHON";

/// The variants of this module, in table order.
pub fn variants() -> Vec<String> {
    vec![EOS.to_string(), ALOS.to_string()]
}

pub fn is_quix(variant: &str) -> bool {
    variant == EOS || variant == ALOS
}

/// Quix Streams' name of the variant's guarantee (its `processing_guarantee`).
fn guarantee(variant: &str) -> &'static str {
    if variant == EOS {
        "exactly-once"
    } else {
        "at-least-once"
    }
}

pub fn output_topic(variant: &str, run: u64) -> String {
    format!("e2e.out.{variant}.{run}")
}

fn dead_letter_topic(variant: &str, run: u64) -> String {
    format!("e2e.dlq.{variant}.{run}")
}

fn project_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The pinned Quix Streams: its version and the venv's interpreter.
pub struct Installed {
    pub version: String,
    pub python: String,
}

/// Runs `benches/quix/install.sh` (a no-op when the pinned versions are installed).
///
/// # Panics
/// When the install fails: the quix variants cannot run without it.
pub fn install() -> Installed {
    let script = project_dir().join("benches/quix/install.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .expect("bash runs benches/quix/install.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} failed (the quix-* variants need it; leave them out with SLUICE_E2E_ONLY):\n{stdout}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |prefix: &str| {
        stdout
            .lines()
            .find_map(|line| line.strip_prefix(prefix))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("install.sh printed no `{prefix}` line:\n{stdout}"))
    };
    Installed {
        version: field("quixstreams "),
        python: field("python "),
    }
}

/// Runs the variant in this (child) process: starts Python, waits until the output holds
/// `records` committed records, measures the latency with Python still running, then
/// stops it.
pub fn run_child(variant: &str, brokers: &str, run: u64, records: u64) -> Measured {
    let python = std::env::var(PYTHON_ENV)
        .unwrap_or_else(|_| panic!("{variant}: {PYTHON_ENV} is not set (the harness sets it)"));
    let output = output_topic(variant, run);
    let dead_letters = dead_letter_topic(variant, run);
    create_topics(brokers, &[output.clone(), dead_letters.clone()]);
    let mut quix = Quix::start(&python, variant, brokers, run, &output, &dead_letters);
    let from_spawn = quix.wait_for_outputs(brokers, &output, records);
    let first = quix.first_record_after().unwrap_or(0.0);
    let seconds = from_spawn - first;
    eprintln!(
        "{variant}: {records} records in {seconds:.1} s from the first record ({from_spawn:.1} s from spawn; the first record came {first:.1} s after start)"
    );
    let bytes = super::input_bytes(brokers, &[EHR_TOPIC, PHARMACY_TOPIC]);
    eprintln!("{variant}: measuring latency");
    let latencies = super::measure_latency(brokers, variant, &output);
    eprintln!("{variant}: latency measured; stopping");
    let peak_rss_mb = quix.stop();
    let outputs = super::committed_count(brokers, &output);
    Measured {
        records,
        seconds,
        bytes,
        p50_ms: quantile(&latencies, 0.50),
        p99_ms: quantile(&latencies, 0.99),
        peak_rss_mb,
        outputs,
        lookup_p99_ms: 0.0,
        // Not measured: the work is in another process (Quix) or in HTTP calls (webhooks).
        cpu: Default::default(),
    }
}

/// The output and dead-letter topics, with the backlog's partitions, before Python starts
/// (so the reader can be assigned at once, and Quix finds them as configured).
fn create_topics(brokers: &str, topics: &[String]) {
    let settings = ConfigBuilder::new()
        .set("application.id", "admin", "e2e")
        .set("bootstrap.servers", brokers.to_string(), "e2e")
        .build()
        .unwrap();
    let admin = admin::admin_client(&settings).unwrap();
    admin::create_topics(&admin, topics, partitions(), 1, Duration::from_secs(30)).unwrap();
}

/// The running `normalize.py`.
struct Quix {
    variant: String,
    child: Child,
    spawned: Instant,
    /// Where normalize.py writes how long after its start the first record came.
    first_record_file: PathBuf,
}

impl Quix {
    fn start(
        python: &str,
        variant: &str,
        brokers: &str,
        run: u64,
        output: &str,
        dead_letters: &str,
    ) -> Self {
        let group = format!("e2e-{variant}-{run}");
        let state_dir = std::env::temp_dir().join(format!("sluice-e2e-{group}"));
        std::fs::create_dir_all(&state_dir).unwrap();
        let first_record_file = state_dir.join("first-record");
        let _ = std::fs::remove_file(&first_record_file);
        // SLUICE_E2E_LOG_DIR=<dir>: Python's log to <dir>/<variant>.python.log, beside
        // this child's <variant>.log; else to this child's stderr, which the harness shows
        // on failure.
        let stderr = match std::env::var("SLUICE_E2E_LOG_DIR") {
            Ok(dir) => Stdio::from(
                std::fs::File::create(Path::new(&dir).join(format!("{variant}.python.log")))
                    .unwrap(),
            ),
            Err(_) => Stdio::inherit(),
        };
        let spawned = Instant::now();
        let child = Command::new(python)
            .arg(project_dir().join("benches/quix/normalize.py"))
            .env("SLUICE_QUIX_BROKERS", brokers)
            .env("SLUICE_QUIX_EHR_TOPIC", EHR_TOPIC)
            .env("SLUICE_QUIX_PHARMACY_TOPIC", PHARMACY_TOPIC)
            .env("SLUICE_QUIX_OUTPUT_TOPIC", output)
            .env("SLUICE_QUIX_DLQ_TOPIC", dead_letters)
            .env("SLUICE_QUIX_GROUP", &group)
            .env("SLUICE_QUIX_STATE_DIR", state_dir.join("quix"))
            .env("SLUICE_QUIX_GUARANTEE", guarantee(variant))
            .env("SLUICE_QUIX_PARTITIONS", partitions().to_string())
            .env("SLUICE_QUIX_FIRST_RECORD_FILE", &first_record_file)
            // This child's stdout carries its result line: nothing else may write there.
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("{variant}: could not start {python}: {e}"));
        Self {
            variant: variant.to_string(),
            child,
            spawned,
            first_record_file,
        }
    }

    /// Counts the output's records with a read_committed reader until there are
    /// `target`; returns the seconds since spawn. Panics if Python exits first.
    fn wait_for_outputs(&mut self, brokers: &str, output: &str, target: u64) -> f64 {
        let group = format!("e2e-quix-counter-{}", self.variant);
        let reader = super::latency::committed_reader(brokers, &group);
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions() {
            assignment
                .add_partition_offset(output, partition, Offset::Beginning)
                .unwrap();
        }
        reader.assign(&assignment).unwrap();
        let deadline = self.spawned + Duration::from_secs(3600);
        let mut checked = Instant::now();
        let mut count = 0u64;
        while count < target {
            match reader.poll(Duration::from_millis(20)) {
                Some(Ok(_)) => count += 1,
                Some(Err(e)) => eprintln!("{}: reading {output}: {e}", self.variant),
                None => {}
            }
            // Twice a second, not per record: is Python still there, and in time?
            if checked.elapsed() >= Duration::from_millis(500) {
                checked = Instant::now();
                if let Some(status) = self.child.try_wait().unwrap() {
                    panic!(
                        "{}: normalize.py exited ({status}) after {count} of {target} outputs",
                        self.variant
                    );
                }
                assert!(
                    Instant::now() < deadline,
                    "{}: {count} of {target} outputs after an hour",
                    self.variant
                );
            }
        }
        self.spawned.elapsed().as_secs_f64()
    }

    /// Seconds from normalize.py's start to its first record, as it wrote them.
    fn first_record_after(&self) -> Option<f64> {
        std::fs::read_to_string(&self.first_record_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Python's peak RSS in MB, read before it is stopped; then SIGTERM, and a bounded
    /// wait for the graceful stop (Quix commits on the way out), then SIGKILL.
    fn stop(&mut self) -> f64 {
        let pid = self.child.id();
        let peak = peak_rss_mb_of(pid);
        let pid_arg = pid.to_string();
        let _ = Command::new("kill")
            .args(["-TERM", pid_arg.as_str()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.child.try_wait().unwrap() {
                Some(status) => {
                    if !status.success() {
                        eprintln!(
                            "{}: normalize.py exited with {status} on SIGTERM",
                            self.variant
                        );
                    }
                    break;
                }
                None if Instant::now() >= deadline => {
                    eprintln!(
                        "{}: normalize.py ignored SIGTERM for 30 s; killing it",
                        self.variant
                    );
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        peak
    }
}

impl Drop for Quix {
    /// A panicking harness must not leave Python running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// VmHWM of process `pid`, in MB (0 when unreadable).
fn peak_rss_mb_of(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
