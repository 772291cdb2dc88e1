//! Every validation error of the topology builder, each from the smallest topology that
//! shows it.

use sluice_engine::serde::Serdes;
use sluice_engine::{ErrorPolicy, TopologyBuilder, TopologyError};

fn strings(b: &TopologyBuilder, name: &str, topic: &str) -> sluice_engine::Stream<String, String> {
    b.source(name, &[topic], Serdes::string(), Serdes::string())
}

fn problems(err: TopologyError) -> Vec<TopologyError> {
    match err {
        TopologyError::Many(all) => all,
        one => vec![one],
    }
}

#[test]
fn a_valid_topology_builds() {
    let b = TopologyBuilder::new("ok");
    strings(&b, "in", "a").to("out", "b", Serdes::string(), Serdes::string());
    let t = b.build().unwrap();
    assert_eq!(t.source_topics().into_iter().collect::<Vec<_>>(), ["a"]);
    assert_eq!(
        t.sink_topics().into_iter().collect::<Vec<_>>(),
        ["b", "ok.dlq"]
    );
}

#[test]
fn duplicate_node_names_are_rejected() {
    let b = TopologyBuilder::new("t");
    strings(&b, "in", "a")
        .map_values("step", |v| v)
        .map_values("step", |v| v)
        .to("out", "b", Serdes::string(), Serdes::string());
    assert_eq!(
        b.build().unwrap_err(),
        TopologyError::DuplicateName {
            name: "step".into()
        }
    );
}

#[test]
fn invalid_node_and_topic_names_are_rejected() {
    let b = TopologyBuilder::new("t");
    strings(&b, "in", "bad topic").to("has space", "b", Serdes::string(), Serdes::string());
    let all = problems(b.build().unwrap_err());
    assert!(all.contains(&TopologyError::InvalidName {
        name: "has space".into()
    }));
    assert!(all.contains(&TopologyError::InvalidTopic {
        node: "in".into(),
        topic: "bad topic".into()
    }));
}

#[test]
fn a_stream_left_unconsumed_is_dangling() {
    let b = TopologyBuilder::new("t");
    let s = strings(&b, "in", "a");
    s.to("out", "b", Serdes::string(), Serdes::string());
    s.filter("forgotten", |_, _| true);
    assert_eq!(
        b.build().unwrap_err(),
        TopologyError::Dangling {
            node: "forgotten".into()
        }
    );
}

#[test]
fn a_source_without_consumers_is_dangling() {
    let b = TopologyBuilder::new("t");
    strings(&b, "lonely", "a");
    assert_eq!(
        b.build().unwrap_err(),
        TopologyError::Dangling {
            node: "lonely".into()
        }
    );
}

#[test]
fn a_branch_that_goes_nowhere_is_named() {
    let b = TopologyBuilder::new("t");
    let routes = strings(&b, "in", "a")
        .branch("route")
        .branch("used", |_, v| v.is_empty())
        .branch("unused", |_, _| true)
        .build();
    routes
        .get("used")
        .to("out", "b", Serdes::string(), Serdes::string());
    assert_eq!(
        b.build().unwrap_err(),
        TopologyError::BranchGoesNowhere {
            node: "route".into(),
            branch: "unused".into()
        }
    );
}

#[test]
fn a_branch_without_branches_is_rejected() {
    let b = TopologyBuilder::new("t");
    strings(&b, "in", "a").branch("route").build();
    assert_eq!(
        b.build().unwrap_err(),
        TopologyError::EmptyBranch {
            node: "route".into()
        }
    );
}

#[test]
fn asking_for_an_unknown_branch_lists_the_known_ones() {
    let b = TopologyBuilder::new("t");
    let routes = strings(&b, "in", "a")
        .branch("route")
        .branch("x", |_, _| true)
        .build();
    routes
        .get("x")
        .to("out", "b", Serdes::string(), Serdes::string());
    let _ = routes.get("y");
    assert!(
        problems(b.build().unwrap_err()).contains(&TopologyError::UnknownBranch {
            node: "route".into(),
            branch: "y".into(),
            known: vec!["x".into()]
        })
    );
}

