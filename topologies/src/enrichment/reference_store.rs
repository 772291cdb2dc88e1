//! Reference data in MongoDB: the lookups enrichment uses, and the load that fills the
//! collections from JSON-lines files (`sluice reference load`).

use std::path::Path;

use sluice_connectors::mongo::{MongoClient, MongoError, MongoLookup, UpsertSummary};

use super::file_lookup::{ReferenceFileError, read_json_lines};
use super::reference::{
    DATABASE, DRUG_COLLECTION, DrugReference, FORMULARY_COLLECTION, FormularyEntry, FormularyKey,
    ReferenceRecord,
};

/// The unique index lookups by NDC use.
pub const DRUG_INDEX: &str = "ndc_1";
/// The unique index lookups by (plan, NDC) use.
pub const FORMULARY_INDEX: &str = "planId_1_ndc_1";

/// Drug reference by 11-digit NDC from `reference.drug_reference`.
pub fn drug_reference_lookup(client: &MongoClient) -> MongoLookup<String, DrugReference> {
    MongoLookup::by_field(client, DATABASE, DRUG_COLLECTION, "ndc")
}

/// Formulary rows by (plan id, NDC) from `reference.formulary`.
pub fn formulary_lookup(client: &MongoClient) -> MongoLookup<FormularyKey, FormularyEntry> {
    MongoLookup::by_key_fields(client, DATABASE, FORMULARY_COLLECTION)
}

/// Why a load stopped.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    File(#[from] ReferenceFileError),
    #[error(transparent)]
    Mongo(#[from] MongoError),
}

/// What [`load_reference`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadReport {
    pub drugs: UpsertSummary,
    pub formulary: UpsertSummary,
}

/// Loads drug reference and formulary JSON-lines files into `reference.drug_reference`
/// and `reference.formulary`: creates their unique indexes first (a duplicate key in
/// the data is then refused by the server, not stored twice), then upserts every record
/// by its key. Both files are read and checked before anything is written, so a bad line
/// leaves MongoDB untouched. Running it again with the same files changes nothing.
pub async fn load_reference(
    client: &MongoClient,
    drugs: &Path,
    formulary: &Path,
) -> Result<LoadReport, LoadError> {
    let drugs = read_json_lines::<DrugReference>(drugs)?;
    let formulary = read_json_lines::<FormularyEntry>(formulary)?;
    Ok(LoadReport {
        drugs: load(client, DRUG_COLLECTION, DRUG_INDEX, drugs).await?,
        formulary: load(client, FORMULARY_COLLECTION, FORMULARY_INDEX, formulary).await?,
    })
}

async fn load<R: ReferenceRecord>(
    client: &MongoClient,
    collection: &str,
    index: &str,
    records: Vec<R>,
) -> Result<UpsertSummary, MongoError> {
    client
        .ensure_unique_index(DATABASE, collection, R::KEY_FIELDS, index)
        .await?;
    client
        .upsert_all(DATABASE, collection, records, R::KEY_FIELDS)
        .await
}
