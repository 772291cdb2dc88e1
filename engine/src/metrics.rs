//! Metric names and the handles tasks keep.
//!
//! Names follow `sluice_<what>_<unit>[_total]`. Labels are `topology`, `operator`, `topic`,
//! `partition` and `reason`: names of things, never values taken from a record. Handles are
//! created once per task and operator, so the per-record cost is an atomic add.
//! Without an installed recorder (tests, the TestDriver) every handle is a no-op.

use metrics::{Counter, Histogram, counter, describe_counter, describe_histogram, histogram};

pub const RECORDS_CONSUMED: &str = "sluice_records_consumed_total";
pub const RECORDS_PRODUCED: &str = "sluice_records_produced_total";
pub const RECORDS_DEAD_LETTERED: &str = "sluice_records_dead_lettered_total";
pub const RECORDS_DROPPED: &str = "sluice_records_dropped_total";
pub const OPERATOR_RECORDS: &str = "sluice_operator_records_total";
pub const PROCESSING_LATENCY: &str = "sluice_processing_latency_seconds";

/// Registers the help text of every engine metric with the installed recorder.
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
        "Time to run one input record through its sub-topology, in seconds."
    );
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

/// The per-task handles.
pub(crate) struct TaskMetrics {
    pub(crate) consumed: Counter,
    pub(crate) dead_lettered: Counter,
    pub(crate) skipped: Counter,
    pub(crate) latency: Histogram,
}

impl TaskMetrics {
    pub(crate) fn new(topology: &str, partition: i32) -> Self {
        let p = partition.to_string();
        Self {
            consumed: counter!(RECORDS_CONSUMED, "topology" => topology.to_string(), "partition" => p.clone()),
            dead_lettered: counter!(RECORDS_DEAD_LETTERED, "topology" => topology.to_string(), "partition" => p.clone()),
            skipped: counter!(RECORDS_DROPPED, "topology" => topology.to_string(), "partition" => p.clone(), "reason" => "error-skipped"),
            latency: histogram!(PROCESSING_LATENCY, "topology" => topology.to_string(), "partition" => p),
        }
    }
}
