//! [`MongoLookup`]: find one document by an indexed key, as a `Lookup`.

use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;

use mongodb::Collection;
use mongodb::bson::{self, Bson, Document, doc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sluice_engine::lookup::{Lookup, LookupError};

use super::{MongoClient, MongoError, describe_field_error};

type Filter<K> = Arc<dyn Fn(&K) -> Result<Document, MongoError> + Send + Sync>;

/// Reference data in one MongoDB collection, looked up by key: the key becomes an equality
/// filter (which an index should serve), the first matching document is deserialized into
/// `V`. See the [module docs](super) for how failures are classified.
///
/// Two ways to turn a key into a filter:
/// * [`MongoLookup::by_field`]: a scalar key compared with one field
///   (`{ndc: "00071015523"}`);
/// * [`MongoLookup::by_key_fields`]: a struct key whose serialized fields are the filter
///   (a `FormularyKey { plan_id, ndc }` serialized camelCase is `{planId: ..., ndc: ...}`).
///
/// `_id` is not fetched, so `V` need not have it; other fields `V` does not name are
/// ignored unless `V` denies unknown fields.
pub struct MongoLookup<K, V> {
    client: MongoClient,
    collection: Collection<Document>,
    /// "database.collection", for messages.
    namespace: Arc<str>,
    filter: Filter<K>,
    value: PhantomData<fn() -> V>,
}

impl<K, V> Clone for MongoLookup<K, V> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            collection: self.collection.clone(),
            namespace: Arc::clone(&self.namespace),
            filter: Arc::clone(&self.filter),
            value: PhantomData,
        }
    }
}

impl<K, V> fmt::Debug for MongoLookup<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoLookup")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl<K, V> MongoLookup<K, V>
where
    K: Serialize,
{
    /// Looks `key` up as `{field: key}` in `database.collection`.
    pub fn by_field(client: &MongoClient, database: &str, collection: &str, field: &str) -> Self {
        let field = field.to_string();
        Self::with_filter(client, database, collection, move |key: &K| {
            let value = bson::to_bson(key).map_err(|_| not_serializable())?;
            Ok(doc! { field.as_str(): value })
        })
    }

    /// Looks `key` up with its serialized fields as the filter: `K` must serialize as a
    /// struct (a map), each field compared for equality.
    pub fn by_key_fields(client: &MongoClient, database: &str, collection: &str) -> Self {
        Self::with_filter(client, database, collection, |key: &K| {
            bson::to_document(key).map_err(|_| not_serializable())
        })
    }
}

impl<K, V> MongoLookup<K, V> {
    /// Looks `key` up with the filter `filter` builds from it.
    pub fn with_filter(
        client: &MongoClient,
        database: &str,
        collection: &str,
        filter: impl Fn(&K) -> Result<Document, MongoError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            client: client.clone(),
            collection: client.collection(database, collection),
            namespace: format!("{database}.{collection}").into(),
            filter: Arc::new(filter),
            value: PhantomData,
        }
    }

    /// "database.collection", as in the errors.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

fn not_serializable() -> MongoError {
    MongoError::permanent("the key does not serialize to a BSON filter")
}

impl<K, V> MongoLookup<K, V>
where
    V: DeserializeOwned,
{
    async fn find(&self, key: &K) -> Result<Option<V>, MongoError> {
        let filter = (self.filter)(key).map_err(|e| e.context(&self.namespace))?;
        let found = self
            .client
            .request(
                &self.namespace,
                self.collection
                    .find_one(filter)
                    .projection(doc! { "_id": 0 }),
            )
            .await?;
        let Some(document) = found else {
            return Ok(None);
        };
        // Through serde_path_to_error: the error names the field that did not fit, and
        // `describe_field_error` drops the value serde's own message would quote.
        let deserializer = bson::Deserializer::new(Bson::Document(document));
        serde_path_to_error::deserialize(deserializer)
            .map(Some)
            .map_err(|e| {
                let reason = describe_field_error(&e.path().to_string(), &e.inner().to_string());
                MongoError::permanent(format!(
                    "a document does not match the expected shape: {reason}"
                ))
                .context(&self.namespace)
            })
    }
}

impl<K, V> Lookup for MongoLookup<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: DeserializeOwned + Clone + Send + Sync + 'static,
{
    type Key = K;
    type Value = V;

    async fn lookup(&self, key: &K) -> Result<Option<V>, LookupError> {
        self.find(key).await.map_err(LookupError::from)
    }
}
