//! A worker: the stream threads of one process, started together and stopped together,
//! with the global tables they read and the endpoint that reports on them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sluice_engine::serde::Schemas;
use sluice_engine::topology::Topology;

use crate::config::{ConfigError, WorkerConfig};
use crate::error::StreamThreadError;
use crate::observability::{self, Health, ThreadStatus, publish_running};
use crate::{admin, global, metrics, stream_thread};

/// Counters a worker keeps for its own summaries (the metrics carry the same facts).
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub consumed: AtomicU64,
    /// Input records whose processing has been committed (offsets, and under exactly-once
    /// the transaction with their outputs).
    pub committed: AtomicU64,
    pub produced: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub commits: AtomicU64,
    pub aborts: AtomicU64,
    pub rebalances: AtomicU64,
    /// Changelog records restored into stores.
    pub restored: AtomicU64,
    /// Consumer lag per stream thread, from librdkafka's statistics.
    lag_by_thread: Mutex<BTreeMap<usize, u64>>,
}

impl WorkerStats {
    /// Records between the committed offsets and the ends of every assigned partition, as
    /// of the latest statistics (every few seconds).
    pub fn lag(&self) -> u64 {
        self.lag_by_thread
            .lock()
            .map(|l| l.values().sum())
            .unwrap_or(0)
    }

    pub(crate) fn set_thread_lag(&self, thread: usize, lag: u64) {
        if let Ok(mut l) = self.lag_by_thread.lock() {
            l.insert(thread, lag);
        }
    }
}

/// Why a worker could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    #[error(transparent)]
    Thread(#[from] StreamThreadError),
    #[error("cannot start a stream thread: {0}")]
    Spawn(String),
    #[error("cannot use state directory {path}: {reason}")]
    StateDir { path: String, reason: String },
    #[error(transparent)]
    Observability(#[from] observability::ObservabilityError),
    #[error("global table `{table}`: {reason}")]
    GlobalTable { table: String, reason: String },
    #[error("cannot prepare the topology's schemas: {0}")]
    Schemas(#[from] sluice_engine::serde::registry::RegistryError),
    #[error("cannot build the topology: {0}")]
    Build(BuildError),
}

/// Why a topology could not be built in a worker (a bad topology key, a registry that
/// refused a schema, reference files that do not read).
pub type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// What a worker gives the code that builds its topology.
pub struct BuildContext<'a> {
    /// Where Avro serdes get their schema ids.
    pub schemas: &'a Schemas,
    /// The topology's own configuration keys that are set
    /// ([`ConfigBuilder::accept`](crate::ConfigBuilder::accept)), unchecked.
    pub settings: &'a BTreeMap<String, String>,
    /// The worker's tokio runtime, on which async operators' calls run: clients they use
    /// are made on it.
    pub runtime: &'a tokio::runtime::Handle,
}

impl BuildContext<'_> {
    /// Runs `future` to completion on the worker's runtime, from the building thread.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }
}

/// A running worker; stop it with [`Worker::stop`] and wait with [`Worker::join`].
pub struct Worker {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Result<(), StreamThreadError>>>,
    /// Follows the global tables' topics; stops with the worker.
    global_thread: Option<JoinHandle<()>>,
    stats: Arc<WorkerStats>,
    health: Arc<Health>,
    /// Serves /metrics, /healthz and /readyz until the worker is dropped.
    endpoint: Option<observability::Endpoint>,
    /// Runs async operators' calls; shut down after the stream threads.
    calls: Option<tokio::runtime::Runtime>,
}

