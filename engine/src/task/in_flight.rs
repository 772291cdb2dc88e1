//! Async operators' calls in flight in a task, and the inputs that wait for them.
//!
//! Where the depth-first run of an input reaches an async operator, the task starts the
//! operator's call on its tokio runtime and goes on with the rest of the input's run; the
//! input is then *in flight* until every call it started has completed and its result
//! has run through the operators after the async one ([`Task::complete_calls`], on the
//! stream thread). An in-flight input is not done: the task's committable offset stops at
//! the oldest one, so a crash or rebalance reads it again and calls again.
//!
//! Completed calls leave an async operator in input order, or in key order with
//! [`AsyncOrder::Key`]: the first completed call whose key no older call of the operator
//! still holds. A call that failed transiently (after its retries, or its timeout) makes
//! the task unavailable from its input on: every call of that partition from the input on
//! is cancelled, and the runtime rewinds the partition to the input.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use super::{Task, TaskError};
use crate::error::ProcessError;
use crate::operators::{AsyncOptions, AsyncOrder, Call};
use crate::processor::{AsyncCalls, DynRecord, InputMeta};
use crate::record::{Origin, ProducerRecord, RawRecord};

/// An input, by topic and offset (a task reads one partition of each topic).
type InputKey = (Arc<str>, i64);

/// The calls in flight in a task.
pub(super) struct InFlight {
    /// One queue per async operator of the task, in node order.
    queues: Vec<CallQueue>,
    /// The inputs with calls outstanding.
    inputs: BTreeMap<InputKey, WaitingInput>,
    /// Inputs done while an older input of their topic was in flight (key-ordered calls
    /// overtaking): what a commit stopping at the older one must say is done already.
    done_ahead: BTreeSet<InputKey>,
    runtime: Option<Handle>,
}

/// How many inputs may be done ahead of an input in flight: a key-ordered call does not
/// overtake beyond it, so the list of them always fits the commit's metadata (Kafka's
/// `offset.metadata.max.bytes` is 4096 by default).
const MAX_DONE_AHEAD: usize = 256;

struct CallQueue {
    node: usize,
    options: AsyncOptions,
    /// Oldest first.
    calls: VecDeque<CallEntry>,
}

struct CallEntry {
    input: InputKey,
    key_hash: u64,
    state: CallState,
}

enum CallState {
    Running(JoinHandle<Result<DynRecord, ProcessError>>),
    Done(Result<DynRecord, ProcessError>),
}

struct WaitingInput {
    meta: InputMeta,
    /// The input itself, for the dead-letter topic.
    raw: Option<RawRecord>,
    /// Calls not completed yet.
    outstanding: u32,
    /// Records written for the input so far: numbers derived event ids.
    outputs: u32,
}

impl CallQueue {
    /// The position of the completed call that may leave the operator next, by its order:
    /// the oldest call, or (key-ordered, while `may_overtake`) the oldest completed one
    /// whose key no older call holds.
    fn next_ready(&self, may_overtake: bool) -> Option<usize> {
        let done = |c: &CallEntry| matches!(c.state, CallState::Done(_));
        match self.options.order {
            AsyncOrder::Key if may_overtake => {
                self.calls.iter().enumerate().position(|(i, call)| {
                    done(call)
                        && !self
                            .calls
                            .iter()
                            .take(i)
                            .any(|c| c.key_hash == call.key_hash)
                })
            }
            _ => self.calls.front().is_some_and(done).then_some(0),
        }
    }
}

impl Drop for InFlight {
    /// A task dropped (its partition revoked, or an abort) cancels its calls: their inputs
    /// are read again by whoever runs the task next.
    fn drop(&mut self) {
        for call in self.queues.iter().flat_map(|q| &q.calls) {
            if let CallState::Running(handle) = &call.state {
                handle.abort();
            }
        }
    }
}

impl InFlight {
    pub(super) fn new(async_nodes: &[(usize, AsyncOptions)]) -> Self {
        Self {
            queues: async_nodes
                .iter()
                .map(|(node, options)| CallQueue {
                    node: *node,
                    options: options.clone(),
                    calls: VecDeque::new(),
                })
                .collect(),
            inputs: BTreeMap::new(),
            done_ahead: BTreeSet::new(),
            runtime: None,
        }
    }

