//! The state updater: restores stateful tasks' stores from their changelogs beside the
//! thread's ready tasks.
//!
//! A stateful task whose stores must first be restored does not block the thread: its
//! input partitions are paused at the first record that arrives for it, and the stream
//! thread gives the updater short steps ([`RESTORE_STEP`]) between polls, so the thread's
//! ready tasks keep processing (and the consumer keeps its place in the group). All
//! restoring tasks read side by side from one restore consumer. Once a task's stores reach
//! the ends of their changelogs, the updater hands them back ([`RestoredTask`]) and the
//! task manager starts the task, its partitions resuming at the records they stopped at.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_engine::task::TaskId;
use sluice_engine::topology::Topology;
use sluice_state::{KeyValueStore, RocksDbStore, StateBudget, TransactionalStore};

use crate::config::WorkerConfig;
use crate::error::StreamThreadError;
use crate::metrics;
use crate::observability::{Health, ThreadStatus, publish_running};
use crate::restore::{Opened, RestoreSession, Restorer, open_checked};
use crate::retry::PartitionKey;

/// How long one step of restoring may run between polls of the main consumer: restores
/// take turns with processing, so tasks that are ready keep running (at about half speed)
/// while others restore.
const RESTORE_STEP: Duration = Duration::from_millis(20);

/// The restoring tasks of one stream thread.
pub(crate) struct StateUpdater {
    thread: usize,
    config: Arc<WorkerConfig>,
    topology: Topology,
    budget: StateBudget,
    health: Arc<Health>,
    /// Reads changelogs into stores; made when first needed.
    restorer: Option<Restorer>,
    restoring: BTreeMap<TaskId, RestoringTask>,
    /// When the last restore step ended.
    last_step: Instant,
}

/// A stateful task waiting for its stores to be restored.
struct RestoringTask {
    /// Its stores, in the sub-topology's order.
    stores: Vec<RestoringStore>,
    /// Input partitions paused until the task is ready, with the offset to resume at.
    waiting: HashMap<PartitionKey, i64>,
}

/// One store of a restoring task.
struct RestoringStore {
    store: RocksDbStore,
    changelog: String,
    /// Its restore, once begun; done when the session says it is restored.
    session: Option<RestoreSession>,
}

/// A task whose stores have reached the ends of their changelogs.
pub(crate) struct RestoredTask {
    pub(crate) id: TaskId,
    /// Its stores, in the sub-topology's order.
    pub(crate) stores: Vec<TransactionalStore>,
    /// Its paused input partitions, with the offset each resumes at.
    pub(crate) waiting: HashMap<PartitionKey, i64>,
    /// Changelog records restored.
    pub(crate) records: u64,
}

impl StateUpdater {
    pub(crate) fn new(
        thread: usize,
        config: Arc<WorkerConfig>,
        topology: Topology,
        budget: StateBudget,
        health: Arc<Health>,
    ) -> Self {
        Self {
            thread,
            config,
            topology,
            budget,
            health,
            restorer: None,
            restoring: BTreeMap::new(),
            last_step: Instant::now(),
        }
    }

    fn restorer(&mut self) -> Result<&Restorer, StreamThreadError> {
        if self.restorer.is_none() {
            let restorer = Restorer::new(&self.config).map_err(|e| {
                StreamThreadError::kafka(self.thread, "creating the restore consumer", e)
            })?;
            self.restorer = Some(restorer);
        }
        Ok(self.restorer.as_ref().expect("made above"))
    }

    /// A partition's (low, high) watermarks, from a client that never fetches.
    pub(crate) fn watermarks(&mut self, topic: &str, partition: i32) -> Option<(i64, i64)> {
        match self.restorer() {
            Ok(restorer) => restorer.watermarks(topic, partition),
            Err(e) => {
                log::warn!("{e}");
                None
            }
        }
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.restoring.is_empty()
    }

    pub(crate) fn is_restoring(&self, id: TaskId) -> bool {
        self.restoring.contains_key(&id)
    }

    /// Whether `key` is an input partition paused until its task is restored.
    pub(crate) fn holds(&self, topic: &Arc<str>, partition: i32) -> bool {
        // Checked per record: no key is built while nothing restores.
        !self.restoring.is_empty() && {
            let key = (topic.clone(), partition);
            self.restoring
                .values()
                .any(|r| r.waiting.contains_key(&key))
        }
    }

    /// Notes that restoring task `id`'s partition `key` is paused at `offset`.
    pub(crate) fn hold(&mut self, id: TaskId, key: PartitionKey, offset: i64) {
        if let Some(restoring) = self.restoring.get_mut(&id) {
            restoring.waiting.insert(key, offset);
        }
    }

    /// Every partition paused until its task is restored.
    pub(crate) fn held_partitions(&self) -> impl Iterator<Item = &PartitionKey> {
        self.restoring.values().flat_map(|r| r.waiting.keys())
    }

