//! The topology builder and the validation it runs on `build`.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;

use super::{
    GlobalTableDef, NodeDef, NodeFactory, NodeKind, StoreDef, SubTopology, Topology, TopologyDef,
    TopologyError, valid_name,
};
use crate::operators::pass_through;
use crate::operators::source::SourceDecoder;
use crate::policy::ErrorPolicy;
use crate::serde::Serde;
use crate::topology::Stream;

/// A store a node reads without owning it.
pub(crate) enum StoreRead<'a> {
    /// The store of a table of the topology.
    Table(&'a str),
    /// The store of a global table.
    Global(&'a str),
}

/// The graph under construction, shared by the builder and every stream handle.
pub(crate) struct Graph {
    pub(crate) name: String,
    pub(crate) nodes: Vec<NodeDef>,
    /// Problems found while adding nodes; reported together by `build`.
    pub(crate) errors: Vec<TopologyError>,
    pub(crate) policy: ErrorPolicy,
    pub(crate) globals: Vec<GlobalTableDef>,
    /// Names of the internal topics (before the application id is known).
    pub(crate) internal_topics: BTreeSet<String>,
}

impl Graph {
    /// Adds a node under `parents` and returns its index.
    pub(crate) fn add(&mut self, name: &str, kind: NodeKind, parents: &[usize]) -> usize {
        if !valid_name(name) {
            self.errors
                .push(TopologyError::InvalidName { name: name.into() });
        } else if self.nodes.iter().any(|n| n.name == name) {
            self.errors
                .push(TopologyError::DuplicateName { name: name.into() });
        }
        let index = self.nodes.len();
        for &p in parents {
            self.nodes[p].children.push(index);
        }
        self.nodes.push(NodeDef {
            name: name.to_string(),
            kind,
            parents: parents.to_vec(),
            children: Vec::new(),
            branch_of: None,
            stores: Vec::new(),
            reads: Vec::new(),
            globals: Vec::new(),
        });
        index
    }
}

/// Builds a [`Topology`] from named sources, operators and sinks.
///
/// ```
/// use sluice_engine::{Serdes, TopologyBuilder};
///
/// let builder = TopologyBuilder::new("uppercase");
/// builder
///     .source("orders", &["orders.in"], Serdes::string(), Serdes::string())
///     .map_values("to-upper", |v: String| v.to_uppercase())
///     .to("orders-out", "orders.out", Serdes::string(), Serdes::string());
/// let topology = builder.build().unwrap();
/// assert_eq!(topology.subtopologies().len(), 1);
/// ```
pub struct TopologyBuilder {
    graph: Rc<RefCell<Graph>>,
}

impl TopologyBuilder {
    /// A builder for the topology `name`; its dead-letter topic defaults to `<name>.dlq`.
    pub fn new(name: &str) -> Self {
        Self {
            graph: Rc::new(RefCell::new(Graph {
                name: name.to_string(),
                nodes: Vec::new(),
                errors: Vec::new(),
                policy: ErrorPolicy::dead_letter(format!("{name}.dlq")),
                globals: Vec::new(),
                internal_topics: BTreeSet::new(),
            })),
        }
    }

    /// What happens to a record that cannot be decoded or processed.
    pub fn error_policy(&self, policy: ErrorPolicy) -> &Self {
        self.graph.borrow_mut().policy = policy;
        self
    }

    /// A stream of the records of `topics`, decoded with the given serdes. A record that
    /// does not decode goes to the error policy, naming this source as the operator.
    pub fn source<K, V>(
        &self,
        name: &str,
        topics: &[&str],
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
    ) -> Stream<K, V>
    where
        K: Clone + Send + 'static,
        V: Clone + Send + 'static,
    {
        let mut graph = self.graph.borrow_mut();
        for topic in topics {
            if !valid_name(topic) {
                graph.errors.push(TopologyError::InvalidTopic {
                    node: name.into(),
                    topic: topic.to_string(),
                });
            }
        }
        let decoder = Arc::new(SourceDecoder::new(key_serde, value_serde));
        let factory: NodeFactory = pass_through(|| |_: &K, _: &V| true);
        let kind = NodeKind::Source {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            decoder,
            factory,
        };
        let node = graph.add(name, kind, &[]);
        drop(graph);
        Stream::new(self.graph.clone(), node)
    }

    /// Registers a global table (checked by `build`).
    pub(crate) fn add_global(&self, global: GlobalTableDef) {
        self.graph.borrow_mut().globals.push(global);
    }

    /// Checks the graph and returns the runnable topology, or every problem found.
    pub fn build(&self) -> Result<Topology, TopologyError> {
        let graph = self.graph.borrow();
        let mut errors = graph.errors.clone();
        validate(&graph, &mut errors);
        let subtopologies = split_subtopologies(&graph.nodes);
        check_loops(&graph.nodes, &subtopologies, &mut errors);
        let stores = collect_stores(&graph.nodes, &subtopologies, &mut errors);
        validate_globals(&graph, &stores, &mut errors);
        match errors.len() {
            0 => Ok(Topology {
                def: Arc::new(TopologyDef {
                    name: graph.name.clone(),
                    nodes: graph.nodes.clone(),
                    subtopologies,
                    policy: graph.policy.clone(),
                    stores,
                    globals: graph.globals.clone(),
                    internal_topics: graph.internal_topics.clone(),
                    application_id: None,
                }),
            }),
            1 => Err(errors.remove(0)),
            _ => Err(TopologyError::Many(errors)),
        }
    }
}

fn validate(graph: &Graph, errors: &mut Vec<TopologyError>) {
    let dlq = graph.policy.dead_letter_topic();
    let mut readers: HashMap<&str, &str> = HashMap::new();
    let mut has_source = false;
    for node in &graph.nodes {
        match &node.kind {
            NodeKind::Source { topics, .. } => {
                has_source = true;
                if topics.is_empty() {
                    errors.push(TopologyError::SourceWithoutTopics {
                        node: node.name.clone(),
                    });
                }
                for topic in topics {
                    if let Some(first) = readers.insert(topic, &node.name) {
                        errors.push(TopologyError::TopicReadTwice {
                            topic: topic.clone(),
                            first: first.to_string(),
                            second: node.name.clone(),
                        });
                    }
                    if dlq == Some(topic.as_str()) {
                        errors.push(TopologyError::DeadLetterTopicInUse {
                            node: node.name.clone(),
                            topic: topic.clone(),
                        });
                    }
                }
                if node.children.is_empty() {
                    errors.push(TopologyError::Dangling {
                        node: node.name.clone(),
                    });
                }
            }
            NodeKind::Processor {
                terminal, operator, ..
            } => {
                if *operator == "branch" && node.children.is_empty() {
                    errors.push(TopologyError::EmptyBranch {
                        node: node.name.clone(),
                    });
                } else if !terminal && node.children.is_empty() {
                    errors.push(match &node.branch_of {
                        Some((branch_node, branch)) => TopologyError::BranchGoesNowhere {
                            node: graph.nodes[*branch_node].name.clone(),
                            branch: branch.clone(),
                        },
                        None => TopologyError::Dangling {
                            node: node.name.clone(),
                        },
                    });
                }
            }
            NodeKind::Sink { topic, .. } => {
                if !valid_name(topic) {
                    errors.push(TopologyError::InvalidTopic {
                        node: node.name.clone(),
                        topic: topic.clone(),
                    });
                }
                if dlq == Some(topic.as_str()) {
                    errors.push(TopologyError::DeadLetterTopicInUse {
                        node: node.name.clone(),
                        topic: topic.clone(),
                    });
                }
            }
        }
    }
    if !has_source {
        errors.push(TopologyError::NoSource {
            topology: graph.name.clone(),
        });
    }
}

/// Connected components of the graph, numbered in the order of their first node.
fn split_subtopologies(nodes: &[NodeDef]) -> Vec<SubTopology> {
    let mut root: Vec<usize> = (0..nodes.len()).collect();
    fn find(root: &mut [usize], mut i: usize) -> usize {
        while root[i] != i {
            root[i] = root[root[i]];
            i = root[i];
        }
        i
    }
    for (i, node) in nodes.iter().enumerate() {
        // A node that reads another's store belongs with it: both run in one task.
        let owners = node
            .reads
            .iter()
            .filter_map(|store| nodes.iter().position(|owner| owner.stores.contains(store)));
        for p in node.parents.iter().copied().chain(owners) {
            let (a, b) = (find(&mut root, i), find(&mut root, p));
            root[a.max(b)] = a.min(b);
        }
    }
    let mut by_root: Vec<(usize, SubTopology)> = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let r = find(&mut root, i);
        let pos = match by_root.iter().position(|(root, _)| *root == r) {
            Some(pos) => pos,
            None => {
                by_root.push((
                    r,
                    SubTopology {
                        id: by_root.len(),
                        nodes: Vec::new(),
                        source_topics: BTreeSet::new(),
                        sink_topics: BTreeSet::new(),
                    },
                ));
                by_root.len() - 1
            }
        };
        let sub = &mut by_root[pos].1;
        sub.nodes.push(i);
        match &node.kind {
            NodeKind::Source { topics, .. } => sub.source_topics.extend(topics.iter().cloned()),
            NodeKind::Sink { topic, .. } => {
                sub.sink_topics.insert(topic.clone());
            }
            NodeKind::Processor { .. } => {}
        }
    }
    by_root.into_iter().map(|(_, s)| s).collect()
}

