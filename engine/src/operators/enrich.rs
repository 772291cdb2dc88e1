//! enrich: each record joined with reference data looked up by a key it carries, through
//! an in-process cache.
//!
//! `enrich` is [`map_async`](super::map_async) specialised to lookups: the operator asks a
//! [`LookupCache`] in front of the [`Lookup`] for the record's key, then `join`s the
//! record with the answer. It has map_async's semantics (order, capacity, exactly-once,
//! failures), and three of its own:
//!
//! * **A hit costs no call.** A cache hit completes as the record reaches the operator,
//!   and when no older call holds it back (by the operator's order) the record goes on on
//!   the stream thread at once, as through a synchronous `map`: it is never in flight,
//!   never spawned, never delays a commit. Only misses run on the worker's tokio runtime.
//! * **One cache per operator, shared by its tasks.** Every task of the operator in a
//!   worker, on every stream thread, reads and fills the same cache, named after the
//!   operator (its metrics are `sluice_cache_*{cache="<operator>"}`). Its time to live,
//!   negative time to live and bound are the [`LookupCacheConfig`]'s.
//! * **Absent is an answer, not an error.** `join` gets `None` when the lookup answered
//!   that it has no such key, and when `key_of` found no key in the record; it decides what
//!   the output says then. A lookup error is never turned into `None`: a transient one
//!   (the service down) retries the record and pauses its partition, a permanent one
//!   follows the topology's error policy.
//!
//! ```
//! use sluice_engine::lookup::{LookupCacheConfig, StaticLookup};
//! use sluice_engine::operators::AsyncOptions;
//! use sluice_engine::{Serdes, TestDriver, TopologyBuilder};
//!
//! let drugs: StaticLookup<String, String> =
//!     [("00071015523".to_string(), "atorvastatin".to_string())].into_iter().collect();
//! let builder = TopologyBuilder::new("orders");
//! builder
//!     .source("in", &["orders"], Serdes::string(), Serdes::string())
//!     .enrich(
//!         "drug-reference",
//!         drugs,
//!         LookupCacheConfig::default(),
//!         AsyncOptions::new(),
//!         |order| Some(order.value.clone()), // the order's value is its NDC
//!         |order, drug| {
//!             let name = drug.unwrap_or_else(|| "unknown NDC".to_string());
//!             Ok(order.with_value(name))
//!         },
//!     )
//!     .to("out", "orders.enriched", Serdes::string(), Serdes::string());
//! let mut driver = TestDriver::new(builder.build().unwrap());
//! driver.pipe_raw("orders", Some(b"order-1"), Some(b"00071015523")).unwrap();
//! driver.pipe_raw("orders", Some(b"order-2"), Some(b"99999999999")).unwrap();
//!
//! let out = driver.read("orders.enriched", &Serdes::string(), &Serdes::string()).unwrap();
//! assert_eq!(out[0].value, "atorvastatin");
//! assert_eq!(out[1].value, "unknown NDC");
//! ```

use std::hash::Hash;
use std::sync::Arc;

use crate::error::ProcessError;
use crate::lookup::{Lookup, LookupCache, LookupCacheConfig};
use crate::operators::AsyncOptions;
use crate::record::Record;
use crate::topology::Stream;

impl<K, V> Stream<K, V>
where
    K: Clone + Hash + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Each record joined with what `lookup` has for the key `key_of` finds in it, through
    /// a cache configured by `cache`. `join` gets the record and the answer (`None`: no
    /// key in the record, or none in the reference data). See the [module docs](self).
    pub fn enrich<L, V2, KeyOf, Join>(
        &self,
        name: &str,
        lookup: L,
        cache: LookupCacheConfig<L::Key, L::Value>,
        options: AsyncOptions,
        key_of: KeyOf,
        join: Join,
    ) -> Stream<K, V2>
    where
        L: Lookup,
        V2: Clone + Send + 'static,
        KeyOf: Fn(&Record<K, V>) -> Option<L::Key> + Send + Sync + 'static,
        Join: Fn(Record<K, V>, Option<L::Value>) -> Result<Record<K, V2>, ProcessError>
            + Send
            + Sync
            + 'static,
    {
        let cache = LookupCache::new(name, lookup, cache);
        let join = Arc::new(join);
        self.add_async_node(name, "enrich", options, move |record, _call, retry| {
            let key = key_of(&record);
            let (cache, join) = (cache.clone(), join.clone());
            async move {
                let found = match &key {
                    // Only the lookup is retried: the record waits, uncopied.
                    Some(key) => {
                        let cache = &cache;
                        retry
                            .run(|| async move { cache.get(key).await.map_err(ProcessError::from) })
                            .await?
                    }
                    None => None,
                };
                join(record, found)
            }
        })
    }
}
