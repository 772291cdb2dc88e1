//! Runtime metrics: commits, aborts, rebalances.

use std::time::Duration;

pub const COMMIT_DURATION: &str = "sluice_commit_duration_seconds";

pub(crate) fn commit_duration(application: &str, elapsed: Duration) {
    metrics::histogram!(COMMIT_DURATION, "application" => application.to_string())
        .record(elapsed.as_secs_f64());
}