/// Every store, owned by the sub-topology of the node that uses it; each store belongs to
/// one node.
fn collect_stores(
    nodes: &[NodeDef],
    subs: &[SubTopology],
    errors: &mut Vec<TopologyError>,
) -> Vec<StoreDef> {
    let mut stores: Vec<StoreDef> = Vec::new();
    let mut users: HashMap<&str, &str> = HashMap::new();
    for (index, node) in nodes.iter().enumerate() {
        for store in &node.stores {
            if !valid_name(store) || store.len() > 200 {
                errors.push(TopologyError::InvalidStoreName {
                    node: node.name.clone(),
                    store: store.clone(),
                });
            }
            if let Some(first) = users.insert(store, &node.name) {
                errors.push(TopologyError::StoreUsedTwice {
                    store: store.clone(),
                    first: first.to_string(),
                    second: node.name.clone(),
                });
                continue;
            }
            let subtopology = subs
                .iter()
                .find(|s| s.nodes.contains(&index))
                .map_or(0, |s| s.id);
            stores.push(StoreDef {
                name: store.clone(),
                subtopology,
            });
        }
    }
    for node in nodes {
        for store in &node.reads {
            if !users.contains_key(store.as_str()) {
                errors.push(TopologyError::UnknownStore {
                    node: node.name.clone(),
                    store: store.clone(),
                });
            }
        }
    }
    stores
}

