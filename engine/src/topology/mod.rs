//! Topologies: the declarative graph a topology author builds, checked and ready to run.
//!
//! A [`TopologyBuilder`] hands out typed [`Stream`] handles; each operator method adds a
//! named node. [`TopologyBuilder::build`] validates the whole graph at once and reports
//! every problem, each naming the node at fault:
//!
//! * two nodes with one name, or a name that is empty or not `[A-Za-z0-9._-]`;
//! * a node whose output goes nowhere (a stream that was never consumed), including a
//!   named branch with nothing attached;
//! * a topic read by two sources, or a topology with no source;
//! * a sink writing to a topic that a source of the same sub-topology reads (a loop);
//! * a topic that is also the dead-letter topic.
//!
//! The built [`Topology`] splits into sub-topologies: the connected parts of the graph.
//! Each runs as one task per input partition. [`Topology::describe`] prints the graph the
//! way Kafka Streams' `Topology#describe()` does, and [`Topology::to_mermaid`] as a
//! Mermaid flowchart.

pub(crate) mod builder;
mod describe;
mod stream;

pub use builder::TopologyBuilder;
pub use stream::Stream;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use crate::operators::Node;
use crate::operators::source::Decoder;
use crate::policy::ErrorPolicy;

pub(crate) type NodeFactory = Arc<dyn Fn() -> Box<dyn Node> + Send + Sync>;

/// What a node of the graph is.
#[derive(Clone)]
pub(crate) enum NodeKind {
    Source {
        topics: Vec<String>,
        decoder: Arc<dyn Decoder>,
        /// Forwards the decoded record to the source's children.
        factory: NodeFactory,
    },
    Processor {
        /// The operator's name in descriptions: `map`, `filter`, ...
        operator: &'static str,
        factory: NodeFactory,
        /// Terminal operators (`for_each`) need no children.
        terminal: bool,
    },
    Sink {
        topic: String,
        factory: NodeFactory,
        /// For a sink to an internal topic: makes its factory for the topic's final name,
        /// known once the application id is (see [`Topology::for_application`]).
        retarget: Option<Retarget>,
    },
}

/// Makes a sink's factory for a given topic.
pub(crate) type Retarget = Arc<dyn Fn(&str) -> NodeFactory + Send + Sync>;

#[derive(Clone)]
pub(crate) struct NodeDef {
    pub(crate) name: String,
    pub(crate) kind: NodeKind,
    pub(crate) parents: Vec<usize>,
    pub(crate) children: Vec<usize>,
    /// For the output node of a named branch: (branch node, branch name).
    pub(crate) branch_of: Option<(usize, String)>,
    /// Names of the state stores the node owns (reads and writes).
    pub(crate) stores: Vec<String>,
    /// Names of stores another node owns that this node reads (a join reading a table).
    /// A reader runs in its store's sub-topology, so it sees the same task's store.
    pub(crate) reads: Vec<String>,
    /// Names of the global tables' stores this node reads.
    pub(crate) globals: Vec<String>,
}

impl NodeDef {
    pub(crate) fn factory(&self) -> &NodeFactory {
        match &self.kind {
            NodeKind::Source { factory, .. }
            | NodeKind::Processor { factory, .. }
            | NodeKind::Sink { factory, .. } => factory,
        }
    }
}

/// One connected part of a topology; it runs as one task per input partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubTopology {
    pub id: usize,
    /// Node indexes in creation order, which is a topological order.
    pub(crate) nodes: Vec<usize>,
    pub source_topics: BTreeSet<String>,
    pub sink_topics: BTreeSet<String>,
}

pub(crate) struct TopologyDef {
    pub(crate) name: String,
    pub(crate) nodes: Vec<NodeDef>,
    pub(crate) subtopologies: Vec<SubTopology>,
    pub(crate) policy: ErrorPolicy,
    pub(crate) stores: Vec<StoreDef>,
    pub(crate) globals: Vec<GlobalTableDef>,
    /// Topics the topology writes and reads itself (repartition topics): their names
    /// before [`Topology::for_application`], `<application.id>-<name>` after.
    pub(crate) internal_topics: BTreeSet<String>,
    /// The application id the internal topics are named for, once they are.
    pub(crate) application_id: Option<String>,
}

