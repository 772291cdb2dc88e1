//! sluice-state: the state a task keeps, and how it stays consistent with the offsets
//! Kafka has committed.
//!
//! A task's operators read and write a [`TransactionalStore`]: writes land in an overlay
//! that reads see, and nothing reaches the durable store underneath until the Kafka
//! transaction that carries the same writes to the store's changelog topic has committed.
//! Then the overlay goes to the store in one atomic write together with the changelog
//! offset it corresponds to (the checkpoint). So a store is always a prefix of its
//! committed changelog: after any crash, restoring the changelog from the checkpoint
//! brings it exactly up to date, and never past what Kafka committed.
//!
//! Stores:
//! * [`RocksDbStore`]: one RocksDB instance per task and store, all of a worker's
//!   instances sharing one block cache and one write-buffer manager ([`StateBudget`]), so
//!   memory is bounded per worker, not per store × partition.
//! * [`InMemoryKeyValueStore`]: for the TestDriver and for small state that is restored
//!   from its changelog at every start.
//!
//! [`WindowStore`] keeps values by key and time over any of them (join buffers, sessions);
//! a [`GlobalStore`] holds a global table's whole topic, read by every task of a worker.

mod global;
mod memory;
mod rocks;
mod store;
mod transactional;
mod window;

pub use global::{GlobalStore, PartitionStore, SharedKeyValueStore};
pub use memory::InMemoryKeyValueStore;
pub use rocks::{CHECKPOINT_FAMILY, RocksDbStore, StateBudget};
pub use store::{Entry, KeyValueStore, StoreError};
pub use transactional::TransactionalStore;
pub use window::{WindowEntry, WindowStore};
