//! Custom processors with state and timers, through the TestDriver: a processor's stores
//! commit with the input and are undone with it, and punctuations run on stream time
//! (driven by record timestamps) and on wall-clock time, both with store access.

use std::ops::Bound;
use std::time::Duration;

use sluice_engine::operators::{Context, Processor};
use sluice_engine::{Headers, ProcessError, Record, Serdes, TestDriver, TopologyBuilder};

/// Counts records per key in its store; every 10 s of stream time it reports each count.
/// A record whose value is "fail" is counted, then fails.
struct Tally;

fn count_of(bytes: Option<Vec<u8>>) -> i64 {
    bytes.map_or(0, |b| i64::from_be_bytes(b.try_into().unwrap()))
}

/// Every (key, count) in the processor's store.
fn counts(ctx: &mut Context<'_, String, i64>) -> Vec<(String, i64)> {
    ctx.store(0)
        .range(Bound::Unbounded, Bound::Unbounded)
        .map(|e| {
            let (k, v) = e.unwrap();
            (String::from_utf8(k).unwrap(), count_of(Some(v)))
        })
        .collect()
}

impl Processor<String, String> for Tally {
    type KeyOut = String;
    type ValueOut = i64;

    fn process(
        &mut self,
        record: Record<String, String>,
        ctx: &mut Context<'_, String, i64>,
    ) -> Result<(), ProcessError> {
        let store = ctx.store(0);
        let n = count_of(store.get(record.key.as_bytes()).unwrap());
        store.put(record.key.as_bytes(), (n + 1).to_be_bytes().to_vec());
        if record.value == "fail" {
            return Err(ProcessError::validation("asked to fail"));
        }
        Ok(())
    }

    fn stream_time_interval(&self) -> Option<Duration> {
        Some(Duration::from_secs(10))
    }

    fn on_stream_time(
        &mut self,
        stream_time_ms: i64,
        ctx: &mut Context<'_, String, i64>,
    ) -> Result<(), ProcessError> {
        for (key, n) in counts(ctx) {
            ctx.forward(Record::new(
                format!("{key}@{stream_time_ms}"),
                n,
                stream_time_ms,
            ));
        }
        Ok(())
    }

    fn on_tick(
        &mut self,
        now_ms: i64,
        ctx: &mut Context<'_, String, i64>,
    ) -> Result<(), ProcessError> {
        let total = counts(ctx).iter().map(|(_, n)| n).sum();
        ctx.forward(Record::new(format!("total@{now_ms}"), total, now_ms));
        Ok(())
    }
}

fn driver() -> TestDriver {
    let builder = TopologyBuilder::new("tally");
    builder
        .source("in", &["in"], Serdes::string(), Serdes::string())
        .process_with_stores("tally", &["tally-counts"], || Tally)
        .to("out", "out", Serdes::string(), Serdes::i64());
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

fn reports(driver: &mut TestDriver) -> Vec<(String, i64)> {
    driver
        .read("out", &Serdes::string(), &Serdes::i64())
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.value))
        .collect()
}

fn report(key: &str, n: i64) -> (String, i64) {
    (key.to_string(), n)
}

#[test]
fn stream_time_punctuations_run_after_the_first_record_then_at_each_interval_crossed() {
    let mut d = driver();
    pipe_at(&mut d, "a", "x", 1_000);
    assert_eq!(reports(&mut d), [report("a@1000", 1)]);
    pipe_at(&mut d, "a", "x", 5_000);
    pipe_at(&mut d, "b", "x", 9_999);
    assert!(reports(&mut d).is_empty(), "no 10 s boundary crossed yet");
    pipe_at(&mut d, "a", "x", 10_000);
    assert_eq!(
        reports(&mut d),
        [report("a@10000", 3), report("b@10000", 1)]
    );
    // A jump over several intervals punctuates once.
    pipe_at(&mut d, "b", "x", 45_000);
    assert_eq!(
        reports(&mut d),
        [report("a@45000", 3), report("b@45000", 2)]
    );
}

#[test]
fn an_out_of_order_record_does_not_move_stream_time_back() {
    let mut d = driver();
    pipe_at(&mut d, "a", "x", 12_000);
    reports(&mut d);
    pipe_at(&mut d, "a", "x", 3_000);
    pipe_at(&mut d, "a", "x", 19_000);
    assert!(reports(&mut d).is_empty());
    pipe_at(&mut d, "a", "x", 20_000);
    assert_eq!(reports(&mut d), [report("a@20000", 4)]);
}

#[test]
fn a_processors_writes_are_undone_with_a_failed_input_and_kept_with_a_good_one() {
    let mut d = driver();
    pipe_at(&mut d, "a", "x", 1_000);
    pipe_at(&mut d, "a", "fail", 2_000);
    assert_eq!(d.dead_letters().len(), 1);
    pipe_at(&mut d, "a", "x", 10_000);
    // Two good records counted; the failed one's increment was rolled back.
    assert_eq!(reports(&mut d), [report("a@1000", 1), report("a@10000", 2)]);
    // And the store's changelog carries the committed counts only.
    let changelog = d.read_raw("tally-tally-counts-changelog");
    let values: Vec<i64> = changelog.into_iter().map(|r| count_of(r.value)).collect();
    assert_eq!(values, [1, 2]);
}

#[test]
fn wall_clock_punctuations_see_the_store_too() {
    let mut d = driver();
    pipe_at(&mut d, "a", "x", 1_000);
    pipe_at(&mut d, "b", "x", 2_000);
    reports(&mut d);
    d.advance_wall_clock(Duration::from_secs(1)).unwrap();
    let now = d.wall_clock_ms();
    assert_eq!(reports(&mut d), [report(&format!("total@{now}"), 2)]);
}

#[test]
fn a_processor_store_is_a_store_of_the_topology_with_a_changelog() {
    let builder = TopologyBuilder::new("tally");
    builder
        .source("in", &["in"], Serdes::string(), Serdes::string())
        .process_with_stores("tally", &["tally-counts"], || Tally)
        .to("out", "out", Serdes::string(), Serdes::i64());
    let topology = builder.build().unwrap();
    let store = &topology.stores()[0];
    assert_eq!(store.name, "tally-counts");
    assert_eq!(store.changelog_topic("app"), "app-tally-counts-changelog");
    assert!(topology.describe().contains("tally-counts"));
}
