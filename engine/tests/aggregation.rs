//! count, reduce and aggregate through the TestDriver: the aggregate per key, its
//! changelog, and state that forgets the inputs that failed.

use sluice_engine::serde::JsonSerde;
use sluice_engine::{ProcessError, Serdes, TestDriver, TopologyBuilder, TopologyError};

fn updates(driver: &mut TestDriver, topic: &str) -> Vec<(String, i64)> {
    driver
        .read(topic, &Serdes::string(), &Serdes::i64())
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.value))
        .collect()
}

#[test]
fn count_emits_the_running_count_of_each_key() {
    let builder = TopologyBuilder::new("counts");
    builder
        .source("in", &["in"], Serdes::string(), Serdes::string())
        .group_by_key(Serdes::string(), Serdes::string())
        .count("count", "counts-store")
        .to("out", "out", Serdes::string(), Serdes::i64());
    let mut driver = TestDriver::new(builder.build().unwrap());
    for key in ["a", "b", "a", "a"] {
        driver
            .pipe_raw("in", Some(key.as_bytes()), Some(b"x"))
            .unwrap();
    }
    assert_eq!(
        updates(&mut driver, "out"),
        [
            ("a".into(), 1),
            ("b".into(), 1),
            ("a".into(), 2),
            ("a".into(), 3)
        ]
    );
}

#[test]
fn every_update_reaches_the_stores_changelog_topic() {
    let builder = TopologyBuilder::new("counts");
    builder
        .source("in", &["in"], Serdes::string(), Serdes::string())
        .group_by_key(Serdes::string(), Serdes::string())
        .count("count", "per-key")
        .to("out", "out", Serdes::string(), Serdes::i64());
    let topology = builder.build().unwrap();
    assert_eq!(
        topology.stores()[0].changelog_topic("app"),
        "app-per-key-changelog"
    );
    let mut driver = TestDriver::new(topology);
    for key in ["a", "b", "a"] {
        driver
            .pipe_raw("in", Some(key.as_bytes()), Some(b"x"))
            .unwrap();
    }
    // The driver names changelogs after the topology, as if it were the application id.
    assert_eq!(
        updates(&mut driver, "counts-per-key-changelog"),
        [("a".into(), 1), ("b".into(), 1), ("a".into(), 2)]
    );
}

#[test]
fn a_dead_lettered_input_leaves_no_trace_in_state() {
    let builder = TopologyBuilder::new("counts");
    builder
        .source("in", &["in"], Serdes::string(), Serdes::string())
        .group_by_key(Serdes::string(), Serdes::string())
        .count("count", "counts-store")
        // Fails after the count was written: the write must be undone with the input.
        .try_map("reject-poison", |r| {
            if r.key == "poison" {
                Err(ProcessError::validation("poison key"))
            } else {
                Ok(r)
            }
        })
        .to("out", "out", Serdes::string(), Serdes::i64());
    let mut driver = TestDriver::new(builder.build().unwrap());
    driver.pipe_raw("in", Some(b"ok"), Some(b"x")).unwrap();
    driver.pipe_raw("in", Some(b"poison"), Some(b"x")).unwrap();
    driver.pipe_raw("in", Some(b"poison"), Some(b"x")).unwrap();
    driver.pipe_raw("in", Some(b"ok"), Some(b"x")).unwrap();
    assert_eq!(driver.dead_letters().len(), 2);
    assert_eq!(
        updates(&mut driver, "out"),
        [("ok".into(), 1), ("ok".into(), 2)]
    );
    assert_eq!(
        updates(&mut driver, "counts-counts-store-changelog"),
        [("ok".into(), 1), ("ok".into(), 2)],
        "nothing of the poison records reached the changelog"
    );
}

#[test]
fn reduce_combines_values_and_aggregate_folds_from_an_initial_value() {
    let builder = TopologyBuilder::new("doses");
    let doses = builder.source("in", &["in"], Serdes::string(), JsonSerde::<u32>::new());
    doses
        .group_by_key(Serdes::string(), JsonSerde::<u32>::new())
        .reduce("max-dose", "max-dose-store", |a, b| a.max(b))
        .to("max", "max", Serdes::string(), JsonSerde::<u32>::new());
    doses
        .group_by_key(Serdes::string(), JsonSerde::<u32>::new())
        .aggregate(
            "dose-history",
            "dose-history-store",
            Vec::new,
            |_, dose, mut history: Vec<u32>| {
                history.push(dose);
                history
            },
            JsonSerde::<Vec<u32>>::new(),
        )
        .to(
            "history",
            "history",
            Serdes::string(),
            JsonSerde::<Vec<u32>>::new(),
        );
    let mut driver = TestDriver::new(builder.build().unwrap());
    for dose in ["20", "40", "10"] {
        driver
            .pipe_raw("in", Some(b"patient-1"), Some(dose.as_bytes()))
            .unwrap();
    }
    let max: Vec<u32> = driver
        .read("max", &Serdes::string(), &JsonSerde::<u32>::new())
        .unwrap()
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(max, [20, 40, 40]);
    let history = driver
        .read("history", &Serdes::string(), &JsonSerde::<Vec<u32>>::new())
        .unwrap();
    assert_eq!(history.last().unwrap().value, [20, 40, 10]);
}

#[test]
fn a_null_key_has_no_group_and_is_dropped() {
    let builder = TopologyBuilder::new("counts");
    builder
        .source(
            "in",
            &["in"],
            Serdes::optional(Serdes::string()),
            Serdes::string(),
        )
        .group_by_key(Serdes::optional(Serdes::string()), Serdes::string())
        .count("count", "counts-store")
        .to(
            "out",
            "out",
            Serdes::optional(Serdes::string()),
            Serdes::i64(),
        );
    let mut driver = TestDriver::new(builder.build().unwrap());
    driver.pipe_raw("in", None, Some(b"x")).unwrap();
    driver.pipe_raw("in", Some(b"k"), Some(b"x")).unwrap();
    let out = driver
        .read("out", &Serdes::optional(Serdes::string()), &Serdes::i64())
        .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].key.as_deref(), out[0].value), (Some("k"), 1));
    assert!(driver.dead_letters().is_empty());
}

#[test]
fn a_store_name_belongs_to_one_operator() {
    let builder = TopologyBuilder::new("counts");
    let grouped = builder
        .source("in", &["in"], Serdes::string(), Serdes::string())
        .group_by_key(Serdes::string(), Serdes::string());
    grouped
        .count("count-a", "shared")
        .to("a", "a", Serdes::string(), Serdes::i64());
    grouped
        .count("count-b", "shared")
        .to("b", "b", Serdes::string(), Serdes::i64());
    let error = builder.build().unwrap_err();
    assert_eq!(
        error,
        TopologyError::StoreUsedTwice {
            store: "shared".into(),
            first: "count-a".into(),
            second: "count-b".into()
        }
    );
    assert!(
        error
            .to_string()
            .contains("give each stateful operator a store of its own")
    );
}