impl Worker {
    /// Builds the topology with the schemas of the configured registry (see
    /// [`schemas::for_worker`](crate::schemas::for_worker)), then starts it as
    /// [`start`](Worker::start) does. Output schemas are registered before any record moves.
    pub fn start_with(
        config: WorkerConfig,
        build: impl FnOnce(&BuildContext<'_>) -> Result<Topology, BuildError>,
    ) -> Result<Self, WorkerError> {
        let calls = calls_runtime()?;
        // The metrics recorder before the build: operators that take their metric handles
        // when they are built (the lookup caches of `enrich`) record to the recorder
        // installed at that moment, and to nothing when there is none yet.
        if config.metrics_address.is_some() {
            observability::prometheus(&config.application_id);
        }
        let schemas = crate::schemas::for_worker(&config, calls.handle().clone())?;
        let topology = build(&BuildContext {
            schemas: &schemas,
            settings: &config.topology,
            runtime: calls.handle(),
        })
        .map_err(WorkerError::Build)?;
        Self::start_on(topology, config, calls)
    }

    /// Checks the cluster and topics, then starts the stream threads.
    ///
    /// The metrics recorder is installed here, after `topology` was built: the lookup
    /// caches of its `enrich` operators, which take their metric handles when built, then
    /// export nothing (unless a recorder was installed before). Use
    /// [`start_with`](Worker::start_with), which builds the topology after installing it.
    pub fn start(topology: Topology, config: WorkerConfig) -> Result<Self, WorkerError> {
        Self::start_on(topology, config, calls_runtime()?)
    }

    fn start_on(
        topology: Topology,
        config: WorkerConfig,
        calls: tokio::runtime::Runtime,
    ) -> Result<Self, WorkerError> {
        let topology = topology.for_application(&config.application_id);
        let config = Arc::new(config);
        let partition_counts = admin::prepare(&topology, &config)?;
        let process_id = process_id(&config.state_dir, &config.application_id)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(WorkerStats::default());
        let health = Arc::new(Health::new(config.num_stream_threads));
        // One memory budget for every RocksDB store of every thread.
        let budget = sluice_state::StateBudget::new(
            config.state_cache_max_bytes,
            config.state_write_buffer_max_bytes,
        );
        let endpoint = match config.metrics_address {
            Some(address) => {
                let handle = observability::prometheus(&config.application_id);
                metrics::register_at_zero();
                Some(observability::Endpoint::start(
                    address,
                    handle,
                    health.clone(),
                )?)
            }
            None => None,
        };
        // Every global table is whole before the first stream record is processed.
        let globals = global::start(
            &topology,
            &config,
            &budget,
            &partition_counts,
            &stop,
            &stats,
        )?;
        let mut threads = Vec::new();
        for index in 0..config.num_stream_threads {
            let started = stream_thread::StreamThread::new(
                index,
                config.clone(),
                topology.clone(),
                stream_thread::WorkerShared {
                    stats: stats.clone(),
                    health: health.clone(),
                    budget: budget.clone(),
                    stop: stop.clone(),
                    globals: globals.stores.clone(),
                    runtime: calls.handle().clone(),
                },
                &process_id,
            )
            .map_err(WorkerError::from)
            .and_then(|thread| {
                let health = health.clone();
                std::thread::Builder::new()
                    .name(format!("sluice-stream-{index}"))
                    .spawn(move || {
                        let result = thread.run();
                        health.set(index, ThreadStatus::Stopped);
                        publish_running(&health);
                        result
                    })
                    .map_err(|e| WorkerError::Spawn(e.to_string()))
            });
            match started {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    // Leave no thread of a worker that failed to start behind.
                    stop.store(true, Ordering::Relaxed);
                    for handle in threads {
                        let _ = handle.join();
                    }
                    if let Some(handle) = globals.thread {
                        let _ = handle.join();
                    }
                    return Err(e);
                }
            }
        }
        log::info!(
            "worker {} started: {} stream thread(s), {}",
            config.application_id,
            config.num_stream_threads,
            config.processing_guarantee.as_str()
        );
        Ok(Self {
            stop,
            threads,
            global_thread: globals.thread,
            stats,
            health,
            endpoint,
            calls: Some(calls),
        })
    }

    pub fn stats(&self) -> &Arc<WorkerStats> {
        &self.stats
    }

    /// Each stream thread's state, as `/readyz` reports it.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// Where /metrics, /healthz and /readyz are served (`None` with `metrics.address=off`).
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.endpoint.as_ref().map(observability::Endpoint::address)
    }

    /// The flag that stops the worker; setting it starts a graceful shutdown.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Asks every stream thread to commit and leave the group.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether a stream thread has ended (by a stop or an error).
    pub fn any_thread_finished(&self) -> bool {
        self.threads.iter().any(JoinHandle::is_finished)
    }

    /// Waits for every thread; the first error wins.
    pub fn join(mut self) -> Result<(), WorkerError> {
        let mut first_error = None;
        for handle in self.threads {
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    self.stop.store(true, Ordering::Relaxed);
                    first_error.get_or_insert(WorkerError::Thread(e));
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        // The stream threads are done: the global thread has no reader left.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.global_thread.take() {
            let _ = handle.join();
        }
        if let Some(calls) = self.calls.take() {
            calls.shutdown_background();
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// One runtime per worker for async operators' calls and the schema registry's requests;
/// the stream threads stay synchronous and only start calls and collect what completed.
fn calls_runtime() -> Result<tokio::runtime::Runtime, WorkerError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sluice-calls")
        .enable_all()
        .build()
        .map_err(|e| WorkerError::Spawn(format!("the async runtime: {e}")))
}

/// This worker's id, kept in the state directory so a restarted worker reuses its
/// transactional ids and fences its own zombie at once.
fn process_id(state_dir: &Path, application_id: &str) -> Result<String, WorkerError> {
    let dir = state_dir.join(application_id);
    let path = dir.join("process-id");
    let error = |e: std::io::Error| WorkerError::StateDir {
        path: dir.display().to_string(),
        reason: e.to_string(),
    };
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_string());
        }
    }
    std::fs::create_dir_all(&dir).map_err(error)?;
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    std::fs::write(&path, &id).map_err(error)?;
    Ok(id)
}
