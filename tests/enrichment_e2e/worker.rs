//! The enrichment worker: `sluice run enrichment` as a child process, and what its
//! /metrics endpoint says.

use super::*;

/// How every incarnation of a test's worker is started.
pub(crate) struct WorkerSpec {
    pub(crate) application_id: String,
    pub(crate) state_dir: PathBuf,
    /// Fixed, so each incarnation serves its metrics where the test looks.
    pub(crate) metrics_port: u16,
    pub(crate) mongodb_uri: String,
    /// The test's own settings, as `key=value`.
    pub(crate) settings: Vec<String>,
}

impl WorkerSpec {
    pub(crate) fn new(world: &World, name: &str, settings: &[&str]) -> Self {
        let state_dir =
            std::env::temp_dir().join(format!("sluice-e2e-{name}-{}", uuid::Uuid::new_v4()));
        Self {
            application_id: format!("enrichment-e2e-{name}"),
            state_dir,
            metrics_port: free_port(),
            mongodb_uri: world.mongo.uri(),
            settings: settings.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub(crate) fn log(&self) -> PathBuf {
        self.state_dir.join("worker.log")
    }

    /// The topics the worker's group consumes: the input and the repartition topic.
    pub(crate) fn consumed_topics(&self) -> Vec<String> {
        let lookups = Lookups {
            drugs: BoxLookup::new(FileLookup::from_records(Vec::new())),
            formulary: BoxLookup::new(FileLookup::from_records(Vec::new())),
        };
        let topology = enrichment::topology(
            input_serde(),
            output_serde(),
            lookups,
            &EnrichmentConfig::default(),
        )
        .for_application(&self.application_id);
        let mut topics: Vec<String> = topology.internal_topics().iter().cloned().collect();
        assert_eq!(topics.len(), 1, "one repartition topic: {topics:?}");
        topics.push(INPUT_TOPIC.to_string());
        topics
    }

    /// Whether the group has committed every record of the input and the repartition
    /// topic (so every output is committed too: one transaction), i.e. its lag is zero.
    ///
    /// The input is written without transactions: its committed offsets reach the
    /// partitions' ends. The repartition topic is written in transactions, and its ends
    /// lie past the commit markers, which no offset commit covers; so there, caught up
    /// means that read_committed finds no record past the committed offsets.
    pub(crate) fn caught_up(&self, world: &World) -> bool {
        let brokers = &world.broker.brokers;
        let topics = self.consumed_topics();
        topics.iter().all(|topic| match topic.as_str() {
            INPUT_TOPIC => support::caught_up(brokers, &self.application_id, &[topic]),
            repartition => nothing_committed_past(brokers, &self.application_id, repartition),
        })
    }
}

/// Whether a read_committed reader of `topic`, from `group`'s committed offsets, finds
/// nothing (it reaches every partition's end within a few seconds, with no record).
fn nothing_committed_past(brokers: &str, group: &str, topic: &str) -> bool {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) else {
        return false;
    };
    let mut partitions = TopicPartitionList::new();
    for p in metadata.topics()[0].partitions() {
        partitions.add_partition(topic, p.id());
    }
    let Ok(committed) = consumer.committed_offsets(partitions, Duration::from_secs(10)) else {
        return false;
    };
    let mut ends = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for e in committed.elements() {
        let Ok((_, high)) =
            consumer.fetch_watermarks(topic, e.partition(), Duration::from_secs(10))
        else {
            return false;
        };
        let from = match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        };
        if from < high {
            ends.insert(e.partition(), high);
            assignment
                .add_partition_offset(topic, e.partition(), Offset::Offset(from))
                .unwrap();
        }
    }
    if ends.is_empty() {
        return true;
    }
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            return false;
        }
        let position = consumer.position().unwrap();
        let at_end = position.elements().iter().all(|e| match e.offset() {
            Offset::Offset(o) => o >= ends[&e.partition()],
            _ => false,
        });
        if at_end {
            return true;
        }
    }
    // An open transaction holds the reader back: records are on their way.
    false
}

/// A free loopback port, for a worker's metrics.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// One incarnation of the worker; killed and reaped if the test ends early.
pub(crate) struct WorkerProcess {
    child: Child,
    port: u16,
}