    /// Starts `node`'s call for `record` of the input `meta`.
    pub(super) fn start(
        &mut self,
        node: usize,
        calls: &mut dyn AsyncCalls,
        record: DynRecord,
        meta: &InputMeta,
    ) -> Result<(), ProcessError> {
        let Some(runtime) = &self.runtime else {
            return Err(ProcessError::new(
                crate::error::ErrorKind::State,
                "an async operator needs a tokio runtime: give the task one with Task::with_runtime",
            ));
        };
        let origin = &meta.origin;
        let idempotency_key: Arc<str> = match &meta.lineage.event_id {
            Some(id) => Arc::from(id.as_str()),
            None => Arc::from(format!(
                "sluice:{}:{}:{}",
                origin.topic, origin.partition, origin.offset
            )),
        };
        let started = calls.start(
            record,
            Call {
                idempotency_key,
                origin: origin.clone(),
            },
        );
        let handle = runtime.spawn(started.future);
        let input = (origin.topic.clone(), origin.offset);
        let queue = self
            .queues
            .iter_mut()
            .find(|q| q.node == node)
            .expect("every async node has a queue");
        queue.calls.push_back(CallEntry {
            input: input.clone(),
            key_hash: started.key_hash,
            state: CallState::Running(handle),
        });
        self.inputs
            .entry(input)
            .or_insert_with(|| WaitingInput {
                meta: InputMeta {
                    origin: meta.origin.clone(),
                    lineage: meta.lineage.clone(),
                },
                raw: None,
                outstanding: 0,
                outputs: 0,
            })
            .outstanding += 1;
        Ok(())
    }

    /// After an input's run: keeps the input for the dead-letter topic if it waits for
    /// calls, and how many records it wrote so far.
    pub(super) fn hold_input(&mut self, origin: &Origin, raw: &RawRecord, outputs: u32) {
        if self.inputs.is_empty() {
            return;
        }
        if let Some(waiting) = self.inputs.get_mut(&(origin.topic.clone(), origin.offset)) {
            waiting.raw.get_or_insert_with(|| raw.clone());
            waiting.outputs = outputs;
        }
    }

    /// Whether the input waits for calls.
    pub(super) fn holds(&self, origin: &Origin) -> bool {
        !self.inputs.is_empty()
            && self
                .inputs
                .contains_key(&(origin.topic.clone(), origin.offset))
    }

    /// Cancels every call of `origin`'s topic from its offset on, and forgets their inputs:
    /// the partition is rewound to `origin`, so they are read again.
    pub(super) fn cancel_from(&mut self, origin: &Origin) {
        let from = |input: &InputKey| *input.0 == *origin.topic && input.1 >= origin.offset;
        for queue in &mut self.queues {
            queue.calls.retain(|call| {
                let cancelled = from(&call.input);
                if cancelled && let CallState::Running(handle) = &call.state {
                    handle.abort();
                }
                !cancelled
            });
        }
        self.inputs.retain(|input, _| !from(input));
    }

