//! What a running `sluice run` worker shows: its Prometheus metrics (each one the Grafana
//! dashboard in docker/ queries), its health and readiness probes, and Prometheus itself
//! (Debian's `prometheus` package, installed by scripts/test.sh) scraping it while
//! records flow.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sluice_topologies::enrichment::COVERAGE_TOPIC;
use sluice_topologies::normalization::{
    EHR_TOPIC, OUTPUT_TOPIC as CANONICAL_TOPIC, PHARMACY_TOPIC,
};
use sluice_topologies::webhooks;
use support::TestBroker;

fn project_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A `sluice run normalization` child process; killed when dropped.
struct RunningWorker {
    child: Child,
    metrics: String,
    /// Removed after the child is killed (fields drop after `Drop::drop`).
    _state_dir: support::ScratchDir,
}

impl RunningWorker {
    /// Starts a worker of `topology` with its metrics on a free port, and waits until it
    /// says where.
    fn start(broker: &TestBroker, topology: &str, application_id: &str) -> Self {
        Self::start_with(broker, topology, application_id, &[])
    }

    /// As [`start`](Self::start), with the topology's own `settings` too.
    fn start_with(
        broker: &TestBroker,
        topology: &str,
        application_id: &str,
        settings: &[(&str, &str)],
    ) -> Self {
        let state_dir = support::ScratchDir::new("sluice-test-observability");
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command
            .args(["run", topology, "--brokers", &broker.brokers])
            .args(["--application-id", application_id])
            .args([
                "--set",
                &format!("state.dir={}", state_dir.path().display()),
            ]);
        for (key, value) in support::base_settings().iter().chain(settings) {
            command.args(["--set", &format!("{key}={value}")]);
        }
        let mut child = command
            .env("RUST_LOG", "info,rdkafka=off")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the sluice binary starts");
        // The worker logs where it serves metrics (metrics.address=127.0.0.1:0 picks the
        // port); the rest of its log is passed through to the test's output.
        let (found, address) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[worker] {line}");
                if let Some(rest) = line.split("metrics on http://").nth(1) {
                    let _ = found.send(rest.split('/').next().unwrap_or_default().to_string());
                }
            }
        });
        let metrics = address
            .recv_timeout(Duration::from_secs(60))
            .expect("the worker logs its metrics address within a minute");
        Self {
            child,
            metrics,
            _state_dir: state_dir,
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        http_get(&format!("http://{}{path}", self.metrics))
    }
}

impl Drop for RunningWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(url: &str) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    })
}

