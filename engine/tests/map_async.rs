//! map_async through the TestDriver, on paused tokio time: order, capacity, retries,
//! timeouts and the error policy.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_engine::operators::AsyncOptions;
use sluice_engine::task::{Outcome, TaskError};
use sluice_engine::{ProcessError, Serdes, TestDriver, Topology, TopologyBuilder};

/// A topology whose one async call per record is `call`, reading `in`, writing `out`.
fn topology<F, Fut>(options: AsyncOptions, call: F) -> Topology
where
    F: Fn(String, String) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<String, ProcessError>> + Send + 'static,
{
    let builder = TopologyBuilder::new("calls");
    let call = Arc::new(call);
    builder
        .source("in", &["in"], Serdes::string(), Serdes::string())
        .map_async("call", options, move |record, _| {
            let call = call.clone();
            async move {
                let value = call(record.key.clone(), record.value.clone()).await?;
                Ok(record.with_value(value))
            }
        })
        .to("out", "out", Serdes::string(), Serdes::string());
    builder.build().unwrap()
}

fn outputs(driver: &mut TestDriver) -> Vec<(String, String)> {
    driver
        .read("out", &Serdes::string(), &Serdes::string())
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.value))
        .collect()
}

/// A raw key and value, as `TestDriver::pipe_all` takes them.
type RawPair<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Records `(key, value)` as the driver pipes them.
fn records(pairs: &[(String, String)]) -> Vec<RawPair<'_>> {
    pairs
        .iter()
        .map(|(k, v)| (Some(k.as_bytes()), Some(v.as_bytes())))
        .collect()
}

#[test]
fn results_leave_in_input_order_though_later_calls_complete_first() {
    // The first record's call is the slowest, the last one's the fastest.
    let topology = topology(
        AsyncOptions::new().capacity(10),
        |_, value: String| async move {
            let n: u64 = value.parse().unwrap();
            tokio::time::sleep(Duration::from_millis(100 - n * 10)).await;
            Ok(value)
        },
    );
    let mut driver = TestDriver::with_paused_time(topology);
    let input: Vec<(String, String)> = (0..10).map(|i| (format!("k{i}"), i.to_string())).collect();
    let outcomes = driver.pipe_all("in", records(&input)).unwrap();
    assert!(
        outcomes.iter().filter(|o| **o == Outcome::InFlight).count() >= 9,
        "the calls ran side by side: {outcomes:?}"
    );
    assert_eq!(outputs(&mut driver), input);
}

#[test]
fn key_ordered_results_keep_order_within_a_key_and_let_other_keys_overtake() {
    // Key `slow`'s calls take 50 ms, key `fast`'s 1 ms; they alternate on the input.
    let options = AsyncOptions::new().capacity(10).key_ordered();
    let topology = topology(options, |key: String, value: String| async move {
        let wait = if key == "slow" { 50 } else { 1 };
        tokio::time::sleep(Duration::from_millis(wait)).await;
        Ok(value)
    });
    let mut driver = TestDriver::with_paused_time(topology);
    let input: Vec<(String, String)> = (0..6)
        .map(|i| {
            let key = if i % 2 == 0 { "slow" } else { "fast" };
            (key.to_string(), i.to_string())
        })
        .collect();
    driver.pipe_all("in", records(&input)).unwrap();
    let out = outputs(&mut driver);
    let of = |key: &str| -> Vec<String> {
        out.iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    };
    assert_eq!(of("slow"), ["0", "2", "4"], "in order within a key");
    assert_eq!(of("fast"), ["1", "3", "5"], "in order within a key");
    assert_eq!(
        out.iter().position(|(k, _)| k == "fast"),
        Some(0),
        "a fast key overtakes the slow one: {out:?}"
    );
}

#[test]
fn no_more_calls_run_at_once_than_the_capacity() {
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (r, m) = (running.clone(), most.clone());
    let topology = topology(AsyncOptions::new().capacity(4), move |_, value: String| {
        let (running, most) = (r.clone(), m.clone());
        async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            Ok(value)
        }
    });
    let mut driver = TestDriver::with_paused_time(topology);
    let input: Vec<(String, String)> = (0..20).map(|i| (format!("k{i}"), i.to_string())).collect();
    driver.pipe_all("in", records(&input)).unwrap();
    assert_eq!(outputs(&mut driver), input);
    assert_eq!(most.load(Ordering::SeqCst), 4, "calls at once, at most");
}