impl WorkerProcess {
    /// `sluice run enrichment` under exactly_once_v2 against the test's broker and
    /// SecantusDB; a restarted one takes its killed predecessor's place at once (static
    /// membership).
    pub(crate) fn start(world: &World, spec: &WorkerSpec) -> Self {
        let mut command = support::worker_command(
            &world.broker,
            enrichment::NAME,
            &spec.application_id,
            &spec.state_dir,
        );
        command.args(["--guarantee", "exactly_once_v2"]);
        let mut settings = vec![
            format!("mongodb.uri={}", spec.mongodb_uri),
            format!("metrics.address=127.0.0.1:{}", spec.metrics_port),
            "static.membership=true".to_string(),
            "commit.interval.ms=200".to_string(),
        ];
        settings.extend(spec.settings.iter().cloned());
        for setting in settings {
            command.args(["--set", &setting]);
        }
        let child = command.spawn().expect("`sluice run enrichment` starts");
        Self {
            child,
            port: spec.metrics_port,
        }
    }

    /// Panics, with the end of the log, if the worker exited by itself.
    pub(crate) fn assert_running(&mut self, spec: &WorkerSpec) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "the worker exited on its own ({status}); last log lines, newest first:\n{}",
                log_tail(spec)
            );
        }
    }

    /// SIGKILL, and wait until it is gone.
    pub(crate) fn kill(mut self) {
        self.child.kill().expect("SIGKILL the worker");
        self.child.wait().unwrap();
    }

    /// SIGTERM: the worker commits, leaves its group and exits 0.
    pub(crate) fn stop(mut self, spec: &WorkerSpec) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "SIGTERM sent to the worker");
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "the worker stops cleanly on SIGTERM: {status}; log:\n{}",
            log_tail(spec)
        );
    }

    /// The worker's /metrics, or `None` while it does not answer (still starting).
    pub(crate) fn metrics(&self) -> Option<Metrics> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        // hyper answers an HTTP/1.0 request in HTTP/1.0.
        let status = head.split_whitespace().nth(1)?;
        (status == "200").then(|| Metrics(body.to_string()))
    }

    /// Polls /metrics until `condition` holds for what it says; panics after `timeout`,
    /// or if the worker exits.
    pub(crate) fn wait_for_metrics(
        &mut self,
        spec: &WorkerSpec,
        what: &str,
        timeout: Duration,
        condition: impl Fn(&Metrics) -> bool,
    ) -> Metrics {
        let deadline = Instant::now() + timeout;
        loop {
            self.assert_running(spec);
            if let Some(metrics) = self.metrics()
                && condition(&metrics)
            {
                return metrics;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; worker log {}",
                spec.log().display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last lines of the worker log, newest first.
pub(crate) fn log_tail(spec: &WorkerSpec) -> String {
    let text = std::fs::read_to_string(spec.log()).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(20).collect();
    tail.join("\n")
}

/// A Prometheus text exposition, as /metrics serves it.
#[derive(Clone, Debug)]
pub(crate) struct Metrics(String);

impl Metrics {
    /// The sum of the samples of `name` whose labels include every `key="value"` of
    /// `labels` (0 when there is none).
    pub(crate) fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (metric, rest) = match series.split_once('{') {
                    Some((metric, rest)) => (metric, rest),
                    None => (series, ""),
                };
                (metric == name
                    && labels
                        .iter()
                        .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
                .then(|| value.parse::<f64>().ok())?
            })
            .sum()
    }

    /// Hits and misses of the cache `cache`.
    pub(crate) fn cache(&self, cache: &str) -> CacheCounts {
        CacheCounts {
            hits: self.sum("sluice_cache_hits_total", &[("cache", cache)]),
            misses: self.sum("sluice_cache_misses_total", &[("cache", cache)]),
        }
    }

    /// Lookup errors of the cache `cache` by reason (`transient`, `permanent`).
    pub(crate) fn lookup_errors(&self, cache: &str, reason: &str) -> f64 {
        self.sum(
            "sluice_lookup_errors_total",
            &[("cache", cache), ("reason", reason)],
        )
    }

    pub(crate) fn dead_lettered(&self) -> f64 {
        self.sum("sluice_records_dead_lettered_total", &[])
    }
}

/// A cache's counters at one moment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CacheCounts {
    pub(crate) hits: f64,
    pub(crate) misses: f64,
}

impl CacheCounts {
    pub(crate) fn lookups(&self) -> f64 {
        self.hits + self.misses
    }
}
