//! The Kafka runtime: runs a topology as a worker in a consumer group.
//!
//! This crate is where tasks meet Kafka; the engine's DSL, operators and
//! TestDriver never do. A [`Worker`] checks the cluster and the topics ([`admin`]), then
//! runs `num.stream.threads` stream threads, each an OS thread with its own consumer and
//! producer and the tasks of the partitions assigned to it. Scaling out is running more
//! workers with the same `application.id`: Kafka's group protocol moves partitions, and
//! their tasks, between them.
//!
//! The runtime is split by role, as Kafka Streams' is:
//!
//! | role | file |
//! |---|---|
//! | the loop, rebalance callbacks, error handling | `stream_thread.rs` |
//! | the assigned partitions' records, read in batches | `fetch.rs` |
//! | tasks in every state, and how a record reaches its task (with partition groups and async calls) | `task_manager/` |
//! | the producer and its transaction | `record_collector.rs` |
//! | commit, and abort with rewind | `commit.rs` |
//! | timestamp-ordered input queues | `partition_group.rs` |
//! | restoring tasks beside ready ones | `state_updater.rs`, reading changelogs through `restore.rs` |
//! | retries of records waiting on a service | `retry.rs` |
//! | consumer lag | `lag.rs` |
//! | client configurations, FFI and offset metadata | `kafka.rs` |
//! | configuration keys, with the one table of defaults | `config/` |
//! | the schema registry a topology's serdes use | `schemas.rs` |
//! | topics and the cluster at start-up | `admin.rs` |
//! | global tables | `global.rs` |
//! | /metrics, /healthz, /readyz | `observability.rs` |
//! | the worker: its threads started and stopped together | `worker.rs` |
//!
//! Guarantees, per `processing.guarantee`:
//! * `exactly_once_v2` (default): every input record's outputs, dead-letter records and
//!   offset commit are one Kafka transaction; read_committed consumers of the outputs see
//!   each input's effect exactly once, across crashes, restarts and rebalances.
//! * `at_least_once`: outputs are flushed before offsets are committed; after a crash,
//!   the records since the last commit are processed again (duplicates, never losses).

pub mod admin;
mod commit;
pub mod config;
mod error;
pub mod failpoint;
mod fetch;
pub mod global;
mod kafka;
mod lag;
pub mod observability;
mod partition_group;
mod record_collector;
pub mod restore;
mod retry;
pub mod schemas;
mod state_updater;
mod stream_thread;
mod task_manager;
mod worker;

/// Metric names and handles live in the engine, with every other metric of Sluice.
pub(crate) use sluice_engine::metrics;

pub use config::{ConfigBuilder, ConfigError, ProcessingGuarantee, WorkerConfig};
pub use error::StreamThreadError;
pub use kafka::redact_kafka_error;
pub use observability::{Health, ThreadStatus};
pub use retry::{MAX_BACKOFF, MIN_BACKOFF};
pub use worker::{BuildContext, BuildError, Worker, WorkerError, WorkerStats};