#[test]
fn a_sink_feeding_a_source_of_its_own_subtopology_is_a_loop() {
    let b = TopologyBuilder::new("t");
    strings(&b, "in", "a").to("back", "a", Serdes::string(), Serdes::string());
    assert_eq!(
        b.build().unwrap_err(),
        TopologyError::SinkFeedsOwnSource {
            sink: "back".into(),
            topic: "a".into(),
            source_node: "in".into()
        }
    );
}

#[test]
fn a_sink_feeding_another_subtopology_is_two_stages_not_a_loop() {
    let b = TopologyBuilder::new("t");
    strings(&b, "stage1", "a").to("to-b", "b", Serdes::string(), Serdes::string());
    strings(&b, "stage2", "b").to("to-c", "c", Serdes::string(), Serdes::string());
    let t = b.build().unwrap();
    assert_eq!(t.subtopologies().len(), 2);
    assert_eq!(t.subtopology_of("b").unwrap().id, 1);
}

#[test]
fn a_topic_read_by_two_sources_is_rejected() {
    let b = TopologyBuilder::new("t");
    strings(&b, "first", "a").to("o1", "b", Serdes::string(), Serdes::string());
    strings(&b, "second", "a").to("o2", "c", Serdes::string(), Serdes::string());
    assert_eq!(
        b.build().unwrap_err(),
        TopologyError::TopicReadTwice {
            topic: "a".into(),
            first: "first".into(),
            second: "second".into()
        }
    );
}

#[test]
fn a_topology_without_source_is_rejected() {
    let b = TopologyBuilder::new("empty");
    assert_eq!(
        b.build().unwrap_err(),
        TopologyError::NoSource {
            topology: "empty".into()
        }
    );
}

#[test]
fn a_source_without_topics_is_rejected() {
    let b = TopologyBuilder::new("t");
    b.source("in", &[], Serdes::string(), Serdes::string()).to(
        "out",
        "b",
        Serdes::string(),
        Serdes::string(),
    );
    assert_eq!(
        b.build().unwrap_err(),
        TopologyError::SourceWithoutTopics { node: "in".into() }
    );
}

#[test]
fn writing_to_the_dead_letter_topic_is_rejected() {
    let b = TopologyBuilder::new("t");
    b.error_policy(ErrorPolicy::dead_letter("errors"));
    strings(&b, "in", "a").to("out", "errors", Serdes::string(), Serdes::string());
    assert_eq!(
        b.build().unwrap_err(),
        TopologyError::DeadLetterTopicInUse {
            node: "out".into(),
            topic: "errors".into()
        }
    );
}

#[test]
fn merging_a_stream_of_another_builder_is_rejected() {
    let b = TopologyBuilder::new("t");
    let other = TopologyBuilder::new("other");
    let foreign = strings(&other, "in", "x");
    strings(&b, "in", "a").merge("both", &foreign).to(
        "out",
        "b",
        Serdes::string(),
        Serdes::string(),
    );
    assert_eq!(
        b.build().unwrap_err(),
        TopologyError::ForeignStream {
            node: "both".into()
        }
    );
}

#[test]
fn all_problems_are_reported_at_once_and_each_says_what_to_do() {
    let b = TopologyBuilder::new("t");
    let s = strings(&b, "in", "a");
    s.map_values("m", |v| v);
    s.map_values("m", |v| v);
    let err = b.build().unwrap_err();
    let all = problems(err.clone());
    assert_eq!(all.len(), 3, "{err}");
    let text = err.to_string();
    assert!(text.starts_with("3 problems in topology"), "{text}");
    assert!(text.contains("give each node a unique name"), "{text}");
    assert!(text.contains("attach an operator or a sink"), "{text}");
}
