//! Records held until due (`TopologyBuilder::hold_until_due`) on a real broker: a retry
//! tier's partition waits for its head record's due time, paused, while the main topic
//! and the tier's other partitions go on; and nothing is processed before it is due.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_engine::{Serdes, Topology, TopologyBuilder};
use sluice_runtime::Worker;

const MAIN: &str = "jobs";
const TIER: &str = "jobs.retry-1";
const DONE: &str = "jobs.done";
const HEADER: &str = "due-at";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Writes each record with the time it was processed: `<value>@<epoch ms>`.
fn topology() -> Topology {
    let builder = TopologyBuilder::new("held-jobs");
    let stamp = |v: String| format!("{v}@{}", now_ms());
    builder
        .source("main", &[MAIN], Serdes::string(), Serdes::string())
        .map_values("stamp-main", stamp)
        .to("main-out", DONE, Serdes::string(), Serdes::string());
    builder
        .source("tier", &[TIER], Serdes::string(), Serdes::string())
        .map_values("stamp-tier", stamp)
        .to(
            "tier-out",
            "jobs.done-retried",
            Serdes::string(),
            Serdes::string(),
        );
    builder.hold_until_due(&[TIER], HEADER);
    builder.build().unwrap()
}

/// (value, processed at) of every committed output of `topic`.
fn outputs(brokers: &str, topic: &str) -> Vec<(String, i64)> {
    support::read_committed(brokers, topic)
        .into_iter()
        .map(|r| {
            let text = String::from_utf8(r.value.unwrap()).unwrap();
            let (value, at) = text.rsplit_once('@').unwrap();
            (value.to_string(), at.parse().unwrap())
        })
        .collect()
}

#[test]
fn a_tier_partition_waits_for_its_head_records_due_time_while_everything_else_goes_on() {
    let broker = support::TestBroker::start();
    broker.create_topics(&[MAIN, TIER], 2);
    let dir = support::ScratchDir::new("sluice-due");
    let config = broker.worker_config("held-jobs", dir.path(), &[]);
    let worker = Worker::start(topology(), config).unwrap();
    let producer = support::producer(&broker.brokers);

    let send = |topic, partition, value: &str, headers: &[(&str, &str)]| {
        support::send_with_headers(
            &producer,
            topic,
            Some(partition),
            "k",
            value.as_bytes(),
            headers,
        )
    };
    // The worker has joined its group and reads: the hold is timed from here.
    send(MAIN, 0, "first", &[]);
    support::wait_until("the worker running", Duration::from_secs(60), || {
        outputs(&broker.brokers, DONE).len() == 1
    });

    let due = now_ms() + 4_000;
    let due_text = due.to_string();
    // Partition 0 of the tier: a record due in 4 s, then one due already, behind it.
    send(TIER, 0, "late", &[(HEADER, due_text.as_str())]);
    send(TIER, 0, "behind", &[(HEADER, "0")]);
    // Partition 1 of the tier, and the main topic: due now, and not held up.
    send(TIER, 1, "other-partition", &[(HEADER, "0")]);
    send(MAIN, 0, "fresh", &[]);

    support::wait_until("the records due now", Duration::from_secs(30), || {
        outputs(&broker.brokers, DONE).len() == 2
            && !outputs(&broker.brokers, "jobs.done-retried").is_empty()
    });
    let early = outputs(&broker.brokers, "jobs.done-retried");
    assert_eq!(early[0].0, "other-partition");
    assert!(
        early[0].1 < due,
        "the tier's other partition waited for partition 0's head"
    );
    assert!(
        outputs(&broker.brokers, DONE)[1].1 < due,
        "the main topic waited"
    );

    support::wait_until("the held records", Duration::from_secs(30), || {
        outputs(&broker.brokers, "jobs.done-retried").len() == 3
    });
    let retried = outputs(&broker.brokers, "jobs.done-retried");
    let held: Vec<&(String, i64)> = retried
        .iter()
        .filter(|(v, _)| v != "other-partition")
        .collect();
    assert_eq!(
        held.iter().map(|(v, _)| v.as_str()).collect::<Vec<_>>(),
        ["late", "behind"],
        "a partition is read in order, held or not"
    );
    for (value, at) in held {
        assert!(
            *at >= due,
            "{value} was processed {} ms before its due time",
            due - at
        );
    }
    let stats = worker.stats().clone();
    worker.stop();
    worker.join().unwrap();
    assert!(stats.committed.load(Ordering::Relaxed) >= 5);
}
