//! Commit, and abort with rewind: the two ways a stream thread ends what it did since
//! the last commit.
//!
//! A commit lets the operators act (and sends what they emit), sends every store's
//! changes as changelog records,
//! then makes the outputs, the changelog records and the tasks' committable offsets
//! durable together (one transaction under exactly_once_v2; flush, then offsets, under
//! at_least_once). Only after that are the stores' overlays written to RocksDB, with the
//! changelog offsets as checkpoints, so a store is never ahead of Kafka.
//!
//! An abort drops all of it: the transaction, the tasks (stateful ones leave their stores
//! open at the last commit's state), and every buffered record; each assigned partition
//! is rewound to its committed offset, so nothing uncommitted survives and nothing is
//! skipped.

use std::sync::atomic::Ordering;
use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;

use crate::error::StreamThreadError;
use crate::failpoint;
use crate::kafka::CALL_TIMEOUT;
use crate::metrics;
use crate::record_collector::RecordCollector;
use crate::task_manager::TaskManager;

/// Commits what the tasks processed since the last commit, and their state.
pub(crate) fn commit<C: ConsumerContext>(
    tasks: &mut TaskManager,
    collector: &mut RecordCollector,
    consumer: &BaseConsumer<C>,
) -> Result<(), StreamThreadError> {
    // What operators emit before the commit belongs to this transaction.
    let mut emitted = Vec::new();
    tasks.prepare_commit(&mut emitted)?;
    let operators_emitted = !emitted.is_empty();
    for record in emitted {
        collector.send(record, None)?;
    }
    // State changes since the last commit join the transaction as changelog records.
    let mut changelog = Vec::new();
    tasks.changelog_records(chrono::Utc::now().timestamp_millis(), &mut changelog);
    let state_changed = !changelog.is_empty();
    for record in changelog {
        collector.send_changelog(record)?;
    }
    let offsets = tasks.committable_offsets()?;
    if offsets.count() == 0 && !collector.transaction_open() && !state_changed && !operators_emitted
    {
        return Ok(());
    }
    let started = Instant::now();
    collector.commit(consumer, &offsets)?;
    let committed = tasks.committed();
    if state_changed {
        let ends = collector.changelog_ends()?;
        // A crash here leaves RocksDB behind the committed changelog; start-up repairs it
        // by restoring from the checkpoint.
        failpoint::hit(failpoint::AFTER_COMMIT_BEFORE_STATE_WRITE);
        tasks.write_state(&ends)?;
    }
    let stats = tasks.stats();
    stats.commits.fetch_add(1, Ordering::Relaxed);
    stats.committed.fetch_add(committed, Ordering::Relaxed);
    metrics::commit(started.elapsed());
    Ok(())
}

/// Drops everything since the last commit: aborts the transaction, drops the tasks and
/// rewinds every assigned partition to its committed offset.
pub(crate) fn abort_and_rewind<C: ConsumerContext>(
    thread: usize,
    tasks: &mut TaskManager,
    collector: &mut RecordCollector,
    consumer: &BaseConsumer<C>,
) -> Result<(), StreamThreadError> {
    let kafka = |what, e| StreamThreadError::kafka(thread, what, e);
    collector.abort(consumer)?;
    tasks.drop_uncommitted();
    let assignment = consumer
        .assignment()
        .map_err(|e| kafka("reading the assignment", e))?;
    if assignment.count() == 0 {
        return Ok(());
    }
    let committed = consumer
        .committed_offsets(assignment, CALL_TIMEOUT)
        .map_err(|e| kafka("reading committed offsets", e))?;
    let mut rewind = TopicPartitionList::new();
    for element in committed.elements() {
        let offset = match element.offset() {
            Offset::Offset(offset) => Offset::Offset(offset),
            // Nothing committed yet: start over, as auto.offset.reset=earliest does.
            _ => Offset::Beginning,
        };
        rewind
            .add_partition_offset(element.topic(), element.partition(), offset)
            .map_err(|e| kafka("listing offsets to rewind to", e))?;
    }
    let rewound = consumer
        .seek_partitions(rewind, CALL_TIMEOUT)
        .map_err(|e| kafka("rewinding to the committed offsets", e))?;
    for element in rewound.elements() {
        if let Err(e) = element.error()
            && e.rdkafka_error_code() != Some(RDKafkaErrorCode::State)
        {
            // Not fetching yet (State) is fine: its fetch starts at the committed
            // offset. Going on from an unknown position could skip records: stop.
            return Err(kafka("rewinding a partition to its committed offset", e));
        }
    }
    let _ = consumer.resume(&consumer.assignment().unwrap_or_default());
    // Restoring tasks processed nothing: their partitions wait on, from the record each
    // stopped at (their committed offset, where the rewind just put them).
    let held = tasks.held_partitions();
    if held.count() > 0 {
        let _ = consumer.pause(&held);
    }
    Ok(())
}
