//! Runtime metrics: commits, aborts, rebalances, consumer lag and end-to-end latency.
//!
//! Every series carries the recorder's global `application` label; the rest are labelled
//! by topic and partition, never by anything read from a record.

use std::time::Duration;

use metrics::{describe_counter, describe_gauge, describe_histogram};

pub const COMMIT_DURATION: &str = "sluice_commit_duration_seconds";
pub const COMMITS: &str = "sluice_commits_total";
pub const TRANSACTIONS_ABORTED: &str = "sluice_transactions_aborted_total";
pub const REBALANCES: &str = "sluice_rebalances_total";
pub const CONSUMER_LAG: &str = "sluice_consumer_lag_records";
pub const END_TO_END_LATENCY: &str = "sluice_end_to_end_latency_seconds";
pub const STREAM_THREADS_RUNNING: &str = "sluice_stream_threads_running";
pub const STORE_SIZE: &str = "sluice_store_size_bytes";
pub const STORE_KEYS: &str = "sluice_store_keys";
pub use super::restore::{RESTORE_REMAINING, RESTORED_RECORDS};

pub(crate) fn describe() {
    describe_histogram!(
        COMMIT_DURATION,
        "Time to commit: offsets, and under exactly-once the transaction, in seconds."
    );
    describe_counter!(COMMITS, "Commits that succeeded.");
    describe_counter!(
        TRANSACTIONS_ABORTED,
        "Transactions aborted (their work is rewound and redone)."
    );
    describe_counter!(
        REBALANCES,
        "Consumer-group rebalances a stream thread took part in."
    );
    describe_gauge!(
        CONSUMER_LAG,
        "Records between a stream thread's position in a partition and the partition's end (last stable offset under read_committed)."
    );
    describe_histogram!(
        END_TO_END_LATENCY,
        "From an input record's timestamp to the end of its processing, in seconds."
    );
    describe_gauge!(
        STREAM_THREADS_RUNNING,
        "Stream threads that have joined the group and run their tasks."
    );
    describe_counter!(
        RESTORED_RECORDS,
        "Changelog records restored into a store, by store and partition."
    );
    describe_gauge!(
        RESTORE_REMAINING,
        "Changelog records left to restore into a store, by store and partition."
    );
    describe_gauge!(
        STORE_SIZE,
        "Estimated bytes of a store's live data and memtables, by store and partition."
    );
    describe_gauge!(
        STORE_KEYS,
        "Estimated keys in a store, by store and partition."
    );
}

pub(crate) fn store_size(store: &sluice_state::TransactionalStore, partition: i32) {
    let labels = [
        ("store", store.name().to_string()),
        ("partition", partition.to_string()),
    ];
    metrics::gauge!(STORE_SIZE, &labels).set(store.approximate_bytes() as f64);
    metrics::gauge!(STORE_KEYS, &labels).set(store.approximate_len() as f64);
}

pub(crate) fn commit(elapsed: Duration) {
    metrics::histogram!(COMMIT_DURATION).record(elapsed.as_secs_f64());
    metrics::counter!(COMMITS).increment(1);
}

pub(crate) fn transaction_aborted() {
    metrics::counter!(TRANSACTIONS_ABORTED).increment(1);
}

pub(crate) fn rebalance() {
    metrics::counter!(REBALANCES).increment(1);
}

pub(crate) fn consumer_lag(topic: &str, partition: i32, lag: i64) {
    metrics::gauge!(CONSUMER_LAG, "topic" => topic.to_string(), "partition" => partition.to_string())
        .set(lag as f64);
}

pub(crate) fn end_to_end_latency(topology: &str) -> metrics::Histogram {
    metrics::histogram!(END_TO_END_LATENCY, "topology" => topology.to_string())
}

pub(crate) fn threads_running(running: usize) {
    metrics::gauge!(STREAM_THREADS_RUNNING).set(running as f64);
}

/// Series that exist from the start (at zero unless already counted), so dashboards and
/// alerts see a 0 rather than no data before the first commit, abort or rebalance.
pub(crate) fn register_at_zero() {
    metrics::counter!(COMMITS).increment(0);
    metrics::counter!(TRANSACTIONS_ABORTED).increment(0);
    metrics::counter!(REBALANCES).increment(0);
    let _ = metrics::histogram!(COMMIT_DURATION);
}
