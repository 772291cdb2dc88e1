//! Tables and stream-table joins through the TestDriver: the current row of each key,
//! updates and tombstones, inner and left joins, and the topology rules that keep a join
//! in its table's task.

use sluice_engine::{Serdes, TestDriver, TopologyBuilder, TopologyError};

/// Orders (keyed by NDC) joined with the drug reference table (keyed by NDC).
fn driver(left: bool) -> TestDriver {
    let builder = TopologyBuilder::new("enrich");
    let drugs = builder.table(
        "drugs",
        "drug-reference",
        "drug-reference-store",
        Serdes::string(),
        Serdes::string(),
    );
    let orders = builder.source("orders", &["orders"], Serdes::string(), Serdes::string());
    let joined = if left {
        orders.left_join_table("with-drug", &drugs, |_, order, drug| {
            format!("{order}|{}", drug.unwrap_or_else(|| "?".into()))
        })
    } else {
        orders.join_table("with-drug", &drugs, |_, order, drug| {
            format!("{order}|{drug}")
        })
    };
    joined.to("out", "enriched", Serdes::string(), Serdes::string());
    TestDriver::new(builder.build().unwrap())
}

fn outputs(driver: &mut TestDriver) -> Vec<String> {
    driver
        .read("enriched", &Serdes::string(), &Serdes::string())
        .unwrap()
        .into_iter()
        .map(|r| r.value)
        .collect()
}

#[test]
fn a_stream_record_joins_the_current_row_of_its_key() {
    let mut d = driver(false);
    d.pipe_raw("drug-reference", Some(b"ndc-1"), Some(b"atorvastatin"))
        .unwrap();
    d.pipe_raw("orders", Some(b"ndc-1"), Some(b"o1")).unwrap();
    d.pipe_raw(
        "drug-reference",
        Some(b"ndc-1"),
        Some(b"atorvastatin 20 mg"),
    )
    .unwrap();
    d.pipe_raw("orders", Some(b"ndc-1"), Some(b"o2")).unwrap();
    assert_eq!(
        outputs(&mut d),
        ["o1|atorvastatin", "o2|atorvastatin 20 mg"],
        "a table update changes later joins and re-emits nothing"
    );
}

#[test]
fn an_inner_join_drops_records_without_a_row_and_a_tombstone_deletes_the_row() {
    let mut d = driver(false);
    d.pipe_raw("orders", Some(b"ndc-1"), Some(b"before"))
        .unwrap();
    d.pipe_raw("drug-reference", Some(b"ndc-1"), Some(b"drug"))
        .unwrap();
    d.pipe_raw("orders", Some(b"ndc-1"), Some(b"during"))
        .unwrap();
    d.pipe_raw("drug-reference", Some(b"ndc-1"), None).unwrap();
    d.pipe_raw("orders", Some(b"ndc-1"), Some(b"after"))
        .unwrap();
    assert_eq!(outputs(&mut d), ["during|drug"]);
    assert!(d.dead_letters().is_empty(), "a missing row is not an error");
}

#[test]
fn a_left_join_joins_records_without_a_row_with_none() {
    let mut d = driver(true);
    d.pipe_raw("orders", Some(b"ndc-1"), Some(b"o1")).unwrap();
    d.pipe_raw("drug-reference", Some(b"ndc-1"), Some(b"drug"))
        .unwrap();
    d.pipe_raw("orders", Some(b"ndc-1"), Some(b"o2")).unwrap();
    d.pipe_raw("orders", Some(b"ndc-2"), Some(b"o3")).unwrap();
    assert_eq!(outputs(&mut d), ["o1|?", "o2|drug", "o3|?"]);
}

#[test]
fn the_join_runs_in_its_tables_task_and_the_table_has_a_changelog() {
    let d = driver(false);
    let topology = d.topology();
    assert_eq!(
        topology.subtopologies().len(),
        1,
        "the orders stream and the table's topic are read by one task"
    );
    let sources = &topology.subtopologies()[0].source_topics;
    assert!(sources.contains("orders") && sources.contains("drug-reference"));
    assert_eq!(
        topology.stores()[0].changelog_topic("app"),
        "app-drug-reference-store-changelog"
    );
    let description = topology.describe();
    assert!(
        description.contains("Processor: drugs (operator: table, stores: [drug-reference-store])"),
        "{description}"
    );
}

#[test]
fn a_table_needs_no_downstream_operator_but_its_store_name_must_be_valid() {
    let builder = TopologyBuilder::new("t");
    builder.table(
        "rows",
        "rows",
        "bad store!",
        Serdes::string(),
        Serdes::string(),
    );
    let error = builder.build().unwrap_err();
    assert_eq!(
        error,
        TopologyError::InvalidStoreName {
            node: "rows".into(),
            store: "bad store!".into()
        }
    );
}

#[test]
fn a_tables_updates_can_be_streamed_on_with_deletes_as_none() {
    let builder = TopologyBuilder::new("t");
    let rows = builder.table(
        "rows",
        "rows",
        "rows-store",
        Serdes::string(),
        Serdes::string(),
    );
    rows.to_stream().to(
        "changes",
        "changes",
        Serdes::string(),
        Serdes::optional(Serdes::string()),
    );
    let mut d = TestDriver::new(builder.build().unwrap());
    d.pipe_raw("rows", Some(b"k"), Some(b"v")).unwrap();
    d.pipe_raw("rows", Some(b"k"), None).unwrap();
    let changes: Vec<Option<String>> = d
        .read(
            "changes",
            &Serdes::string(),
            &Serdes::optional(Serdes::string()),
        )
        .unwrap()
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(changes, [Some("v".to_string()), None]);
}
