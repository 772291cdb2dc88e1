//! The HTTP service the topology calls: it answers after 1-20 ms and logs every call.

use super::*;

/// The service's answer about an input: what the topology writes as its output.
pub(crate) fn answer_for(input: &str) -> String {
    format!("answered:{input}")
}

/// One request the service got.
pub(crate) struct ServiceCall {
    pub(crate) at: Instant,
    pub(crate) key: Option<String>,
    pub(crate) input: String,
}

#[derive(Default)]
pub(crate) struct CallLog {
    pub(crate) calls: Mutex<Vec<ServiceCall>>,
    pub(crate) in_flight: AtomicUsize,
}

/// Counts a request in flight until its handler ends or is dropped (the client gone).
pub(crate) struct InFlightGuard(pub(crate) Arc<CallLog>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(crate) async fn answer(
    State(log): State<Arc<CallLog>>,
    headers: HeaderMap,
    input: String,
) -> String {
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
pub(crate) struct Service {
    pub(crate) url: String,
    pub(crate) log: Arc<CallLog>,
    pub(crate) _runtime: tokio::runtime::Runtime,
}

impl Service {
    /// Waits until the service gets a call made after `after` (and after the requests of a
    /// worker killed just before it could still arrive): the worker is processing.
    pub(crate) fn wait_for_call_after(
        &self,
        after: Instant,
        worker: &mut WorkerProcess,
        log: &Path,
    ) {
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

    pub(crate) fn start() -> Self {
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
