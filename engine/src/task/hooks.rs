//! A task's hooks outside any single input: stream-time punctuations, wall-clock ticks and
//! the operators' commit hooks. Each runs as an *occasion* of its own (its origin named
//! `sluice.stream-time`, `sluice.tick` or `sluice.commit`, numbered per task), so what it
//! emits gets derived event ids of its own and a failure is never blamed on a record.

use std::sync::Arc;

use super::{InputMeta, Task, TaskError};
use crate::error::{ErrorKind, ProcessError};
use crate::lineage::Lineage;
use crate::policy::FailedInput;
use crate::processor::{DynProcessor, TaskContext};
use crate::record::{Origin, ProducerRecord};

impl Task {
    /// Runs the stream-time punctuations that the records processed so far have made due.
    ///
    /// They run apart from any input, not inside [`Task::process`], so that a failing
    /// punctuation is never blamed on (or dead-letters) the record before it. The runtime
    /// and the TestDriver call this after each record; [`Task::tick`] calls it too. An
    /// error here fails the transaction like any error outside a record: it aborts and
    /// the task replays from its committed offsets, stream time and all.
    pub fn punctuate_stream_time(
        &mut self,
        out: &mut Vec<ProducerRecord>,
    ) -> Result<(), TaskError> {
        // Before the first record there is no stream time to punctuate on.
        if self.stream_punctuators.is_empty() || self.stream_time == i64::MIN {
            return Ok(());
        }
        let now = self.stream_time;
        let due: Vec<usize> = self
            .stream_punctuators
            .iter_mut()
            .filter(|p| now >= p.next)
            .map(|p| {
                p.next = (now.div_euclid(p.interval) + 1).saturating_mul(p.interval);
                p.node
            })
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        self.punctuate(due, "sluice.stream-time", now, out, |p, now, ctx| {
            p.on_stream_time(now, ctx)
        })
    }

    /// The task's stream time: the largest timestamp of the records it has processed.
    pub fn stream_time(&self) -> Option<i64> {
        (self.stream_time != i64::MIN).then_some(self.stream_time)
    }

    /// Continues from the stream time an earlier incarnation of the task committed, so
    /// that windows it closed stay closed and records it found late stay late. The
    /// stream-time punctuations already due at that time ran in that incarnation (their
    /// outputs committed with it): the next one is the next interval after it.
    pub fn resume_stream_time(&mut self, stream_time: i64) {
        self.stream_time = self.stream_time.max(stream_time);
        for p in &mut self.stream_punctuators {
            p.next = (self.stream_time.div_euclid(p.interval) + 1).saturating_mul(p.interval);
        }
    }

    /// Lets every operator act on wall-clock time `now_ms` (punctuation), in topological
    /// order; what they forward runs through their children before the next one ticks.
    pub fn tick(&mut self, now_ms: i64, out: &mut Vec<ProducerRecord>) -> Result<(), TaskError> {
        self.punctuate_stream_time(out)?;
        self.punctuate(
            0..self.nodes.len(),
            "sluice.tick",
            now_ms,
            out,
            |p, now, ctx| p.on_tick(now, ctx),
        )
    }

    /// Runs one punctuation (`call`) of each of `nodes` at `time`, in order; what a node
    /// forwards runs through its children before the next node punctuates. A failure
    /// undoes that node's writes and goes to the error policy with no input record.
    fn punctuate(
        &mut self,
        nodes: impl IntoIterator<Item = usize>,
        origin: &'static str,
        time: i64,
        out: &mut Vec<ProducerRecord>,
        call: impl Fn(&mut dyn DynProcessor, i64, TaskContext<'_>) -> Result<(), ProcessError>,
    ) -> Result<(), TaskError> {
        let meta = self.occasion(origin);
        // One numbering for every output of this punctuation, whichever node emits it.
        let mut outputs_for_input = 0;
        for index in nodes {
            let first_output = out.len();
            let result = self.run_hook(index, &meta, out, &mut outputs_for_input, |p, ctx| {
                call(p, time, ctx)
            });
            match result {
                Ok(()) => self.count_produced(&out[first_output..]),
                Err((node, error)) if error.transient => {
                    out.truncate(first_output);
                    self.rollback_stores();
                    return Err(self.unavailable(node, error, &meta.origin));
                }
                Err((node, error)) if error.kind == ErrorKind::State => {
                    out.truncate(first_output);
                    self.rollback_stores();
                    return Err(self.failed(node, error, &meta.origin));
                }
                Err((node, error)) => {
                    out.truncate(first_output);
                    self.rollback_stores();
                    let failed = FailedInput {
                        origin: &meta.origin,
                        key: None,
                        value: None,
                        headers: &Default::default(),
                        timestamp: time,
                    };
                    self.apply_policy(node, error, &failed, out)?;
                }
            }
        }
        Ok(())
    }

    /// Lets every operator flush before the runtime commits, in topological order, and
    /// appends to `out` what they emit: the runtime sends it in the transaction about to
    /// commit. What a node forwards runs through its children before the next node's hook.
    /// Any failure fails the commit (the transaction aborts and the task replays from its
    /// last commit); nothing of it reaches the error policy, as there is no input to blame.
    pub fn prepare_commit(&mut self, out: &mut Vec<ProducerRecord>) -> Result<(), TaskError> {
        let meta = self.occasion("sluice.commit");
        let mut outputs_for_input = 0;
        for index in 0..self.nodes.len() {
            let first_output = out.len();
            let result = self.run_hook(index, &meta, out, &mut outputs_for_input, |p, ctx| {
                p.on_commit(ctx)
            });
            match result {
                Ok(()) => self.count_produced(&out[first_output..]),
                Err((node, error)) => {
                    out.truncate(first_output);
                    self.rollback_stores();
                    return Err(self.failed(node, error, &meta.origin));
                }
            }
        }
        Ok(())
    }

    /// The input of a punctuation or a commit: named for the occasion, numbered so that
    /// each occasion's derived event ids are distinct even within one millisecond.
    fn occasion(&mut self, topic: &'static str) -> InputMeta {
        self.ticks += 1;
        InputMeta {
            origin: Origin {
                topic: Arc::from(topic),
                partition: self.id.partition,
                offset: self.ticks,
            },
            lineage: Lineage::default(),
        }
    }

    /// Runs one hook (`call`) of node `index` outside any input, then what it forwarded.
    fn run_hook(
        &mut self,
        index: usize,
        meta: &InputMeta,
        out: &mut Vec<ProducerRecord>,
        outputs_for_input: &mut u32,
        call: impl FnOnce(&mut dyn DynProcessor, TaskContext<'_>) -> Result<(), ProcessError>,
    ) -> Result<(), (usize, ProcessError)> {
        for store in &mut self.stores {
            store.begin_input();
        }
        let (processor, ctx) = self.node_context(index, meta, out, outputs_for_input);
        if let Err(error) = call(processor.as_mut(), ctx) {
            self.forwarded.clear();
            return Err((index, error));
        }
        self.pending.extend(self.forwarded.drain(..).rev());
        self.run_pending(meta, out, outputs_for_input)
    }
}
