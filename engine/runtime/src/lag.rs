//! Consumer lag from librdkafka's statistics: per assigned partition, the records between
//! the thread's position and the end of the partition (its last stable offset under
//! read_committed).
//!
//! librdkafka's own `consumer_lag` counts from the offset committed through the consumer,
//! which under exactly-once it never sees (offsets are committed through the producer's
//! transaction), so it stays unknown; the position is what the thread has actually read.
//! Only the few fields needed are decoded.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::{WorkerStats, metrics};

/// One stream thread's lag reports: publishes each partition's lag as a gauge and the
/// thread's total in the worker's stats, and sets the gauge of a partition the thread no
/// longer reads to 0 rather than leaving it at its last value on this worker.
pub(crate) struct LagReporter {
    thread: usize,
    read_committed: bool,
    reported: Mutex<Vec<(String, i32)>>,
}

impl LagReporter {
    pub(crate) fn new(thread: usize, read_committed: bool) -> Self {
        Self {
            thread,
            read_committed,
            reported: Mutex::new(Vec::new()),
        }
    }

    /// Reads one statistics report (JSON) and publishes the lag it shows.
    pub(crate) fn report(&self, statistics: &[u8], stats: &WorkerStats) {
        let statistics: LagStatistics = match serde_json::from_slice(statistics) {
            Ok(s) => s,
            Err(e) => {
                log::debug!("stream thread {}: unreadable statistics: {e}", self.thread);
                return;
            }
        };
        let lags = statistics.lags(self.read_committed);
        let mut total = 0u64;
        for (topic, partition, lag) in &lags {
            metrics::consumer_lag(topic, *partition, *lag);
            total += *lag as u64;
        }
        stats.set_thread_lag(self.thread, total);
        let mut previous = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        for (topic, partition) in previous.iter() {
            if !lags.iter().any(|(t, p, _)| t == topic && p == partition) {
                metrics::consumer_lag(topic, *partition, 0);
            }
        }
        *previous = lags.into_iter().map(|(t, p, _)| (t, p)).collect();
    }
}

/// The part of librdkafka's statistics report that consumer lag needs.
#[derive(serde::Deserialize)]
struct LagStatistics {
    #[serde(default)]
    topics: HashMap<String, LagTopic>,
}

#[derive(serde::Deserialize)]
struct LagTopic {
    #[serde(default)]
    partitions: HashMap<String, LagPartition>,
}

#[derive(serde::Deserialize)]
struct LagPartition {
    #[serde(default)]
    fetch_state: String,
    #[serde(default = "unknown_offset")]
    hi_offset: i64,
    #[serde(default = "unknown_offset")]
    ls_offset: i64,
    /// The offset after the last record handed to the thread.
    #[serde(default = "unknown_offset")]
    app_offset: i64,
    #[serde(default = "unknown_offset")]
    committed_offset: i64,
}

fn unknown_offset() -> i64 {
    -1
}

impl LagStatistics {
    /// (topic, partition, lag) of every partition the thread fetches whose lag is known.
    fn lags(&self, read_committed: bool) -> Vec<(String, i32, i64)> {
        let mut lags = Vec::new();
        for (topic, stats) in &self.topics {
            for (partition, p) in &stats.partitions {
                // Partition -1 is librdkafka's internal unassigned queue; a lag of -1 is
                // unknown (not fetching, or nothing committed or fetched yet).
                let Ok(partition) = partition.parse::<i32>() else {
                    continue;
                };
                let end = if read_committed {
                    p.ls_offset
                } else {
                    p.hi_offset
                };
                let position = if p.app_offset >= 0 {
                    p.app_offset
                } else {
                    p.committed_offset
                };
                if partition < 0 || p.fetch_state == "none" || end < 0 || position < 0 {
                    continue;
                }
                lags.push((topic.clone(), partition, (end - position).max(0)));
            }
        }
        lags
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statistics(json: &str) -> LagStatistics {
        serde_json::from_str(json).expect("valid statistics")
    }

    const REPORT: &str = r#"{"topics": {"orders": {"partitions": {
        "0": {"fetch_state": "active", "hi_offset": 100, "ls_offset": 90, "app_offset": 40, "committed_offset": 30},
        "1": {"fetch_state": "active", "hi_offset": 50, "ls_offset": 50, "app_offset": -1, "committed_offset": 20},
        "2": {"fetch_state": "none", "hi_offset": 50, "ls_offset": 50, "app_offset": 1, "committed_offset": 1},
        "-1": {"fetch_state": "active", "hi_offset": 9, "ls_offset": 9, "app_offset": 0}
    }}}}"#;

    #[test]
    fn lag_counts_from_the_position_to_the_last_stable_offset_under_read_committed() {
        let mut lags = statistics(REPORT).lags(true);
        lags.sort();
        assert_eq!(
            lags,
            vec![("orders".into(), 0, 50), ("orders".into(), 1, 30)],
            "partition 0 from its position, 1 from its committed offset; 2 (not fetching) and -1 (internal) left out"
        );
    }

    #[test]
    fn lag_counts_to_the_high_watermark_under_read_uncommitted() {
        let mut lags = statistics(REPORT).lags(false);
        lags.sort();
        assert_eq!(lags[0], ("orders".into(), 0, 60));
    }
}
