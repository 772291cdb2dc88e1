//! Configured endpoints and signing secrets: for events that name their receiver by an
//! endpoint id and their secret by a reference, rather than carrying a URL.
//!
//! Two files, read once when a worker starts, so that a change is a restart, never a
//! half-applied state:
//!
//! * the **endpoints file** (not secret: it can live in a configuration repository):
//!
//!   ```json
//!   {"endpoints": [
//!     {"id": "acme-pharmacy", "url": "https://hooks.acme.example/rx", "secretRef": "acme",
//!      "headers": {"x-partner": "sluice"}}
//!   ]}
//!   ```
//!
//!   An id is what metrics, limits and breakers know the endpoint by (1 to 64 characters of
//!   `[A-Za-z0-9._-]`), in place of the URL's host.
//! * the **secrets file** (mounted from the platform's secret store), each reference to one
//!   `whsec_` secret, or to several while one is rotated:
//!
//!   ```json
//!   {"acme": ["whsec_…new…", "whsec_…old…"], "globex": "whsec_…"}
//!   ```
//!
//! A problem is reported with the file, the entry and the rule, never the value: URLs
//! carry tokens, and the secrets file is nothing but secrets. Even a syntax error names only
//! its line and column.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::endpoint::Endpoint;
use super::signing::Secret;

/// The configured endpoints and secrets; empty unless files were given.
#[derive(Clone, Debug, Default)]
pub struct EndpointDirectory {
    endpoints: HashMap<String, Endpoint>,
    secrets: HashMap<String, Vec<Secret>>,
}

/// Why a directory file cannot be used: the file, where, and the rule broken.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("{file}: cannot be read ({reason})", file = .file.display())]
    Unreadable { file: PathBuf, reason: String },
    #[error("{file}: not valid JSON at line {line}, column {column}", file = .file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        column: usize,
    },
    #[error("{file}: {place}: {rule}", file = .file.display())]
    Invalid {
        file: PathBuf,
        place: String,
        rule: String,
    },
}

