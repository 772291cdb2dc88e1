//! The normalization topology on a real Kafka-protocol broker: every valid order exactly
//! once in read_committed output, every malformed one dead-lettered with its reason, under
//! each processing guarantee and when a worker leaves mid-run.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sluice_engine::policy::headers as dlq;
use sluice_runtime::Worker;
use sluice_topologies::normalization::{
    self, DEAD_LETTER_TOPIC, EHR_TOPIC, OUTPUT_TOPIC, PHARMACY_TOPIC,
};
use support::{Inputs, ScratchDir, TestBroker};

fn topology() -> sluice_engine::Topology {
    normalization::topology(normalization::local_output_serde())
}

fn state_dir(name: &str) -> ScratchDir {
    ScratchDir::new(&format!("sluice-test-{name}"))
}

/// Every valid order once (by event id and by key); every malformed one dead-lettered
/// with the reason its malformation calls for.
fn assert_exactly_once(broker: &TestBroker, inputs: &Inputs) {
    let out = support::read_committed(&broker.brokers, OUTPUT_TOPIC);
    let (written, duplicates) = support::output_summary(&out);
    assert_eq!(duplicates, 0, "no output is written twice");
    assert_eq!(
        written,
        inputs.valid_keys.len(),
        "every valid order is written"
    );
    let keys: std::collections::HashSet<String> =
        out.iter().map(|r| r.key.clone().unwrap()).collect();
    assert_eq!(
        keys, inputs.valid_keys,
        "the outputs are exactly the valid orders"
    );
    // An output carries its input's timestamp (event time), not the time it was produced.
    let input_times: std::collections::HashMap<String, Option<i64>> = [EHR_TOPIC, PHARMACY_TOPIC]
        .iter()
        .flat_map(|topic| support::read_all(&broker.brokers, topic, "read_uncommitted"))
        .filter_map(|r| Some((r.key?, r.timestamp)))
        .collect();
    for record in &out {
        let key = record.key.as_ref().unwrap();
        assert!(
            record.timestamp.is_some(),
            "{key}: an output has a timestamp"
        );
        assert_eq!(
            record.timestamp, input_times[key],
            "{key}: an output's timestamp is its input's"
        );
    }

    let dead = support::read_committed(&broker.brokers, DEAD_LETTER_TOPIC);
    assert_eq!(
        dead.len(),
        inputs.malformed.len(),
        "every malformed order is dead-lettered once"
    );
    for record in &dead {
        let key = record
            .key
            .clone()
            .expect("a dead letter keeps its input's key");
        let reason = &record.headers[dlq::ERROR_MESSAGE];
        assert!(
            reason.contains(inputs.malformed[&key]),
            "{key}: {reason:?} should name {:?}",
            inputs.malformed[&key]
        );
    }
}

fn run_to_completion(guarantee: &str, orders: usize) -> f64 {
    let broker = TestBroker::start();
    broker.create_topics(&[EHR_TOPIC, PHARMACY_TOPIC], 8);
    let inputs = support::produce_orders(&broker.brokers, orders, 0.01, 42);
    let dir = state_dir(guarantee);
    let config = broker.worker_config(
        &format!("normalization-{guarantee}"),
        dir.path(),
        &[("processing.guarantee", guarantee)],
    );
    let started = Instant::now();
    let worker = Worker::start(topology(), config).unwrap();
    let stats = worker.stats().clone();
    support::wait_until("every input committed", Duration::from_secs(600), || {
        stats.committed.load(Ordering::Relaxed) >= inputs.total || worker.any_thread_finished()
    });
    let rate = inputs.total as f64 / started.elapsed().as_secs_f64();
    worker.stop();
    worker.join().unwrap();
    assert_exactly_once(&broker, &inputs);
    eprintln!(
        "normalization under {guarantee}: {} records in {:.1} s = {rate:.0} records/s (debug build, 1 stream thread)",
        inputs.total,
        started.elapsed().as_secs_f64()
    );
    rate
}

#[test]
fn a_stopped_test_broker_leaves_no_log_behind() {
    let broker = TestBroker::start();
    let dir = broker.dir().to_path_buf();
    assert!(dir.is_dir(), "a running broker keeps its log in {dir:?}");
    drop(broker);
    assert!(!dir.exists(), "{dir:?} is left after the broker stopped");
}

#[test]
fn exactly_once_normalizes_100k_records_over_8_partitions_without_loss_or_duplicates() {
    run_to_completion("exactly_once_v2", 50_000);
}

#[test]
fn at_least_once_without_failures_also_writes_each_record_once() {
    run_to_completion("at_least_once", 25_000);
}

