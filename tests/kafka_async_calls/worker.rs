//! The worker child: the topology under test, run in this test binary started again,
//! and the handle the test kills it through.

use super::*;

/// The topology under test: each input's value is sent to the service, with the call's
/// idempotency key; the answer replaces the value.
pub(crate) fn topology(order: Order, service_url: &str) -> Topology {
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
pub(crate) fn run_worker(order: Order) {
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
pub(crate) struct WorkerSpec {
    pub(crate) order: Order,
    pub(crate) brokers: String,
    pub(crate) service_url: String,
    pub(crate) group: String,
    pub(crate) state_dir: PathBuf,
}

/// A worker child, killed and reaped if the test ends early.
pub(crate) struct WorkerProcess(pub(crate) Child);

impl WorkerProcess {
    /// Starts this test binary as a worker; its log is appended to `<state_dir>/worker.log`.
    pub(crate) fn start(spec: &WorkerSpec) -> Self {
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
    pub(crate) fn assert_running(&mut self, log: &Path) {
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
