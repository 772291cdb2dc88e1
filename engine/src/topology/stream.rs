//! The typed handle to a node's output.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;

use super::builder::Graph;

/// The records flowing out of one node, with key type `K` and value type `V`.
///
/// Operator methods (`map`, `filter`, `branch`, `to`, ...) each live beside their operator in
/// [`operators`](crate::operators). A stream may be consumed more than once: each consumer
/// sees every record (fan-out).
pub struct Stream<K, V> {
    pub(super) graph: Rc<RefCell<Graph>>,
    pub(super) node: usize,
    _marker: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Stream<K, V> {
    pub(super) fn new(graph: Rc<RefCell<Graph>>, node: usize) -> Self {
        Self {
            graph,
            node,
            _marker: PhantomData,
        }
    }

    /// The name of the node this stream comes out of.
    pub fn node_name(&self) -> String {
        self.graph.borrow().nodes[self.node].name.clone()
    }
}

impl<K, V> Clone for Stream<K, V> {
    fn clone(&self) -> Self {
        Self::new(self.graph.clone(), self.node)
    }
}
