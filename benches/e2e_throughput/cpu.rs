//! Where a variant's CPU goes, per record: its processing thread (the stream thread, or the
//! bare loop's), its Kafka clients' own threads, and the broker. On a 2-core machine every
//! thread of the variant and the broker share the same cores, so a rate is decided by
//! the sum; and CPU time per record repeats between runs far better than a rate does.
//!
//! Read from Linux's per-thread scheduler statistics (`/proc/.../task/*/schedstat`, in
//! nanoseconds); elsewhere every figure is 0.

use std::path::Path;

/// CPU nanoseconds spent so far, by role.
#[derive(Clone, Copy, Default)]
pub struct CpuSnapshot {
    processing: u64,
    clients: u64,
    other: u64,
    broker: u64,
}

/// CPU microseconds per record between two snapshots.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuPerRecord {
    /// The thread that runs the records through: the stream thread, or the bare loop's.
    pub processing_us: f64,
    /// librdkafka's threads (broker I/O, the producer's poll thread) and the rest of the
    /// variant's process.
    pub clients_us: f64,
    /// The broker process.
    pub broker_us: f64,
}

/// The name the bare loop's thread runs under, so its CPU counts as processing.
pub const BARE_THREAD: &str = "e2e-bare-loop";

impl CpuSnapshot {
    /// This process's threads, and the broker listening on `brokers` (`host:port`).
    pub fn now(brokers: &str) -> Self {
        let mut snapshot = Self::default();
        for (name, nanos) in threads(Path::new("/proc/self")) {
            if name.starts_with("sluice-stream") || name == BARE_THREAD {
                snapshot.processing += nanos;
            } else if name.starts_with("rdk:") || name.starts_with("producer pollin") {
                snapshot.clients += nanos;
            } else {
                snapshot.other += nanos;
            }
        }
        snapshot.broker = broker_pid(brokers).and_then(process_nanos).unwrap_or(0);
        snapshot
    }

    /// Per record of `records`, since `earlier`.
    pub fn since(&self, earlier: &Self, records: u64) -> CpuPerRecord {
        let per = |now: u64, then: u64| now.saturating_sub(then) as f64 / 1e3 / records as f64;
        CpuPerRecord {
            processing_us: per(self.processing, earlier.processing),
            clients_us: per(self.clients + self.other, earlier.clients + earlier.other),
            broker_us: per(self.broker, earlier.broker),
        }
    }
}

/// Every live thread of this process with its CPU milliseconds, busiest first: printed by
/// the child with `SLUICE_E2E_CPU_THREADS=1`, to see what the "clients" figure holds.
pub fn threads_report() -> String {
    let mut threads: Vec<(String, u64)> = threads(Path::new("/proc/self")).collect();
    threads.sort_by_key(|(_, nanos)| std::cmp::Reverse(*nanos));
    threads
        .iter()
        .map(|(name, nanos)| format!("{name} {} ms", nanos / 1_000_000))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Each live thread of the process at `proc`: its name and CPU nanoseconds.
fn threads(proc: &Path) -> impl Iterator<Item = (String, u64)> {
    std::fs::read_dir(proc.join("task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| {
            let name = std::fs::read_to_string(task.path().join("comm")).ok()?;
            let schedstat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
            let nanos = schedstat.split_whitespace().next()?.parse().ok()?;
            Some((name.trim_end().to_string(), nanos))
        })
}

/// The CPU nanoseconds of a whole process, threads that have exited included (the
/// broker's runtime starts and ends threads as it goes). In clock ticks of 10 ms, fine
/// against the seconds a backlog takes.
fn process_nanos(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces;
    // utime and stime are the 14th and 15th fields of the whole line.
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    const NANOS_PER_TICK: u64 = 10_000_000; // USER_HZ is 100 on Linux
    Some(ticks * NANOS_PER_TICK)
}

/// The test broker's process listening on `brokers` (not a shell that started it).
fn broker_pid(brokers: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            (comm.trim_end() == "crabka-broker" && cmdline.contains(brokers)).then_some(pid)
        })
}
