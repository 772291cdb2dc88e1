//! The text and Mermaid descriptions of a topology.

use sluice_engine::serde::Serdes;
use sluice_engine::{Topology, TopologyBuilder};

fn two_stage() -> Topology {
    let b = TopologyBuilder::new("orders");
    let routes = b
        .source("in", &["orders.raw"], Serdes::string(), Serdes::string())
        .map_values("trim", |v: String| v.trim().to_string())
        .branch("route")
        .branch("rx", |_, v| v.starts_with("rx"))
        .default_branch("other")
        .build();
    routes
        .get("rx")
        .to("rx-out", "orders.rx", Serdes::string(), Serdes::string());
    routes.get("other").to(
        "other-out",
        "orders.other",
        Serdes::string(),
        Serdes::string(),
    );
    b.source("rx-in", &["orders.rx"], Serdes::string(), Serdes::string())
        .to("audit", "orders.audit", Serdes::string(), Serdes::string());
    b.build().unwrap()
}

#[test]
fn describe_lists_subtopologies_with_successors_and_predecessors() {
    let text = two_stage().describe();
    let expected = "\
Topology: orders
  Errors: dead-letter topic orders.dlq
  Sub-topology: 0
    Source: in (topics: [orders.raw])
      --> trim
    Processor: trim (operator: map_values)
      --> route
      <-- in
    Processor: route (operator: branch)
      --> route-rx, route-other
      <-- trim
    Processor: route-rx (operator: branch-output)
      --> rx-out
      <-- route
    Processor: route-other (operator: branch-output)
      --> other-out
      <-- route
    Sink: rx-out (topic: orders.rx)
      <-- route-rx
    Sink: other-out (topic: orders.other)
      <-- route-other
  Sub-topology: 1
    Source: rx-in (topics: [orders.rx])
      --> audit
    Sink: audit (topic: orders.audit)
      <-- rx-in
";
    assert_eq!(text, expected);
}

#[test]
fn mermaid_has_a_subgraph_per_subtopology_and_every_edge() {
    let chart = two_stage().to_mermaid();
    assert!(chart.starts_with("flowchart LR\n"), "{chart}");
    assert_eq!(chart.matches("subgraph st").count(), 2, "{chart}");
    assert_eq!(chart.matches("\n    end\n").count(), 2, "{chart}");
    // Node edges: in->trim, trim->route, route->rx, route->other, rx->rx-out,
    // other->other-out, rx-in->audit; topic edges: raw->in, rx-out->rx, other-out->other,
    // rx->rx-in, audit->audit topic; two dotted edges to the dead-letter topic.
    assert_eq!(chart.matches(" --> ").count(), 12, "{chart}");
    assert_eq!(chart.matches(" -. errors .-> ").count(), 2, "{chart}");
    // One node per topic, each declared once.
    for topic in [
        "orders.raw",
        "orders.rx",
        "orders.other",
        "orders.audit",
        "orders.dlq",
    ] {
        assert_eq!(
            chart.matches(&format!("([\"{topic}\"])")).count(),
            1,
            "{chart}"
        );
    }
}
