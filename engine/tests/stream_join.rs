//! Stream-stream windowed joins through the TestDriver: each matching pair once, whichever
//! side comes first; out-of-order records within the window and grace; late records; left
//! joins emitting unmatched records only when their window closes; buffers emptied as
//! windows close.

use std::time::Duration;

use sluice_engine::operators::{JoinWindows, StreamJoined};
use sluice_engine::{ErrorPolicy, Headers, Record, Serdes, TestDriver, TopologyBuilder};

fn joined() -> StreamJoined<String, String, String> {
    StreamJoined::new(
        "orders-buffer",
        "fills-buffer",
        Serdes::string(),
        Serdes::string(),
        Serdes::string(),
    )
}

/// Orders joined with fills, each output "order+fill".
fn inner_builder(windows: JoinWindows) -> TopologyBuilder {
    let builder = TopologyBuilder::new("order-fills");
    let fills = builder.source("fills", &["fills"], Serdes::string(), Serdes::string());
    builder
        .source("orders", &["orders"], Serdes::string(), Serdes::string())
        .join_stream("join", &fills, windows, joined(), |_, o, f| {
            format!("{o}+{f}")
        })
        .to("out", "out", Serdes::string(), Serdes::string());
    builder
}

fn inner(windows: JoinWindows) -> TestDriver {
    TestDriver::new(inner_builder(windows).build().unwrap())
}

fn left(windows: JoinWindows) -> TestDriver {
    let builder = TopologyBuilder::new("order-fills");
    let fills = builder.source("fills", &["fills"], Serdes::string(), Serdes::string());
    builder
        .source("orders", &["orders"], Serdes::string(), Serdes::string())
        .left_join_stream("join", &fills, windows, joined(), |_, o, f| {
            format!("{o}+{}", f.map_or("none", String::as_str))
        })
        .to("out", "out", Serdes::string(), Serdes::string());
    TestDriver::new(builder.build().unwrap())
}

fn pipe(driver: &mut TestDriver, topic: &str, key: &str, value: &str, timestamp: i64) {
    let record = Record {
        key: key.to_string(),
        value: value.to_string(),
        headers: Headers::new(),
        timestamp,
    };
    driver
        .pipe(topic, &Serdes::string(), &Serdes::string(), &record)
        .unwrap();
}

/// Each output as (key, value, timestamp).
fn outputs(driver: &mut TestDriver) -> Vec<(String, String, i64)> {
    driver
        .read("out", &Serdes::string(), &Serdes::string())
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.value, r.timestamp))
        .collect()
}

fn out(key: &str, value: &str, timestamp: i64) -> (String, String, i64) {
    (key.into(), value.into(), timestamp)
}

#[test]
fn every_pair_within_the_window_joins_once_whichever_side_comes_first() {
    let mut d = inner(JoinWindows::of(Duration::from_secs(10)));
    pipe(&mut d, "orders", "k", "o1", 1_000);
    pipe(&mut d, "fills", "k", "f1", 5_000);
    pipe(&mut d, "orders", "k", "o2", 6_000);
    pipe(&mut d, "fills", "other-key", "f2", 6_000);
    assert_eq!(
        outputs(&mut d),
        [out("k", "o1+f1", 5_000), out("k", "o2+f1", 6_000)]
    );
}

#[test]
fn records_further_apart_than_the_window_do_not_join() {
    let mut d = inner(JoinWindows::of(Duration::from_secs(10)));
    pipe(&mut d, "orders", "k", "o1", 0);
    pipe(&mut d, "fills", "k", "f-edge", 10_000);
    pipe(&mut d, "fills", "k", "f-too-far", 10_001);
    assert_eq!(outputs(&mut d), [out("k", "o1+f-edge", 10_000)]);
}

#[test]
fn before_and_after_bound_the_other_side_asymmetrically() {
    // A fill may come at most 5 s after the order and never before it.
    let windows = JoinWindows::of(Duration::ZERO).after(Duration::from_secs(5));
    let mut d = inner(windows);
    pipe(&mut d, "fills", "k", "f-before", 9_000);
    pipe(&mut d, "orders", "k", "o1", 10_000);
    pipe(&mut d, "fills", "k", "f-after", 14_000);
    assert_eq!(outputs(&mut d), [out("k", "o1+f-after", 14_000)]);
}

#[test]
fn an_out_of_order_record_within_grace_still_joins_and_a_late_one_is_dropped() {
    let windows = JoinWindows::of(Duration::from_secs(1)).grace(Duration::from_secs(5));
    let mut d = inner(windows);
    pipe(&mut d, "orders", "k", "o1", 1_000);
    pipe(&mut d, "orders", "x", "advance", 6_500); // stream time 6.5 s
    pipe(&mut d, "fills", "k", "f1", 1_500); // 1.5 + 1 + 5 >= 6.5: in grace
    assert_eq!(outputs(&mut d), [out("k", "o1+f1", 1_500)]);
    pipe(&mut d, "orders", "x", "advance", 20_000);
    pipe(&mut d, "fills", "k", "f2", 1_500); // far past grace: late
    assert!(outputs(&mut d).is_empty());
    assert!(d.dead_letters().is_empty());
}

