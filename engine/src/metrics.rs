//! Every metric Sluice exports: its name, its help text and the handles that record it.
//!
//! One module for the engine and the runtime alike, so the names a dashboard queries are
//! found in one place. Names follow `sluice_<what>_<unit>[_total]`. Labels are `topology`,
//! `operator`, `topic`, `partition`, `store`, `cache` and `reason`: names of things, never
//! values taken from a record. Every series also carries the recorder's global `application`
//! label. Handles on the per-record path are created once per task and operator, so the
//! per-record cost is an atomic add. Without an installed recorder (tests, the TestDriver)
//! every handle is a no-op.

use std::time::{Duration, Instant};

use metrics::{
    Counter, Gauge, Histogram, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};

// What tasks do with records.
pub const RECORDS_CONSUMED: &str = "sluice_records_consumed_total";
pub const RECORDS_PRODUCED: &str = "sluice_records_produced_total";
pub const RECORDS_DEAD_LETTERED: &str = "sluice_records_dead_lettered_total";
pub const RECORDS_DROPPED: &str = "sluice_records_dropped_total";
pub const OPERATOR_RECORDS: &str = "sluice_operator_records_total";
pub const PROCESSING_LATENCY: &str = "sluice_processing_latency_seconds";
pub const END_TO_END_LATENCY: &str = "sluice_end_to_end_latency_seconds";
// How the runtime commits and keeps up.
pub const COMMIT_DURATION: &str = "sluice_commit_duration_seconds";
pub const COMMITS: &str = "sluice_commits_total";
pub const TRANSACTIONS_ABORTED: &str = "sluice_transactions_aborted_total";
pub const REBALANCES: &str = "sluice_rebalances_total";
pub const CONSUMER_LAG: &str = "sluice_consumer_lag_records";
pub const STREAM_THREADS_RUNNING: &str = "sluice_stream_threads_running";
// State.
pub const STORE_SIZE: &str = "sluice_store_size_bytes";
pub const STORE_KEYS: &str = "sluice_store_keys";
pub const RESTORED_RECORDS: &str = "sluice_restore_records_total";
pub const RESTORE_REMAINING: &str = "sluice_restore_remaining_records";
// Lookups of reference data and the caches in front of them (labelled by cache, never by key).
pub const CACHE_HITS: &str = "sluice_cache_hits_total";
pub const CACHE_MISSES: &str = "sluice_cache_misses_total";
pub const CACHE_EVICTIONS: &str = "sluice_cache_evictions_total";
pub const LOOKUP_DURATION: &str = "sluice_lookup_duration_seconds";
pub const LOOKUP_ERRORS: &str = "sluice_lookup_errors_total";
// Async operators' calls.
pub const ASYNC_IN_FLIGHT: &str = "sluice_async_calls_in_flight";
pub const ASYNC_CALL_DURATION: &str = "sluice_async_call_duration_seconds";
pub const ASYNC_CALL_TIMEOUTS: &str = "sluice_async_call_timeouts_total";
pub const ASYNC_CALL_RETRIES: &str = "sluice_async_call_retries_total";
// Records held until due (retry tiers).
pub const DUE_HOLDS: &str = "sluice_due_holds_total";
pub const DUE_LATENESS: &str = "sluice_due_lateness_seconds";

