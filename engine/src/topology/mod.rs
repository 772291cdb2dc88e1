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

mod builder;
mod describe;
mod due;
mod stream;

pub use builder::TopologyBuilder;
pub use due::due_at;
pub use stream::Stream;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use crate::policy::ErrorPolicy;
use crate::processor::{Decoder, ProcessorFactory};

/// What a node of the graph is.
#[derive(Clone)]
pub(crate) enum NodeKind {
    Source {
        topics: Vec<String>,
        decoder: Arc<dyn Decoder>,
    },
    Processor {
        /// The operator's name in descriptions (`map`, `filter`, ...): for people only;
        /// validation reads [`Outputs`].
        operator: &'static str,
        outputs: Outputs,
    },
    Sink {
        topic: String,
        /// For a sink to an internal topic: makes its processor's factory for the topic's
        /// final name, known once the application id is (see [`Topology::for_application`]).
        retarget: Option<Retarget>,
    },
}

/// Where a processor node's output must go: what validation checks of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outputs {
    /// Forwards to its children, so it needs one (most operators).
    Required,
    /// May end the stream: `for_each`, a table's materialization.
    Optional,
    /// Routes each record to one of its named branches, so it needs at least one branch.
    Branches,
    /// The branch `name` of the branch node `of`: it must lead somewhere.
    Branch { of: usize, name: String },
}

/// Makes a sink's factory for a given topic.
pub(crate) type Retarget = Arc<dyn Fn(&str) -> ProcessorFactory + Send + Sync>;

#[derive(Clone)]
pub(crate) struct NodeDef {
    pub(crate) name: String,
    pub(crate) kind: NodeKind,
    /// Makes the node's processor, one per task.
    pub(crate) factory: ProcessorFactory,
    pub(crate) parents: Vec<usize>,
    pub(crate) children: Vec<usize>,
    /// Names of the state stores the node owns (reads and writes).
    pub(crate) stores: Vec<String>,
    /// Names of stores another node owns that this node reads (a join reading a table).
    /// A reader runs in its store's sub-topology, so it sees the same task's store.
    pub(crate) reads: Vec<String>,
    /// Names of the global tables' stores this node reads.
    pub(crate) globals: Vec<String>,
    /// Whether the node is an async operator (its calls run beside the stream thread).
    pub(crate) asynchronous: bool,
    /// Whether the node is a sink of dead letters (the one kind of sink that may write to
    /// the dead-letter topic).
    pub(crate) dead_letters: bool,
}

/// A node an operator adds to the graph: everything about it but its place, which the
/// [`Stream`] or [`TopologyBuilder`] it is added through gives. This, with the few methods
/// taking it, is all an operator sees of the graph; edges and problems stay the graph's.
pub(crate) struct NodeSpec {
    name: String,
    kind: NodeKind,
    factory: ProcessorFactory,
    stores: Vec<String>,
    reads: Vec<String>,
    globals: Vec<String>,
    asynchronous: bool,
    dead_letters: bool,
}

impl NodeSpec {
    fn new(name: &str, kind: NodeKind, factory: ProcessorFactory) -> Self {
        Self {
            name: name.to_string(),
            kind,
            factory,
            stores: Vec::new(),
            reads: Vec::new(),
            globals: Vec::new(),
            asynchronous: false,
            dead_letters: false,
        }
    }

    /// Marks a sink as writing dead letters: it may (and must) write to the dead-letter
    /// topic.
    pub(crate) fn dead_letters(mut self) -> Self {
        self.dead_letters = true;
        self
    }

    /// Marks the node as an async operator, which validation checks the state around.
    pub(crate) fn asynchronous(mut self) -> Self {
        self.asynchronous = true;
        self
    }

    /// A processor node whose output must go somewhere; `operator` names it in descriptions.
    pub(crate) fn processor(name: &str, operator: &'static str, factory: ProcessorFactory) -> Self {
        let outputs = Outputs::Required;
        Self::new(name, NodeKind::Processor { operator, outputs }, factory)
    }