/// Global tables: valid names, a store name no other store has, a topic no source reads,
/// and every node's global store known.
fn validate_globals(graph: &Graph, stores: &[StoreDef], errors: &mut Vec<TopologyError>) {
    let mut names: HashMap<&str, &str> = stores
        .iter()
        .filter_map(|s| {
            graph
                .nodes
                .iter()
                .find(|n| n.stores.contains(&s.name))
                .map(|n| (s.name.as_str(), n.name.as_str()))
        })
        .collect();
    let sources: HashMap<&str, &str> = graph
        .nodes
        .iter()
        .filter_map(|n| match &n.kind {
            NodeKind::Source { topics, .. } => Some((topics, n.name.as_str())),
            _ => None,
        })
        .flat_map(|(topics, name)| topics.iter().map(move |t| (t.as_str(), name)))
        .collect();
    for global in &graph.globals {
        if !valid_name(&global.name) || graph.nodes.iter().any(|n| n.name == global.name) {
            errors.push(if valid_name(&global.name) {
                TopologyError::DuplicateName {
                    name: global.name.clone(),
                }
            } else {
                TopologyError::InvalidName {
                    name: global.name.clone(),
                }
            });
        }
        if !valid_name(&global.topic) {
            errors.push(TopologyError::InvalidTopic {
                node: global.name.clone(),
                topic: global.topic.clone(),
            });
        }
        if !valid_name(&global.store) || global.store.len() > 200 {
            errors.push(TopologyError::InvalidStoreName {
                node: global.name.clone(),
                store: global.store.clone(),
            });
        }
        if let Some(first) = names.insert(&global.store, &global.name) {
            errors.push(TopologyError::StoreUsedTwice {
                store: global.store.clone(),
                first: first.to_string(),
                second: global.name.clone(),
            });
        }
        if let Some(source) = sources.get(global.topic.as_str()) {
            errors.push(TopologyError::TopicReadTwice {
                topic: global.topic.clone(),
                first: source.to_string(),
                second: global.name.clone(),
            });
        }
    }
    for node in &graph.nodes {
        for store in &node.globals {
            if !graph.globals.iter().any(|g| &g.store == store) {
                errors.push(TopologyError::UnknownGlobalStore {
                    node: node.name.clone(),
                    store: store.clone(),
                });
            }
        }
    }
}