/// Registers the help text of every metric with the installed recorder.
pub fn describe() {
    describe_counter!(RECORDS_CONSUMED, "Input records a task has handled.");
    describe_counter!(RECORDS_PRODUCED, "Records sinks have written, by topic.");
    describe_counter!(
        RECORDS_DEAD_LETTERED,
        "Input records sent to the dead-letter topic."
    );
    describe_counter!(
        RECORDS_DROPPED,
        "Records dropped on purpose, by reason (skipped errors, unrouted branch records)."
    );
    describe_counter!(OPERATOR_RECORDS, "Records an operator has received.");
    describe_histogram!(
        PROCESSING_LATENCY,
        "Time to run one input record through its sub-topology, in seconds; timed on one input in 16 (count inputs with sluice_records_consumed_total)."
    );
    describe_histogram!(
        END_TO_END_LATENCY,
        "From an input record's timestamp to the end of its processing, in seconds."
    );
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
    describe_counter!(
        CACHE_HITS,
        "Lookups a cache answered from what it held, by cache."
    );
    describe_counter!(
        CACHE_MISSES,
        "Lookups a cache could not answer from what it held and waited on a call for (its own or one it shared), by cache."
    );
    describe_counter!(
        CACHE_EVICTIONS,
        "Entries a cache dropped, by cache and reason (size: over its bound; expired: past its time to live)."
    );
    describe_histogram!(
        LOOKUP_DURATION,
        "Time of one call from a cache to the service behind it, failed calls included, in seconds."
    );
    describe_counter!(
        LOOKUP_ERRORS,
        "Calls from a cache to its service that failed, by cache and reason (transient or permanent)."
    );
    describe_gauge!(
        ASYNC_IN_FLIGHT,
        "Calls an async operator has running, by operator."
    );
    describe_histogram!(
        ASYNC_CALL_DURATION,
        "Time from an async operator's call to its result, retries included, in seconds."
    );
    describe_counter!(
        DUE_HOLDS,
        "Times a partition of a held topic (a retry tier) paused until its next record fell due, by topic."
    );
    describe_histogram!(
        DUE_LATENESS,
        "How long after its due time a held topic's record was processed, by topic, in seconds: a retry tier's lag."
    );
    describe_counter!(
        ASYNC_CALL_TIMEOUTS,
        "Async calls that did not complete within their timeout."
    );
    describe_counter!(
        ASYNC_CALL_RETRIES,
        "Retries of async calls after a transient error."
    );
}

/// Series that exist from the start (at zero unless already counted), so dashboards and
/// alerts see a 0 rather than no data before the first commit, abort or rebalance.
pub fn register_at_zero() {
    counter!(COMMITS).increment(0);
    counter!(TRANSACTIONS_ABORTED).increment(0);
    counter!(REBALANCES).increment(0);
    let _ = histogram!(COMMIT_DURATION);
}

pub(crate) fn dropped(topology: &str, operator: &str, reason: &'static str) -> Counter {
    counter!(RECORDS_DROPPED, "topology" => topology.to_string(), "operator" => operator.to_string(), "reason" => reason)
}

pub(crate) fn operator_records(topology: &str, operator: &str, partition: i32) -> Counter {
    counter!(OPERATOR_RECORDS, "topology" => topology.to_string(), "operator" => operator.to_string(), "partition" => partition.to_string())
}

pub(crate) fn produced(topology: &str, topic: &str, partition: i32) -> Counter {
    counter!(RECORDS_PRODUCED, "topology" => topology.to_string(), "topic" => topic.to_string(), "partition" => partition.to_string())
}

/// One input in this many is timed for [`PROCESSING_LATENCY`]. Timing every input took
/// two clock reads a record, 3% of a stream thread's time running a map (BENCHMARKS.md);
/// its quantiles, all the histogram is read for, hold on a sample.
const LATENCY_SAMPLE_EVERY: u32 = 16;

/// The per-task handles.
pub(crate) struct TaskMetrics {
    pub(crate) consumed: Counter,
    pub(crate) dead_lettered: Counter,
    pub(crate) skipped: Counter,
    latency: Histogram,
    /// Inputs since the last timed one.
    untimed: u32,
}

impl TaskMetrics {
    pub(crate) fn new(topology: &str, partition: i32) -> Self {
        let p = partition.to_string();
        Self {
            consumed: counter!(RECORDS_CONSUMED, "topology" => topology.to_string(), "partition" => p.clone()),
            dead_lettered: counter!(RECORDS_DEAD_LETTERED, "topology" => topology.to_string(), "partition" => p.clone()),
            skipped: counter!(RECORDS_DROPPED, "topology" => topology.to_string(), "partition" => p.clone(), "reason" => "error-skipped"),
            latency: histogram!(PROCESSING_LATENCY, "topology" => topology.to_string(), "partition" => p),
            // The first input is timed.
            untimed: LATENCY_SAMPLE_EVERY - 1,
        }
    }

    /// When an input starts, if it is one of those timed.
    pub(crate) fn start_input(&mut self) -> Option<Instant> {
        self.untimed += 1;
        (self.untimed == LATENCY_SAMPLE_EVERY).then(|| {
            self.untimed = 0;
            Instant::now()
        })
    }

    /// Records a timed input's processing time.
    pub(crate) fn end_input(&self, started: Option<Instant>) {
        if let Some(started) = started {
            self.latency.record(started.elapsed().as_secs_f64());
        }
    }
}

/// The end-to-end latency of a topology's records, from their timestamps.
pub fn end_to_end_latency(topology: &str) -> Histogram {
    histogram!(END_TO_END_LATENCY, "topology" => topology.to_string())
}

