//! Failure points for crash tests: a test makes a worker process die at an exact point of
//! its commit protocol, to show that start-up repairs what the crash left.
//!
//! `SLUICE_FAILPOINT=<name>:<n>` aborts the process (as SIGKILL would: no destructors, no
//! flush) the `n`-th time the point `name` is reached. Unset, a point costs one relaxed
//! atomic load.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable that arms a failure point.
pub const ENV: &str = "SLUICE_FAILPOINT";

/// Between a committed transaction and the write of its state to RocksDB.
pub const AFTER_COMMIT_BEFORE_STATE_WRITE: &str = "after-commit-before-state-write";

struct Armed {
    name: String,
    at: u64,
    hits: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let value = std::env::var(ENV).ok()?;
            let (name, at) = value.split_once(':').unwrap_or((&value, "1"));
            Some(Armed {
                name: name.to_string(),
                at: at.parse().unwrap_or(1),
                hits: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Aborts the process if `name` is armed and this is its `n`-th hit.
pub(crate) fn hit(name: &str) {
    if let Some(armed) = armed()
        && armed.name == name
        && armed.hits.fetch_add(1, Ordering::Relaxed) + 1 == armed.at
    {
        eprintln!("failpoint {name} reached: aborting the process");
        std::process::abort();
    }
}
