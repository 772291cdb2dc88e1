//! Global tables on a worker: each read whole before the stream threads start, then
//! followed by one thread for as long as the worker runs.
//!
//! A global table's store is one RocksDB instance for all partitions of its topic, under
//! `<state.dir>/<application.id>/global/<store>`, with each partition's checkpoint (the
//! offset it has been read to) beside the rows. Start-up brings every partition to the end
//! of its topic (the same restore a changelog gets, read_committed), so the first stream
//! record already sees the whole table, and a restart with the state directory intact
//! reads only the tail (counted in [`WorkerStats::restored`]). Afterwards the global
//! thread repeats that restore every [`FOLLOW_INTERVAL`]: new rows reach lookups within
//! about that long of their commit. A failure while following (a broker restart) is
//! logged and retried at the next round: the stream keeps joining with the rows it has.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use sluice_state::{GlobalStore, RocksDbStore, StateBudget};

use sluice_engine::task::GlobalStores;
use sluice_engine::topology::Topology;

use crate::config::WorkerConfig;
use crate::restore::{Opened, Restorer, open_checked};
use crate::{WorkerError, WorkerStats};

/// How often the global thread looks for new rows.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

/// The global tables of a worker: their stores, and the thread following their topics.
pub(crate) struct GlobalTables {
    pub(crate) stores: GlobalStores,
    pub(crate) thread: Option<JoinHandle<()>>,
}

/// Opens every global table's store, brings it to the end of its topic, and starts the
/// thread that follows the topics. `counts` holds each topic's partition count.
pub(crate) fn start(
    topology: &Topology,
    config: &Arc<WorkerConfig>,
    budget: &StateBudget,
    counts: &BTreeMap<String, i32>,
    stop: &Arc<AtomicBool>,
    stats: &WorkerStats,
) -> Result<GlobalTables, WorkerError> {
    if topology.global_tables().is_empty() {
        return Ok(GlobalTables {
            stores: GlobalStores::new(),
            thread: None,
        });
    }
    let error = |table: &str, reason: String| WorkerError::GlobalTable {
        table: table.to_string(),
        reason,
    };
    let restorer =
        Restorer::new(config).map_err(|e| error("(all)", format!("creating its consumer: {e}")))?;
    let mut tables: Vec<(String, Arc<GlobalStore>)> = Vec::new();
    for global in topology.global_tables() {
        let partitions = counts.get(&global.topic).copied().unwrap_or(1);
        let dir = config
            .state_dir
            .join(&config.application_id)
            .join("global")
            .join(&global.store);
        let partition_count = partitions.max(1) as usize;
        let store = open_checked(
            &dir,
            &global.store,
            || {
                RocksDbStore::open(&dir, &global.store, budget)
                    .map(|s| GlobalStore::new(&global.store, Box::new(s), partition_count))
            },
            |store| {
                (0..partitions).try_for_each(|p| {
                    restorer.check_checkpoint(&global.topic, p, &store.partition(p as usize))
                })
            },
        )
        .map_err(|e| match e {
            Opened::Store(e) => error(&global.name, e.to_string()),
            Opened::Restore(e) => error(&global.name, e.to_string()),
        })?;
        let store = Arc::new(store);
        let mut records = 0;
        for p in 0..partitions {
            records += restorer
                .restore(&global.topic, p, &mut store.partition(p as usize), stop)
                .map_err(|e| error(&global.name, e.to_string()))?
                .records;
        }
        stats.restored.fetch_add(records, Ordering::Relaxed);
        log::info!(
            "global table `{}` ready: {records} records read from {} partition(s) of {}",
            global.name,
            partitions,
            global.topic
        );
        tables.push((global.topic.clone(), store));
    }
    let stores = topology
        .global_tables()
        .iter()
        .zip(&tables)
        .map(|(g, (_, store))| (g.store.clone(), store.clone()))
        .collect();
    let follower = restorer.log_at(log::Level::Debug);
    let stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name("sluice-global".into())
        .spawn(move || follow(&follower, &tables, &stop))
        .map_err(|e| WorkerError::Spawn(e.to_string()))?;
    Ok(GlobalTables {
        stores,
        thread: Some(thread),
    })
}

fn follow(restorer: &Restorer, tables: &[(String, Arc<GlobalStore>)], stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        for (topic, store) in tables {
            for p in 0..store.partitions() {
                if let Err(e) = restorer.restore(topic, p as i32, &mut store.partition(p), stop) {
                    log::warn!("following global table store: {e}; retrying");
                }
            }
        }
        std::thread::sleep(FOLLOW_INTERVAL);
    }
}
