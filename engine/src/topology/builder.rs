//! The topology builder and the validation it runs on `build`.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;

use super::{
    GlobalTableDef, NodeDef, NodeKind, NodeSpec, Outputs, StoreDef, SubTopology, Topology,
    TopologyDef, TopologyError, valid_name,
};
use crate::policy::ErrorPolicy;
use crate::topology::Stream;

/// The graph under construction, shared by the builder and every stream handle.
pub(super) struct Graph {
    pub(super) name: String,
    pub(super) nodes: Vec<NodeDef>,
    /// Problems found while adding nodes; reported together by `build`.
    pub(super) errors: Vec<TopologyError>,
    pub(super) policy: ErrorPolicy,
    pub(super) globals: Vec<GlobalTableDef>,
    /// Names of the internal topics (before the application id is known).
    pub(super) internal_topics: BTreeSet<String>,
    /// Topic -> the header of its records' due time (`hold_until_due`).
    pub(super) due_headers: std::collections::BTreeMap<String, String>,
}

impl Graph {
    /// Adds a node under `parents` and returns its index. Problems with the node's own
    /// names are recorded here, in the order they are met; the rest wait for `build`.
    fn add(&mut self, spec: NodeSpec, parents: &[usize]) -> usize {
        let NodeSpec {
            name,
            kind,
            factory,
            stores,
            reads,
            globals,
            asynchronous,
            dead_letters,
        } = spec;
        match &kind {
            // An internal topic is checked where it is written (its sink).
            NodeKind::Source { topics, .. } => {
                for topic in topics {
                    if !valid_name(topic) && !self.internal_topics.contains(topic) {
                        self.errors.push(TopologyError::InvalidTopic {
                            node: name.clone(),
                            topic: topic.clone(),
                        });
                    }
                }
            }
            NodeKind::Sink {
                topic,
                retarget: Some(_),
            } => {
                self.internal_topics.insert(topic.clone());
            }
            _ => {}
        }
        if !valid_name(&name) {
            self.errors
                .push(TopologyError::InvalidName { name: name.clone() });
        } else if self.nodes.iter().any(|n| n.name == name) {
            self.errors
                .push(TopologyError::DuplicateName { name: name.clone() });
        }
        let index = self.nodes.len();
        for &p in parents {
            self.nodes[p].children.push(index);
        }
        self.nodes.push(NodeDef {
            name,
            kind,
            factory,
            parents: parents.to_vec(),
            children: Vec::new(),
            stores,
            reads,
            globals,
            asynchronous,
            dead_letters,
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
    pub(super) graph: Rc<RefCell<Graph>>,
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
                due_headers: Default::default(),
            })),
        }
    }

    /// What happens to a record that cannot be decoded or processed.
    pub fn error_policy(&self, policy: ErrorPolicy) -> &Self {
        self.graph.borrow_mut().policy = policy;
        self
    }

    /// Adds a node fed by no stream (a source): the narrow way in for operators.
    pub(crate) fn add_node<K, V>(&self, spec: NodeSpec) -> Stream<K, V> {
        let node = self.graph.borrow_mut().add(spec, &[]);
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
        check_state_before_async(&graph.nodes, &mut errors);
        let subtopologies = split_subtopologies(&graph.nodes);
        check_loops(&graph.nodes, &subtopologies, &mut errors);
        let stores = collect_stores(&graph.nodes, &subtopologies, &mut errors);
        validate_globals(&graph, &stores, &mut errors);
        super::due::validate(&graph, &mut errors);
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
                    due_headers: graph.due_headers.clone(),
                }),
            }),
            1 => Err(errors.remove(0)),
            _ => Err(TopologyError::Many(errors)),
        }
    }
}

/// An async operator's input is done only once its call completes, and a commit in
/// between stops at it: state written for the input before the call would be committed
/// and written again when the input is read again. So no node upstream of an async
/// operator, on edges within its sub-topology, may own a store. (A repartition topic
/// ends a sub-topology: state before it commits with the record it writes.)
fn check_state_before_async(nodes: &[NodeDef], errors: &mut Vec<TopologyError>) {
    for node in nodes.iter().filter(|n| n.asynchronous) {
        let mut stack = node.parents.clone();
        let mut seen = std::collections::HashSet::new();
        while let Some(index) = stack.pop() {
            if !seen.insert(index) {
                continue;
            }
            let ancestor = &nodes[index];
            if !ancestor.stores.is_empty() {
                errors.push(TopologyError::StateBeforeAsync {
                    node: node.name.clone(),
                    store_owner: ancestor.name.clone(),
                });
            }
            stack.extend(&ancestor.parents);
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
            NodeKind::Processor { outputs, .. } if node.children.is_empty() => match outputs {
                Outputs::Required => errors.push(TopologyError::Dangling {
                    node: node.name.clone(),
                }),
                Outputs::Optional => {}
                Outputs::Branches => errors.push(TopologyError::EmptyBranch {
                    node: node.name.clone(),
                }),
                Outputs::Branch { of, name } => errors.push(TopologyError::BranchGoesNowhere {
                    node: graph.nodes[*of].name.clone(),
                    branch: name.clone(),
                }),
            },
            NodeKind::Processor { .. } => {}
            NodeKind::Sink { topic, .. } => {
                if !valid_name(topic) {
                    errors.push(TopologyError::InvalidTopic {
                        node: node.name.clone(),
                        topic: topic.clone(),
                    });
                }
                if node.dead_letters && dlq != Some(topic.as_str()) {
                    errors.push(TopologyError::NotTheDeadLetterTopic {
                        node: node.name.clone(),
                        topic: topic.clone(),
                        expected: dlq.map(str::to_string),
                    });
                } else if !node.dead_letters && dlq == Some(topic.as_str()) {
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
    /// Adds a node fed by this stream: the narrow way in for operators.
    pub(crate) fn add_node<K2, V2>(&self, spec: NodeSpec) -> Stream<K2, V2> {
        let node = self.graph.borrow_mut().add(spec, &[self.node]);
        Stream::new(self.graph.clone(), node)
    }

    /// Adds a node fed by this stream and by `other` (merge, a stream-stream join). A
    /// stream of another builder cannot feed it: `build` reports that.
    pub(crate) fn add_node_fed_by<K2, V2>(
        &self,
        other: &Stream<K, V>,
        spec: NodeSpec,
    ) -> Stream<K2, V2> {
        let name = spec.name.clone();
        let added: Stream<K2, V2> = self.add_node(spec);
        let mut graph = self.graph.borrow_mut();
        if Rc::ptr_eq(&self.graph, &other.graph) {
            graph.nodes[other.node].children.push(added.node);
            graph.nodes[added.node].parents.push(other.node);
        } else {
            graph
                .errors
                .push(TopologyError::ForeignStream { node: name });
        }
        drop(graph);
        added
    }

    /// The outputs of a branch node's branch `branch`: a spec for a node fed by it.
    pub(crate) fn branch_outputs(&self, branch: &str) -> Outputs {
        Outputs::Branch {
            of: self.node,
            name: branch.to_string(),
        }
    }

    /// Records a problem `build` reports, found by an operator while it was wired.
    pub(crate) fn report(&self, error: TopologyError) {
        self.graph.borrow_mut().errors.push(error);
    }

    /// The builder of the topology the stream belongs to.
    pub(crate) fn builder(&self) -> TopologyBuilder {
        TopologyBuilder {
            graph: self.graph.clone(),
        }
    }

    /// The name of the topology the stream belongs to (metrics are labelled with it).
    pub(crate) fn topology_name(&self) -> String {
        self.graph.borrow().name.clone()
    }
}