impl DirectoryError {
    /// The file the problem is in.
    pub fn file(&self) -> &Path {
        match self {
            DirectoryError::Unreadable { file, .. }
            | DirectoryError::Syntax { file, .. }
            | DirectoryError::Invalid { file, .. } => file,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointsFile {
    endpoints: Vec<EndpointEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EndpointEntry {
    id: String,
    url: String,
    #[serde(default)]
    secret_ref: Option<String>,
    #[serde(default)]
    headers: HashMap<String, String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SecretEntry {
    One(String),
    Rotating(Vec<String>),
}

impl EndpointDirectory {
    /// Reads the files given; with neither, the directory is empty. An endpoint's
    /// `secretRef` must name an entry of the secrets file.
    pub fn from_files(
        endpoints: Option<&Path>,
        secrets: Option<&Path>,
    ) -> Result<Self, DirectoryError> {
        let mut directory = EndpointDirectory::default();
        if let Some(file) = secrets {
            let entries: HashMap<String, SecretEntry> = read_json(file)?;
            for (name, entry) in entries {
                let texts = match entry {
                    SecretEntry::One(text) => vec![text],
                    SecretEntry::Rotating(texts) => texts,
                };
                let invalid = |rule: &str| DirectoryError::Invalid {
                    file: file.to_path_buf(),
                    place: format!("secret reference {name:?}"),
                    rule: rule.to_string(),
                };
                if texts.is_empty() {
                    return Err(invalid("lists no secret"));
                }
                let parsed: Result<Vec<Secret>, _> =
                    texts.iter().map(|text| Secret::parse(text)).collect();
                let parsed = parsed
                    .map_err(|_| invalid("is not a whsec_ secret (base64 of 24 to 64 bytes)"))?;
                directory.secrets.insert(name, parsed);
            }
        }
        if let Some(file) = endpoints {
            let parsed: EndpointsFile = read_json(file)?;
            for (index, entry) in parsed.endpoints.into_iter().enumerate() {
                let invalid = |rule: String| DirectoryError::Invalid {
                    file: file.to_path_buf(),
                    place: format!("endpoint {index}"),
                    rule,
                };
                if !valid_id(&entry.id) {
                    return Err(invalid(
                        "its id must be 1 to 64 characters of [A-Za-z0-9._-]".into(),
                    ));
                }
                let place = |rule: String| DirectoryError::Invalid {
                    file: file.to_path_buf(),
                    place: format!("endpoint {:?}", entry.id),
                    rule,
                };
                if directory.endpoints.contains_key(&entry.id) {
                    return Err(place("its id is given twice".into()));
                }
                let mut endpoint = Endpoint::new(&entry.url)
                    .map_err(|e| place(e.to_string()))?
                    .with_id(entry.id.as_str());
                for (name, value) in &entry.headers {
                    endpoint = endpoint
                        .with_header(name, value)
                        .map_err(|e| place(e.to_string()))?;
                }
                if let Some(reference) = &entry.secret_ref {
                    let secrets = directory.secrets.get(reference).ok_or_else(|| {
                        place(format!(
                            "its secretRef {reference:?} is not in the secrets file"
                        ))
                    })?;
                    endpoint = endpoint.with_secrets(secrets.clone());
                }
                directory.endpoints.insert(entry.id, endpoint);
            }
        }
        Ok(directory)
    }

    /// Adds `endpoint`, known by its id: for a directory built in code.
    pub fn with_endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoints
            .insert(endpoint.id().as_str().to_string(), endpoint);
        self
    }

    /// Adds the secrets `reference` names: for a directory built in code.
    pub fn with_secrets(mut self, reference: &str, secrets: Vec<Secret>) -> Self {
        self.secrets.insert(reference.to_string(), secrets);
        self
    }

    /// The endpoint configured as `id`, with its secrets and headers.
    pub fn endpoint(&self, id: &str) -> Option<&Endpoint> {
        self.endpoints.get(id)
    }

    /// The secrets `reference` names.
    pub fn secrets(&self, reference: &str) -> Option<&[Secret]> {
        self.secrets.get(reference).map(Vec::as_slice)
    }

    /// How many endpoints are configured.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }
}

/// Ids are metric labels: short, and of characters no label escaping changes.
fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn read_json<T: serde::de::DeserializeOwned>(file: &Path) -> Result<T, DirectoryError> {
    let text = std::fs::read_to_string(file).map_err(|e| DirectoryError::Unreadable {
        file: file.to_path_buf(),
        reason: e.kind().to_string(),
    })?;
    let mut deserializer = serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let inner = e.inner();
        match inner.classify() {
            serde_json::error::Category::Data => DirectoryError::Invalid {
                file: file.to_path_buf(),
                place: match e.path().to_string().as_str() {
                    "." => "the top level".to_string(),
                    path => format!("at {path}"),
                },
                // serde's own words can quote the value ("invalid type: string \"…\""):
                // only the expected shape is said.
                rule: "does not have the expected shape (see the file format in the docs)"
                    .to_string(),
            },
            _ => DirectoryError::Syntax {
                file: file.to_path_buf(),
                line: inner.line(),
                column: inner.column(),
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sluice-directory-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn an_endpoint_is_known_by_its_id_with_its_referenced_secrets_and_headers() {
        let dir = temp_dir("ok");
        let secrets = write(
            &dir,
            "secrets.json",
            &format!(r#"{{"acme": ["{SECRET}", "{SECRET}"], "globex": "{SECRET}"}}"#),
        );
        let endpoints = write(
            &dir,
            "endpoints.json",
            r#"{"endpoints": [
                {"id": "acme-rx", "url": "https://hooks.acme.example/rx?token=T", "secretRef": "acme",
                 "headers": {"x-partner": "sluice"}},
                {"id": "plain", "url": "http://plain.example/"}
            ]}"#,
        );
        let directory = EndpointDirectory::from_files(Some(&endpoints), Some(&secrets)).unwrap();
        assert_eq!(directory.len(), 2);
        let acme = directory.endpoint("acme-rx").unwrap();
        assert_eq!(acme.id().as_str(), "acme-rx");
        assert_eq!(acme.secrets().len(), 2);
        assert_eq!(acme.headers()["x-partner"], "sluice");
        assert!(directory.endpoint("plain").unwrap().secrets().is_empty());
        assert_eq!(directory.secrets("globex").unwrap().len(), 1);
        assert!(directory.secrets("nobody").is_none());
        assert!(directory.endpoint("nobody").is_none());
    }

    #[test]
    fn a_bad_file_is_named_with_the_entry_and_rule_never_the_value() {
        let dir = temp_dir("bad");
        let secrets = write(
            &dir,
            "secrets.json",
            r#"{"acme": "whsec_NOT-A-SECRET-VALUE"}"#,
        );
        let err = EndpointDirectory::from_files(None, Some(&secrets))
            .unwrap_err()
            .to_string();
        assert!(err.contains("secret reference \"acme\""), "{err}");
        assert!(!err.contains("NOT-A-SECRET"), "{err}");

        let syntax = write(&dir, "syntax.json", "{\"acme\": \"whsec_SECRETVALUE\"\n,,}");
        let err = EndpointDirectory::from_files(None, Some(&syntax))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(!err.contains("SECRETVALUE"), "{err}");

        let shape = write(
            &dir,
            "shape.json",
            r#"{"acme": 42, "b": {"SECRETVALUE": 1}}"#,
        );
        let err = EndpointDirectory::from_files(None, Some(&shape))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("SECRETVALUE"), "{err}");

        let cases = [
            (
                r#"{"endpoints": [{"id": "a b", "url": "https://x.example/"}]}"#,
                "endpoint 0: its id must be",
            ),
            (
                r#"{"endpoints": [{"id": "a", "url": "ftp://TOKEN.example/"}]}"#,
                "endpoint \"a\": the url's scheme must be http or https",
            ),
            (
                r#"{"endpoints": [{"id": "a", "url": "https://x.example/"},
                                  {"id": "a", "url": "https://y.example/"}]}"#,
                "endpoint \"a\": its id is given twice",
            ),
            (
                r#"{"endpoints": [{"id": "a", "url": "https://x.example/", "secretRef": "gone"}]}"#,
                "endpoint \"a\": its secretRef \"gone\" is not in the secrets file",
            ),
            (
                r#"{"endpoints": [{"id": "a", "url": "https://TOKEN.example/", "colour": "red"}]}"#,
                "does not have the expected shape",
            ),
        ];
        for (text, expected) in cases {
            let file = write(&dir, "endpoints.json", text);
            let err = EndpointDirectory::from_files(Some(&file), None)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{err}");
            assert!(!err.contains("TOKEN"), "{err}");
        }
        let missing = EndpointDirectory::from_files(Some(&dir.join("absent.json")), None)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("absent.json: cannot be read"), "{missing}");
    }
}
