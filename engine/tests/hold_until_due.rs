//! Records held until due (`TopologyBuilder::hold_until_due`), on the TestDriver's wall
//! clock; and the dead-letter sink (`Stream::to_dead_letters`) a topology that holds
//! retries dead-letters through.

use std::time::Duration;

use sluice_engine::operators::{Context, Processor};
use sluice_engine::policy::headers as dlq;
use sluice_engine::record::{Headers, ProducerRecord};
use sluice_engine::task::Outcome;
use sluice_engine::{
    DeadLetter, ProcessError, Record, Serdes, TestDriver, TopologyBuilder, TopologyError,
};

fn retry_topology() -> sluice_engine::Topology {
    let builder = TopologyBuilder::new("jobs");
    builder
        .source("main", &["jobs"], Serdes::string(), Serdes::string())
        .to("main-out", "jobs.done", Serdes::string(), Serdes::string());
    builder
        .source(
            "tier-1",
            &["jobs.retry-1"],
            Serdes::string(),
            Serdes::string(),
        )
        .to(
            "tier-1-out",
            "jobs.retried",
            Serdes::string(),
            Serdes::string(),
        );
    builder.hold_until_due(&["jobs.retry-1"], "due-at");
    builder.build().unwrap()
}

fn record(topic: &str, value: &str, due_at: Option<i64>) -> ProducerRecord {
    let mut headers = Headers::new();
    if let Some(due) = due_at {
        headers.insert("due-at", due.to_string());
    }
    ProducerRecord {
        topic: topic.into(),
        partition: Some(0),
        key: Some(b"k".to_vec()),
        value: Some(value.as_bytes().to_vec()),
        headers,
        timestamp: TestDriver::DEFAULT_START_MS,
    }
}

fn values(driver: &mut TestDriver, topic: &str) -> Vec<String> {
    driver
        .read_raw(topic)
        .into_iter()
        .map(|r| String::from_utf8(r.value.unwrap()).unwrap())
        .collect()
}

#[test]
fn a_record_not_due_waits_until_the_wall_clock_reaches_its_due_time() {
    let mut driver = TestDriver::new(retry_topology());
    let now = driver.wall_clock_ms();
    let outcome = driver
        .pipe_record(record("jobs.retry-1", "a", Some(now + 400)))
        .unwrap();
    assert_eq!(outcome, Outcome::Held);
    driver
        .advance_wall_clock(Duration::from_millis(399))
        .unwrap();
    assert!(values(&mut driver, "jobs.retried").is_empty(), "ran early");
    driver.advance_wall_clock(Duration::from_millis(1)).unwrap();
    assert_eq!(values(&mut driver, "jobs.retried"), ["a"]);
}

#[test]
fn records_behind_a_held_one_wait_behind_it_in_order_and_other_topics_go_on() {
    let mut driver = TestDriver::new(retry_topology());
    let now = driver.wall_clock_ms();
    driver
        .pipe_record(record("jobs.retry-1", "late", Some(now + 1_000)))
        .unwrap();
    // Due already, but behind a record that is not: a partition is read in order.
    let behind = driver
        .pipe_record(record("jobs.retry-1", "early", Some(now)))
        .unwrap();
    assert_eq!(behind, Outcome::Held);
    // The main topic is not held up by the tier.
    driver.pipe_record(record("jobs", "fresh", None)).unwrap();
    assert_eq!(values(&mut driver, "jobs.done"), ["fresh"]);
    assert!(values(&mut driver, "jobs.retried").is_empty());

    driver.advance_wall_clock(Duration::from_secs(1)).unwrap();
    assert_eq!(values(&mut driver, "jobs.retried"), ["late", "early"]);
}

