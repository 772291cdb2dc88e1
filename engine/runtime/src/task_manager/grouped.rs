//! The task manager's side of partition groups: a task that reads several partitions
//! and depends on stream time takes its records in timestamp order.

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::topic_partition_list::TopicPartitionList;
use sluice_engine::task::TaskId;

use super::TaskManager;
use crate::error::StreamThreadError;
use crate::kafka::{CALL_TIMEOUT, concrete};
use crate::partition_group::{InputPartition, PartitionGroup};
use crate::record_collector::RecordCollector;

impl TaskManager {
    /// The partition group of a task that reads several partitions, each queue knowing
    /// where its partition starts (the committed offset) and ends.
    pub(super) fn partition_group<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        id: TaskId,
    ) -> PartitionGroup {
        let topics = &self.topology.subtopologies()[id.subtopology].source_topics;
        let mut partitions = TopicPartitionList::new();
        for topic in topics {
            partitions.add_partition(topic, id.partition);
        }
        let committed = consumer.committed_offsets(partitions, CALL_TIMEOUT).ok();
        let mut inputs = Vec::new();
        for topic in topics.clone() {
            let next = committed
                .as_ref()
                .and_then(|c| c.find_partition(&topic, id.partition))
                .and_then(|e| concrete(e.offset()))
                .unwrap_or(0);
            let high = self
                .updater
                .watermarks(&topic, id.partition)
                .map_or(0, |(_, high)| high);
            inputs.push(InputPartition {
                key: (self.sources[topic.as_str()].topic.clone(), id.partition),
                next,
                high,
            });
        }
        PartitionGroup::new(inputs)
    }

    /// Processes a task's buffered records in timestamp order until its group must wait.
    pub(super) fn drain_group<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        id: TaskId,
        collector: &mut RecordCollector,
    ) -> Result<(), StreamThreadError> {
        let mut positions = None;
        let idle = self.config.max_task_idle;
        loop {
            let Some(group) = self.groups.get_mut(&id) else {
                return Ok(());
            };
            let Some(raw) = group.next_record(consumer, &mut positions, idle, &self.retries) else {
                return Ok(());
            };
            let key = (raw.origin.topic.clone(), raw.origin.partition);
            if !self.process(consumer, id, raw, collector)? {
                // Retried later from its offset: what is buffered after it is read again.
                if let Some(group) = self.groups.get_mut(&id) {
                    group.drop_buffered(&key);
                }
            }
        }
    }

    /// Runs the grouped tasks whose wait for an empty partition may have ended.
    pub(crate) fn drain_groups<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        collector: &mut RecordCollector,
    ) -> Result<(), StreamThreadError> {
        if self.groups.is_empty() {
            return Ok(());
        }
        let ids: Vec<TaskId> = self
            .groups
            .iter()
            .filter(|(_, group)| group.has_records())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.drain_group(consumer, id, collector)?;
        }
        Ok(())
    }
}
