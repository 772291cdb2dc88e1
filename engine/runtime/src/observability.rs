//! What a worker shows to the people and machines that watch it: Prometheus metrics on
//! `/metrics`, liveness on `/healthz` and readiness on `/readyz`, on one HTTP port
//! (`metrics.address`, default `0.0.0.0:9464`).
//!
//! * `/healthz` answers 200 while the process serves HTTP at all: a liveness probe that
//!   fails only when the worker is wedged or gone.
//! * `/readyz` answers 200 only when every stream thread has joined the group and runs
//!   its assigned tasks (none is starting, restoring state, or stopped), else 503 with
//!   each thread's state: a readiness probe that keeps traffic and rollouts waiting for
//!   a worker that is not yet processing.
//!
//! The Prometheus recorder is process-wide (the `metrics` facade has one global
//! recorder), installed by the first worker that serves metrics, with that worker's
//! `application.id` as the `application` label of every series. Histograms are exported
//! as buckets, so dashboards can aggregate percentiles across workers with
//! `histogram_quantile`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets, in seconds: from 100 µs (one record through a task) to 60 s (a
/// backlog's end-to-end latency).
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];
/// How often histograms' internal buffers are folded in, between scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Where a stream thread is in its life, as `/readyz` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ThreadStatus {
    /// Created, not yet a member of the group with an assignment.
    Starting = 0,
    /// Processing its assigned tasks (possibly none, when there are more threads than
    /// partitions).
    Running = 1,
    /// Restoring the state of assigned tasks from their changelogs.
    Restoring = 2,
    /// Ended, by a stop or an error.
    Stopped = 3,
}

impl ThreadStatus {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => ThreadStatus::Running,
            2 => ThreadStatus::Restoring,
            3 => ThreadStatus::Stopped,
            _ => ThreadStatus::Starting,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ThreadStatus::Starting => "starting",
            ThreadStatus::Running => "running",
            ThreadStatus::Restoring => "restoring",
            ThreadStatus::Stopped => "stopped",
        }
    }
}

/// The state of each stream thread of a worker.
#[derive(Debug)]
pub struct Health {
    threads: Vec<AtomicU8>,
}

impl Health {
    pub fn new(threads: usize) -> Self {
        Self {
            threads: (0..threads)
                .map(|_| AtomicU8::new(ThreadStatus::Starting as u8))
                .collect(),
        }
    }

    pub fn set(&self, thread: usize, state: ThreadStatus) {
        if let Some(slot) = self.threads.get(thread) {
            slot.store(state as u8, Ordering::Relaxed);
        }
    }

    pub fn state(&self, thread: usize) -> Option<ThreadStatus> {
        self.threads
            .get(thread)
            .map(|s| ThreadStatus::from_u8(s.load(Ordering::Relaxed)))
    }

    /// Ready: every thread runs its tasks.
    pub fn is_ready(&self) -> bool {
        !self.threads.is_empty()
            && (0..self.threads.len()).all(|t| self.state(t) == Some(ThreadStatus::Running))
    }

    /// Threads running their tasks now.
    pub fn running(&self) -> usize {
        (0..self.threads.len())
            .filter(|t| self.state(*t) == Some(ThreadStatus::Running))
            .count()
    }

    /// One line per thread, for the `/readyz` body.
    pub fn report(&self) -> String {
        (0..self.threads.len())
            .map(|t| {
                let state = self.state(t).unwrap_or(ThreadStatus::Stopped);
                format!("stream-thread-{t} {}\n", state.as_str())
            })
            .collect()
    }
}

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum ObservabilityError {
    #[error(
        "metrics.address {address}: cannot listen ({reason}); pick a free port, or set metrics.address=off"
    )]
    Bind { address: SocketAddr, reason: String },
    #[error("cannot start the metrics endpoint's thread: {0}")]
    Spawn(String),
}

/// The process-wide Prometheus recorder, installed once. Returns `None` when another
/// recorder was installed first (by an embedding application), whose exporter then
/// serves the metrics instead.
pub fn prometheus(application: &str) -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .add_global_label("application", application)
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    crate::metrics::describe();
                    let upkeep = handle.clone();
                    let _ = std::thread::Builder::new()
                        .name("sluice-metrics-upkeep".into())
                        .spawn(move || {
                            loop {
                                std::thread::sleep(UPKEEP_INTERVAL);
                                upkeep.run_upkeep();
                            }
                        });
                    Some(handle)
                }
                Err(_) => {
                    log::warn!(
                        "a metrics recorder is already installed; Sluice's metrics go to it and /metrics serves none"
                    );
                    None
                }
            }
        })
        .clone()
}

/// The running HTTP endpoint; dropping it stops the server.
pub struct Endpoint {
    address: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Endpoint {
    /// Listens on `address` and serves `/metrics`, `/healthz` and `/readyz` from a thread
    /// of its own, so a busy stream thread never delays a probe.
    pub fn start(
        address: SocketAddr,
        metrics: Option<PrometheusHandle>,
        health: Arc<Health>,
    ) -> Result<Self, ObservabilityError> {
        let listener = std::net::TcpListener::bind(address)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| ObservabilityError::Bind {
                address,
                reason: e.to_string(),
            })?;
        let bound = listener.local_addr().unwrap_or(address);
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sluice-metrics-http".into())
            .spawn(move || serve(listener, metrics, health, stopped))
            .map_err(|e| ObservabilityError::Spawn(e.to_string()))?;
        log::info!("metrics on http://{bound}/metrics, probes on /healthz and /readyz");
        Ok(Self {
            address: bound,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// The address it listens on (the real port when `metrics.address` asked for port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    listener: std::net::TcpListener,
    metrics: Option<PrometheusHandle>,
    health: Arc<Health>,
    stopped: tokio::sync::oneshot::Receiver<()>,
) {
    use axum::http::{StatusCode, header};
    use axum::routing::get;

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            log::error!("the metrics endpoint cannot start its runtime: {e}");
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                log::error!("the metrics endpoint cannot listen: {e}");
                return;
            }
        };
        let ready = health.clone();
        let app = axum::Router::new()
            .route(
                "/metrics",
                get(move || {
                    let body = metrics.as_ref().map(PrometheusHandle::render);
                    async move {
                        (
                            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                            body.unwrap_or_default(),
                        )
                    }
                }),
            )
            .route("/healthz", get(|| async { "ok\n" }))
            .route(
                "/readyz",
                get(move || {
                    let status = if ready.is_ready() {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    let body = ready.report();
                    async move { (status, body) }
                }),
            );
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = served {
            log::error!("the metrics endpoint stopped: {e}");
        }
    });
}

/// Sets the gauge of running stream threads from the worker's health.
pub(crate) fn publish_running(health: &Health) {
    crate::metrics::threads_running(health.running());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_thread_runs() {
        let health = Health::new(2);
        assert!(!health.is_ready(), "threads start not ready");
        health.set(0, ThreadStatus::Running);
        assert!(!health.is_ready(), "one thread still starting");
        health.set(1, ThreadStatus::Running);
        assert!(health.is_ready());
        health.set(1, ThreadStatus::Restoring);
        assert!(!health.is_ready(), "a restoring thread is not ready");
        health.set(1, ThreadStatus::Stopped);
        assert!(!health.is_ready(), "a stopped thread is not ready");
        assert_eq!(
            health.report(),
            "stream-thread-0 running\nstream-thread-1 stopped\n"
        );
    }

    #[test]
    fn a_worker_without_threads_is_not_ready() {
        assert!(!Health::new(0).is_ready());
    }
}
