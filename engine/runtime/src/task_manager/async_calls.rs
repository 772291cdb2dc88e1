//! The task manager's side of async operators: collecting completed calls, and holding
//! back a task's input while the task is at its capacity.
//!
//! A task at capacity takes no input: records fetched for it meanwhile are held, in
//! order, and run as its calls complete. Only when it holds [`MAX_HELD`] records are its
//! partitions paused, and they resume at half. Pausing at capacity itself would be
//! simple and slow: librdkafka drops what it prefetched for a paused partition and
//! fetches it again after the resume, so a task pausing every few milliseconds spends its
//! time waiting for fetches (enrich at 95% cache hits ran at a third of its speed with
//! a bound of 1,000 held records). A task that reads several partitions in timestamp
//! order (its partition group buffers for it) still pauses at capacity.

use std::collections::VecDeque;

use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use sluice_engine::record::RawRecord;
use sluice_engine::task::{Task, TaskError, TaskId};

use super::TaskManager;
use crate::error::StreamThreadError;
use crate::kafka;
use crate::record_collector::RecordCollector;

/// Records held for a task at its capacity before its partitions pause.
/// About 3 MB of 200-byte records a task: librdkafka prefetches up to 100,000 records a
/// partition anyway.
const MAX_HELD: usize = 10_000;

impl TaskManager {
    /// Forwards what completed async calls return, and resumes tasks that have drained
    /// to half their capacity. A call that failed transiently makes its partition retry
    /// from its input, as a transient failure of a record does.
    pub(crate) fn complete_calls<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        collector: &mut RecordCollector,
    ) -> Result<(), StreamThreadError> {
        if self.async_tasks == 0 {
            return Ok(());
        }
        let ids: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(id, t)| t.in_flight() > 0 || self.held.contains_key(id))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let task = self.tasks.get_mut(&id).expect("listed above");
            self.out.clear();
            match task.complete_calls(&mut self.out) {
                Ok(done) => {
                    self.processed_since_commit += done as u64;
                    for record in self.out.drain(..) {
                        collector.send(record, None)?;
                    }
                }
                Err(TaskError::Unavailable {
                    topic,
                    partition,
                    offset,
                    ..
                }) => {
                    let key = (self.sources[topic.as_str()].topic.clone(), partition);
                    let wait = self.retries.schedule(key, offset);
                    log::warn!(
                        "stream thread {}: {topic}/{partition}@{offset} waits {wait:?} for an unavailable service",
                        self.thread
                    );
                    kafka::pause(consumer, &topic, partition);
                    // The partition is rewound to the input: what is held after it is
                    // read again.
                    if let Some(held) = self.held.get_mut(&id) {
                        held.retain(|r| *r.origin.topic != *topic);
                    }
                }
                Err(e) => return Err(e.into()),
            }
            self.run_held(consumer, id, collector)?;
            let Some(task) = self.tasks.get(&id) else {
                continue;
            };
            let may_resume = match self.held.get(&id) {
                Some(held) => held.len() <= MAX_HELD / 2,
                None => task.drained(),
            };
            if self.paused_tasks.contains(&id) && may_resume {
                self.resume_task(consumer, id);
            }
        }
        Ok(())
    }

    /// Holds `raw` while its task is at capacity (or holds older records, which go
    /// first); gives it back when the task can take it now.
    pub(super) fn hold_while_busy<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        id: TaskId,
        raw: RawRecord,
    ) -> Option<RawRecord> {
        // Two look-ups a record, for topologies with async operators only.
        if self.async_tasks == 0
            || (!self.held.contains_key(&id) && !self.tasks.get(&id).is_some_and(Task::at_capacity))
        {
            return Some(raw);
        }
        let held = self.held.entry(id).or_default();
        held.push_back(raw);
        if held.len() >= MAX_HELD {
            self.pause_task(consumer, id);
        }
        None
    }

    /// Runs a task's held records, oldest first, while it has room for them.
    fn run_held<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        id: TaskId,
        collector: &mut RecordCollector,
    ) -> Result<(), StreamThreadError> {
        while self.tasks.get(&id).is_some_and(|t| !t.at_capacity()) {
            let Some(held) = self.held.get_mut(&id) else {
                break;
            };
            let Some(raw) = held.pop_front() else {
                self.held.remove(&id);
                break;
            };
            let topic = raw.origin.topic.clone();
            if !self.process(consumer, id, raw, collector)?
                && let Some(held) = self.held.get_mut(&id)
            {
                // Its partition is rewound to it: what is held after it is read again.
                held.retain(|r| r.origin.topic != topic);
            }
        }
        if self.held.get(&id).is_some_and(VecDeque::is_empty) {
            self.held.remove(&id);
        }
        Ok(())
    }

    /// Pauses every input partition of a task at its capacity.
    pub(super) fn pause_task<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        id: TaskId,
    ) {
        if self.paused_tasks.insert(id) {
            for topic in &self.topology.subtopologies()[id.subtopology].source_topics {
                kafka::pause(consumer, topic, id.partition);
            }
        }
    }

    /// Resumes a task paused at its capacity. Records fetched before the pause took
    /// effect were processed (a pause stops fetching; it drops nothing already handed out).
    /// A partition waiting on the retry schedule (a retry, or a record held until due)
    /// stays paused: fetched now, its records would only be dropped until it resumes.
    fn resume_task<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>, id: TaskId) {
        if self.paused_tasks.remove(&id) {
            for topic in &self.topology.subtopologies()[id.subtopology].source_topics {
                let waiting = self
                    .sources
                    .get(topic)
                    .is_some_and(|s| self.retries.is_paused(&s.topic, id.partition));
                if !waiting {
                    kafka::resume(consumer, topic, id.partition);
                }
            }
        }
    }
}
