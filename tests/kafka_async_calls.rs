//! Async calls under SIGKILL: a `map_async` operator calling a real HTTP service while its
//! worker process is killed again and again, on a real Kafka-protocol broker.
//!
//! The test process runs a small HTTP service (axum, on 127.0.0.1) that answers each
//! request after a random 1–20 ms and logs every call: the input it was asked about and
//! the `Idempotency-Key` header it got. A worker process runs a topology whose one
//! `map_async` operator (capacity 100 per task) asks the service about every input and
//! writes its answer. 100,000 inputs over 8 partitions (keys from a set of 1,000) arrive
//! for about 75 s while the worker is SIGKILLed 12 times, each at a random moment 1.5–6 s
//! into a worker's processing, with calls in flight; a last worker then finishes. The
//! inputs carry no `event-id` header, so the idempotency key is the one the engine derives
//! from the input's topic, partition and offset. It shows, under exactly_once_v2:
//!
//! * the read_committed output holds every input exactly once, with the service's answer,
//!   in the input partition's order (default) or in order within each key
//!   ([`AsyncOptions::key_ordered`], where keys do overtake each other);
//! * every input was called for; an input called more than once was called again only
//!   after a kill that came after its earlier call, while its output was not yet
//!   committed, and every call for it carried the same idempotency key (and no other
//!   input's); no call came for an input whose output was already committed.
//!
//! The worker is this test binary run again: `async_worker_child` is a test that returns
//! at once unless `SLUICE_ASYNC_WORKER` is set, and then runs the topology until it is
//! killed (or stopped by SIGTERM). So the topology lives in the test, not in the CLI.

mod support;

#[path = "kafka_async_calls/observer.rs"]
mod observer;
#[path = "kafka_async_calls/service.rs"]
mod service;
#[path = "kafka_async_calls/worker.rs"]
mod worker;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use rand::Rng;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sluice_engine::operators::AsyncOptions;
use sluice_engine::{ProcessError, Serdes, Topology, TopologyBuilder};
use sluice_runtime::{ConfigBuilder, Worker};
use sluice_topologies::demo::send_waiting;
use support::TestBroker;

use observer::{Observer, answered_seq, produce};
use service::{Service, ServiceCall};
use worker::{WorkerProcess, WorkerSpec, run_worker};

const INPUT_TOPIC: &str = "async-calls.in";
const OUTPUT_TOPIC: &str = "async-calls.out";
const INPUTS: usize = 100_000;
const PARTITIONS: i32 = 8;
/// Few enough keys that each repeats ~100 times within its partition, so that key order
/// is a real constraint.
const KEYS: u32 = 1_000;
/// Inputs of a task in flight at once: at ~170 inputs/s per partition and ~10 ms a call
/// there is nearly always one in flight, and a restarted worker catching up fills it.
const CAPACITY: usize = 100;
const KILLS: usize = 12;
/// How long the inputs take to arrive: longer than 12 kills 1.5–6 s apart, so every kill
/// comes while records flow.
const PRODUCE_FOR: Duration = Duration::from_secs(75);
const COMMIT_INTERVAL_MS: &str = "500";
const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Set (to the order mode) in the environment of a worker child.
const CHILD_TRIGGER: &str = "SLUICE_ASYNC_WORKER";
/// How long after a worker's death a request it sent may still reach the service's
/// handler (bytes already in the socket). Far shorter than a worker's start, so no call of
/// the next worker falls inside it.
const DEATH_SLACK: Duration = Duration::from_millis(200);
/// The last worker normally catches up within a second or two of the last input.
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(120);
const WORKER_START_DEADLINE: Duration = Duration::from_secs(60);
/// Kills that must find a worker with calls in flight or results not yet committed (seen
/// as inputs called again after them). Every kill should; the margin is for a kill that
/// lands in the instant after a commit, before the next call.
const MIN_KILLS_HITTING_CALLS: usize = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    Input,
    Key,
}

impl Order {
    fn as_str(self) -> &'static str {
        match self {
            Order::Input => "input",
            Order::Key => "key",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "input" => Order::Input,
            "key" => Order::Key,
            other => panic!("{CHILD_TRIGGER}={other}: expected `input` or `key`"),
        }
    }
}

#[test]
fn input_ordered_calls_survive_kill_9s_exactly_once_in_partition_order() {
    run_with_kills(Order::Input);
}

#[test]
fn key_ordered_calls_survive_kill_9s_exactly_once_in_key_order() {
    run_with_kills(Order::Key);
}