/// A global table: every partition of `topic`, kept whole by every worker in the store
/// `store`, and read by key from any task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalTableDef {
    /// The name of the table in descriptions.
    pub name: String,
    pub topic: String,
    pub store: String,
}

/// A state store of the topology: named by the topology author, so that its directory and
/// its changelog topic keep their names however the topology around it changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreDef {
    pub name: String,
    /// The sub-topology whose tasks own it (one store instance per task).
    pub subtopology: usize,
}

impl StoreDef {
    /// The store's compacted changelog topic for an application: `<application.id>-<store>-changelog`.
    pub fn changelog_topic(&self, application_id: &str) -> String {
        format!("{application_id}-{}-changelog", self.name)
    }
}

/// A validated topology, cheap to clone and share between stream threads.
#[derive(Clone)]
pub struct Topology {
    pub(crate) def: Arc<TopologyDef>,
}

impl Topology {
    pub fn name(&self) -> &str {
        &self.def.name
    }

    pub fn error_policy(&self) -> &ErrorPolicy {
        &self.def.policy
    }

    pub fn subtopologies(&self) -> &[SubTopology] {
        &self.def.subtopologies
    }

    /// Every topic some source reads.
    pub fn source_topics(&self) -> BTreeSet<String> {
        self.subtopologies()
            .iter()
            .flat_map(|s| s.source_topics.iter().cloned())
            .collect()
    }

    /// Every topic some sink writes, plus the dead-letter topic when the policy has one.
    pub fn sink_topics(&self) -> BTreeSet<String> {
        let mut topics: BTreeSet<String> = self
            .subtopologies()
            .iter()
            .flat_map(|s| s.sink_topics.iter().cloned())
            .collect();
        if let Some(dlq) = self.def.policy.dead_letter_topic() {
            topics.insert(dlq.to_string());
        }
        topics
    }

    /// Every state store, in the order its operator was added.
    pub fn stores(&self) -> &[StoreDef] {
        &self.def.stores
    }

    /// Every global table.
    pub fn global_tables(&self) -> &[GlobalTableDef] {
        &self.def.globals
    }

    /// Whether the tasks of `subtopology` keep state.
    pub fn is_stateful(&self, subtopology: usize) -> bool {
        self.def.stores.iter().any(|s| s.subtopology == subtopology)
    }

    /// The sub-topology that reads `topic`.
    pub fn subtopology_of(&self, topic: &str) -> Option<&SubTopology> {
        self.subtopologies()
            .iter()
            .find(|s| s.source_topics.contains(topic))
    }
}

impl Topology {
    /// Internal topics (repartition topics), by the names they have now.
    pub fn internal_topics(&self) -> &BTreeSet<String> {
        &self.def.internal_topics
    }

