//! Records held until due: a topic whose records carry their due time in a header (a
//! retry tier: `webhook-due-at`, epoch milliseconds) is read no faster than its records
//! fall due.
//!
//! The topology only declares which topics and which header
//! ([`TopologyBuilder::hold_until_due`]); holding is the runner's: the worker pauses a
//! partition whose next record is not due and resumes it, at that record, when it is (the
//! other partitions and topics go on meanwhile, and no offset is committed past the held
//! record); the TestDriver keeps such records until its wall clock reaches them. A record
//! without the header, or with one that is not a whole number, is due at once: a hold
//! that can never end would stop the partition for good.

use super::builder::Graph;
use super::{NodeKind, Topology, TopologyBuilder, TopologyError};
use crate::record::Headers;

impl TopologyBuilder {
    /// Holds the records of `topics` until the time (epoch milliseconds) in their header
    /// `header`: a record is processed no earlier than that, and the records after it on
    /// its partition wait behind it. Every topic must be read by a source of this builder.
    ///
    /// ```
    /// use sluice_engine::{Serdes, TopologyBuilder};
    ///
    /// let builder = TopologyBuilder::new("retries");
    /// builder
    ///     .source("tier-1", &["jobs.retry-1"], Serdes::string(), Serdes::string())
    ///     .to("out", "jobs.done", Serdes::string(), Serdes::string());
    /// builder.hold_until_due(&["jobs.retry-1"], "due-at");
    /// let topology = builder.build().unwrap();
    /// assert_eq!(topology.due_time_header("jobs.retry-1"), Some("due-at"));
    /// assert_eq!(topology.due_time_header("jobs.done"), None);
    /// ```
    pub fn hold_until_due(&self, topics: &[&str], header: &str) -> &Self {
        let mut graph = self.graph.borrow_mut();
        for topic in topics {
            graph
                .due_headers
                .insert(topic.to_string(), header.to_string());
        }
        self
    }
}

impl Topology {
    /// The header holding the due time of `topic`'s records, when they are held until due.
    pub fn due_time_header(&self, topic: &str) -> Option<&str> {
        self.def.due_headers.get(topic).map(String::as_str)
    }
}

/// The due time (epoch milliseconds) a record's header `header` gives; `None` (due at
/// once) when the header is absent or not a whole number.
pub fn due_at(headers: &Headers, header: &str) -> Option<i64> {
    headers.get_str(header)?.trim().parse().ok()
}

/// Every held topic must be one a source reads: holding a topic nothing reads is a typo.
pub(super) fn validate(graph: &Graph, errors: &mut Vec<TopologyError>) {
    for topic in graph.due_headers.keys() {
        let read = graph.nodes.iter().any(|n| match &n.kind {
            NodeKind::Source { topics, .. } => topics.contains(topic),
            _ => false,
        });
        if !read {
            errors.push(TopologyError::HeldTopicNotRead {
                topic: topic.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_due_time_is_a_whole_number_of_epoch_milliseconds() {
        let mut headers = Headers::new();
        assert_eq!(due_at(&headers, "due-at"), None);
        headers.insert("due-at", "1767225600123");
        assert_eq!(due_at(&headers, "due-at"), Some(1_767_225_600_123));
        headers.insert("due-at", "soon");
        assert_eq!(due_at(&headers, "due-at"), None, "unreadable: due at once");
    }
}