/// Every metric name the dashboard's queries use.
fn dashboard_metric_names() -> Vec<String> {
    let text = std::fs::read_to_string(project_dir().join("docker/grafana/dashboards/sluice.json"))
        .unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut expressions = Vec::new();
    collect_expressions(&dashboard, &mut expressions);
    let mut names: Vec<String> = expressions
        .iter()
        .flat_map(|e| {
            e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("sluice_"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

fn collect_expressions(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_expressions(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_expressions(v, out)),
        _ => {}
    }
}

/// The metric names in a Prometheus text exposition.
fn exported_names(exposition: &str) -> Vec<&str> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect()
}

#[test]
fn every_metric_the_dashboard_queries_is_exported_by_a_running_worker() {
    let broker = TestBroker::start();
    broker.create_topics(
        &[
            EHR_TOPIC,
            PHARMACY_TOPIC,
            COVERAGE_TOPIC,
            webhooks::INPUT_TOPIC,
        ],
        8,
    );
    let inputs = support::produce_orders(&broker.brokers, 2_000, 0.02, 7);
    // The normalization worker feeds a stateful one (order-activity counts its output)
    // and an enriching one (cached lookups, async calls); a webhooks worker delivers to an
    // endpoint of the test's: together they export every metric a deployment of all four
    // would.
    let worker = RunningWorker::start(&broker, "normalization", "observability-dashboard");
    let stateful = RunningWorker::start(&broker, "order-activity", "observability-dashboard");
    let enriching = RunningWorker::start(&broker, "enrichment", "observability-dashboard");
    let endpoint = WebhookEndpoint::start();
    let delivering = RunningWorker::start_with(
        &broker,
        "webhooks",
        "observability-dashboard",
        // One short tier: the endpoint's first answer is a 500, so a retry is held until
        // due and then runs late (the tiers' metrics).
        &[
            ("webhooks.allow.cidrs", "127.0.0.0/8"),
            ("webhooks.retry.delays.ms", "500"),
        ],
    );
    let webhook = serde_json::json!({"url": endpoint.url(), "payload": {"kind": "test"}});
    let producer = support::producer(&broker.brokers);
    support::send(
        &producer,
        webhooks::INPUT_TOPIC,
        "hook-1",
        &serde_json::to_vec(&webhook).unwrap(),
    );

    let wanted = dashboard_metric_names();
    assert!(
        wanted.len() >= 10,
        "the dashboard queries the worker's metrics: {wanted:?}"
    );
    // Lag comes from librdkafka's statistics every 5 s; the rest as records flow. The
    // deadline leaves two debug-built workers on a busy machine time to join their group.
    let deadline = Instant::now() + Duration::from_secs(180);
    let (exposition, missing) = loop {
        let (status, body) = worker.get("/metrics");
        assert_eq!(status, 200);
        let (status, stateful_body) = stateful.get("/metrics");
        assert_eq!(status, 200);
        let (status, enriching_body) = enriching.get("/metrics");
        assert_eq!(status, 200);
        let (status, delivering_body) = delivering.get("/metrics");
        assert_eq!(status, 200);
        let body = body + &stateful_body + &enriching_body + &delivering_body;
        let exported = exported_names(&body);
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|n| !exported.contains(&n.as_str()))
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break (
                body.clone(),
                missing.into_iter().cloned().collect::<Vec<_>>(),
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the worker does not export: {missing:?}"
    );
    for line in exposition.lines().filter(|l| l.starts_with("sluice_")) {
        assert!(
            line.contains("application=\"observability-dashboard\""),
            "every series names its application: {line}"
        );
    }
    // An endpoint is labelled by its host, never the URL's path.
    assert!(exposition.contains("sluice_http_deliveries_total"));
    assert!(
        !exposition.contains("/hook"),
        "a webhook URL's path in /metrics"
    );
    // Labels name topics, partitions and operators, never a record's content.
    for key in inputs.valid_keys.iter().chain(inputs.malformed.keys()) {
        assert!(
            !exposition.contains(key.as_str()),
            "a record key appears in /metrics"
        );
    }

    let (status, body) = worker.get("/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    // The body of the very answer that said 200: a rebalance in between would change it.
    let mut ready = (0, String::new());
    support::wait_until("/readyz answers 200", Duration::from_secs(30), || {
        ready = worker.get("/readyz");
        ready.0 == 200
    });
    assert_eq!(ready.1, "stream-thread-0 running\n");
}

/// The value of the series of `name` whose labels include `label` (`key="value"`).
fn series_value(exposition: &str, name: &str, label: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, labels) = series.split_once('{')?;
        (metric == name && labels.contains(label)).then(|| value.parse().ok())?
    })
}

/// The lookup caches of `enrich` take their metric handles when the topology is built, so
/// a worker installs its metrics recorder before it builds the topology: an enrichment
/// worker's /metrics shows its caches' hits and misses as records flow.
#[test]
fn an_enrichment_worker_exports_its_lookup_caches_metrics() {
    let broker = TestBroker::start();
    broker.create_topics(
        &[EHR_TOPIC, PHARMACY_TOPIC, CANONICAL_TOPIC, COVERAGE_TOPIC],
        4,
    );
    support::produce_orders(&broker.brokers, 200, 0.0, 7);
    let _normalization = RunningWorker::start(&broker, "normalization", "observability-canonical");
    // No mongodb.uri: the built-in sample reference data, behind the same caches.
    let enrichment = RunningWorker::start(&broker, "enrichment", "observability-enrichment");
    let label = r#"cache="drug-reference""#;
    let mut counts = (None, None);
    support::wait_until(
        "drug-reference cache hits and misses on /metrics",
        Duration::from_secs(120),
        || {
            let (status, body) = enrichment.get("/metrics");
            assert_eq!(status, 200);
            counts = (
                series_value(&body, "sluice_cache_hits_total", label),
                series_value(&body, "sluice_cache_misses_total", label),
            );
            matches!(counts, (Some(hits), Some(misses)) if hits > 0.0 && misses > 0.0)
        },
    );
}

