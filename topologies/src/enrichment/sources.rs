//! Where the reference data comes from: MongoDB when `mongodb.uri` is configured, the
//! embedded JSON-lines files otherwise. Both give the same lookup types, boxed, so the
//! topology is built the same way either way.

use std::fmt;
use std::path::{Path, PathBuf};

use sluice_connectors::mongo::{MongoConfig, MongoConfigError};
use sluice_engine::lookup::BoxLookup;

use super::file_lookup::{FileLookup, ReferenceFileError};
use super::reference::{DrugReference, FormularyEntry, FormularyKey};
use super::reference_generator::{DRUGS_FILE, FORMULARY_FILE};
use super::reference_store::{drug_reference_lookup, formulary_lookup};

/// The drug reference and formulary lookups, and where they read from.
#[derive(Clone, Debug)]
pub struct ReferenceLookups {
    pub drugs: BoxLookup<String, DrugReference>,
    pub formulary: BoxLookup<FormularyKey, FormularyEntry>,
    pub source: ReferenceSource,
}

/// Where [`ReferenceLookups`] read from, for the worker's start-up log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReferenceSource {
    /// MongoDB, by its URI with credentials redacted.
    Mongo { uri: String },
    /// The embedded default: `drug_reference.jsonl` and `formulary.jsonl` in `dir`.
    Files {
        dir: PathBuf,
        drugs: usize,
        rows: usize,
    },
}

impl fmt::Display for ReferenceSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReferenceSource::Mongo { uri } => {
                write!(
                    f,
                    "reference data from MongoDB at {uri}, database reference"
                )
            }
            ReferenceSource::Files { dir, drugs, rows } => write!(
                f,
                "no mongodb.uri: reference data from the embedded files in {} ({drugs} drugs, {rows} formulary rows), for demos and tests only",
                dir.display()
            ),
        }
    }
}

/// Why the reference data cannot be reached at start.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceSourceError {
    #[error(transparent)]
    Config(#[from] MongoConfigError),
    #[error(transparent)]
    File(#[from] ReferenceFileError),
}

/// The lookups for `mongo`, or, when it is `None`, for the files `embedded_dir` holds
/// (as `sluice reference generate` writes them). MongoDB is not reached here: the driver
/// connects on the first lookup, so a MongoDB that is down at start shows as transient
/// lookup errors (the task pauses and retries), not as a worker that will not start.
/// Missing or malformed files do stop the start, naming the file and line.
pub async fn reference_lookups(
    mongo: Option<&MongoConfig>,
    embedded_dir: &Path,
) -> Result<ReferenceLookups, ReferenceSourceError> {
    if let Some(config) = mongo {
        let client = config.connect().await?;
        return Ok(ReferenceLookups {
            drugs: BoxLookup::new(drug_reference_lookup(&client)),
            formulary: BoxLookup::new(formulary_lookup(&client)),
            source: ReferenceSource::Mongo {
                uri: config.redacted_uri(),
            },
        });
    }
    let drugs = FileLookup::<DrugReference>::load(&embedded_dir.join(DRUGS_FILE))?;
    let formulary = FileLookup::<FormularyEntry>::load(&embedded_dir.join(FORMULARY_FILE))?;
    Ok(ReferenceLookups {
        source: ReferenceSource::Files {
            dir: embedded_dir.to_path_buf(),
            drugs: drugs.len(),
            rows: formulary.len(),
        },
        drugs: BoxLookup::new(drugs),
        formulary: BoxLookup::new(formulary),
    })
}

#[cfg(test)]
mod tests {
    use sluice_engine::lookup::Lookup;

    use super::*;
    use crate::enrichment::ReferenceGenerator;

    #[tokio::test]
    async fn without_mongodb_the_lookups_read_the_embedded_files() {
        let dir = std::env::temp_dir().join(format!("sluice-sources-{}", std::process::id()));
        let data = ReferenceGenerator::new(5).with_patients(10).generate();
        data.write_json_lines(&dir).unwrap();

        let lookups = reference_lookups(None, &dir).await.unwrap();
        assert_eq!(
            lookups.source,
            ReferenceSource::Files {
                dir: dir.clone(),
                drugs: data.drugs.len(),
                rows: data.formulary.len(),
            }
        );
        let drug = &data.drugs[0];
        assert_eq!(
            lookups.drugs.lookup(&drug.ndc).await,
            Ok(Some(drug.clone()))
        );
        let row = &data.formulary[0];
        let key = FormularyKey {
            plan_id: row.plan_id.clone(),
            ndc: row.ndc.clone(),
        };
        assert_eq!(lookups.formulary.lookup(&key).await, Ok(Some(row.clone())));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn with_mongodb_the_source_shows_the_uri_without_its_password() {
        let config = MongoConfig::new("mongodb://app:hunter2@db.example.org:27017").unwrap();
        let lookups = reference_lookups(Some(&config), Path::new("/nonexistent"))
            .await
            .unwrap();
        let line = lookups.source.to_string();
        assert!(line.contains("db.example.org:27017"), "{line}");
        assert!(!line.contains("hunter2"), "{line}");
    }

    #[tokio::test]
    async fn missing_embedded_files_stop_the_start_naming_the_file() {
        let e = reference_lookups(None, Path::new("/nonexistent"))
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot read /nonexistent/drug_reference.jsonl"),
            "{e}"
        );
    }
}