#[test]
fn a_record_without_a_readable_due_time_is_due_at_once() {
    let mut driver = TestDriver::new(retry_topology());
    driver
        .pipe_record(record("jobs.retry-1", "no header", None))
        .unwrap();
    let mut garbled = record("jobs.retry-1", "garbled", None);
    garbled.headers.insert("due-at", "tomorrow");
    assert_eq!(driver.pipe_record(garbled).unwrap(), Outcome::Processed);
    assert_eq!(
        values(&mut driver, "jobs.retried"),
        ["no header", "garbled"]
    );
}

#[test]
fn holding_a_topic_no_source_reads_is_a_validation_error() {
    let builder = TopologyBuilder::new("jobs");
    builder
        .source("main", &["jobs"], Serdes::string(), Serdes::string())
        .to("out", "jobs.done", Serdes::string(), Serdes::string());
    builder.hold_until_due(&["jobs.retry-9"], "due-at");
    assert_eq!(
        builder.build().unwrap_err(),
        TopologyError::HeldTopicNotRead {
            topic: "jobs.retry-9".into()
        }
    );
}

/// Says why a record is dead-lettered, in the headers the dead-letter sink reads.
struct Why;

impl Processor<String, String> for Why {
    type KeyOut = String;
    type ValueOut = String;

    fn process(
        &mut self,
        mut r: Record<String, String>,
        ctx: &mut Context<'_, String, String>,
    ) -> Result<(), ProcessError> {
        r.headers.insert(dlq::ERROR_KIND, "validation");
        r.headers.insert(dlq::ERROR_MESSAGE, "the job is bad");
        r.headers.insert("attempts", "3");
        ctx.forward(r);
        Ok(())
    }
}

#[test]
fn a_dead_letter_sink_writes_the_policys_format_and_keeps_the_inputs_other_outputs() {
    let builder = TopologyBuilder::new("jobs");
    let routes = builder
        .source("main", &["jobs"], Serdes::string(), Serdes::string())
        .map_values("decide", |v: String| v)
        .branch("route")
        .branch("bad", |_k: &String, v: &String| v.starts_with("bad"))
        .default_branch("good")
        .build();
    routes.get("bad").process("why", || Why).to_dead_letters(
        "dead",
        "jobs.dlq",
        Serdes::string(),
        Serdes::string(),
    );
    routes
        .get("good")
        .to("out", "jobs.done", Serdes::string(), Serdes::string());
    let mut driver = TestDriver::new(builder.build().unwrap());
    driver
        .pipe_raw("jobs", Some(b"k"), Some(b"bad job"))
        .unwrap();

    let dead: Vec<DeadLetter> = driver.dead_letters();
    assert_eq!(dead.len(), 1);
    let dead = &dead[0];
    assert_eq!(dead.kind, sluice_engine::ErrorKind::Validation);
    assert_eq!(dead.message, "the job is bad");
    assert_eq!(
        (dead.source_topic.as_str(), dead.source_offset),
        ("jobs", 0)
    );
    assert_eq!(
        (dead.topology.as_str(), dead.operator.as_str()),
        ("jobs", "dead")
    );
    assert_eq!(dead.headers.get_str("attempts"), Some("3"));
    assert_eq!(dead.value.as_deref(), Some(&b"bad job"[..]));
}

#[test]
fn only_a_dead_letter_sink_writes_the_dead_letter_topic_and_it_writes_nowhere_else() {
    let builder = TopologyBuilder::new("jobs");
    let stream = builder.source("main", &["jobs"], Serdes::string(), Serdes::string());
    stream.to("plain", "jobs.dlq", Serdes::string(), Serdes::string());
    stream.to_dead_letters("dead", "jobs.elsewhere", Serdes::string(), Serdes::string());
    let TopologyError::Many(errors) = builder.build().unwrap_err() else {
        panic!("two problems expected");
    };
    assert!(errors.contains(&TopologyError::DeadLetterTopicInUse {
        node: "plain".into(),
        topic: "jobs.dlq".into()
    }));
    assert!(errors.contains(&TopologyError::NotTheDeadLetterTopic {
        node: "dead".into(),
        topic: "jobs.elsewhere".into(),
        expected: Some("jobs.dlq".into())
    }));
}