/// An HTTP endpoint on loopback that answers its first webhook 500 and every other 200.
struct WebhookEndpoint {
    address: std::net::SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

impl WebhookEndpoint {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let address = listener.local_addr().unwrap();
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || async move {
                match answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                    0 => axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    _ => axum::http::StatusCode::OK,
                }
            }),
        );
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            address,
            _runtime: runtime,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.address)
    }
}

/// Prometheus' own configuration check passes on the file docker-compose.yml mounts.
#[test]
fn the_docker_prometheus_config_is_valid() {
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(project_dir().join("docker/prometheus.yml"))
        .output()
        .expect("promtool (Debian's prometheus package, installed by scripts/test.sh) runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Prometheus server of this test's own, scraping one target every second.
struct PrometheusServer {
    child: Child,
    url: String,
    _dir: PathBuf,
}

impl PrometheusServer {
    fn start(target: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("sluice-test-prometheus-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sluice\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian's package, installed by scripts/test.sh) starts");
        let server = Self {
            child,
            url: format!("http://{listen}"),
            _dir: dir,
        };
        support::wait_until("Prometheus is ready", Duration::from_secs(60), || {
            let url = format!("{}/-/ready", server.url);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime
                .block_on(reqwest::get(&url))
                .is_ok_and(|r| r.status().is_success())
        });
        server
    }

    /// The value of an instant query returning one sample, if it returned one.
    fn query_value(&self, query: &str) -> Option<f64> {
        let url = format!("{}/api/v1/query?query={}", self.url, url_encode(query));
        let (status, body) = http_get(&url);
        assert_eq!(status, 200, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["status"], "success", "{body}");
        json["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn prometheus_sees_records_consumed_rise_as_records_flow() {
    let broker = TestBroker::start();
    broker.create_topics(&[EHR_TOPIC, PHARMACY_TOPIC], 8);
    let worker = RunningWorker::start(&broker, "normalization", "observability-prometheus");
    let prometheus = PrometheusServer::start(&worker.metrics);
    let query = "sum(sluice_records_consumed_total{application=\"observability-prometheus\"})";
    // Records flow only once Prometheus scrapes the worker, so it sees them flow.
    support::wait_until(
        "Prometheus scrapes the worker",
        Duration::from_secs(60),
        || prometheus.query_value("up{job=\"sluice\"}") == Some(1.0),
    );

    // The worker reads from the moment it is ready, so none of the records below is
    // consumed before Prometheus could see the counter start.
    support::wait_until("the worker is ready", Duration::from_secs(120), || {
        worker.get("/readyz").0 == 200
    });

    // 10,000 records in three stages at 1,000 a second. Each stage waits until Prometheus
    // has scraped its records, so values between 0 and the total are events the test
    // waits for, not samples that a fast worker could slip between.
    let mut seen: Vec<f64> = Vec::new();
    let observe = |seen: &mut Vec<f64>| {
        if let Some(v) = prometheus.query_value(query)
            && seen.last() != Some(&v)
        {
            seen.push(v);
        }
    };
    let mut total = 0;
    for (stage, orders_per_feed) in [(11, 1_500), (12, 1_500), (13, 2_000)] {
        total += support::produce_orders_paced(
            &broker.brokers,
            orders_per_feed,
            0.0,
            stage,
            Some(1_000),
        )
        .total;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            observe(&mut seen);
            // Records processed again after an aborted transaction count again: the
            // counter may pass the stage's total, never stay below it.
            if seen.last().is_some_and(|v| *v >= total as f64) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus never saw {total} records consumed; values seen: {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    assert_eq!(total, 10_000);
    let rising: Vec<&f64> = seen
        .iter()
        .filter(|v| **v > 0.0 && **v < 10_000.0)
        .collect();
    assert!(
        rising.len() >= 2,
        "Prometheus sees the counter rise while records flow, not only its final value: {seen:?}"
    );
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "the counter only rises: {seen:?}"
    );
}