/// The worker process of the tests above; returns at once in a normal test run.
#[test]
fn async_worker_child() {
    if let Ok(order) = std::env::var(CHILD_TRIGGER) {
        run_worker(Order::parse(&order));
    }
}

// The run

/// One SIGKILL of a worker.
struct Kill {
    /// Just before the signal.
    started: Instant,
    /// Once the killed worker was reaped.
    ended: Instant,
    /// Whether the producer was still writing inputs.
    records_flowing: bool,
    /// Requests the service was handling at that moment.
    calls_in_flight: usize,
}

/// One input, as read back from its topic.
struct Input {
    key: String,
    partition: i32,
    offset: i64,
}

fn run_with_kills(order: Order) {
    let test_started = Instant::now();
    let broker = TestBroker::start();
    broker.create_topics(&[INPUT_TOPIC, OUTPUT_TOPIC], PARTITIONS);
    let service = Service::start();
    let scratch = support::ScratchDir::new("sluice-async-kill");
    let state_dir = scratch.path().to_path_buf();
    let log = state_dir.join("worker.log");
    eprintln!("{order:?} order: worker log {}", log.display());
    let spec = WorkerSpec {
        order,
        brokers: broker.brokers.clone(),
        service_url: service.url.clone(),
        group: format!("async-calls-{}", order.as_str()),
        state_dir: state_dir.clone(),
    };
    let observer = Observer::start(&broker.brokers);

    let brokers = broker.brokers.clone();
    let producer = std::thread::spawn(move || produce(&brokers));
    let mut rng = rand::rng();
    let mut worker = WorkerProcess::start(&spec);
    let mut kills = Vec::new();
    for _ in 0..KILLS {
        // Each kill comes at a random moment of a worker's processing, not of its start:
        // a worker killed before its first call would test nothing.
        service.wait_for_call_after(Instant::now(), &mut worker, &log);
        std::thread::sleep(Duration::from_millis(rng.random_range(1_500..6_000)));
        worker.assert_running(&log);
        let records_flowing = !producer.is_finished();
        let calls_in_flight = service.log.in_flight.load(Ordering::SeqCst);
        let started = Instant::now();
        worker.0.kill().expect("SIGKILL the worker");
        worker.0.wait().unwrap();
        kills.push(Kill {
            started,
            ended: Instant::now(),
            records_flowing,
            calls_in_flight,
        });
        worker = WorkerProcess::start(&spec);
    }
    producer.join().expect("the producer wrote every input");
    let produced_at = test_started.elapsed();

    // The last worker catches up: every input offset committed, and with it (one
    // transaction) every output.
    let deadline = Instant::now() + CATCH_UP_DEADLINE;
    while !support::caught_up(&broker.brokers, &spec.group, &[INPUT_TOPIC]) {
        worker.assert_running(&log);
        if Instant::now() > deadline {
            let seen = observer.count();
            panic!(
                "the last worker did not catch up within {CATCH_UP_DEADLINE:?}: {seen} of \
                 {INPUTS} outputs committed ({} missing); input partitions whose committed \
                 offset stops short of their end: {:?}; worker log {}",
                INPUTS - seen,
                partitions_behind(&broker.brokers, &spec.group),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let caught_up_at = test_started.elapsed();
    let status = Command::new("kill")
        .args(["-TERM", &worker.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "SIGTERM sent to the last worker");
    let status = worker.0.wait().unwrap();
    assert!(
        status.success(),
        "the last worker stops cleanly on SIGTERM: {status}; worker log {}",
        log.display()
    );

    let inputs = read_inputs(&broker.brokers);
    let outputs = support::read_committed(&broker.brokers, OUTPUT_TOPIC);
    // The observer, reading alongside, sees the last commits a moment later.
    let deadline = Instant::now() + Duration::from_secs(30);
    while observer.count() < INPUTS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let visible = observer.finish();
    let calls = std::mem::take(&mut *service.log.calls.lock().unwrap());

    let flowing = kills.iter().filter(|k| k.records_flowing).count();
    assert!(
        flowing >= 10,
        "at least 10 kills hit a worker while records flowed: {flowing} of {KILLS} did"
    );
    let overtakes = check_outputs(order, &inputs, &outputs, &broker.brokers);
    // Without every output's commit time, the check of calls after a commit would be empty.
    assert_eq!(
        visible.len(),
        INPUTS,
        "the observer saw every input's output committed while the test ran"
    );
    let report = check_calls(&calls, &visible, &kills, test_started);
    eprintln!(
        "{order:?} order: {KILLS} kills ({flowing} while records flowed; calls in flight at each: {:?}); \
         inputs written by {:.0} s, all committed by {:.0} s; {} outputs, {overtakes} overtaking another key's; \
         {} calls for {INPUTS} inputs; {} inputs called more than once (at most {} could be: called, not yet \
         visibly committed, at a kill); repeats after each kill: {:?}",
        kills.iter().map(|k| k.calls_in_flight).collect::<Vec<_>>(),
        produced_at.as_secs_f64(),
        caught_up_at.as_secs_f64(),
        outputs.len(),
        calls.len(),
        report.repeated,
        report.at_risk,
        report.repeats_per_kill,
    );
    // `scratch` keeps the worker log only when the test fails: it is tens of MB (the test
    // broker's fetch replies make librdkafka log a protocol error per partition and fetch).
}

/// The input partitions whose committed offset is short of their end, with the offset's
/// metadata (where the engine lists inputs done ahead of one in flight).
fn partitions_behind(brokers: &str, group: &str) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut partitions = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        partitions.add_partition(INPUT_TOPIC, partition);
    }
    let committed = match consumer.committed_offsets(partitions, Duration::from_secs(10)) {
        Ok(committed) => committed,
        Err(e) => return vec![format!("the committed offsets could not be read: {e}")],
    };
    committed
        .elements()
        .iter()
        .filter_map(|e| {
            let (_, end) = consumer
                .fetch_watermarks(INPUT_TOPIC, e.partition(), Duration::from_secs(10))
                .ok()?;
            let at = match e.offset() {
                Offset::Offset(o) => o,
                _ => -1,
            };
            (at < end).then(|| {
                format!(
                    "partition {} at {at} of {end} (metadata {:?})",
                    e.partition(),
                    e.metadata()
                )
            })
        })
        .collect()
}

/// The inputs as written, indexed by sequence number.
fn read_inputs(brokers: &str) -> Vec<Input> {
    let mut inputs: Vec<Option<Input>> = (0..INPUTS).map(|_| None).collect();
    for r in support::read_all(brokers, INPUT_TOPIC, "read_uncommitted") {
        let seq: usize = std::str::from_utf8(r.value.as_deref().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        let previous = inputs[seq].replace(Input {
            key: r.key.unwrap(),
            partition: r.partition,
            offset: r.offset,
        });
        assert!(previous.is_none(), "input {seq} was written once");
    }
    let written = inputs.iter().filter(|i| i.is_some()).count();
    assert_eq!(written, INPUTS, "every input is in its topic");
    inputs.into_iter().map(Option::unwrap).collect()
}

/// A few examples from a list, for failure messages.
fn first<T: std::fmt::Debug>(items: &[T]) -> String {
    format!("{:?}", &items[..items.len().min(5)])
}

/// Checks the read_committed output: every input exactly once, with the service's answer,
/// under its own key and in its input's partition, in order. Returns how many outputs came
/// before an earlier input of their partition (another key's, in key order).
fn check_outputs(
    order: Order,
    inputs: &[Input],
    outputs: &[support::ReadBack],
    brokers: &str,
) -> usize {
    let mut outputs: Vec<&support::ReadBack> = outputs.iter().collect();
    outputs.sort_by_key(|o| (o.partition, o.offset));
    let mut times = vec![0u32; INPUTS];
    let mut unknown = Vec::new();
    let mut moved = Vec::new();
    let mut answered: Vec<(&support::ReadBack, usize)> = Vec::new();
    for o in outputs {
        let Some(seq) = o.value.as_deref().and_then(answered_seq) else {
            unknown.push(String::from_utf8_lossy(
                o.value.as_deref().unwrap_or_default(),
            ));
            continue;
        };
        times[seq] += 1;
        let input = &inputs[seq];
        if o.key.as_deref() != Some(input.key.as_str()) || o.partition != input.partition {
            moved.push((seq, o.key.clone(), o.partition, input.partition));
        }
        answered.push((o, seq));
    }
    assert!(
        unknown.is_empty(),
        "{} outputs are not the service's answer about an input, e.g. {}",
        unknown.len(),
        first(&unknown)
    );
    let missing: Vec<usize> = (0..INPUTS).filter(|s| times[*s] == 0).collect();
    let duplicated: Vec<(usize, u32)> = (0..INPUTS)
        .filter(|s| times[*s] > 1)
        .map(|s| (s, times[s]))
        .collect();
    if !missing.is_empty() || !duplicated.is_empty() {
        let uncommitted = support::read_all(brokers, OUTPUT_TOPIC, "read_uncommitted");
        let anywhere: std::collections::HashSet<usize> = uncommitted
            .iter()
            .filter_map(|r| r.value.as_deref().and_then(answered_seq))
            .collect();
        let in_aborted = missing.iter().filter(|s| anywhere.contains(s)).count();
        panic!(
            "exactly once broken in read_committed output: {} of {INPUTS} inputs missing \
             ({in_aborted} of them only in aborted transactions), e.g. {}; {} duplicated \
             (input, times), e.g. {}",
            missing.len(),
            first(&missing),
            duplicated.len(),
            first(&duplicated)
        );
    }
    assert!(
        moved.is_empty(),
        "{} outputs did not keep their input's key and partition (both producers use Java's \
         partitioner over 8 partitions), e.g. (input, key, partition, input's partition) {}",
        moved.len(),
        first(&moved)
    );

    // Outputs are in their input's partition (checked above), so each output partition,
    // in offset order, is its input partition's outputs in the order they were committed.
    let mut last_of_partition: HashMap<i32, i64> = HashMap::new();
    let mut last_of_key: HashMap<&str, i64> = HashMap::new();
    let mut overtakes = Vec::new();
    let mut key_inversions = Vec::new();
    for (o, seq) in answered {
        let input = &inputs[seq];
        if let Some(before) = last_of_partition.insert(o.partition, input.offset)
            && before > input.offset
        {
            overtakes.push((o.partition, before, input.offset));
        }
        if let Some(before) = last_of_key.insert(&input.key, input.offset)
            && before > input.offset
        {
            key_inversions.push((input.key.clone(), before, input.offset));
        }
    }
    assert!(
        key_inversions.is_empty(),
        "{} outputs came after a later input of their key, e.g. (key, input offset written \
         before, input offset) {}",
        key_inversions.len(),
        first(&key_inversions)
    );
    match order {
        Order::Input => assert!(
            overtakes.is_empty(),
            "input order: {} outputs came after a later input of their partition, e.g. \
             (partition, input offset written before, input offset) {}",
            overtakes.len(),
            first(&overtakes)
        ),
        // With calls of 1–20 ms at random, keys overtake each other all the time; none
        // doing so would mean the key-ordered mode was not in effect.
        Order::Key => assert!(
            !overtakes.is_empty(),
            "key order: no output overtook another key's in {INPUTS} inputs"
        ),
    }
    overtakes.len()
}

/// What the service's call log showed.
struct CallReport {
    /// Inputs called more than once.
    repeated: usize,
    /// Inputs that could have been called again: called before a kill and not yet seen
    /// committed when it came.
    at_risk: usize,
    /// For each kill, the inputs called again after it.
    repeats_per_kill: Vec<usize>,
}

/// Checks the service's call log against the inputs, the kills and when each output was
/// first seen committed.
fn check_calls(
    calls: &[ServiceCall],
    visible: &HashMap<usize, Instant>,
    kills: &[Kill],
    test_started: Instant,
) -> CallReport {
    let ms = |t: Instant| t.duration_since(test_started).as_millis();
    let mut by_input: Vec<Vec<(Instant, &str)>> = vec![Vec::new(); INPUTS];
    let mut strange = Vec::new();
    for call in calls {
        match (call.input.parse::<usize>(), &call.key) {
            (Ok(seq), Some(key)) if seq < INPUTS => by_input[seq].push((call.at, key)),
            _ => strange.push((call.input.clone(), call.key.clone())),
        }
    }
    assert!(
        strange.is_empty(),
        "{} calls were not about an input or had no idempotency key, e.g. (input, key) {}",
        strange.len(),
        first(&strange)
    );
    for input_calls in &mut by_input {
        input_calls.sort_by_key(|(at, _)| *at);
    }

    // (1) Every input was called for.
    let never: Vec<usize> = (0..INPUTS).filter(|s| by_input[*s].is_empty()).collect();
    assert!(
        never.is_empty(),
        "{} of {INPUTS} inputs were never called for, e.g. {}",
        never.len(),
        first(&never)
    );

    // (2) One idempotency key per input, every time, and no input shares another's.
    let mut owner: HashMap<&str, usize> = HashMap::new();
    let mut changed = Vec::new();
    let mut shared = Vec::new();
    for (seq, input_calls) in by_input.iter().enumerate() {
        let key = input_calls[0].1;
        if input_calls.iter().any(|(_, k)| *k != key) {
            let keys: Vec<&str> = input_calls.iter().map(|(_, k)| *k).collect();
            changed.push((seq, keys));
        }
        if let Some(other) = owner.insert(key, seq) {
            shared.push((key.to_string(), other, seq));
        }
    }
    assert!(
        changed.is_empty(),
        "{} inputs called more than once got different idempotency keys, e.g. {}",
        changed.len(),
        first(&changed)
    );
    assert!(
        shared.is_empty(),
        "{} idempotency keys were sent for two inputs, e.g. (key, input, input) {}",
        shared.len(),
        first(&shared)
    );

    // (3) A repeat only after a kill: between an input's call and its next one, a worker
    // died (the earlier call was made before the kill's end, give or take requests still
    // in the socket, the later one after its start). A repeat with no kill in between
    // would mean the engine called twice on its own: a rewind, an aborted transaction, or
    // a retry of a failed request (the service never fails, so none is expected).
    let mut unexplained = Vec::new();
    let mut repeats_per_kill = vec![0; kills.len()];
    for (seq, input_calls) in by_input.iter().enumerate() {
        let mut counted = vec![false; kills.len()];
        for pair in input_calls.windows(2) {
            let (earlier, later) = (pair[0].0, pair[1].0);
            let straddling = kills
                .iter()
                .position(|k| earlier < k.ended + DEATH_SLACK && later > k.started);
            match straddling {
                Some(k) if !counted[k] => {
                    counted[k] = true;
                    repeats_per_kill[k] += 1;
                }
                Some(_) => {}
                None => unexplained.push((seq, ms(earlier), ms(later))),
            }
        }
    }
    assert!(
        unexplained.is_empty(),
        "{} repeated calls had no kill between them and the call before (a rewind, an abort \
         or a retry inside one worker), e.g. (input, ms, ms after the start) {}; kills at \
         {:?} ms",
        unexplained.len(),
        first(&unexplained),
        kills.iter().map(|k| ms(k.started)).collect::<Vec<_>>()
    );

    // (4) No call for an input whose output was committed already (as the observer saw it:
    // it sees a commit late, never early, so this misses nothing it claims).
    let late: Vec<(usize, u128, u128)> = by_input
        .iter()
        .enumerate()
        .filter_map(|(seq, input_calls)| {
            let seen = *visible.get(&seq)?;
            let (last, _) = input_calls.last()?;
            (*last > seen).then(|| (seq, ms(seen), ms(*last)))
        })
        .collect();
    assert!(
        late.is_empty(),
        "{} inputs were called for after their output was seen committed, e.g. (input, \
         committed at ms, called at ms) {}",
        late.len(),
        first(&late)
    );

    // (5) How many repeats there were, and the bound they keep. An input can be called
    // again only if a kill found it called but not committed: in flight (at most
    // CAPACITY per task) or done since the last commit. Here that set is measured rather
    // than estimated: called before the kill ended, and not seen committed before it
    // started. (3) and (4) already imply every repeated input is in it; counting it
    // shows how close the repeats come to it.
    let repeated = by_input.iter().filter(|c| c.len() > 1).count();
    let at_risk = by_input
        .iter()
        .enumerate()
        .filter(|(seq, input_calls)| {
            let first_call = input_calls[0].0;
            let seen = visible.get(seq).copied();
            kills.iter().any(|k| {
                first_call < k.ended + DEATH_SLACK && seen.is_none_or(|seen| seen > k.started)
            })
        })
        .count();
    assert!(
        repeated > 0,
        "no input was called twice in {} kills: none hit a call in flight or an uncommitted \
         result",
        kills.len()
    );
    let hitting = repeats_per_kill.iter().filter(|n| **n > 0).count();
    assert!(
        hitting >= MIN_KILLS_HITTING_CALLS,
        "only {hitting} of {} kills were followed by calls made again (repeats after each \
         kill: {repeats_per_kill:?}): the others hit no call in flight nor an uncommitted \
         result",
        kills.len()
    );
    assert!(
        repeated <= at_risk,
        "{repeated} inputs were called more than once, but only {at_risk} were called and \
         uncommitted at a kill"
    );
    CallReport {
        repeated,
        at_risk,
        repeats_per_kill,
    }
}
