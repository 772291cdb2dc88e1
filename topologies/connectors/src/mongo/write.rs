//! Loading reference data: upserts in batches, and the unique indexes lookups rely on.

use mongodb::IndexModel;
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::options::IndexOptions;
use serde::Serialize;

use super::{MongoClient, MongoError};

/// Documents per `update` command: well under the server's 100,000 statements and 48 MB
/// per message for reference documents of a few hundred bytes, and few round trips.
const BATCH: usize = 1_000;

/// What [`MongoClient::upsert_all`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpsertSummary {
    /// Documents that were new.
    pub inserted: u64,
    /// Documents that existed (replaced, whether or not they changed).
    pub matched: u64,
    /// Of the matched, those whose content changed.
    pub modified: u64,
}

impl UpsertSummary {
    /// Every document written, new or replaced.
    pub fn total(&self) -> u64 {
        self.inserted + self.matched
    }
}

impl MongoClient {
    /// Writes each of `documents` into `database.collection`, replacing the document with
    /// the same `key_fields` or inserting it: loading the same data twice leaves the same
    /// collection. Sent as `update` commands of up to 1,000 upserts each (one round trip
    /// per batch, rather than one per document, on every server version); within a batch
    /// the server applies them in order and stops at the first failure.
    ///
    /// # Errors
    /// A document that does not serialize, or lacks a key field: permanent, naming its
    /// position in `documents`. A server that refuses a write: permanent, with the
    /// position, the server's code and code name (not its message, which may quote the
    /// key). MongoDB unreachable: transient. Batches before the failing one stay written.
    pub async fn upsert_all<T: Serialize>(
        &self,
        database: &str,
        collection: &str,
        documents: impl IntoIterator<Item = T>,
        key_fields: &[&str],
    ) -> Result<UpsertSummary, MongoError> {
        let namespace = format!("{database}.{collection}");
        let db = self.client.database(database);
        let mut summary = UpsertSummary::default();
        let mut batch: Vec<Document> = Vec::with_capacity(BATCH);
        let mut first_index = 0;
        for (index, document) in documents.into_iter().enumerate() {
            let document = bson::to_document(&document).map_err(|_| {
                MongoError::permanent(format!("document {index} does not serialize to BSON"))
                    .context(&namespace)
            })?;
            let mut filter = Document::new();
            for field in key_fields {
                let value = document.get(*field).ok_or_else(|| {
                    MongoError::permanent(format!("document {index} has no key field `{field}`"))
                        .context(&namespace)
                })?;
                filter.insert(*field, value.clone());
            }
            batch.push(doc! { "q": filter, "u": document, "upsert": true });
            if batch.len() == BATCH {
                let statements = std::mem::take(&mut batch);
                self.update_batch(
                    &db,
                    collection,
                    &namespace,
                    statements,
                    first_index,
                    &mut summary,
                )
                .await?;
                first_index = index + 1;
            }
        }
        if !batch.is_empty() {
            self.update_batch(
                &db,
                collection,
                &namespace,
                batch,
                first_index,
                &mut summary,
            )
            .await?;
        }
        Ok(summary)
    }

    async fn update_batch(
        &self,
        db: &mongodb::Database,
        collection: &str,
        namespace: &str,
        statements: Vec<Document>,
        first_index: usize,
        summary: &mut UpsertSummary,
    ) -> Result<(), MongoError> {
        let count = statements.len() as u64;
        let command = doc! { "update": collection, "updates": statements, "ordered": true };
        let reply = self.request(namespace, db.run_command(command)).await?;
        if let Ok(errors) = reply.get_array("writeErrors")
            && let Some(Bson::Document(first)) = errors.first()
        {
            let at = number(first, "index").unwrap_or(0) as usize + first_index;
            let code = number(first, "code").unwrap_or(0);
            let name = first.get_str("codeName").unwrap_or("");
            return Err(MongoError::permanent(format!(
                "document {at} was refused: server error {code} ({name})"
            ))
            .context(namespace));
        }
        let upserted = reply.get_array("upserted").map_or(0, |a| a.len() as u64);
        let n = number(&reply, "n").unwrap_or(count as i64) as u64;
        summary.inserted += upserted;
        summary.matched += n.saturating_sub(upserted);
        summary.modified += number(&reply, "nModified").unwrap_or(0) as u64;
        Ok(())
    }

    /// Creates a unique index named `name` on `fields` (ascending) of
    /// `database.collection`, unless an identical one exists: idempotent, so every load
    /// makes sure of it. A unique index both serves the lookups and keeps two documents
    /// from claiming one key.
    pub async fn ensure_unique_index(
        &self,
        database: &str,
        collection: &str,
        fields: &[&str],
        name: &str,
    ) -> Result<(), MongoError> {
        let namespace = format!("{database}.{collection}");
        let mut keys = Document::new();
        for field in fields {
            keys.insert(*field, 1);
        }
        let index = IndexModel::builder()
            .keys(keys)
            .options(
                IndexOptions::builder()
                    .unique(true)
                    .name(name.to_string())
                    .build(),
            )
            .build();
        let coll = self.collection(database, collection);
        self.request(&namespace, coll.create_index(index)).await?;
        Ok(())
    }

    /// The names of the indexes of `database.collection`.
    pub async fn index_names(
        &self,
        database: &str,
        collection: &str,
    ) -> Result<Vec<String>, MongoError> {
        let namespace = format!("{database}.{collection}");
        let coll = self.collection(database, collection);
        self.request(&namespace, coll.list_index_names()).await
    }

    /// How many documents `database.collection` holds.
    pub async fn count(&self, database: &str, collection: &str) -> Result<u64, MongoError> {
        let namespace = format!("{database}.{collection}");
        let coll = self.collection(database, collection);
        self.request(&namespace, coll.count_documents(doc! {}))
            .await
    }
}

/// A number field of a reply, whichever integer or double type the server chose.
fn number(document: &Document, field: &str) -> Option<i64> {
    match document.get(field)? {
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Int64(n) => Some(*n),
        Bson::Double(n) => Some(*n as i64),
        _ => None,
    }
}
