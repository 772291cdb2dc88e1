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
use std::sync::Arc;
use std::task::Poll;

use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

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
    /// Where each call sends its result as it completes: the task looks at what has
    /// completed, never at every call still running.
    completions: mpsc::UnboundedReceiver<Completion>,
    completions_sender: mpsc::UnboundedSender<Completion>,
    /// The id of the next call started (ids grow, so each queue is ordered by id).
    next_call: u64,
    /// Per input topic, the offset after the last input read (the consumer's position):
    /// inputs done ahead from there on are still to be read, and skipped.
    next_to_read: Vec<(Arc<str>, i64)>,
}

/// A call's id and result.
type Completion = (u64, Result<DynRecord, ProcessError>);

/// Sends a spawned call's result, or, if the call ends without one (it panicked, or was
/// cancelled), an error saying so: an input never waits for a call that is gone.
struct Reply {
    id: u64,
    result: Option<Result<DynRecord, ProcessError>>,
    sender: mpsc::UnboundedSender<Completion>,
}

impl Reply {
    fn send(mut self, result: Result<DynRecord, ProcessError>) {
        self.result = Some(result);
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        let result = self.result.take().unwrap_or_else(|| {
            Err(ProcessError::processing(
                "the call did not finish: it panicked or was cancelled",
            ))
        });
        // A closed channel: the task is gone, and its calls with it.
        let _ = self.sender.send((self.id, result));
    }
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
    id: u64,
    input: InputKey,
    key_hash: u64,
    state: CallState,
}

enum CallState {
    Running(AbortHandle),
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
                // The keys of the calls looked at so far: each holds back its key.
                let mut held = std::collections::HashSet::new();
                self.calls.iter().position(|call| {
                    let first_of_key = held.insert(call.key_hash);
                    first_of_key && done(call)
                })
            }
            _ => self.calls.front().is_some_and(done).then_some(0),
        }
    }
}