    /// A source node reading `topics`, decoding them with `decoder`.
    pub(crate) fn source(
        name: &str,
        topics: &[&str],
        decoder: Arc<dyn Decoder>,
        factory: ProcessorFactory,
    ) -> Self {
        let topics = topics.iter().map(|t| t.to_string()).collect();
        Self::new(name, NodeKind::Source { topics, decoder }, factory)
    }

    /// A sink node writing to `topic`.
    pub(crate) fn sink(name: &str, topic: &str, factory: ProcessorFactory) -> Self {
        let topic = topic.to_string();
        Self::new(
            name,
            NodeKind::Sink {
                topic,
                retarget: None,
            },
            factory,
        )
    }

    /// A sink node writing to the internal topic `topic`, renamed for the application.
    pub(crate) fn internal_sink(name: &str, topic: &str, retarget: Retarget) -> Self {
        let factory = retarget(topic);
        let kind = NodeKind::Sink {
            topic: topic.to_string(),
            retarget: Some(retarget),
        };
        Self::new(name, kind, factory)
    }

    /// Sets what the output of a processor node must be.
    pub(crate) fn outputs(mut self, outputs: Outputs) -> Self {
        if let NodeKind::Processor { outputs: o, .. } = &mut self.kind {
            *o = outputs;
        }
        self
    }

    /// The stores the node owns, reached by index in this order.
    pub(crate) fn stores(mut self, stores: &[&str]) -> Self {
        self.stores = stores.iter().map(|s| s.to_string()).collect();
        self
    }

    /// A store another node owns that this node reads (after its own).
    pub(crate) fn reads(mut self, store: &str) -> Self {
        self.reads.push(store.to_string());
        self
    }

    /// The stores of global tables the node reads, reached by index in this order.
    pub(crate) fn globals(mut self, stores: &[&str]) -> Self {
        self.globals = stores.iter().map(|s| s.to_string()).collect();
        self
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
    /// Topics whose records are held until due, with the header giving the due time
    /// (see [`TopologyBuilder::hold_until_due`]).
    pub(crate) due_headers: std::collections::BTreeMap<String, String>,
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
                let (kind, factory) = match &node.kind {
                    NodeKind::Source { topics, decoder } => (
                        NodeKind::Source {
                            topics: topics.iter().map(rename).collect(),
                            decoder: decoder.clone(),
                        },
                        node.factory.clone(),
                    ),
                    NodeKind::Sink {
                        topic,
                        retarget: Some(retarget),
                    } => {
                        let topic = rename(topic);
                        let factory = retarget(&topic);
                        let retarget = Some(retarget.clone());
                        (NodeKind::Sink { topic, retarget }, factory)
                    }
                    other => (other.clone(), node.factory.clone()),
                };
                NodeDef {
                    kind,
                    factory,
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
                due_headers: self
                    .def
                    .due_headers
                    .iter()
                    .map(|(topic, header)| (rename(topic), header.clone()))
                    .collect(),
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
    #[error(
        "`{store_owner}` writes state before async operator `{node}` in the same sub-topology: a commit while a call is in flight would keep the state written for an input that is then read again; put a repartition between them, or make the call before the stateful operator"
    )]
    StateBeforeAsync { node: String, store_owner: String },
    #[error(
        "topic `{topic}` is held until due but no source of the topology reads it: add it to a source, or hold another topic"
    )]
    HeldTopicNotRead { topic: String },
    #[error(
        "`{node}` writes dead letters to `{topic}`, which is not the topology's dead-letter topic ({expected:?}): write to the error policy's topic"
    )]
    NotTheDeadLetterTopic {
        node: String,
        topic: String,
        expected: Option<String>,
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

#[cfg(test)]
mod tests {
    /// The graph sits below the operators: it holds processors through the contract in
    /// `crate::processor` and knows no operator, so the two never import each other.
    #[test]
    fn the_graph_imports_nothing_from_the_operators() {
        for (file, source) in [
            ("mod.rs", include_str!("mod.rs")),
            ("builder.rs", include_str!("builder.rs")),
            ("describe.rs", include_str!("describe.rs")),
            ("stream.rs", include_str!("stream.rs")),
        ] {
            let imports = source
                .lines()
                .filter(|line| line.starts_with("use ") && line.contains("operators"));
            assert_eq!(imports.count(), 0, "topology/{file} imports an operator");
        }
    }
}
