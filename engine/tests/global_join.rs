//! Stream-global-table joins through the TestDriver: a lookup by a key taken from the
//! record (not the record's key), rows updated and deleted, and the topology checks that
//! keep a global table's topic and store from clashing with the rest of the topology.

use sluice_engine::{Serdes, TestDriver, TopologyBuilder, TopologyError};

/// Orders keyed by order id, valued by drug code; the global table maps drug code to name.
fn enrichment(left: bool) -> TestDriver {
    let builder = TopologyBuilder::new("enrich");
    let drugs = builder.global_table(
        "drugs",
        "drug-reference",
        "drugs-store",
        Serdes::string(),
        Serdes::string(),
    );
    let orders = builder.source("orders", &["orders"], Serdes::string(), Serdes::string());
    let joined = if left {
        orders.left_join_global(
            "with-drug",
            &drugs,
            |_, ndc| ndc.clone(),
            |_, ndc, drug| format!("{ndc}={}", drug.unwrap_or_else(|| "?".into())),
        )
    } else {
        orders.join_global(
            "with-drug",
            &drugs,
            |_, ndc| ndc.clone(),
            |_, ndc, drug| format!("{ndc}={drug}"),
        )
    };
    joined.to("out", "out", Serdes::string(), Serdes::string());
    TestDriver::new(builder.build().unwrap())
}

fn outputs(driver: &mut TestDriver) -> Vec<(String, String)> {
    driver
        .read("out", &Serdes::string(), &Serdes::string())
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.value))
        .collect()
}

fn out(key: &str, value: &str) -> (String, String) {
    (key.into(), value.into())
}

#[test]
fn records_join_the_row_under_the_key_they_carry_not_their_own_key() {
    let mut d = enrichment(false);
    d.pipe_raw("drug-reference", Some(b"ndc-1"), Some(b"aspirin"))
        .unwrap();
    d.pipe_raw("drug-reference", Some(b"ndc-2"), Some(b"insulin"))
        .unwrap();
    d.pipe_raw("orders", Some(b"order-1"), Some(b"ndc-2"))
        .unwrap();
    d.pipe_raw("orders", Some(b"order-2"), Some(b"ndc-1"))
        .unwrap();
    d.pipe_raw("orders", Some(b"order-3"), Some(b"ndc-404"))
        .unwrap();
    assert_eq!(
        outputs(&mut d),
        [
            out("order-1", "ndc-2=insulin"),
            out("order-2", "ndc-1=aspirin")
        ]
    );
}

#[test]
fn later_records_see_updated_and_deleted_rows() {
    let mut d = enrichment(true);
    d.pipe_raw("drug-reference", Some(b"ndc-1"), Some(b"aspirin"))
        .unwrap();
    d.pipe_raw("orders", Some(b"o1"), Some(b"ndc-1")).unwrap();
    d.pipe_raw("drug-reference", Some(b"ndc-1"), Some(b"aspirin 81 mg"))
        .unwrap();
    d.pipe_raw("orders", Some(b"o2"), Some(b"ndc-1")).unwrap();
    d.pipe_raw("drug-reference", Some(b"ndc-1"), None).unwrap();
    d.pipe_raw("orders", Some(b"o3"), Some(b"ndc-1")).unwrap();
    assert_eq!(
        outputs(&mut d),
        [
            out("o1", "ndc-1=aspirin"),
            out("o2", "ndc-1=aspirin 81 mg"),
            out("o3", "ndc-1=?")
        ]
    );
}

#[test]
fn a_row_that_does_not_decode_sends_the_stream_record_to_the_dead_letter_topic() {
    let builder = TopologyBuilder::new("enrich");
    let limits = builder.global_table(
        "limits",
        "dose-limits",
        "limits-store",
        Serdes::string(),
        Serdes::json::<u32>(),
    );
    builder
        .source("orders", &["orders"], Serdes::string(), Serdes::string())
        .join_global("with-limit", &limits, |_, ndc| ndc.clone(), |_, _, l| l)
        .to("out", "out", Serdes::string(), Serdes::json::<u32>());
    let mut d = TestDriver::new(builder.build().unwrap());
    d.pipe_raw("dose-limits", Some(b"ndc-1"), Some(b"not json"))
        .unwrap();
    d.pipe_raw("orders", Some(b"o1"), Some(b"ndc-1")).unwrap();
    let dead = d.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].operator, "with-limit");
    assert_eq!(dead[0].value.as_deref(), Some(&b"ndc-1"[..]));
}

#[test]
fn a_global_tables_topic_may_not_be_a_source_too() {
    let builder = TopologyBuilder::new("enrich");
    let drugs = builder.global_table(
        "drugs",
        "drug-reference",
        "drugs-store",
        Serdes::string(),
        Serdes::string(),
    );
    builder
        .source(
            "raw",
            &["drug-reference"],
            Serdes::string(),
            Serdes::string(),
        )
        .join_global("with-drug", &drugs, |k, _| k.clone(), |_, v, d| v + &d)
        .to("out", "out", Serdes::string(), Serdes::string());
    assert_eq!(
        builder.build().unwrap_err(),
        TopologyError::TopicReadTwice {
            topic: "drug-reference".into(),
            first: "raw".into(),
            second: "drugs".into()
        }
    );
}

#[test]
fn a_global_tables_store_name_is_unique_in_the_topology() {
    let builder = TopologyBuilder::new("enrich");
    builder.global_table(
        "drugs",
        "drug-reference",
        "counts",
        Serdes::string(),
        Serdes::string(),
    );
    builder
        .source("orders", &["orders"], Serdes::string(), Serdes::string())
        .group_by_key(Serdes::string(), Serdes::string())
        .count("count", "counts")
        .to("out", "out", Serdes::string(), Serdes::i64());
    let error = builder.build().unwrap_err().to_string();
    assert!(
        error.contains("store `counts` is used by `count` and `drugs`"),
        "{error}"
    );
}

#[test]
fn a_global_table_shows_in_the_description_and_not_among_source_topics() {
    let d = enrichment(true);
    let topology = d.topology();
    assert!(!topology.source_topics().contains("drug-reference"));
    assert_eq!(topology.global_tables()[0].topic, "drug-reference");
    let text = topology.describe();
    assert!(
        text.contains("Global table: drugs (topic: drug-reference, store: drugs-store)"),
        "{text}"
    );
    assert!(text.contains("global stores: [drugs-store]"), "{text}");
    // A global join needs no store of its task: the join is stateless per partition.
    assert!(topology.stores().is_empty());
}
