//! branch: routes each record to the first named branch whose predicate accepts it.
//!
//! Predicates are tried in the order the branches were declared; a record goes to one
//! branch at most. A record no predicate accepts goes to the default branch when there is
//! one, and is otherwise dropped and counted in `sluice_records_dropped_total` with
//! `reason="unrouted"`. Every declared branch must lead somewhere: a branch with nothing
//! attached is a validation error, so a route cannot be forgotten silently.
//!
//! ```
//! use sluice_engine::{Serdes, TestDriver, TopologyBuilder};
//!
//! let builder = TopologyBuilder::new("push-routing");
//! let routes = builder
//!     .source("in", &["notifications"], Serdes::string(), Serdes::string())
//!     .branch("by-platform")
//!     .branch("android", |_k: &String, v: &String| v.starts_with("android:"))
//!     .branch("ios", |_k: &String, v: &String| v.starts_with("ios:"))
//!     .default_branch("other")
//!     .build();
//! routes.get("android").to("fcm", "push.fcm", Serdes::string(), Serdes::string());
//! routes.get("ios").to("apns", "push.apns", Serdes::string(), Serdes::string());
//! routes.get("other").to("unknown", "push.unknown", Serdes::string(), Serdes::string());
//! let mut driver = TestDriver::new(builder.build().unwrap());
//!
//! driver.pipe_raw("notifications", Some(b"1"), Some(b"ios:token")).unwrap();
//! driver.pipe_raw("notifications", Some(b"2"), Some(b"web:token")).unwrap();
//! assert_eq!(driver.read_raw("push.apns").len(), 1);
//! assert_eq!(driver.read_raw("push.fcm").len(), 0);
//! assert_eq!(driver.read_raw("push.unknown").len(), 1);
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use super::{Context, Processor, Relay};
use crate::error::ProcessError;
use crate::metrics;
use crate::processor;
use crate::record::Record;
use crate::topology::{NodeSpec, Outputs, Stream, TopologyError};

type Predicate<K, V> = Arc<dyn Fn(&K, &V) -> bool + Send + Sync>;

impl<K, V> Stream<K, V>
where
    K: Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    /// Starts a branch node named `name`; declare its branches, then call `build`.
    pub fn branch(&self, name: &str) -> BranchBuilder<K, V> {
        BranchBuilder {
            stream: self.clone(),
            name: name.to_string(),
            branches: Vec::new(),
            default: None,
        }
    }
}

/// Declares the named branches of a branch node.
pub struct BranchBuilder<K, V> {
    stream: Stream<K, V>,
    name: String,
    branches: Vec<(String, Predicate<K, V>)>,
    default: Option<String>,
}

impl<K, V> BranchBuilder<K, V>
where
    K: Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    /// A branch taking the records `predicate` accepts (and no earlier branch took).
    pub fn branch<F>(mut self, name: &str, predicate: F) -> Self
    where
        F: Fn(&K, &V) -> bool + Send + Sync + 'static,
    {
        self.branches.push((name.to_string(), Arc::new(predicate)));
        self
    }

    /// The branch taking every record that no predicate accepted.
    pub fn default_branch(mut self, name: &str) -> Self {
        self.default = Some(name.to_string());
        self
    }

    /// Adds the branch node and one output node per branch, named `<node>-<branch>`.
    pub fn build(self) -> Branches<K, V> {
        let output_name = |branch: &str| format!("{}-{branch}", self.name);
        let predicates: Arc<[Predicate<K, V>]> =
            self.branches.iter().map(|(_, p)| p.clone()).collect();
        let outputs: Arc<[Arc<str>]> = self
            .branches
            .iter()
            .map(|(branch, _)| branch)
            .chain(&self.default)
            .map(|branch| Arc::from(output_name(branch)))
            .collect();
        let has_default = self.default.is_some();
        let topology = self.stream.topology_name();
        let node = self.name.clone();
        let factory = processor::factory::<Branch<K, V>, K, V>(move || Branch {
            predicates: predicates.clone(),
            outputs: outputs.clone(),
            has_default,
            unrouted: metrics::dropped(&topology, &node, "unrouted"),
        });
        let spec = NodeSpec::processor(&self.name, "branch", factory).outputs(Outputs::Branches);
        let branch_node: Stream<K, V> = self.stream.add_node(spec);
        let names = self
            .branches
            .into_iter()
            .map(|(name, _)| name)
            .chain(self.default);
        let mut streams = HashMap::new();
        for branch in names {
            let spec = NodeSpec::processor(
                &output_name(&branch),
                "branch-output",
                Relay::<K, V>::factory(),
            )
            .outputs(branch_node.branch_outputs(&branch));
            streams.insert(branch, branch_node.add_node(spec));
        }
        Branches {
            node: branch_node,
            streams,
        }
    }
}

/// The named streams out of a branch node.
pub struct Branches<K, V> {
    node: Stream<K, V>,
    streams: HashMap<String, Stream<K, V>>,
}

impl<K, V> Branches<K, V> {
    /// The stream of the branch `name`. An unknown name is reported by `build()` of the
    /// topology, with the names that exist.
    pub fn get(&self, name: &str) -> Stream<K, V> {
        match self.streams.get(name) {
            Some(stream) => stream.clone(),
            None => {
                let mut known: Vec<String> = self.streams.keys().cloned().collect();
                known.sort();
                self.node.report(TopologyError::UnknownBranch {
                    node: self.node.node_name(),
                    branch: name.to_string(),
                    known,
                });
                self.node.clone()
            }
        }
    }
}

struct Branch<K, V> {
    predicates: Arc<[Predicate<K, V>]>,
    /// The output node of each branch, in the order of `predicates`, then the default's.
    outputs: Arc<[Arc<str>]>,
    has_default: bool,
    unrouted: ::metrics::Counter,
}

impl<K, V> Processor<K, V> for Branch<K, V>
where
    K: Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    type KeyOut = K;
    type ValueOut = V;

    fn process(
        &mut self,
        record: Record<K, V>,
        ctx: &mut Context<'_, K, V>,
    ) -> Result<(), ProcessError> {
        let taken = self
            .predicates
            .iter()
            .position(|p| p(&record.key, &record.value));
        match taken {
            Some(index) => ctx.forward_to(&self.outputs[index], record),
            None if self.has_default => {
                ctx.forward_to(&self.outputs[self.predicates.len()], record)
            }
            None => self.unrouted.increment(1),
        }
        Ok(())
    }
}