#[test]
fn a_transient_error_is_retried_inside_the_call_with_the_same_idempotency_key() {
    let keys = Arc::new(Mutex::new(Vec::new()));
    let seen = keys.clone();
    let builder = TopologyBuilder::new("retries");
    builder
        .source("in", &["in"], Serdes::string(), Serdes::string())
        .map_async("call", AsyncOptions::new(), move |record, call| {
            let seen = seen.clone();
            async move {
                let attempt = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(call.idempotency_key().to_string());
                    seen.len()
                };
                if attempt < 3 {
                    return Err(ProcessError::unavailable("the service is down"));
                }
                Ok(record)
            }
        })
        .to("out", "out", Serdes::string(), Serdes::string());
    let mut driver = TestDriver::with_paused_time(builder.build().unwrap());
    driver.pipe_raw("in", Some(b"k"), Some(b"v")).unwrap();
    assert_eq!(outputs(&mut driver), [("k".to_string(), "v".to_string())]);
    let keys = keys.lock().unwrap();
    assert_eq!(keys.len(), 3, "two failures, then the success");
    assert!(
        keys.iter().all(|k| *k == keys[0]),
        "one key for every try: {keys:?}"
    );
}

#[test]
fn a_call_that_outlives_its_timeout_leaves_its_input_unavailable_not_dead_lettered() {
    let options = AsyncOptions::new().timeout(Duration::from_secs(2));
    let topology = topology(options, |_, value: String| async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(value)
    });
    let mut driver = TestDriver::with_paused_time(topology);
    let error = driver.pipe_raw("in", Some(b"k"), Some(b"v")).unwrap_err();
    assert!(
        matches!(&error, TaskError::Unavailable { operator, offset: 0, .. } if operator == "call"),
        "{error}"
    );
    assert!(driver.dead_letters().is_empty());
    assert!(outputs(&mut driver).is_empty());
}

#[test]
fn a_permanent_error_sends_the_input_to_the_dead_letter_topic_naming_the_operator() {
    let topology = topology(AsyncOptions::new(), |_, value: String| async move {
        if value == "bad" {
            return Err(ProcessError::validation("the service refused the request"));
        }
        Ok(value)
    });
    let mut driver = TestDriver::with_paused_time(topology);
    let input =
        [("a", "good"), ("b", "bad"), ("c", "good")].map(|(k, v)| (k.to_string(), v.to_string()));
    driver.pipe_all("in", records(&input)).unwrap();
    assert_eq!(
        outputs(&mut driver),
        [
            ("a".to_string(), "good".to_string()),
            ("c".to_string(), "good".to_string())
        ]
    );
    let dead = driver.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].operator, "call");
    assert_eq!(dead[0].value.as_deref(), Some(&b"bad"[..]));
}

/// A raw input of topic `in`, partition 0.
fn raw(key: &str, offset: i64) -> sluice_engine::RawRecord {
    sluice_engine::RawRecord {
        key: Some(key.as_bytes().to_vec()),
        value: Some(b"v".to_vec()),
        headers: sluice_engine::Headers::new(),
        timestamp: 1,
        origin: sluice_engine::Origin {
            topic: Arc::from("in"),
            partition: 0,
            offset,
        },
    }
}

