//! Windowed aggregations through the TestDriver: tumbling and hopping windows on event
//! time, out-of-order records within the grace period, late records beyond it, and closed
//! windows leaving the store.

use std::time::Duration;

use sluice_engine::operators::{TimeWindows, Windowed, WindowedSerde};
use sluice_engine::{Headers, Record, Serdes, TestDriver, TopologyBuilder};

fn driver(windows: TimeWindows) -> TestDriver {
    let builder = TopologyBuilder::new("per-window");
    builder
        .source("in", &["in"], Serdes::string(), Serdes::string())
        .group_by_key(Serdes::string(), Serdes::string())
        .windowed_by(windows)
        .count("count", "window-counts")
        .to(
            "out",
            "out",
            WindowedSerde::new(Serdes::string()),
            Serdes::i64(),
        );
    TestDriver::new(builder.build().unwrap())
}

fn pipe_at(driver: &mut TestDriver, key: &str, timestamp: i64) {
    let record = Record {
        key: key.to_string(),
        value: "event".to_string(),
        headers: Headers::new(),
        timestamp,
    };
    driver
        .pipe("in", &Serdes::string(), &Serdes::string(), &record)
        .unwrap();
}

/// Each update as (key, window start, count).
fn updates(driver: &mut TestDriver) -> Vec<(String, i64, i64)> {
    driver
        .read("out", &WindowedSerde::new(Serdes::string()), &Serdes::i64())
        .unwrap()
        .into_iter()
        .map(|r| (r.key.key, r.key.start_ms, r.value))
        .collect()
}

#[test]
fn an_out_of_order_record_within_grace_counts_in_its_own_window() {
    let windows = TimeWindows::tumbling(Duration::from_secs(10)).grace(Duration::from_secs(5));
    let mut d = driver(windows);
    pipe_at(&mut d, "k", 1_000);
    pipe_at(&mut d, "k", 12_000); // stream time 12 s: window [0, 10) closes at 15 s
    pipe_at(&mut d, "k", 9_000); // out of order, within grace
    assert_eq!(
        updates(&mut d),
        [
            ("k".into(), 0, 1),
            ("k".into(), 10_000, 1),
            ("k".into(), 0, 2)
        ]
    );
}

#[test]
fn a_record_later_than_the_grace_period_is_dropped() {
    let windows = TimeWindows::tumbling(Duration::from_secs(10)).grace(Duration::from_secs(5));
    let mut d = driver(windows);
    pipe_at(&mut d, "k", 1_000);
    pipe_at(&mut d, "k", 15_000); // window [0, 10) is now closed
    pipe_at(&mut d, "k", 2_000);
    assert_eq!(
        updates(&mut d),
        [("k".into(), 0, 1), ("k".into(), 10_000, 1)],
        "the late record changed no count"
    );
    assert!(d.dead_letters().is_empty(), "dropped, not dead-lettered");
}

#[test]
fn late_records_may_go_to_the_dead_letter_topic_instead() {
    let windows = TimeWindows::tumbling(Duration::from_secs(10)).late_records_to_dead_letter();
    let mut d = driver(windows);
    pipe_at(&mut d, "k", 10_000);
    pipe_at(&mut d, "k", 9_999);
    let dead = d.dead_letters();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0]
            .message
            .contains("later than its windows' grace period")
    );
    assert_eq!(dead[0].operator, "count");
}

#[test]
fn a_record_counts_in_every_hopping_window_that_holds_it() {
    let windows = TimeWindows::hopping(Duration::from_secs(10), Duration::from_secs(5));
    let mut d = driver(windows);
    pipe_at(&mut d, "k", 7_000);
    pipe_at(&mut d, "k", 12_000);
    assert_eq!(
        updates(&mut d),
        [
            ("k".into(), 0, 1),
            ("k".into(), 5_000, 1),
            ("k".into(), 5_000, 2),
            ("k".into(), 10_000, 1)
        ]
    );
}

#[test]
fn closed_windows_are_deleted_from_the_store_and_its_changelog() {
    let mut d = driver(TimeWindows::tumbling(Duration::from_secs(10)));
    pipe_at(&mut d, "a", 1_000);
    pipe_at(&mut d, "b", 2_000);
    pipe_at(&mut d, "a", 25_000); // closes [0, 10) and [10, 20)
    let changelog = d.read_raw("per-window-window-counts-changelog");
    let tombstones = changelog.iter().filter(|r| r.value.is_none()).count();
    assert_eq!(tombstones, 2, "both keys' closed windows are tombstoned");
    // A new record for the closed window is late: nothing of the old window is left to add to.
    pipe_at(&mut d, "a", 3_000);
    assert_eq!(updates(&mut d).last(), Some(&("a".into(), 20_000, 1)));
}

#[test]
fn windowed_keys_round_trip_through_their_serde() {
    use sluice_engine::Serde;
    let serde = WindowedSerde::new(Serdes::string());
    let key = Windowed {
        key: "patient-1".to_string(),
        start_ms: -10,
        end_ms: 50,
    };
    let bytes = serde.serialize("t", &key).unwrap();
    assert_eq!(serde.deserialize("t", bytes.as_deref()).unwrap(), key);
    assert!(serde.deserialize("t", Some(b"short")).is_err());
}
