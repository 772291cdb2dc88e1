//! The task manager's side of async operators: collecting completed calls, and pausing a
//! task at its capacity until half its inputs in flight are done.

use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use sluice_engine::task::{TaskError, TaskId};

use super::TaskManager;
use crate::error::StreamThreadError;
use crate::kafka;
use crate::record_collector::RecordCollector;

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
            .filter(|(_, t)| t.in_flight() > 0)
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
                    let key = (self.sources[topic.as_str()].0.clone(), partition);
                    let wait = self.retries.schedule(key, offset);
                    log::warn!(
                        "stream thread {}: {topic}/{partition}@{offset} waits {wait:?} for an unavailable service",
                        self.thread
                    );
                    kafka::pause(consumer, &topic, partition);
                }
                Err(e) => return Err(e.into()),
            }
            let task = self.tasks.get(&id).expect("listed above");
            if self.paused_tasks.contains(&id)
                && task.in_flight() <= task.async_capacity().unwrap_or(0) / 2
            {
                self.resume_task(consumer, id);
            }
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
    fn resume_task<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>, id: TaskId) {
        if self.paused_tasks.remove(&id) {
            for topic in &self.topology.subtopologies()[id.subtopology].source_topics {
                kafka::resume(consumer, topic, id.partition);
            }
        }
    }
}
