//! Late records: the grace period and the fate of records behind it, shared by every
//! operator on event time (time windows, sessions, stream-stream joins).
//!
//! Each operator decides *when* a record is late from its own windows; what happens then
//! is the same everywhere: by default the record is dropped and counted
//! (`sluice_records_dropped_total{reason="late"}`); with `late_records_to_dead_letter` it
//! goes to the topology's error policy like any record that cannot be processed.

use std::time::Duration;

use super::millis;
use crate::error::ProcessError;

/// How late a record may be, and what becomes of one that is later.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Lateness {
    /// How far behind stream time a record is still taken, in milliseconds.
    pub(crate) grace_ms: i64,
    to_dead_letter: bool,
}

impl Lateness {
    pub(crate) fn with_grace(self, grace: Duration) -> Self {
        Self {
            grace_ms: millis(grace),
            ..self
        }
    }

    pub(crate) fn to_dead_letter(self) -> Self {
        Self {
            to_dead_letter: true,
            ..self
        }
    }
}

/// One task's handling of late records for one operator.
pub(crate) struct LateRecords {
    lateness: Lateness,
    dropped: metrics::Counter,
}

impl LateRecords {
    pub(crate) fn new(lateness: Lateness, topology: &str, operator: &str) -> Self {
        Self {
            lateness,
            dropped: crate::metrics::dropped(topology, operator, "late"),
        }
    }

    /// Disposes of a late record: counted and `Ok` (dropped), or an error for the error
    /// policy saying `why`.
    pub(crate) fn reject(&self, why: &'static str) -> Result<(), ProcessError> {
        if self.lateness.to_dead_letter {
            return Err(ProcessError::validation(why));
        }
        self.dropped.increment(1);
        Ok(())
    }
}