#[test]
fn when_one_of_two_workers_leaves_mid_run_the_other_takes_over_exactly_once() {
    let broker = TestBroker::start();
    broker.create_topics(&[EHR_TOPIC, PHARMACY_TOPIC], 8);
    let inputs = support::produce_orders(&broker.brokers, 30_000, 0.01, 7);
    let dirs = (state_dir("first"), state_dir("second"));
    let config = |dir: &ScratchDir| broker.worker_config("scale-out", dir.path(), &[]);

    let first = Worker::start(topology(), config(&dirs.0)).unwrap();
    let second = Worker::start(topology(), config(&dirs.1)).unwrap();
    let (first_stats, second_stats) = (first.stats().clone(), second.stats().clone());
    support::wait_until("both workers committing", Duration::from_secs(120), || {
        first_stats.committed.load(Ordering::Relaxed) > 0
            && second_stats.committed.load(Ordering::Relaxed) > 0
    });
    assert!(
        first_stats.committed.load(Ordering::Relaxed)
            + second_stats.committed.load(Ordering::Relaxed)
            < inputs.total,
        "the first worker leaves mid-run, not after the end"
    );
    first.stop();
    first.join().unwrap();
    let group = "scale-out";
    support::wait_until(
        "the second worker finishing the rest",
        Duration::from_secs(300),
        || support::caught_up(&broker.brokers, group, &[EHR_TOPIC, PHARMACY_TOPIC]),
    );
    second.stop();
    second.join().unwrap();
    assert!(
        second_stats.rebalances.load(Ordering::Relaxed) >= 2,
        "the second worker saw the first leave"
    );
    assert_exactly_once(&broker, &inputs);
}

#[test]
fn start_fails_clearly_on_missing_sources_and_on_an_output_topic_with_other_partitions() {
    let broker = TestBroker::start();
    let dir = state_dir("checks");
    let config = |settings: &[(&str, &str)]| broker.worker_config("checks", dir.path(), settings);
    let err = Worker::start(topology(), config(&[]))
        .err()
        .expect("sources are missing");
    assert_eq!(
        err.to_string(),
        format!(
            "source topic `{EHR_TOPIC}` does not exist: create it, or check the topology's topic names"
        )
    );

    broker.create_topics(&[EHR_TOPIC, PHARMACY_TOPIC], 8);
    broker.create_topics(&[OUTPUT_TOPIC], 3);
    let err = Worker::start(topology(), config(&[("topic.partitions", "8")]))
        .err()
        .expect("the output topic disagrees with topic.partitions");
    assert!(
        err.to_string().starts_with(&format!(
            "topic `{OUTPUT_TOPIC}` exists with 3 partitions but topic.partitions is 8"
        )),
        "{err}"
    );
}

#[test]
fn a_record_whose_service_is_down_is_retried_with_backoff_and_nothing_is_skipped() {
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use sluice_engine::serde::Serdes;
    use sluice_engine::{ProcessError, TopologyBuilder};

    let broker = TestBroker::start();
    broker.create_topics(&["lookups.in"], 2);
    let producer: rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext> =
        rdkafka::config::ClientConfig::new()
            .set("bootstrap.servers", &broker.brokers)
            .create()
            .unwrap();
    let keys: HashSet<String> = (0..200).map(|i| format!("k{i}")).collect();
    for key in &keys {
        sluice_topologies::demo::send_waiting(&producer, "lookups.in", key, b"v");
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30)).unwrap();

    // The drug reference service is down for the first five attempts at one record.
    let failures_left = Arc::new(AtomicUsize::new(5));
    let failures = failures_left.clone();
    let b = TopologyBuilder::new("lookups");
    b.source("in", &["lookups.in"], Serdes::string(), Serdes::string())
        .try_map("lookup", move |r| {
            let down = r.key == "k7"
                && failures
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
            if down {
                Err(ProcessError::unavailable("drug reference service is down"))
            } else {
                Ok(r)
            }
        })
        .to("out", "lookups.out", Serdes::string(), Serdes::string());
    let dir = state_dir("lookups");
    let worker = Worker::start(
        b.build().unwrap(),
        broker.worker_config("lookups", dir.path(), &[]),
    )
    .unwrap();
    let stats = worker.stats().clone();
    support::wait_until("every record committed", Duration::from_secs(120), || {
        stats.committed.load(Ordering::Relaxed) >= 200 || worker.any_thread_finished()
    });
    worker.stop();
    worker.join().unwrap();

    assert_eq!(
        failures_left.load(Ordering::SeqCst),
        0,
        "the record was retried until the service came back"
    );
    let out = support::read_committed(&broker.brokers, "lookups.out");
    let (written, duplicates) = support::output_summary(&out);
    assert_eq!((written, duplicates), (200, 0));
    let written_keys: HashSet<String> = out.iter().map(|r| r.key.clone().unwrap()).collect();
    assert_eq!(written_keys, keys, "no record was skipped or dead-lettered");
    assert!(
        support::read_committed(&broker.brokers, "lookups.dlq").is_empty(),
        "a service outage never fills the dead-letter topic"
    );
}