#[test]
fn late_records_go_to_the_dead_letter_topic_when_asked() {
    let windows = JoinWindows::of(Duration::from_secs(1)).late_records_to_dead_letter();
    let mut d = inner(windows);
    pipe(&mut d, "orders", "k", "o1", 10_000);
    pipe(&mut d, "fills", "k", "f-late", 1_000);
    let dead = d.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].operator, "join");
    assert!(dead[0].message.contains("grace"), "{}", dead[0].message);
}

#[test]
fn a_left_join_emits_an_unmatched_record_once_its_window_closes() {
    let mut d = left(JoinWindows::of(Duration::from_secs(10)));
    pipe(&mut d, "orders", "k", "lonely", 0);
    pipe(&mut d, "orders", "m", "matched", 0);
    pipe(&mut d, "fills", "m", "f1", 3_000);
    // Still inside the window: no result yet for `lonely`, a fill may still come.
    assert_eq!(outputs(&mut d), [out("m", "matched+f1", 3_000)]);
    pipe(&mut d, "fills", "z", "clock", 10_001);
    assert_eq!(outputs(&mut d), [out("k", "lonely+none", 0)]);
    // Nothing is emitted twice as the clock moves on.
    pipe(&mut d, "fills", "z", "clock", 50_000);
    assert!(outputs(&mut d).is_empty());
}

#[test]
fn closed_windows_leave_both_buffers() {
    let mut d = inner(JoinWindows::of(Duration::from_secs(1)));
    for i in 0..5 {
        pipe(&mut d, "orders", &format!("k{i}"), "o", i * 100);
        pipe(&mut d, "fills", &format!("k{i}"), "f", i * 100);
    }
    pipe(&mut d, "orders", "last", "o", 100_000);
    pipe(&mut d, "fills", "last", "f", 100_000);
    // Each buffered record is two keys (data and expiry); only `last` remains per side:
    // the changelogs end with tombstones for all the others.
    for store in ["orders-buffer", "fills-buffer"] {
        let changelog = d.read_raw(&format!("order-fills-{store}-changelog"));
        let mut live = std::collections::BTreeMap::new();
        for r in changelog {
            live.insert(r.key.unwrap(), r.value.is_some());
        }
        assert_eq!(live.values().filter(|v| **v).count(), 2, "{store}");
    }
}

#[test]
fn both_streams_must_come_from_one_builder() {
    let other = TopologyBuilder::new("other");
    let fills = other.source("fills", &["fills"], Serdes::string(), Serdes::string());
    let builder = TopologyBuilder::new("order-fills");
    builder
        .source("orders", &["orders"], Serdes::string(), Serdes::string())
        .join_stream(
            "join",
            &fills,
            JoinWindows::of(Duration::from_secs(1)),
            joined(),
            |_, o, f| format!("{o}+{f}"),
        )
        .to("out", "out", Serdes::string(), Serdes::string());
    let error = builder.build().unwrap_err().to_string();
    assert!(
        error.contains("`join` merges a stream of another builder"),
        "{error}"
    );
}

#[test]
fn a_stream_join_runs_in_one_sub_topology_that_owns_both_buffers() {
    let builder = inner_builder(JoinWindows::of(Duration::from_secs(1)));
    builder.error_policy(ErrorPolicy::Skip);
    let topology = builder.build().unwrap();
    assert_eq!(topology.subtopologies().len(), 1);
    let stores: Vec<_> = topology.stores().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(stores, ["orders-buffer", "fills-buffer"]);
}

#[test]
fn a_left_joins_none_is_never_contradicted_by_a_partner_accepted_later() {
    let mut d = left(JoinWindows::of(Duration::from_secs(10)));
    pipe(&mut d, "orders", "k", "o1", 0);
    pipe(&mut d, "orders", "z", "clock", 11_000); // o1's window has closed
    assert_eq!(outputs(&mut d), [out("k", "o1+none", 0)]);
    // Inside o1's window, but later than the grace period allows: late, not joined.
    pipe(&mut d, "fills", "k", "f1", 5_000);
    assert!(outputs(&mut d).is_empty());
}

#[test]
fn records_one_input_makes_with_one_key_and_time_are_all_buffered() {
    let builder = TopologyBuilder::new("order-fills");
    let fills = builder.source("fills", &["fills"], Serdes::string(), Serdes::string());
    builder
        .source("orders", &["orders"], Serdes::string(), Serdes::string())
        // One input, two order lines with the same key and timestamp.
        .flat_map("lines", |k: String, v: String| {
            vec![(k.clone(), format!("{v}-a")), (k, format!("{v}-b"))]
        })
        .join_stream(
            "join",
            &fills,
            JoinWindows::of(Duration::from_secs(10)),
            joined(),
            |_, o, f| format!("{o}+{f}"),
        )
        .to("out", "out", Serdes::string(), Serdes::string());
    let mut d = TestDriver::new(builder.build().unwrap());
    pipe(&mut d, "orders", "k", "o1", 1_000);
    pipe(&mut d, "fills", "k", "f1", 2_000);
    assert_eq!(
        outputs(&mut d),
        [out("k", "o1-a+f1", 2_000), out("k", "o1-b+f1", 2_000)]
    );
}
