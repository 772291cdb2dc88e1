//! Reference data from JSON-lines files: the embedded default when no `mongodb.uri` is
//! configured, served through the same [`Lookup`] as MongoDB.

use std::fmt;
use std::fs::File;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use sluice_engine::lookup::{Lookup, LookupError, StaticLookup};

use super::reference::ReferenceRecord;

/// A JSON-lines file that could not be read. Names the file, the line and the field,
/// never a value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceFileError {
    #[error("cannot read {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{path} line {line}: not a valid {kind}: {reason}")]
    Record {
        path: PathBuf,
        line: usize,
        kind: &'static str,
        reason: String,
    },
}

/// Reads `path`: one JSON record per line, blank lines skipped, each checked
/// ([`ReferenceRecord::check`]).
pub fn read_json_lines<R: ReferenceRecord>(path: &Path) -> Result<Vec<R>, ReferenceFileError> {
    let io = |e: std::io::Error| ReferenceFileError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let reader = BufReader::new(File::open(path).map_err(io)?);
    let mut records = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| ReferenceFileError::Record {
            path: path.to_path_buf(),
            line: index + 1,
            kind: R::KIND,
            reason,
        };
        // serde_path_to_error names the field; `describe_field_error` drops the value
        // serde_json's own message would quote.
        let mut deserializer = serde_json::Deserializer::from_str(&line);
        let record: R = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let inner = e.inner();
            if inner.is_syntax() || inner.is_eof() {
                bad(format!("invalid JSON at column {}", inner.column()))
            } else {
                bad(describe_field_error(
                    &e.path().to_string(),
                    &inner.to_string(),
                ))
            }
        })?;
        record.check().map_err(bad)?;
        records.push(record);
    }
    Ok(records)
}

/// The message of a serde error without the value it may quote: serde_json's
/// "invalid type: string \"x\", expected u8 at line 1 column 9" keeps only "expected u8".
fn describe_field_error(path: &str, message: &str) -> String {
    // serde_json appends the position; the caller reports the line itself.
    let message = message
        .rsplit_once(" at line ")
        .map_or(message, |(head, _)| head);
    let field = if path.is_empty() || path == "." {
        "the record".to_string()
    } else {
        format!("field `{path}`")
    };
    if message.starts_with("missing field") {
        return format!("{field}: {message}");
    }
    match message.split_once(", expected ") {
        Some((_, expected)) => format!("{field}: wrong type or value, expected {expected}"),
        None => format!("{field}: wrong type or value"),
    }
}

/// Reference records from a JSON-lines file, held in memory and looked up by their key
/// ([`ReferenceRecord::key`]). When a key occurs twice the later line wins, as when the
/// same file is upserted into MongoDB. Cloning shares the records.
///
/// ```no_run
/// use sluice_topologies::enrichment::{DrugReference, FileLookup};
///
/// let drugs = FileLookup::<DrugReference>::load("reference/drug_reference.jsonl".as_ref())?;
/// println!("{} drugs", drugs.len());
/// # Ok::<(), sluice_topologies::enrichment::ReferenceFileError>(())
/// ```
pub struct FileLookup<R: ReferenceRecord> {
    records: StaticLookup<R::Key, R>,
}

impl<R: ReferenceRecord> FileLookup<R> {
    pub fn load(path: &Path) -> Result<Self, ReferenceFileError> {
        Ok(Self::from_records(read_json_lines::<R>(path)?))
    }

    pub fn from_records(records: impl IntoIterator<Item = R>) -> Self {
        Self {
            records: records.into_iter().map(|r| (r.key(), r)).collect(),
        }
    }

    /// How many distinct keys it holds.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

impl<R: ReferenceRecord> Clone for FileLookup<R> {
    fn clone(&self) -> Self {
        Self {
            records: self.records.clone(),
        }
    }
}

impl<R: ReferenceRecord> fmt::Debug for FileLookup<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileLookup")
            .field("kind", &R::KIND)
            .field("len", &self.len())
            .finish()
    }
}

