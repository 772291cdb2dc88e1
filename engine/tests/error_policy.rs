//! What happens to a record that fails, under each error policy.

use sluice_engine::serde::{JsonSerde, Serdes};
use sluice_engine::task::{Outcome, TaskError};
use sluice_engine::{ErrorKind, ErrorPolicy, ProcessError, TestDriver, Topology, TopologyBuilder};

/// in -> parse as u32 JSON -> fan out to a sink and to an operator that fails on odd
/// numbers -> second sink.
fn topology(policy: Option<ErrorPolicy>) -> Topology {
    let b = TopologyBuilder::new("numbers");
    if let Some(policy) = policy {
        b.error_policy(policy);
    }
    let numbers = b.source(
        "in",
        &["numbers"],
        Serdes::string(),
        JsonSerde::<u32>::new(),
    );
    numbers.to(
        "all",
        "numbers.all",
        Serdes::string(),
        JsonSerde::<u32>::new(),
    );
    numbers
        .try_map("even-only", |r| {
            if r.value % 2 == 1 {
                Err(ProcessError::validation("odd number"))
            } else {
                Ok(r)
            }
        })
        .to(
            "even",
            "numbers.even",
            Serdes::string(),
            JsonSerde::<u32>::new(),
        );
    b.build().unwrap()
}

#[test]
fn dead_letter_policy_sends_the_untouched_input_with_the_reason_and_origin() {
    let mut driver = TestDriver::new(topology(None));
    driver.pipe_raw("numbers", Some(b"a"), Some(b"2")).unwrap();
    let mut input_headers = sluice_engine::Headers::new();
    input_headers.add("trace", "t-1");
    let outcome = driver
        .pipe_record(sluice_engine::ProducerRecord {
            topic: "numbers".into(),
            partition: Some(0),
            key: Some(b"b".to_vec()),
            value: Some(b"3".to_vec()),
            headers: input_headers,
            timestamp: 42,
        })
        .unwrap();
    assert_eq!(outcome, Outcome::DeadLettered);

    let dead = driver.dead_letters();
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(d.kind, ErrorKind::Validation);
    assert_eq!(d.message, "odd number");
    assert_eq!(
        (d.source_topic.as_str(), d.source_partition, d.source_offset),
        ("numbers", 0, 1)
    );
    assert_eq!(
        (d.topology.as_str(), d.operator.as_str()),
        ("numbers", "even-only")
    );
    assert_eq!(d.key.as_deref(), Some(&b"b"[..]));
    assert_eq!(d.value.as_deref(), Some(&b"3"[..]));
    assert_eq!(
        d.headers.get_str("trace"),
        Some("t-1"),
        "input headers are kept"
    );
}

#[test]
fn a_failed_input_leaves_none_of_its_outputs_behind() {
    let mut driver = TestDriver::new(topology(None));
    driver.pipe_raw("numbers", Some(b"a"), Some(b"3")).unwrap();
    // "all" ran before "even-only" failed; its output must not be released.
    assert!(driver.read_raw("numbers.all").is_empty());
    assert!(driver.read_raw("numbers.even").is_empty());
    assert_eq!(driver.dead_letters().len(), 1);
}

#[test]
fn undecodable_input_is_dead_lettered_by_the_source() {
    let mut driver = TestDriver::new(topology(None));
    driver
        .pipe_raw("numbers", Some(b"a"), Some(b"{oops"))
        .unwrap();
    let dead = driver.dead_letters();
    assert_eq!(dead[0].kind, ErrorKind::Deserialization);
    assert_eq!(dead[0].operator, "in");
    assert!(
        dead[0].message.starts_with("value: "),
        "{}",
        dead[0].message
    );
    assert!(!dead[0].message.contains("oops"), "{}", dead[0].message);
    assert_eq!(dead[0].value.as_deref(), Some(&b"{oops"[..]));
}

#[test]
fn skip_policy_drops_the_input_and_writes_nothing() {
    let mut driver = TestDriver::new(topology(Some(ErrorPolicy::Skip)));
    let outcome = driver.pipe_raw("numbers", Some(b"a"), Some(b"5")).unwrap();
    assert_eq!(outcome, Outcome::Skipped);
    assert!(driver.read_raw("numbers.all").is_empty());
    assert!(driver.read_raw("numbers.dlq").is_empty());
    // The next record flows as usual.
    driver.pipe_raw("numbers", Some(b"a"), Some(b"4")).unwrap();
    assert_eq!(driver.read_raw("numbers.even").len(), 1);
}

#[test]
fn fail_policy_stops_with_the_coordinates_and_operator_but_no_payload() {
    let mut driver = TestDriver::new(topology(Some(ErrorPolicy::Fail)));
    driver.pipe_raw("numbers", Some(b"a"), Some(b"2")).unwrap();
    let err = driver
        .pipe_raw("numbers", Some(b"secret-key"), Some(b"7"))
        .unwrap_err();
    let TaskError::Failed {
        operator,
        offset,
        error,
        ..
    } = &err
    else {
        panic!("expected Failed, got {err:?}");
    };
    assert_eq!((operator.as_str(), *offset), ("even-only", 1));
    assert_eq!(error.message, "odd number");
    let text = err.to_string();
    assert!(text.contains("numbers/0@1"), "{text}");
    assert!(!text.contains("secret-key"), "{text}");
}

#[test]
fn a_transient_failure_is_returned_for_retry_never_dead_lettered() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let service_up = Arc::new(AtomicBool::new(false));
    let up = service_up.clone();
    let b = TopologyBuilder::new("lookup");
    b.source("in", &["in"], Serdes::string(), Serdes::string())
        .try_map("lookup", move |r| {
            if up.load(Ordering::SeqCst) {
                Ok(r)
            } else {
                Err(ProcessError::unavailable("drug reference service is down"))
            }
        })
        .to("out", "out", Serdes::string(), Serdes::string());
    let topology = b.build().unwrap();
    let mut task = sluice_engine::Task::new(&topology, 0, 0);
    let input = sluice_engine::RawRecord {
        key: Some(b"k".to_vec()),
        value: Some(b"v".to_vec()),
        headers: Default::default(),
        timestamp: 0,
        origin: sluice_engine::Origin {
            topic: "in".into(),
            partition: 0,
            offset: 7,
        },
    };

    let mut out = Vec::new();
    let err = task.process(&input, &mut out).unwrap_err();
    assert!(
        matches!(err, TaskError::Unavailable { ref operator, offset: 7, .. } if operator == "lookup"),
        "{err}"
    );
    assert!(out.is_empty(), "nothing written, not even a dead letter");

    service_up.store(true, Ordering::SeqCst);
    assert_eq!(task.process(&input, &mut out).unwrap(), Outcome::Processed);
    assert_eq!(out.len(), 1);
}