fn check_loops(nodes: &[NodeDef], subs: &[SubTopology], errors: &mut Vec<TopologyError>) {
    for sub in subs {
        let sources: HashMap<&str, &str> = sub
            .nodes
            .iter()
            .filter_map(|&i| match &nodes[i].kind {
                NodeKind::Source { topics, .. } => Some((topics, nodes[i].name.as_str())),
                _ => None,
            })
            .flat_map(|(topics, name)| topics.iter().map(move |t| (t.as_str(), name)))
            .collect();
        let mut reported = HashSet::new();
        for &i in &sub.nodes {
            if let NodeKind::Sink { topic, .. } = &nodes[i].kind
                && let Some(source) = sources.get(topic.as_str())
                && reported.insert(i)
            {
                errors.push(TopologyError::SinkFeedsOwnSource {
                    sink: nodes[i].name.clone(),
                    topic: topic.clone(),
                    source_node: source.to_string(),
                });
            }
        }
    }
}

impl<K, V> Stream<K, V> {
    /// Adds a processor node fed by this stream.
    pub(crate) fn add_node<K2, V2>(
        &self,
        name: &str,
        operator: &'static str,
        terminal: bool,
        factory: NodeFactory,
    ) -> Stream<K2, V2> {
        let node = self.graph.borrow_mut().add(
            name,
            NodeKind::Processor {
                operator,
                factory,
                terminal,
            },
            &[self.node],
        );
        Stream::new(self.graph.clone(), node)
    }

    /// Adds a processor node that keeps its state in the named stores.
    pub(crate) fn add_stateful_node<K2, V2>(
        &self,
        name: &str,
        operator: &'static str,
        stores: &[&str],
        factory: NodeFactory,
    ) -> Stream<K2, V2> {
        self.add_stateful_node_with(name, operator, false, stores, factory)
    }

    /// Like [`Stream::add_stateful_node`]; a `terminal` node may have no children.
    pub(crate) fn add_stateful_node_with<K2, V2>(
        &self,
        name: &str,
        operator: &'static str,
        terminal: bool,
        stores: &[&str],
        factory: NodeFactory,
    ) -> Stream<K2, V2> {
        let stream = self.add_node(name, operator, terminal, factory);
        self.graph.borrow_mut().nodes[stream.node].stores =
            stores.iter().map(|s| s.to_string()).collect();
        stream
    }

    /// Adds a processor node that reads a store it does not own: a table's (the node runs
    /// in the table's sub-topology) or a global table's.
    pub(crate) fn add_reading_node<K2, V2>(
        &self,
        name: &str,
        operator: &'static str,
        store: StoreRead<'_>,
        factory: NodeFactory,
    ) -> Stream<K2, V2> {
        let stream = self.add_node(name, operator, false, factory);
        let node = &mut self.graph.borrow_mut().nodes[stream.node];
        match store {
            StoreRead::Table(store) => node.reads = vec![store.to_string()],
            StoreRead::Global(store) => node.globals = vec![store.to_string()],
        }
        stream
    }
}
