//! What a custom processor can do through its context, through the TestDriver: the same
//! things the built-in operators do with it (they are processors too).

use std::sync::Arc;

use sluice_engine::operators::{Context, Processor, ProcessorStores};
use sluice_engine::task::Task;
use sluice_engine::{
    Headers, Origin, ProcessError, RawRecord, Record, Serdes, TestDriver, TopologyBuilder,
    TopologyError,
};

/// Forwards, for each record, what its context says: made by a closure over the context.
struct Describe<F>(F);

impl<F> Processor<String, String> for Describe<F>
where
    F: Fn(&Record<String, String>, &mut Context<'_, String, String>) -> String + Send + 'static,
{
    type KeyOut = String;
    type ValueOut = String;

    fn process(
        &mut self,
        record: Record<String, String>,
        ctx: &mut Context<'_, String, String>,
    ) -> Result<(), ProcessError> {
        let description = (self.0)(&record, ctx);
        ctx.forward(record.with_value(description));
        Ok(())
    }
}

fn describing<F>(describe: F) -> TestDriver
where
    F: Fn(&Record<String, String>, &mut Context<'_, String, String>) -> String
        + Clone
        + Send
        + Sync
        + 'static,
{
    let builder = TopologyBuilder::new("describe");
    builder
        .source("in", &["in"], Serdes::string(), Serdes::string())
        .process("describe", move || Describe(describe.clone()))
        .to("out", "out", Serdes::string(), Serdes::string());
    TestDriver::new(builder.build().unwrap())
}

fn pipe_at(driver: &mut TestDriver, topic: &str, key: &str, value: &str, timestamp: i64) {
    let record = Record {
        key: key.to_string(),
        value: value.to_string(),
        headers: Headers::new(),
        timestamp,
    };
    let s = Serdes::string();
    driver.pipe(topic, &s, &s, &record).unwrap();
}

fn values(driver: &mut TestDriver, topic: &str) -> Vec<String> {
    let s = Serdes::string();
    let records = driver.read(topic, &s, &s).unwrap();
    records.into_iter().map(|r| r.value).collect()
}

#[test]
fn a_processor_reads_where_the_record_it_handles_was_read() {
    let mut d = describing(|_, ctx| {
        let o = ctx.origin();
        format!("{}/{}@{}", o.topic, o.partition, o.offset)
    });
    pipe_at(&mut d, "in", "k", "a", 1);
    pipe_at(&mut d, "in", "k", "b", 2);
    assert_eq!(values(&mut d, "out"), ["in/0@0", "in/0@1"]);
}

#[test]
fn a_processor_reads_the_lineage_of_the_record_it_handles() {
    let mut d = describing(|_, ctx| {
        let l = ctx.lineage();
        format!("{:?} {:?}", l.event_id, l.correlation_id)
    });
    let mut headers = Headers::new();
    headers.insert("event-id", "e-1");
    headers.insert("correlation-id", "flow-9");
    d.pipe(
        "in",
        &Serdes::string(),
        &Serdes::string(),
        &Record {
            key: "k".to_string(),
            value: "v".to_string(),
            headers,
            timestamp: 1,
        },
    )
    .unwrap();
    assert_eq!(values(&mut d, "out"), [r#"Some("e-1") Some("flow-9")"#]);
}

#[test]
fn stream_time_seen_by_a_processor_includes_the_record_it_handles_and_never_goes_back() {
    let mut d = describing(|_, ctx| format!("{:?}", ctx.stream_time()));
    pipe_at(&mut d, "in", "k", "a", 5_000);
    pipe_at(&mut d, "in", "k", "b", 3_000);
    pipe_at(&mut d, "in", "k", "c", 9_000);
    assert_eq!(
        values(&mut d, "out"),
        ["Some(5000)", "Some(5000)", "Some(9000)"]
    );
}

/// Counts records, and on each commit emits the count since the last one.
struct CountPerCommit {
    seen: u32,
    fail_on_commit: bool,
}

impl Processor<String, String> for CountPerCommit {
    type KeyOut = String;
    type ValueOut = String;

    fn process(
        &mut self,
        _record: Record<String, String>,
        _ctx: &mut Context<'_, String, String>,
    ) -> Result<(), ProcessError> {
        self.seen += 1;
        Ok(())
    }

    fn on_commit(&mut self, ctx: &mut Context<'_, String, String>) -> Result<(), ProcessError> {
        if self.fail_on_commit {
            return Err(ProcessError::validation("asked to fail"));
        }
        if self.seen > 0 {
            let at = ctx.stream_time().unwrap_or(0);
            ctx.forward(Record::new("count".into(), self.seen.to_string(), at));
            self.seen = 0;
        }
        Ok(())
    }
}

fn counting_per_commit(fail_on_commit: bool) -> sluice_engine::Topology {
    let builder = TopologyBuilder::new("per-commit");
    builder
        .source("in", &["in"], Serdes::string(), Serdes::string())
        .process("count", move || CountPerCommit {
            seen: 0,
            fail_on_commit,
        })
        .to("out", "out", Serdes::string(), Serdes::string());
    builder.build().unwrap()
}

#[test]
fn records_forwarded_on_commit_are_written_by_that_commit() {
    let mut d = TestDriver::new(counting_per_commit(false));
    pipe_at(&mut d, "in", "k", "a", 1);
    pipe_at(&mut d, "in", "k", "b", 2);
    assert!(
        values(&mut d, "out").is_empty(),
        "nothing before the commit"
    );
    d.commit().unwrap();
    pipe_at(&mut d, "in", "k", "c", 3);
    d.commit().unwrap();
    d.commit().unwrap();
    let written = d.read_raw("out");
    let counts: Vec<&[u8]> = written.iter().filter_map(|r| r.value.as_deref()).collect();
    assert_eq!(counts, [&b"2"[..], &b"1"[..]]);
    // Each commit's outputs get event ids of their own: reprocessing yields the same ones.
    let ids: Vec<&str> = written
        .iter()
        .map(|r| r.headers.get_str("event-id").unwrap())
        .collect();
    assert_ne!(ids[0], ids[1]);
}

#[test]
fn a_failing_commit_hook_fails_the_commit_and_writes_nothing() {
    let mut d = TestDriver::new(counting_per_commit(true));
    pipe_at(&mut d, "in", "k", "a", 1);
    let error = d.commit().unwrap_err().to_string();
    assert!(error.contains("`count`"), "{error}");
    assert!(d.read_raw("out").is_empty());
}

fn raw(topic: &str, offset: i64) -> RawRecord {
    RawRecord {
        key: Some(b"k".to_vec()),
        value: Some(b"v".to_vec()),
        headers: Headers::new(),
        timestamp: 1,
        origin: Origin {
            topic: Arc::from(topic),
            partition: 0,
            offset,
        },
    }
}

#[test]
fn a_task_commits_into_the_callers_buffer_what_processors_emit_on_commit() {
    let topology = counting_per_commit(false);
    let mut task = Task::new(&topology, 0, 0);
    let mut out = Vec::new();
    task.process(&raw("in", 0), &mut out).unwrap();
    assert!(out.is_empty());
    task.prepare_commit(&mut out).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].value.as_deref(), Some(&b"1"[..]));
}

/// Enriches each order (its value is a drug code) with the drug's name from a global
/// table, and remembers in its own store how many orders each drug had.
struct Enrich;

impl Processor<String, String> for Enrich {
    type KeyOut = String;
    type ValueOut = String;

    fn process(
        &mut self,
        order: Record<String, String>,
        ctx: &mut Context<'_, String, String>,
    ) -> Result<(), ProcessError> {
        let name = ctx
            .global_store(0)
            .get(order.value.as_bytes())
            .map_err(ProcessError::state)?
            .map(|bytes| String::from_utf8(bytes).unwrap());
        let store = ctx.store(0);
        let seen = store
            .get(order.value.as_bytes())
            .map_err(ProcessError::state)?
            .map_or(0, |b| b[0]);
        store.put(order.value.as_bytes(), vec![seen + 1]);
        let value = format!("{} #{}", name.as_deref().unwrap_or("unknown"), seen + 1);
        ctx.forward(order.with_value(value));
        Ok(())
    }
}

#[test]
fn a_processor_reads_the_global_tables_it_declared_beside_its_own_store() {
    let builder = TopologyBuilder::new("enrich");
    let drugs = builder.global_table(
        "drugs",
        "drug-reference",
        "drugs-store",
        Serdes::string(),
        Serdes::string(),
    );
    builder
        .source("orders", &["orders"], Serdes::string(), Serdes::string())
        .process_with_stores(
            "enrich",
            ProcessorStores::new()
                .store("orders-per-drug")
                .global_table(&drugs),
            || Enrich,
        )
        .to("out", "out", Serdes::string(), Serdes::string());
    let topology = builder.build().unwrap();
    assert!(
        topology
            .describe()
            .contains("Processor: enrich (operator: process, global stores: [drugs-store])"),
        "{}",
        topology.describe()
    );
    let mut d = TestDriver::new(topology);
    pipe_at(&mut d, "drug-reference", "ndc-1", "amoxicillin", 0);
    pipe_at(&mut d, "orders", "o-1", "ndc-1", 1);
    pipe_at(&mut d, "orders", "o-2", "ndc-1", 2);
    pipe_at(&mut d, "orders", "o-3", "ndc-2", 3);
    assert_eq!(
        values(&mut d, "out"),
        ["amoxicillin #1", "amoxicillin #2", "unknown #1"]
    );
}

#[test]
fn a_processor_declaring_a_global_table_of_another_builder_is_reported() {
    let other = TopologyBuilder::new("other");
    let drugs = other.global_table(
        "drugs",
        "drugs",
        "drugs-store",
        Serdes::string(),
        Serdes::string(),
    );
    let builder = TopologyBuilder::new("t");
    builder
        .source("orders", &["orders"], Serdes::string(), Serdes::string())
        .process_with_stores(
            "enrich",
            ProcessorStores::new().global_table(&drugs),
            || Enrich,
        )
        .to("out", "out", Serdes::string(), Serdes::string());
    assert_eq!(
        builder.build().unwrap_err(),
        TopologyError::UnknownGlobalStore {
            node: "enrich".into(),
            store: "drugs-store".into()
        }
    );
}

/// Sends records whose value starts with "!" to the child `urgent`, the rest to `routine`.
struct Triage;

impl Processor<String, String> for Triage {
    type KeyOut = String;
    type ValueOut = String;

    fn process(
        &mut self,
        record: Record<String, String>,
        ctx: &mut Context<'_, String, String>,
    ) -> Result<(), ProcessError> {
        let child = if record.value.starts_with('!') {
            "urgent"
        } else {
            "routine"
        };
        ctx.forward_to(child, record);
        Ok(())
    }
}

#[test]
fn forwarding_to_a_named_child_reaches_that_child_only() {
    let builder = TopologyBuilder::new("triage");
    let triaged = builder
        .source("in", &["in"], Serdes::string(), Serdes::string())
        .process("triage", || Triage);
    triaged.filter("urgent", |_, _| true).to(
        "to-urgent",
        "urgent",
        Serdes::string(),
        Serdes::string(),
    );
    triaged.peek("routine", |_, _| {}).to(
        "to-routine",
        "routine",
        Serdes::string(),
        Serdes::string(),
    );
    let mut d = TestDriver::new(builder.build().unwrap());
    pipe_at(&mut d, "in", "k", "!now", 1);
    pipe_at(&mut d, "in", "k", "later", 2);
    assert_eq!(values(&mut d, "urgent"), ["!now"]);
    assert_eq!(values(&mut d, "routine"), ["later"]);
}

#[test]
#[should_panic(expected = "no child named `routine`")]
fn forwarding_to_a_child_that_does_not_exist_panics_rather_than_losing_the_record() {
    let builder = TopologyBuilder::new("triage");
    builder
        .source("in", &["in"], Serdes::string(), Serdes::string())
        .process("triage", || Triage)
        .to("urgent", "urgent", Serdes::string(), Serdes::string());
    let mut d = TestDriver::new(builder.build().unwrap());
    pipe_at(&mut d, "in", "k", "later", 1);
}

/// Drops records with an empty value and forwards the rest unchanged, by a look in place.
struct DropEmpty;

impl Processor<String, String> for DropEmpty {
    type KeyOut = String;
    type ValueOut = String;

    fn process(
        &mut self,
        record: Record<String, String>,
        ctx: &mut Context<'_, String, String>,
    ) -> Result<(), ProcessError> {
        if !record.value.is_empty() {
            ctx.forward(record);
        }
        Ok(())
    }

    const PASS_THROUGH: bool = true;

    fn pass_through(&mut self, _key: &String, value: &String) -> bool {
        !value.is_empty()
    }
}

#[test]
fn a_custom_pass_through_processor_forwards_unchanged_to_one_child_or_many() {
    let builder = TopologyBuilder::new("non-empty");
    let kept = builder
        .source("in", &["in"], Serdes::string(), Serdes::string())
        .process("drop-empty", || DropEmpty);
    kept.to("a", "a", Serdes::string(), Serdes::string());
    kept.process("drop-empty-again", || DropEmpty)
        .to("b", "b", Serdes::string(), Serdes::string());
    kept.to("c", "c", Serdes::string(), Serdes::string());
    let mut d = TestDriver::new(builder.build().unwrap());
    pipe_at(&mut d, "in", "k", "", 1);
    pipe_at(&mut d, "in", "k", "x", 2);
    for topic in ["a", "b", "c"] {
        assert_eq!(values(&mut d, topic), ["x"], "topic {topic}");
    }
}
