//! Session windows through the TestDriver: sessions grow with activity, an out-of-order
//! record bridging two sessions merges them (and their aggregates), late records beyond
//! grace are dropped or dead-lettered, and sessions leave the store once closed.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_engine::operators::{SessionWindows, WindowedSerde};
use sluice_engine::{Headers, Record, Serdes, TestDriver, TopologyBuilder};

fn counting(windows: SessionWindows) -> TestDriver {
    let builder = TopologyBuilder::new("sessions");
    builder
        .source("in", &["in"], Serdes::string(), Serdes::string())
        .group_by_key(Serdes::string(), Serdes::string())
        .session_windowed_by(windows)
        .count("count", "session-counts")
        .to(
            "out",
            "out",
            WindowedSerde::new(Serdes::string()),
            Serdes::optional(Serdes::i64()),
        );
    TestDriver::new(builder.build().unwrap())
}

fn pipe_at(driver: &mut TestDriver, key: &str, value: &str, timestamp: i64) {
    let record = Record {
        key: key.to_string(),
        value: value.to_string(),
        headers: Headers::new(),
        timestamp,
    };
    driver
        .pipe("in", &Serdes::string(), &Serdes::string(), &record)
        .unwrap();
}

type Change = (String, i64, i64, Option<i64>);

/// Each change as (key, start, end, count or None for a merged-away session).
fn changes(driver: &mut TestDriver) -> Vec<Change> {
    driver
        .read(
            "out",
            &WindowedSerde::new(Serdes::string()),
            &Serdes::optional(Serdes::i64()),
        )
        .unwrap()
        .into_iter()
        .map(|r| (r.key.key, r.key.start_ms, r.key.end_ms, r.value))
        .collect()
}

fn change(key: &str, start: i64, end: i64, count: Option<i64>) -> Change {
    (key.into(), start, end, count)
}

#[test]
fn records_closer_than_the_gap_extend_one_session_and_a_pause_starts_another() {
    let mut d = counting(SessionWindows::with_inactivity_gap(Duration::from_secs(10)));
    pipe_at(&mut d, "k", "a", 0);
    pipe_at(&mut d, "k", "b", 10_000); // exactly a gap later: same session
    pipe_at(&mut d, "k", "c", 20_001); // more than a gap later: a new one
    pipe_at(&mut d, "j", "d", 20_001); // another key has sessions of its own
    assert_eq!(
        changes(&mut d),
        [
            change("k", 0, 0, Some(1)),
            change("k", 0, 0, None),
            change("k", 0, 10_000, Some(2)),
            change("k", 20_001, 20_001, Some(1)),
            change("j", 20_001, 20_001, Some(1)),
        ]
    );
}

#[test]
fn an_out_of_order_record_between_two_sessions_merges_them_and_their_aggregates() {
    let builder = TopologyBuilder::new("sessions");
    builder
        .source("in", &["in"], Serdes::string(), Serdes::string())
        .group_by_key(Serdes::string(), Serdes::string())
        .session_windowed_by(
            SessionWindows::with_inactivity_gap(Duration::from_secs(10))
                .grace(Duration::from_secs(60)),
        )
        .aggregate(
            "concat",
            "session-values",
            String::new,
            |_, v, acc| acc + &v,
            |_, a, b| a + &b,
            Serdes::string(),
        )
        .to(
            "out",
            "out",
            WindowedSerde::new(Serdes::string()),
            Serdes::optional(Serdes::string()),
        );
    let mut d = TestDriver::new(builder.build().unwrap());
    pipe_at(&mut d, "k", "a", 0);
    pipe_at(&mut d, "k", "c", 18_000);
    pipe_at(&mut d, "k", "b", 9_000); // within a gap of both: one session [0, 18 s]
    let out: Vec<_> = d
        .read(
            "out",
            &WindowedSerde::new(Serdes::string()),
            &Serdes::optional(Serdes::string()),
        )
        .unwrap()
        .into_iter()
        .map(|r| (r.key.start_ms, r.key.end_ms, r.value))
        .collect();
    assert_eq!(
        out,
        [
            (0, 0, Some("a".to_string())),
            (18_000, 18_000, Some("c".to_string())),
            (0, 0, None),
            (18_000, 18_000, None),
            (0, 18_000, Some("acb".to_string())),
        ]
    );
}

#[test]
fn a_record_whose_session_closed_beyond_grace_is_dropped_within_grace_counted() {
    let windows =
        SessionWindows::with_inactivity_gap(Duration::from_secs(10)).grace(Duration::from_secs(5));
    let mut d = counting(windows);
    pipe_at(&mut d, "k", "a", 0);
    pipe_at(&mut d, "other", "clock", 4_000);
    pipe_at(&mut d, "k", "within-grace", 1_000); // end 1 s + grace 5 s >= stream time 4 s
    pipe_at(&mut d, "other", "clock", 30_000);
    pipe_at(&mut d, "k", "late", 2_000);
    assert_eq!(
        changes(&mut d),
        [
            change("k", 0, 0, Some(1)),
            change("other", 4_000, 4_000, Some(1)),
            change("k", 0, 0, None),
            change("k", 0, 1_000, Some(2)),
            change("other", 30_000, 30_000, Some(1)),
        ]
    );
    assert!(d.dead_letters().is_empty());
}

#[test]
fn late_records_go_to_the_dead_letter_topic_when_asked() {
    let windows =
        SessionWindows::with_inactivity_gap(Duration::from_secs(1)).late_records_to_dead_letter();
    let mut d = counting(windows);
    pipe_at(&mut d, "k", "a", 10_000);
    pipe_at(&mut d, "k", "late", 0);
    let dead = d.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].operator, "count");
    assert!(dead[0].message.contains("grace"), "{}", dead[0].message);
}

#[test]
fn closed_sessions_leave_the_store() {
    let mut d = counting(SessionWindows::with_inactivity_gap(Duration::from_secs(1)));
    for i in 0..20 {
        pipe_at(&mut d, &format!("k{i}"), "a", i * 10);
    }
    pipe_at(&mut d, "last", "a", 1_000_000);
    let mut live = BTreeMap::new();
    for r in d.read_raw("sessions-session-counts-changelog") {
        live.insert(r.key.unwrap(), r.value.is_some());
    }
    // One session left: its data key and its expiry key.
    assert_eq!(live.values().filter(|v| **v).count(), 2);
}

#[test]
fn a_record_out_of_order_across_keys_within_the_gap_is_not_late() {
    let mut d = counting(SessionWindows::with_inactivity_gap(Duration::from_secs(60)));
    pipe_at(&mut d, "a", "x", 100_000);
    // 1 s behind stream time, no grace: its session could still grow for 59 s more.
    pipe_at(&mut d, "b", "x", 99_000);
    assert_eq!(
        changes(&mut d),
        [
            change("a", 100_000, 100_000, Some(1)),
            change("b", 99_000, 99_000, Some(1)),
        ]
    );
}