impl CallQueue {
    /// Whether a call for a record with `key_hash`, started now, may leave the operator
    /// as soon as it completes: no older call of the operator holds it back by its order.
    fn may_leave_now(&self, key_hash: u64, may_overtake: bool) -> bool {
        match self.options.order {
            AsyncOrder::Key if may_overtake => !self.calls.iter().any(|c| c.key_hash == key_hash),
            _ => self.calls.is_empty(),
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
        let (completions_sender, completions) = mpsc::unbounded_channel();
        Self {
            completions,
            completions_sender,
            next_call: 0,
            next_to_read: Vec::new(),
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
    ///
    /// A call whose future completes at its first poll (a cache hit, say) and whose
    /// result may leave the operator at once by its order is not put in flight at all:
    /// its result is returned, for the input's run to go on with on the stream thread,
    /// as if the operator were synchronous. That is what lets `enrich` at a high hit
    /// ratio run at nearly a plain `map`'s speed. `None`: the call is in flight.
    pub(super) fn start(
        &mut self,
        node: usize,
        calls: &mut dyn AsyncCalls,
        record: DynRecord,
        meta: &InputMeta,
    ) -> Result<Option<Result<DynRecord, ProcessError>>, ProcessError> {
        let Some(runtime) = &self.runtime else {
            return Err(ProcessError::new(
                crate::error::ErrorKind::State,
                "an async operator needs a tokio runtime: give the task one with Task::with_runtime",
            ));
        };
        let origin = &meta.origin;
        let started = calls.start(
            record,
            Call {
                event_id: meta.lineage.event_id.as_deref().map(Arc::from),
                origin: origin.clone(),
                derived_key: std::sync::OnceLock::new(),
            },
        );
        let may_overtake = self.done_ahead.len() < MAX_DONE_AHEAD;
        let queue = self
            .queues
            .iter_mut()
            .find(|q| q.node == node)
            .expect("every async node has a queue");
        let mut future = started.future;
        // Polled once here, inside the runtime's context (a timeout or a clock read in the
        // call needs it), with a waker that wakes nothing: a call not ready is spawned,
        // and the runtime polls it again with its own.
        // A call that panics here fails its input as one that panics on the runtime does.
        let first_poll = {
            let _context = runtime.enter();
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                future.as_mut().poll(&mut cx)
            }))
            .unwrap_or_else(|_| {
                Poll::Ready(Err(ProcessError::processing(
                    "the call did not finish: it panicked",
                )))
            })
        };
        let id = self.next_call;
        self.next_call += 1;
        let state = match first_poll {
            Poll::Ready(result) if queue.may_leave_now(started.key_hash, may_overtake) => {
                return Ok(Some(result));
            }
            // Complete, but behind an older call: it waits in its place, unspawned.
            Poll::Ready(result) => CallState::Done(result),
            Poll::Pending => {
                let reply = Reply {
                    id,
                    result: None,
                    sender: self.completions_sender.clone(),
                };
                let call = runtime.spawn(async move {
                    let result = future.await;
                    reply.send(result);
                });
                CallState::Running(call.abort_handle())
            }
        };
        let input = (origin.topic.clone(), origin.offset);
        queue.calls.push_back(CallEntry {
            id,
            input: input.clone(),
            key_hash: started.key_hash,
            state,
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
        Ok(None)
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

    /// Keeps the results of the calls that completed since the last look (registering
    /// `cx`'s waker for the next); ready when a completed call may leave its operator (by
    /// its order).
    pub(super) fn poll(&mut self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        while let Poll::Ready(Some((id, result))) = self.completions.poll_recv(cx) {
            self.completed(id, result);
        }
        self.any_ready()
    }

    /// Keeps the results of the calls that completed since the last look, without
    /// registering a waker (so the one registered by [`InFlight::poll`] stays).
    fn collect(&mut self) {
        while let Ok((id, result)) = self.completions.try_recv() {
            self.completed(id, result);
        }
    }

    /// Keeps call `id`'s result, unless the call was cancelled meanwhile.
    fn completed(&mut self, id: u64, result: Result<DynRecord, ProcessError>) {
        for queue in &mut self.queues {
            if let Ok(position) = queue.calls.binary_search_by_key(&id, |c| c.id) {
                queue.calls[position].state = CallState::Done(result);
                return;
            }
        }
    }

    fn any_ready(&self) -> Poll<()> {
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

    /// Notes that `origin` was read: the partition's position is after it.
    pub(super) fn read(&mut self, origin: &Origin) {
        let next = origin.offset + 1;
        match self
            .next_to_read
            .iter_mut()
            .find(|(topic, _)| **topic == *origin.topic)
        {
            // Set, not raised: after a rewind the position is back at the rewind.
            Some((_, offset)) => *offset = next,
            None => self.next_to_read.push((origin.topic.clone(), next)),
        }
    }

    /// The offset after the last input of `topic` read.
    pub(super) fn next_to_read(&self, topic: &str) -> Option<i64> {
        self.next_to_read
            .iter()
            .find(|(t, _)| **t == *topic)
            .map(|(_, offset)| *offset)
    }

    /// Where a task done with every input of `topic` before `next` may commit: past
    /// the inputs done ahead that follow, up to the next one not done or not read yet.
    /// Those not read yet (listed by an earlier incarnation's commit) stay ahead: they
    /// must still be skipped when read, so no commit may pass and forget them.
    pub(super) fn done_through(&self, topic: &Arc<str>, mut next: i64) -> i64 {
        if self.done_ahead.is_empty() {
            return next;
        }
        let read = self.next_to_read(topic).unwrap_or(next);
        while next < read && self.done_ahead.contains(&(topic.clone(), next)) {
            next += 1;
        }
        next
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
        // Ordered by topic, then offset: the first of the topic is its oldest.
        self.inputs
            .keys()
            .find(|(t, _)| **t == *topic)
            .map(|(_, offset)| *offset)
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

    /// Whether the task must stop taking input: its async operators are at capacity, or
    /// so many inputs are done ahead of one still in flight (records that never reach a
    /// call: filtered, dead-lettered) that the commit's metadata could not list many more.
    pub fn at_capacity(&self) -> bool {
        let in_flight = self.in_flight.len();
        self.in_flight.capacity().is_some_and(|c| in_flight >= c)
            || (in_flight > 0 && self.in_flight.done_ahead.len() >= MAX_DONE_AHEAD / 2)
    }

    /// Whether a task [at capacity](Self::at_capacity) may take input again: half its
    /// inputs in flight are done, and the inputs done ahead of one in flight are few
    /// again.
    pub fn drained(&self) -> bool {
        let in_flight = self.in_flight.len();
        in_flight <= self.in_flight.capacity().unwrap_or(0) / 2
            && (in_flight == 0 || self.in_flight.done_ahead.len() < MAX_DONE_AHEAD / 4)
    }

    /// Forgets the inputs of `topic` done ahead that no commit or rewind needs any more:
    /// those before its oldest input in flight, or, with none in flight, before the next
    /// input to read. The next commit passes them, and a rewind never goes back before
    /// them. This keeps the list short while calls complete between commits, so
    /// key-ordered calls keep overtaking. Entries not read yet, those a previous
    /// incarnation's commit listed, stay: they are still to be skipped.
    fn forget_done_behind(&mut self, topic: &Arc<str>) {
        if self.in_flight.done_ahead.is_empty() {
            return;
        }
        let bound = self
            .in_flight
            .oldest(topic)
            .or_else(|| self.in_flight.next_to_read(topic));
        if let Some(bound) = bound {
            self.in_flight.forget_done_before(topic, bound);
        }
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
        self.in_flight.collect();
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
                self.forget_done_behind(&meta.origin.topic);
                done += 1;
            }
        }
        Ok(done)
    }

    /// Hands a completed call's record to its operator's children.
    pub(super) fn forward_result(
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