    /// Opens the task's stores under `<state.dir>/<application.id>/<task>/<store>` and
    /// queues the task for restoring.
    pub(crate) fn begin(&mut self, id: TaskId) -> Result<(), StreamThreadError> {
        let thread = self.thread;
        let dir = self
            .config
            .state_dir
            .join(&self.config.application_id)
            .join(id.to_string());
        self.restorer()?;
        let restorer = self.restorer.as_ref().expect("made above");
        let mut stores = Vec::new();
        for def in self
            .topology
            .stores()
            .iter()
            .filter(|s| s.subtopology == id.subtopology)
        {
            let changelog = def.changelog_topic(&self.config.application_id);
            let path = dir.join(&def.name);
            let store = open_checked(
                &path,
                &def.name,
                || RocksDbStore::open(&path, &def.name, &self.budget),
                |store| restorer.check_checkpoint(&changelog, id.partition, store),
            )
            .map_err(|source| match source {
                Opened::Store(source) => StreamThreadError::State { thread, source },
                Opened::Restore(source) => StreamThreadError::Restore { thread, source },
            })?;
            stores.push(RestoringStore {
                store,
                changelog,
                session: None,
            });
        }
        self.restoring.insert(
            id,
            RestoringTask {
                stores,
                waiting: HashMap::new(),
            },
        );
        self.health.set(thread, ThreadStatus::Restoring);
        publish_running(&self.health);
        Ok(())
    }

    /// Restores every restoring task's stores, side by side, for up to [`RESTORE_STEP`],
    /// and returns the tasks whose stores have all reached the ends of their changelogs.
    /// While ready tasks are busy (`ready_tasks_busy`) it runs at most every other
    /// [`RESTORE_STEP`], so they keep processing; otherwise it runs at once.
    pub(crate) fn step(
        &mut self,
        ready_tasks_busy: bool,
    ) -> Result<Vec<RestoredTask>, StreamThreadError> {
        if self.restoring.is_empty()
            || (ready_tasks_busy && self.last_step.elapsed() < RESTORE_STEP)
        {
            return Ok(Vec::new());
        }
        let thread = self.thread;
        let restore_error = |source| StreamThreadError::Restore { thread, source };
        let restorer = self
            .restorer
            .as_ref()
            .expect("made with the restoring task");
        for (id, task) in &mut self.restoring {
            for store in &mut task.stores {
                if store.session.is_none() {
                    let session = restorer
                        .begin(&store.changelog, id.partition, &store.store)
                        .map_err(restore_error)?;
                    store.session = Some(session);
                }
            }
        }
        let mut active: Vec<(&mut RestoreSession, &mut dyn KeyValueStore)> = self
            .restoring
            .values_mut()
            .flat_map(|task| task.stores.iter_mut())
            .filter_map(|RestoringStore { store, session, .. }| {
                let session = session.as_mut().filter(|s| s.restored.is_none())?;
                Some((session, store as &mut dyn KeyValueStore))
            })
            .collect();
        if !active.is_empty() {
            restorer
                .step(&mut active, Instant::now() + RESTORE_STEP)
                .map_err(restore_error)?;
        }
        drop(active);
        let ready: Vec<TaskId> = self
            .restoring
            .iter()
            .filter(|(_, task)| {
                task.stores
                    .iter()
                    .all(|s| s.session.as_ref().is_some_and(|s| s.restored.is_some()))
            })
            .map(|(id, _)| *id)
            .collect();
        let restored = ready.into_iter().map(|id| self.finish(id)).collect();
        self.last_step = Instant::now();
        Ok(restored)
    }

    /// Takes a task whose stores are restored out of the updater.
    fn finish(&mut self, id: TaskId) -> RestoredTask {
        let restoring = self.restoring.remove(&id).expect("a restoring task");
        let mut records = 0;
        let stores = restoring
            .stores
            .into_iter()
            .map(|s| {
                records += s.session.and_then(|s| s.restored).map_or(0, |r| r.records);
                let store = TransactionalStore::new(Box::new(s.store));
                metrics::store_size(&store, id.partition);
                store
            })
            .collect();
        log::info!(
            "stream thread {}: task {id} restored {records} records and runs",
            self.thread
        );
        self.mark_running_if_idle();
        RestoredTask {
            id,
            stores,
            waiting: restoring.waiting,
            records,
        }
    }

    /// Stops restoring task `id` (its partitions went to another member).
    pub(crate) fn cancel(&mut self, id: TaskId) {
        let Some(restoring) = self.restoring.remove(&id) else {
            return;
        };
        if let Some(restorer) = &self.restorer {
            for mut session in restoring.stores.into_iter().filter_map(|s| s.session) {
                restorer.cancel(&mut session);
            }
        }
        self.mark_running_if_idle();
    }

    fn mark_running_if_idle(&self) {
        if self.restoring.is_empty() {
            self.health.set(self.thread, ThreadStatus::Running);
            publish_running(&self.health);
        }
    }
}