/// A task of a key-ordered topology whose call for key `slow` waits until the returned
/// `Notify` is notified and completes at once for any other key; with the runtime its
/// calls run on, and the topology (for a new incarnation of the task).
fn gated_task() -> (
    sluice_engine::Task,
    tokio::runtime::Runtime,
    Arc<tokio::sync::Notify>,
    Topology,
) {
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let options = AsyncOptions::new().key_ordered();
    let topology = topology(options, move |key: String, value: String| {
        let gate = gate.clone();
        async move {
            if key == "slow" {
                gate.notified().await;
            }
            Ok(value)
        }
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let task = sluice_engine::Task::new(&topology, 0, 0).with_runtime(runtime.handle().clone());
    (task, runtime, release, topology)
}

#[test]
fn an_input_done_ahead_of_one_in_flight_is_not_committed_over_and_is_skipped_when_read_again() {
    let (mut task, runtime, release, topology) = gated_task();
    let mut out = Vec::new();
    assert_eq!(
        task.process(&raw("slow", 0), &mut out).unwrap(),
        Outcome::InFlight
    );
    // Its call completes as it starts and no older call holds its key: it overtakes
    // without ever being in flight.
    assert_eq!(
        task.process(&raw("fast", 1), &mut out).unwrap(),
        Outcome::Processed
    );
    assert_eq!(out.len(), 1, "the fast call overtook");
    let committable: Vec<(String, i64)> = task
        .committable_offsets()
        .map(|(t, o)| (t.to_string(), o))
        .collect();
    assert_eq!(
        committable,
        [("in".to_string(), 0)],
        "not past the input in flight"
    );
    assert_eq!(task.done_ahead("in", 0), [1]);

    // A new incarnation, told what its predecessor's commit listed, calls for input 0
    // again and skips input 1, whose output is committed already.
    drop(task);
    let mut task = sluice_engine::Task::new(&topology, 0, 0).with_runtime(runtime.handle().clone());
    // Input 3 too, as if it had overtaken a call for input 2 that never completed.
    task.resume_done_ahead(&Arc::from("in"), [1, 3]);
    let mut out = Vec::new();
    assert_eq!(
        task.process(&raw("slow", 0), &mut out).unwrap(),
        Outcome::InFlight
    );
    assert_eq!(
        task.process(&raw("fast", 1), &mut out).unwrap(),
        Outcome::Skipped
    );
    release.notify_one();
    runtime.block_on(std::future::poll_fn(|cx| task.poll_calls(cx)));
    assert_eq!(task.complete_calls(&mut out).unwrap(), 1);
    assert_eq!(out.len(), 1, "only input 0's output, once");
    let committable: Vec<(String, i64)> = task
        .committable_offsets()
        .map(|(t, o)| (t.to_string(), o))
        .collect();
    assert_eq!(committable, [("in".to_string(), 2)]);
    // Input 3 is still to be skipped, though nothing is in flight any more.
    assert_eq!(
        task.process(&raw("fast", 2), &mut out).unwrap(),
        Outcome::Processed
    );
    assert_eq!(
        task.process(&raw("fast", 3), &mut out).unwrap(),
        Outcome::Skipped
    );
}

#[test]
fn state_written_before_an_async_operator_in_one_sub_topology_is_refused_naming_both() {
    let builder = TopologyBuilder::new("counted-calls");
    builder
        .source("in", &["in"], Serdes::string(), Serdes::string())
        .group_by_key(Serdes::string(), Serdes::string())
        .count("count", "counts")
        .map_async("call", AsyncOptions::new(), |record, _| async move {
            Ok(record)
        })
        .to("out", "out", Serdes::string(), Serdes::i64());
    let error = builder.build().expect_err("refused").to_string();
    assert!(
        error.contains("`count` writes state before async operator `call`"),
        "{error}"
    );
    assert!(error.contains("repartition"), "the fix is named: {error}");
}

#[test]
fn state_after_an_async_operator_is_allowed() {
    let builder = TopologyBuilder::new("calls-then-count");
    builder
        .source("in", &["in"], Serdes::string(), Serdes::string())
        .map_async("call", AsyncOptions::new(), |record, _| async move {
            Ok(record)
        })
        .group_by_key(Serdes::string(), Serdes::string())
        .count("count", "counts")
        .to("out", "out", Serdes::string(), Serdes::i64());
    let mut driver = TestDriver::with_paused_time(builder.build().unwrap());
    driver
        .pipe_all("in", [(Some(&b"k"[..]), Some(&b"v"[..])); 3])
        .unwrap();
    let counts: Vec<i64> = driver
        .read("out", &Serdes::string(), &Serdes::i64())
        .unwrap()
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(counts, [1, 2, 3]);
}

#[test]
fn calls_report_retries_timeouts_duration_and_none_left_in_flight() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let attempts = Arc::new(AtomicUsize::new(0));
    let seen = attempts.clone();
    let options = AsyncOptions::new().timeout(Duration::from_secs(1));
    metrics::with_local_recorder(&recorder, || {
        let topology = topology(options, move |key: String, value: String| {
            let seen = seen.clone();
            async move {
                if key == "hangs" {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                } else if seen.fetch_add(1, Ordering::SeqCst) < 2 {
                    return Err(ProcessError::unavailable("the service is down"));
                }
                Ok(value)
            }
        });
        let mut driver = TestDriver::with_paused_time(topology);
        driver.pipe_raw("in", Some(b"flaky"), Some(b"v")).unwrap();
        driver
            .pipe_raw("in", Some(b"hangs"), Some(b"v"))
            .unwrap_err();
    });
    let text = handle.render();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    // Two retries of the flaky call; the hanging one never fails, it only times out.
    assert_eq!(
        value("sluice_async_call_retries_total{operator=\"call\"}"),
        2.0
    );
    assert_eq!(
        value("sluice_async_call_timeouts_total{operator=\"call\"}"),
        1.0
    );
    assert_eq!(
        value("sluice_async_calls_in_flight{operator=\"call\"}"),
        0.0
    );
    assert_eq!(
        value("sluice_async_call_duration_seconds_count{operator=\"call\"}"),
        2.0
    );
    assert!(
        !text.contains("flaky") && !text.contains("hangs"),
        "no key in a label"
    );
}

#[test]
fn inputs_done_ahead_of_a_slow_call_stop_the_task_before_the_commit_could_not_list_them() {
    use sluice_engine::Task;
    // Records valued `skip` never reach the call: behind a slow call they are done ahead,
    // and each must be listed in the commit's metadata until the slow call completes.
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let builder = TopologyBuilder::new("filtered-calls");
    builder
        .source("in", &["in"], Serdes::string(), Serdes::string())
        .filter("not-skipped", |_, value: &String| value != "skip")
        .map_async("call", AsyncOptions::new(), move |record, _| {
            let gate = gate.clone();
            async move {
                gate.notified().await;
                Ok(record)
            }
        })
        .to("out", "out", Serdes::string(), Serdes::string());
    let topology = builder.build().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut task = Task::new(&topology, 0, 0).with_runtime(runtime.handle().clone());
    let mut out = Vec::new();
    let mut record = raw("k", 0);
    assert_eq!(task.process(&record, &mut out).unwrap(), Outcome::InFlight);
    assert!(!task.at_capacity(), "one call of a capacity of 100");

    record.value = Some(b"skip".to_vec());
    let mut skipped = 0;
    while !task.at_capacity() {
        skipped += 1;
        record.origin.offset = skipped;
        assert_eq!(task.process(&record, &mut out).unwrap(), Outcome::Processed);
        assert!(skipped < 1_000, "the task never stopped taking input");
    }
    assert_eq!(task.done_ahead("in", 0).len() as i64, skipped);
    assert!(
        skipped <= 128,
        "stopped at {skipped} inputs done ahead, well within what a commit's metadata lists"
    );
    assert!(!task.drained());

    release.notify_one();
    runtime.block_on(std::future::poll_fn(|cx| task.poll_calls(cx)));
    assert_eq!(task.complete_calls(&mut out).unwrap(), 1);
    assert!(task.drained(), "nothing in flight, nothing done ahead");
    assert!(task.done_ahead("in", 0).is_empty());
    let committable: Vec<i64> = task.committable_offsets().map(|(_, o)| o).collect();
    assert_eq!(committable, [skipped + 1]);
}

#[test]
fn a_commit_between_overtaking_and_the_slow_call_completing_still_reaches_the_partition_end() {
    let (mut task, runtime, release, _) = gated_task();
    let mut out = Vec::new();
    task.process(&raw("slow", 0), &mut out).unwrap();
    task.process(&raw("fast", 1), &mut out).unwrap();
    task.process(&raw("fast", 2), &mut out).unwrap();
    let committable: Vec<i64> = task.committable_offsets().map(|(_, o)| o).collect();
    assert_eq!(committable, [0]);
    assert_eq!(task.done_ahead("in", 0), [1, 2]);
    task.clear_committable();

    // Nothing more arrives: the slow call completing alone must carry the commit to the
    // end of the partition, past the inputs that overtook it.
    release.notify_one();
    runtime.block_on(std::future::poll_fn(|cx| task.poll_calls(cx)));
    assert_eq!(task.complete_calls(&mut out).unwrap(), 1);
    let committable: Vec<i64> = task.committable_offsets().map(|(_, o)| o).collect();
    assert_eq!(committable, [3], "the partition's end");
}