    /// The topology as the application `application_id` runs it: each internal topic
    /// named `<application.id>-<name>`, so two applications running one topology never
    /// share one. The runtime and the TestDriver (with the topology's name as the id) call
    /// it; a topology without internal topics comes back unchanged.
    ///
    /// # Panics
    /// If the topology was already named for another application.
    pub fn for_application(&self, application_id: &str) -> Topology {
        match &self.def.application_id {
            Some(id) if id == application_id => return self.clone(),
            Some(id) => panic!(
                "topology `{}` already runs as application `{id}`, not `{application_id}`: build it again",
                self.def.name
            ),
            None if self.def.internal_topics.is_empty() => return self.clone(),
            None => {}
        }
        let rename = |topic: &String| match self.def.internal_topics.contains(topic) {
            true => format!("{application_id}-{topic}"),
            false => topic.clone(),
        };
        let nodes = self
            .def
            .nodes
            .iter()
            .map(|node| {
                let kind = match &node.kind {
                    NodeKind::Source {
                        topics,
                        decoder,
                        factory,
                    } => NodeKind::Source {
                        topics: topics.iter().map(rename).collect(),
                        decoder: decoder.clone(),
                        factory: factory.clone(),
                    },
                    NodeKind::Sink {
                        topic,
                        retarget: Some(retarget),
                        ..
                    } => {
                        let topic = rename(topic);
                        NodeKind::Sink {
                            factory: retarget(&topic),
                            topic,
                            retarget: Some(retarget.clone()),
                        }
                    }
                    other => other.clone(),
                };
                NodeDef {
                    kind,
                    ..node.clone()
                }
            })
            .collect();
        let subtopologies = self
            .def
            .subtopologies
            .iter()
            .map(|sub| SubTopology {
                source_topics: sub.source_topics.iter().map(rename).collect(),
                sink_topics: sub.sink_topics.iter().map(rename).collect(),
                ..sub.clone()
            })
            .collect();
        Topology {
            def: Arc::new(TopologyDef {
                name: self.def.name.clone(),
                nodes,
                subtopologies,
                policy: self.def.policy.clone(),
                stores: self.def.stores.clone(),
                globals: self.def.globals.clone(),
                internal_topics: self.def.internal_topics.iter().map(rename).collect(),
                application_id: Some(application_id.to_string()),
            }),
        }
    }
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// What is wrong with a topology; each names the node or topic at fault and the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    #[error("two nodes are named `{name}`: give each node a unique name")]
    DuplicateName { name: String },
    #[error("node name `{name}` is invalid: use 1-249 characters from [A-Za-z0-9._-]")]
    InvalidName { name: String },
    #[error(
        "topic name `{topic}` (node `{node}`) is invalid: use 1-249 characters from [A-Za-z0-9._-]"
    )]
    InvalidTopic { node: String, topic: String },
    #[error("source `{node}` reads no topic: name at least one")]
    SourceWithoutTopics { node: String },
    #[error("topology `{topology}` has no source: add one with TopologyBuilder::source")]
    NoSource { topology: String },
    #[error(
        "the output of `{node}` goes nowhere: attach an operator or a sink (`to`), or remove it"
    )]
    Dangling { node: String },
    #[error(
        "branch `{branch}` of `{node}` goes nowhere: attach an operator or a sink to it, or remove the branch"
    )]
    BranchGoesNowhere { node: String, branch: String },
    #[error("branch `{node}` has no branches: add at least one with .branch(name, predicate)")]
    EmptyBranch { node: String },
    #[error("`{node}` has no branch named `{branch}`: the branches are {known:?}")]
    UnknownBranch {
        node: String,
        branch: String,
        known: Vec<String>,
    },
    #[error(
        "topic `{topic}` is read by two sources, `{first}` and `{second}`: read it once and share the stream"
    )]
    TopicReadTwice {
        topic: String,
        first: String,
        second: String,
    },
    #[error(
        "sink `{sink}` writes to `{topic}`, which source `{source_node}` of the same sub-topology reads: this loops; write to another topic"
    )]
    SinkFeedsOwnSource {
        sink: String,
        topic: String,
        source_node: String,
    },
    #[error(
        "topic `{topic}` (node `{node}`) is the dead-letter topic of the topology: use another topic"
    )]
    DeadLetterTopicInUse { node: String, topic: String },
    #[error(
        "`{node}` merges a stream of another builder: build both streams with one TopologyBuilder"
    )]
    ForeignStream { node: String },
    #[error(
        "store name `{store}` (node `{node}`) is invalid: use 1-200 characters from [A-Za-z0-9._-]"
    )]
    InvalidStoreName { node: String, store: String },
    #[error(
        "`{node}` reads global table store `{store}`, which no global table of this builder has: create it with TopologyBuilder::global_table"
    )]
    UnknownGlobalStore { node: String, store: String },
    #[error("`{node}` reads store `{store}`, which no operator of the topology owns")]
    UnknownStore { node: String, store: String },
    #[error(
        "store `{store}` is used by `{first}` and `{second}`: give each stateful operator a store of its own"
    )]
    StoreUsedTwice {
        store: String,
        first: String,
        second: String,
    },
    #[error("{} problems in topology:\n  - {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  - "))]
    Many(Vec<TopologyError>),
}

pub fn valid_name(name: &str) -> bool {
    (1..=249).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