    /// Polls every running call, keeping the results of those that completed; ready when
    /// a completed call may leave its operator (by its order).
    pub(super) fn poll(&mut self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        for queue in &mut self.queues {
            for call in &mut queue.calls {
                if let CallState::Running(handle) = &mut call.state
                    && let Poll::Ready(joined) = Pin::new(handle).poll(cx)
                {
                    call.state = CallState::Done(joined.unwrap_or_else(|e| {
                        Err(ProcessError::processing(format!(
                            "the call did not finish: {}",
                            if e.is_panic() {
                                "it panicked"
                            } else {
                                "it was cancelled"
                            }
                        )))
                    }));
                }
            }
        }
        let may_overtake = self.done_ahead.len() < MAX_DONE_AHEAD;
        if self
            .queues
            .iter()
            .any(|q| q.next_ready(may_overtake).is_some())
        {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// The next completed call whose result may leave its operator now, by the operator's
    /// order: (node, input, result).
    fn take_ready(&mut self) -> Option<(usize, InputKey, Result<DynRecord, ProcessError>)> {
        let may_overtake = self.done_ahead.len() < MAX_DONE_AHEAD;
        for queue in &mut self.queues {
            if let Some(position) = queue.next_ready(may_overtake) {
                let call = queue.calls.remove(position).expect("found above");
                let CallState::Done(result) = call.state else {
                    unreachable!("only completed calls are taken")
                };
                return Some((queue.node, call.input, result));
            }
        }
        None
    }

    /// Notes an input done while an older one of its topic is in flight.
    pub(super) fn done_ahead(&mut self, origin: &Origin) {
        self.done_ahead
            .insert((origin.topic.clone(), origin.offset));
    }

    /// Whether an input read (again) was done ahead, so it must be skipped.
    pub(super) fn was_done_ahead(&self, origin: &Origin) -> bool {
        !self.done_ahead.is_empty()
            && self
                .done_ahead
                .contains(&(origin.topic.clone(), origin.offset))
    }

    /// Forgets the inputs done ahead of `topic` before `offset`: a commit has passed them.
    pub(super) fn forget_done_before(&mut self, topic: &Arc<str>, offset: i64) {
        self.done_ahead
            .retain(|(t, o)| !(**t == **topic && *o < offset));
    }

    /// Inputs in flight.
    pub(super) fn len(&self) -> usize {
        self.inputs.len()
    }

    /// The smallest capacity of the task's async operators.
    pub(super) fn capacity(&self) -> Option<usize> {
        self.queues.iter().map(|q| q.options.capacity).min()
    }

    /// The oldest input of `topic` in flight.
    pub(super) fn oldest(&self, topic: &str) -> Option<i64> {
        self.inputs
            .keys()
            .filter(|(t, _)| **t == *topic)
            .map(|(_, offset)| *offset)
            .min()
    }
}

impl Task {
    /// Runs the task's async operators' calls on `runtime` (the worker's, or the
    /// TestDriver's).
    pub fn with_runtime(mut self, runtime: Handle) -> Self {
        self.in_flight.runtime = Some(runtime);
        self
    }

    /// Inputs whose async calls are in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// How many inputs may be in flight before the task must stop taking input; `None`
    /// when it has no async operator.
    pub fn async_capacity(&self) -> Option<usize> {
        self.in_flight.capacity()
    }

    /// Polls the calls in flight; ready when some have completed and
    /// [`Task::complete_calls`] has work.
    pub fn poll_calls(&mut self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        self.in_flight.poll(cx)
    }

    /// Forwards the results of completed calls, in each operator's order, through the
    /// operators after them, appending what they produce (or dead letters) to `out`;
    /// returns how many inputs became done. A transient failure makes the task
    /// unavailable from that input on (see the module docs).
    pub fn complete_calls(&mut self, out: &mut Vec<ProducerRecord>) -> Result<usize, TaskError> {
        // Results taken with a waker that never wakes: this only collects what is done.
        let _ = self
            .in_flight
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
        let mut done = 0;
        while let Some((node, input, result)) = self.in_flight.take_ready() {
            let Some(waiting) = self.in_flight.inputs.get(&input) else {
                continue;
            };
            let meta = InputMeta {
                origin: waiting.meta.origin.clone(),
                lineage: waiting.meta.lineage.clone(),
            };
            let mut outputs = waiting.outputs;
            let first_output = out.len();
            for store in &mut self.stores {
                store.begin_input();
            }
            let run = result.map_err(|e| (node, e)).and_then(|record| {
                self.forward_result(node, record, &meta, out, &mut outputs);
                self.run_pending(&meta, out, &mut outputs)
            });
            let raw = self
                .in_flight
                .inputs
                .get(&input)
                .and_then(|w| w.raw.clone());
            self.settle(run, &meta.origin, raw.as_ref(), first_output, out)?;
            let waiting = self
                .in_flight
                .inputs
                .get_mut(&input)
                .expect("looked up above");
            waiting.outputs = outputs;
            waiting.outstanding -= 1;
            if waiting.outstanding == 0 {
                self.in_flight.inputs.remove(&input);
                self.done_with(&meta.origin);
                done += 1;
            }
        }
        Ok(done)
    }

    /// Hands a completed call's record to its operator's children.
    fn forward_result(
        &mut self,
        node: usize,
        record: DynRecord,
        meta: &InputMeta,
        out: &mut Vec<ProducerRecord>,
        outputs: &mut u32,
    ) {
        let (processor, ctx) = self.node_context(node, meta, out, outputs);
        if let Some(calls) = processor.as_async() {
            calls.forward(record, ctx);
        }
        self.pending.extend(self.forwarded.drain(..).rev());
    }

    /// The oldest input of `topic` in flight, where the task's commit must stop.
    pub(super) fn oldest_in_flight(&self, topic: &str) -> Option<i64> {
        self.in_flight.oldest(topic)
    }

    /// The inputs of `topic` at or after `from` that are done already, though an older
    /// one was in flight: the runtime lists them in the commit's metadata, and a task
    /// that reads them again skips them ([`Task::resume_done_ahead`]).
    pub fn done_ahead(&self, topic: &str, from: i64) -> Vec<i64> {
        self.in_flight
            .done_ahead
            .iter()
            .filter(|(t, o)| **t == *topic && *o >= from)
            .map(|(_, o)| *o)
            .collect()
    }

    /// Continues from a commit of an earlier incarnation that listed these inputs of
    /// `topic` as done ahead: they are skipped when read again.
    pub fn resume_done_ahead(&mut self, topic: &Arc<str>, offsets: impl IntoIterator<Item = i64>) {
        for offset in offsets {
            self.in_flight.done_ahead.insert((topic.clone(), offset));
        }
    }
}