impl<R: ReferenceRecord> Lookup for FileLookup<R> {
    type Key = R::Key;
    type Value = R;

    fn lookup(&self, key: &R::Key) -> impl Future<Output = Result<Option<R>, LookupError>> + Send {
        self.records.lookup(key)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::enrichment::reference::{FormularyEntry, FormularyKey};

    fn file(lines: &[&str]) -> tempfile_like::TempFile {
        let file = tempfile_like::TempFile::new();
        let mut f = File::create(&file.path).unwrap();
        for line in lines {
            writeln!(f, "{line}").unwrap();
        }
        file
    }

    /// A file removed on drop, without a dependency for it.
    mod tempfile_like {
        use std::path::PathBuf;
        use std::sync::atomic::{AtomicU64, Ordering};

        pub struct TempFile {
            pub path: PathBuf,
        }

        impl TempFile {
            pub fn new() -> Self {
                static NEXT: AtomicU64 = AtomicU64::new(0);
                let n = NEXT.fetch_add(1, Ordering::Relaxed);
                let path = std::env::temp_dir().join(format!(
                    "sluice-file-lookup-{}-{n}.jsonl",
                    std::process::id()
                ));
                Self { path }
            }
        }

        impl Drop for TempFile {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }

    const ROW: &str = r#"{"planId":"P1","ndc":"60214410090","tier":1,"status":"preferred","priorAuthRequired":false,"stepTherapy":false,"quantityLimit":{"quantity":30,"days":30}}"#;

    #[tokio::test]
    async fn finds_by_compound_key_and_answers_none_for_an_absent_one() {
        let f = file(&[
            ROW,
            "",
            &ROW.replace("P1", "P2").replace("\"tier\":1", "\"tier\":3"),
        ]);
        let formulary = FileLookup::<FormularyEntry>::load(&f.path).unwrap();
        assert_eq!(formulary.len(), 2);
        let key = |plan: &str| FormularyKey {
            plan_id: plan.into(),
            ndc: "60214410090".into(),
        };
        let p2 = formulary.lookup(&key("P2")).await.unwrap().unwrap();
        assert_eq!(p2.tier, Some(3));
        assert_eq!(formulary.lookup(&key("P3")).await, Ok(None));
    }

    #[tokio::test]
    async fn the_later_of_two_lines_with_one_key_wins() {
        let f = file(&[ROW, &ROW.replace("\"tier\":1", "\"tier\":2")]);
        let formulary = FileLookup::<FormularyEntry>::load(&f.path).unwrap();
        assert_eq!(formulary.len(), 1);
        let key = FormularyKey {
            plan_id: "P1".into(),
            ndc: "60214410090".into(),
        };
        let row = formulary.lookup(&key).await.unwrap().unwrap();
        assert_eq!(row.tier, Some(2));
    }

    #[test]
    fn a_bad_line_is_reported_by_line_and_field_without_its_value() {
        let f = file(&[ROW, &ROW.replace("\"tier\":1", "\"tier\":\"pt-00042\"")]);
        let e = FileLookup::<FormularyEntry>::load(&f.path).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("line 2: not a valid formulary row"), "{text}");
        assert!(text.contains("field `tier`"), "{text}");
        assert!(!text.contains("pt-00042"), "{text}");

        let f = file(&[&ROW.replace("\"ndc\":\"60214410090\"", "\"ndc\":\"6021-4410-90\"")]);
        let text = FileLookup::<FormularyEntry>::load(&f.path)
            .unwrap_err()
            .to_string();
        assert!(
            text.ends_with("ndc must be an 11-digit NDC without hyphens"),
            "{text}"
        );
        assert!(!text.contains("6021"), "{text}");

        let f = file(&["{\"planId\": "]);
        let text = FileLookup::<FormularyEntry>::load(&f.path)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("line 1: not a valid formulary row: invalid JSON"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let e = FileLookup::<FormularyEntry>::load(Path::new("/nonexistent/formulary.jsonl"))
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot read /nonexistent/formulary.jsonl"),
            "{e}"
        );
    }
}