pub fn commit(elapsed: Duration) {
    histogram!(COMMIT_DURATION).record(elapsed.as_secs_f64());
    counter!(COMMITS).increment(1);
}

pub fn transaction_aborted() {
    counter!(TRANSACTIONS_ABORTED).increment(1);
}

pub fn rebalance() {
    counter!(REBALANCES).increment(1);
}

pub fn consumer_lag(topic: &str, partition: i32, lag: i64) {
    gauge!(CONSUMER_LAG, "topic" => topic.to_string(), "partition" => partition.to_string())
        .set(lag as f64);
}

/// A held topic's partition paused until its next record is due.
pub fn due_hold(topic: &str) {
    counter!(DUE_HOLDS, "topic" => topic.to_string()).increment(1);
}

/// A held topic's record processed `late` after its due time.
pub fn due_lateness(topic: &str, late: Duration) {
    histogram!(DUE_LATENESS, "topic" => topic.to_string()).record(late.as_secs_f64());
}

pub fn threads_running(running: usize) {
    gauge!(STREAM_THREADS_RUNNING).set(running as f64);
}

/// Publishes a store's estimated size and key count.
pub fn store_size(store: &sluice_state::TransactionalStore, partition: i32) {
    let labels = [
        ("store", store.name().to_string()),
        ("partition", partition.to_string()),
    ];
    gauge!(STORE_SIZE, &labels).set(store.approximate_bytes() as f64);
    gauge!(STORE_KEYS, &labels).set(store.approximate_len() as f64);
}

/// The handles of one store partition's restore: records restored, and still to restore.
pub fn restore_progress(store: &str, partition: i32) -> (Counter, Gauge) {
    let labels = [
        ("store", store.to_string()),
        ("partition", partition.to_string()),
    ];
    (
        counter!(RESTORED_RECORDS, &labels),
        gauge!(RESTORE_REMAINING, &labels),
    )
}

/// The handles of one lookup cache, labelled by its name (an operator's), never by a key.
#[derive(Clone)]
pub(crate) struct CacheMetrics {
    pub(crate) hits: Counter,
    pub(crate) misses: Counter,
    pub(crate) evicted_size: Counter,
    pub(crate) evicted_expired: Counter,
    pub(crate) lookup_duration: Histogram,
    pub(crate) transient_errors: Counter,
    pub(crate) permanent_errors: Counter,
}

impl CacheMetrics {
    pub(crate) fn new(cache: &str) -> Self {
        let c = || cache.to_string();
        Self {
            hits: counter!(CACHE_HITS, "cache" => c()),
            misses: counter!(CACHE_MISSES, "cache" => c()),
            evicted_size: counter!(CACHE_EVICTIONS, "cache" => c(), "reason" => "size"),
            evicted_expired: counter!(CACHE_EVICTIONS, "cache" => c(), "reason" => "expired"),
            lookup_duration: histogram!(LOOKUP_DURATION, "cache" => c()),
            transient_errors: counter!(LOOKUP_ERRORS, "cache" => c(), "reason" => "transient"),
            permanent_errors: counter!(LOOKUP_ERRORS, "cache" => c(), "reason" => "permanent"),
        }
    }
}

/// The handles of one async operator's calls, labelled by the operator's name.
#[derive(Clone)]
pub(crate) struct AsyncCallMetrics {
    pub(crate) in_flight: Gauge,
    pub(crate) duration: Histogram,
    pub(crate) timeouts: Counter,
    pub(crate) retries: Counter,
}

impl AsyncCallMetrics {
    pub(crate) fn new(operator: &str) -> Self {
        let o = || operator.to_string();
        Self {
            in_flight: gauge!(ASYNC_IN_FLIGHT, "operator" => o()),
            duration: histogram!(ASYNC_CALL_DURATION, "operator" => o()),
            timeouts: counter!(ASYNC_CALL_TIMEOUTS, "operator" => o()),
            retries: counter!(ASYNC_CALL_RETRIES, "operator" => o()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_input_in_sixteen_is_timed_starting_with_the_first() {
        let mut metrics = TaskMetrics::new("t", 0);
        let timed: Vec<usize> = (0..48)
            .filter(|_| {
                let started = metrics.start_input();
                let timed = started.is_some();
                metrics.end_input(started);
                timed
            })
            .collect();
        assert_eq!(timed, vec![0, 16, 32]);
    }
}
