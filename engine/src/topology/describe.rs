//! Descriptions of a topology: text in the shape of Kafka Streams' `Topology#describe()`,
//! and a Mermaid flowchart.

use std::collections::BTreeSet;
use std::fmt::Write;

use super::{NodeDef, NodeKind, Topology};

impl Topology {
    /// The graph as text: sub-topologies, then each node with its successors (`-->`) and
    /// predecessors (`<--`).
    pub fn describe(&self) -> String {
        let def = &self.def;
        let mut s = String::new();
        let _ = writeln!(s, "Topology: {}", def.name);
        match def.policy.dead_letter_topic() {
            Some(topic) => {
                let _ = writeln!(s, "  Errors: dead-letter topic {topic}");
            }
            None => {
                let _ = writeln!(s, "  Errors: {:?}", def.policy);
            }
        }
        for sub in &def.subtopologies {
            let _ = writeln!(s, "  Sub-topology: {}", sub.id);
            for &i in &sub.nodes {
                let node = &def.nodes[i];
                let _ = match &node.kind {
                    NodeKind::Source { topics, .. } => {
                        writeln!(
                            s,
                            "    Source: {} (topics: [{}])",
                            node.name,
                            topics.join(", ")
                        )
                    }
                    NodeKind::Processor { operator, .. } if !node.globals.is_empty() => writeln!(
                        s,
                        "    Processor: {} (operator: {operator}, global stores: [{}])",
                        node.name,
                        node.globals.join(", ")
                    ),
                    NodeKind::Processor { operator, .. } if !node.stores.is_empty() => writeln!(
                        s,
                        "    Processor: {} (operator: {operator}, stores: [{}])",
                        node.name,
                        node.stores.join(", ")
                    ),
                    NodeKind::Processor { operator, .. } => {
                        writeln!(s, "    Processor: {} (operator: {operator})", node.name)
                    }
                    NodeKind::Sink { topic, .. } => {
                        writeln!(s, "    Sink: {} (topic: {topic})", node.name)
                    }
                };
                if !node.children.is_empty() {
                    let _ = writeln!(s, "      --> {}", names(&def.nodes, &node.children));
                }
                if !node.parents.is_empty() {
                    let _ = writeln!(s, "      <-- {}", names(&def.nodes, &node.parents));
                }
            }
        }
        for global in &def.globals {
            let _ = writeln!(
                s,
                "  Global table: {} (topic: {}, store: {})",
                global.name, global.topic, global.store
            );
        }
        s
    }

    /// The graph as a Mermaid flowchart: one subgraph per sub-topology, topics as stadium
    /// shapes, and a dotted edge to the dead-letter topic.
    pub fn to_mermaid(&self) -> String {
        let def = &self.def;
        let topics: Vec<&str> = def
            .nodes
            .iter()
            .flat_map(|n| match &n.kind {
                NodeKind::Source { topics, .. } => topics.iter().map(String::as_str).collect(),
                NodeKind::Sink { topic, .. } => vec![topic.as_str()],
                NodeKind::Processor { .. } => vec![],
            })
            .chain(def.policy.dead_letter_topic())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let topic_id = |t: &str| format!("t{}", topics.iter().position(|x| *x == t).unwrap_or(0));

        let mut s = String::from("flowchart LR\n");
        for (i, topic) in topics.iter().enumerate() {
            let _ = writeln!(s, "    t{i}([\"{}\"])", escape(topic));
        }
        for sub in &def.subtopologies {
            let _ = writeln!(s, "    subgraph st{}[\"Sub-topology {}\"]", sub.id, sub.id);
            for &i in &sub.nodes {
                let node = &def.nodes[i];
                let name = escape(&node.name);
                let _ = match &node.kind {
                    NodeKind::Source { .. } => writeln!(s, "        n{i}[/\"source: {name}\"/]"),
                    NodeKind::Processor { operator, .. } => {
                        writeln!(s, "        n{i}[\"{operator}: {name}\"]")
                    }
                    NodeKind::Sink { .. } => writeln!(s, "        n{i}[\\\"sink: {name}\"\\]"),
                };
            }
            let _ = writeln!(s, "    end");
        }
        for (i, node) in def.nodes.iter().enumerate() {
            match &node.kind {
                NodeKind::Source { topics, .. } => {
                    for t in topics {
                        let _ = writeln!(s, "    {} --> n{i}", topic_id(t));
                    }
                }
                NodeKind::Sink { topic, .. } => {
                    let _ = writeln!(s, "    n{i} --> {}", topic_id(topic));
                }
                NodeKind::Processor { .. } => {}
            }
            for c in &node.children {
                let _ = writeln!(s, "    n{i} --> n{c}");
            }
        }
        if let Some(dlq) = def.policy.dead_letter_topic() {
            for sub in &def.subtopologies {
                let _ = writeln!(s, "    st{} -. errors .-> {}", sub.id, topic_id(dlq));
            }
        }
        s
    }
}

fn names(nodes: &[NodeDef], indexes: &[usize]) -> String {
    indexes
        .iter()
        .map(|&i| nodes[i].name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Names are `[A-Za-z0-9._-]` after validation; quotes are escaped anyway so a label can
/// never break out of its string.
fn escape(label: &str) -> String {
    label.replace('"', "#quot;")
}
