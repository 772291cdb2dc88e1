//! A client of the Confluent Schema Registry REST API, for Avro schemas.
//!
//! The registry gives every distinct schema a global id and keeps, per *subject* (usually
//! `<topic>-value` or `<topic>-key`), a list of versions that must stay compatible with each
//! other under the subject's compatibility rule. Records in the Confluent wire format carry
//! only the id of the schema that wrote them; [`AvroSerde`](super::AvroSerde) asks this client
//! for the schema behind an id it has not seen yet.
//!
//! # Endpoints
//!
//! | method | endpoint | call |
//! |---|---|---|
//! | `POST` | `/subjects/{subject}/versions` | [`register`](SchemaRegistryClient::register) |
//! | `POST` | `/subjects/{subject}` | [`lookup`](SchemaRegistryClient::lookup) |
//! | `GET` | `/schemas/ids/{id}` | [`schema_by_id`](SchemaRegistryClient::schema_by_id) |
//! | `GET` | `/subjects/{subject}/versions/latest` | [`latest`](SchemaRegistryClient::latest) |
//! | `POST` | `/compatibility/subjects/{subject}/versions/latest` | [`check_compatibility`](SchemaRegistryClient::check_compatibility) |
//!
//! Requests and responses use the content type `application/vnd.schemaregistry.v1+json`.
//! Subject names are percent-escaped as one path segment, so a subject may contain `/`, `?`
//! or spaces.
//!
//! # What is sent as the schema
//!
//! The schema's full JSON, defaults and docs included, not its Parsing Canonical Form: the
//! canonical form strips field defaults, and the defaults are what makes adding a field a
//! compatible change and what a reader fills in for a field an older writer did not have.
//!
//! # Caching
//!
//! * An id names one schema forever, so [`schema_by_id`](SchemaRegistryClient::schema_by_id)
//!   remembers every schema it has fetched, for the life of the client. Concurrent calls for
//!   the same id share one request. A failed fetch is not remembered: the next call asks
//!   again, so a schema registered later, or a registry that comes back, is picked up.
//! * [`register`](SchemaRegistryClient::register) and [`lookup`](SchemaRegistryClient::lookup)
//!   remember (subject, schema JSON) -> id, and the id -> schema mapping they imply.
//! * [`latest`](SchemaRegistryClient::latest) and
//!   [`check_compatibility`](SchemaRegistryClient::check_compatibility) are never cached: their
//!   answers change whenever someone registers a new version.
//!
//! # Why decoding may block on this client, and only on a cache miss
//!
//! Stream threads decode records synchronously. The first record written with an id the serde
//! has not seen makes it wait for one `GET /schemas/ids/{id}` (bounded by the request timeout);
//! every later record with that id is decoded from the cache without touching the network or
//! the async runtime. A topology sees a handful of writer schemas over its life, so the
//! stream thread blocks a handful of times.
//!
//! # Timeouts and errors
//!
//! Every request is bounded by a timeout ([`DEFAULT_TIMEOUT`], see
//! [`with_timeout`](SchemaRegistryClient::with_timeout)). A [`RegistryError`] names the URL it
//! was talking to (never the password) and, for an HTTP error, carries the status and the
//! registry's own `error_code` and `message` (see [`error_codes`]).
//!
//! Schema references (a schema importing named types from other subjects) and non-Avro
//! schema types are not supported; such a schema is reported as
//! [`RegistryError::InvalidSchema`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use apache_avro::Schema;
use reqwest::{Method, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

/// The content type of the Schema Registry API, for requests and (preferred) responses.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// What the client accepts, in the order the Confluent clients ask for it.
const ACCEPT: &str = "application/vnd.schemaregistry.v1+json, \
                      application/vnd.schemaregistry+json; q=0.9, application/json; q=0.5";

/// How long one request may take, connection included, unless
/// [`with_timeout`](SchemaRegistryClient::with_timeout) says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The registry's `error_code`s that callers commonly act on.
pub mod error_codes {
    /// The schema is not compatible with the subject's latest version (HTTP 409).
    pub const INCOMPATIBLE_SCHEMA: u32 = 409;
    /// The subject has no versions (HTTP 404).
    pub const SUBJECT_NOT_FOUND: u32 = 40401;
    /// The subject has no such version (HTTP 404).
    pub const VERSION_NOT_FOUND: u32 = 40402;
    /// No schema has this id, or the schema is not registered under the subject (HTTP 404).
    pub const SCHEMA_NOT_FOUND: u32 = 40403;
    /// The schema text is not a valid schema (HTTP 422).
    pub const INVALID_SCHEMA: u32 = 42201;
}

/// Why a call to the schema registry failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The base URL given to [`SchemaRegistryClient::new`] is not usable.
    #[error(
        "invalid schema registry URL `{url}`: {reason}; expected an absolute http:// or \
         https:// base URL such as http://localhost:8081"
    )]
    InvalidUrl { url: String, reason: String },

    /// A subject name that cannot be one path segment (empty, `.` or `..`).
    #[error("invalid schema registry subject `{subject}`: {reason}")]
    InvalidSubject { subject: String, reason: String },

    /// The registry answered with an HTTP error status.
    #[error(
        "schema registry request {method} {url} failed with HTTP {status}{}: {message}",
        error_code.map(|code| format!(" (error code {code})")).unwrap_or_default()
    )]
    Http {
        method: String,
        url: String,
        status: u16,
        /// The registry's `error_code`, such as 40401; `None` when the body was not the
        /// registry's JSON error (a proxy's error page, say).
        error_code: Option<u32>,
        /// The registry's `message`, or the start of the body it sent.
        message: String,
    },

    /// The request did not complete within the client's timeout.
    #[error("schema registry request {method} {url} got no answer within {timeout:?}")]
    Timeout {
        method: String,
        url: String,
        timeout: Duration,
    },

    /// The registry could not be reached (connection refused, DNS, TLS...).
    #[error("could not reach the schema registry for {method} {url}: {reason}")]
    Transport {
        method: String,
        url: String,
        reason: String,
    },

    /// The registry answered 2xx with a body that is not what the API documents.
    #[error("schema registry answered {method} {url} with an unexpected body: {reason}")]
    InvalidResponse {
        method: String,
        url: String,
        reason: String,
    },

    /// A schema (sent or received) that this client cannot use as an Avro schema.
    #[error("{what} is not a usable Avro schema: {reason}")]
    InvalidSchema { what: String, reason: String },

    /// An async call made outside a tokio runtime (reqwest needs one).
    #[error("{0} must be called from within a tokio runtime")]
    NoRuntime(&'static str),
}

impl RegistryError {
    /// The HTTP status of an [`Http`](RegistryError::Http) error.
    pub fn status(&self) -> Option<u16> {
        match self {
            RegistryError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The registry's `error_code` of an [`Http`](RegistryError::Http) error (see
    /// [`error_codes`]).
    pub fn error_code(&self) -> Option<u32> {
        match self {
            RegistryError::Http { error_code, .. } => *error_code,
            _ => None,
        }
    }
}

/// A subject's version as the registry stores it.
#[derive(Clone, Debug)]
pub struct RegisteredSchema {
    pub subject: String,
    /// The schema's global id, the one records in the wire format carry.
    pub id: u32,
    /// The version number within the subject, from 1.
    pub version: u32,
    pub schema: Arc<Schema>,
}

/// Basic-auth credentials; kept apart so that nothing formats the password by accident.
#[derive(Clone)]
struct BasicAuth {
    user: String,
    password: String,
}

/// A Confluent Schema Registry client with in-process caches. Share it behind an `Arc`.
pub struct SchemaRegistryClient {
    /// The base URL without credentials, always ending in a path segment we append to.
    base_url: Url,
    http: reqwest::Client,
    auth: Option<BasicAuth>,
    timeout: Duration,
    /// (subject, schema JSON) -> id, from register and lookup.
    ids_by_subject_schema: Mutex<HashMap<(String, String), u32>>,
    /// id -> schema. A cell is shared by concurrent fetches of the same id, so they make one
    /// request between them.
    schemas_by_id: Mutex<HashMap<u32, Arc<OnceCell<Arc<Schema>>>>>,
}

impl fmt::Debug for SchemaRegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaRegistryClient")
            .field("base_url", &self.base_url.as_str())
            .field("user", &self.auth.as_ref().map(|auth| auth.user.as_str()))
            .field(
                "password",
                &self.auth.as_ref().map(|_| "<redacted>").unwrap_or("<none>"),
            )
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl SchemaRegistryClient {
    /// A client of the registry at `base_url` (`http://host:8081`, possibly with a path
    /// prefix). Credentials written in the URL (`http://user:pass@host`) become basic auth
    /// and are removed from the URL the client shows in errors.
    pub fn new(base_url: &str) -> Result<Self, RegistryError> {
        let invalid = |reason: &str| RegistryError::InvalidUrl {
            url: redact_userinfo(base_url),
            reason: reason.to_string(),
        };
        let mut url = Url::parse(base_url.trim()).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(&format!(
                "scheme `{}` is not http or https",
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("a base URL has no query or fragment"));
        }
        let auth = if url.username().is_empty() {
            None
        } else {
            let decode = |s: &str| {
                percent_decode(s).ok_or_else(|| invalid("credentials are not valid UTF-8"))
            };
            let auth = BasicAuth {
                user: decode(url.username())?,
                password: decode(url.password().unwrap_or(""))?,
            };
            // Cannot fail: http(s) URLs with a host accept (empty) credentials.
            let _ = url.set_username("");
            let _ = url.set_password(None);
            Some(auth)
        };
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| invalid(&format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            base_url: url,
            http,
            auth,
            timeout: DEFAULT_TIMEOUT,
            ids_by_subject_schema: Mutex::default(),
            schemas_by_id: Mutex::default(),
        })
    }

    /// Authenticates every request with HTTP basic auth.
    pub fn with_basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth = Some(BasicAuth {
            user: user.into(),
            password: password.into(),
        });
        self
    }

    /// Checks the registry's certificate against the CA certificates of `ca_pem` as well as
    /// the public roots, and, given `identity_pem` (a client certificate followed by its
    /// private key, PEM), authenticates the client by mutual TLS.
    pub fn with_tls(
        mut self,
        ca_pem: Option<&[u8]>,
        identity_pem: Option<&[u8]>,
    ) -> Result<Self, RegistryError> {
        let invalid = |reason: String| RegistryError::InvalidUrl {
            url: self.base_url.to_string(),
            reason,
        };
        let mut builder = reqwest::Client::builder();
        if let Some(pem) = ca_pem {
            let certificates = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| invalid(format!("the CA certificates are not PEM: {e}")))?;
            if certificates.is_empty() {
                return Err(invalid("the CA file holds no PEM certificate".into()));
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        if let Some(pem) = identity_pem {
            // The error would not quote the key, but keep reqwest's text out all the same.
            let identity = reqwest::Identity::from_pem(pem).map_err(|_| {
                invalid("the client certificate and key are not a PEM certificate and key".into())
            })?;
            builder = builder.identity(identity);
        }
        self.http = builder
            .build()
            .map_err(|e| invalid(format!("cannot build an HTTP client: {e}")))?;
        Ok(self)
    }

    /// Bounds every request, connection included, to `timeout` (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The registry's base URL, without credentials.
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Registers `schema` under `subject` and returns its global id. Registering a schema the
    /// subject already has returns the existing id (the registry makes this idempotent), and
    /// this client answers a repeated call from its cache.
    ///
    /// A schema the subject's compatibility rule rejects fails with HTTP 409 /
    /// [`error_codes::INCOMPATIBLE_SCHEMA`].
    pub async fn register(&self, subject: &str, schema: &Schema) -> Result<u32, RegistryError> {
        self.subject_schema_id(subject, schema, &["subjects", subject, "versions"])
            .await
    }

    /// Finds the id under which `subject` already has `schema`, without registering anything
    /// (for deployments whose credentials may not register). A schema the subject does not
    /// have fails with [`error_codes::SCHEMA_NOT_FOUND`]; an unknown subject with
    /// [`error_codes::SUBJECT_NOT_FOUND`].
    pub async fn lookup(&self, subject: &str, schema: &Schema) -> Result<u32, RegistryError> {
        self.subject_schema_id(subject, schema, &["subjects", subject])
            .await
    }

    /// The schema with global id `id`, fetched once and then served from the cache.
    pub async fn schema_by_id(&self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        let cell = Arc::clone(
            self.schemas_by_id
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(id)
                .or_default(),
        );
        let result = cell.get_or_try_init(|| self.fetch_schema_by_id(id)).await;
        match result {
            Ok(schema) => Ok(Arc::clone(schema)),
            Err(e) => {
                // Keep the map to the ids that exist: corrupt records with random ids must
                // not grow it. Another caller may have filled the cell meanwhile; keep that.
                let mut cells = self
                    .schemas_by_id
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if cells.get(&id).is_some_and(|cell| !cell.initialized()) {
                    cells.remove(&id);
                }
                Err(e)
            }
        }
    }

    /// The newest version of `subject`. Not cached.
    pub async fn latest(&self, subject: &str) -> Result<RegisteredSchema, RegistryError> {
        #[derive(Deserialize)]
        struct Latest {
            subject: String,
            id: u32,
            version: u32,
            schema: String,
            #[serde(default, rename = "schemaType")]
            schema_type: Option<String>,
            #[serde(default)]
            references: Vec<serde_json::Value>,
        }
        let url = self.endpoint(&["subjects", subject, "versions", "latest"])?;
        let latest: Latest = self.call(Method::GET, url, None).await?;
        let what = || format!("version {} of subject `{}`", latest.version, latest.subject);
        check_avro_only(latest.schema_type.as_deref(), &latest.references, what)?;
        let schema = Arc::new(parse_schema(&latest.schema, what)?);
        self.remember_schema(latest.id, &schema);
        Ok(RegisteredSchema {
            subject: latest.subject,
            id: latest.id,
            version: latest.version,
            schema,
        })
    }

    /// Whether `schema` may be registered as the next version of `subject`, under the
    /// subject's compatibility rule, checked against its latest version. Not cached. An
    /// unknown subject fails with [`error_codes::SUBJECT_NOT_FOUND`].
    pub async fn check_compatibility(
        &self,
        subject: &str,
        schema: &Schema,
    ) -> Result<bool, RegistryError> {
        #[derive(Deserialize)]
        struct Compatibility {
            is_compatible: bool,
        }
        let body = schema_request_body(schema)?;
        let url = self.endpoint(&["compatibility", "subjects", subject, "versions", "latest"])?;
        let answer: Compatibility = self.call(Method::POST, url, Some(&body)).await?;
        Ok(answer.is_compatible)
    }

    /// register and lookup: both post `{"schema": ...}` and read `{"id": ...}`.
    async fn subject_schema_id(
        &self,
        subject: &str,
        schema: &Schema,
        segments: &[&str],
    ) -> Result<u32, RegistryError> {
        #[derive(Deserialize)]
        struct Id {
            id: u32,
        }
        let json = schema_json(schema)?;
        let key = (subject.to_string(), json);
        if let Some(id) = self.cached_id(&key) {
            return Ok(id);
        }
        let url = self.endpoint(segments)?;
        let body = serde_json::json!({ "schema": &key.1 });
        let Id { id } = self.call(Method::POST, url, Some(&body)).await?;
        self.ids_by_subject_schema
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, id);
        // The registry stored this schema (or one that differs only in layout) under `id`.
        self.remember_schema(id, &Arc::new(schema.clone()));
        Ok(id)
    }

    fn cached_id(&self, key: &(String, String)) -> Option<u32> {
        self.ids_by_subject_schema
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .copied()
    }

    /// Fills the id cache from an answer that told us an id's schema anyway.
    fn remember_schema(&self, id: u32, schema: &Arc<Schema>) {
        let mut cells = self
            .schemas_by_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let cell = cells.entry(id).or_default();
        // Already set (or being fetched): the registry's id is immutable, either is right.
        let _ = cell.set(Arc::clone(schema));
    }

    async fn fetch_schema_by_id(&self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        #[derive(Deserialize)]
        struct SchemaString {
            schema: String,
            #[serde(default, rename = "schemaType")]
            schema_type: Option<String>,
            #[serde(default)]
            references: Vec<serde_json::Value>,
        }
        let url = self.endpoint(&["schemas", "ids", &id.to_string()])?;
        let answer: SchemaString = self.call(Method::GET, url, None).await?;
        let what = || format!("schema id {id}");
        check_avro_only(answer.schema_type.as_deref(), &answer.references, what)?;
        Ok(Arc::new(parse_schema(&answer.schema, what)?))
    }

    /// The base URL with `segments` appended, each percent-escaped as one path segment.
    fn endpoint(&self, segments: &[&str]) -> Result<Url, RegistryError> {
        for segment in segments {
            // url drops "." and ".." segments instead of escaping them, which would send the
            // request to another endpoint; an empty segment would do the same.
            if matches!(*segment, "" | "." | "..") {
                return Err(RegistryError::InvalidSubject {
                    subject: segment.to_string(),
                    reason: "a subject must not be empty, `.` or `..`".to_string(),
                });
            }
        }
        let mut url = self.base_url.clone();
        url.path_segments_mut()
            .map_err(|()| RegistryError::InvalidUrl {
                url: self.base_url.to_string(),
                reason: "cannot have path segments".to_string(),
            })?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// Sends one request and decodes a 2xx JSON answer; anything else becomes a
    /// [`RegistryError`].
    async fn call<R: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
    ) -> Result<R, RegistryError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(RegistryError::NoRuntime("a schema registry request"));
        }
        let method_name = method.to_string();
        let url_text = url.to_string();
        let mut request = self
            .http
            .request(method, url)
            .timeout(self.timeout)
            .header(reqwest::header::ACCEPT, ACCEPT);
        if let Some(auth) = &self.auth {
            request = request.basic_auth(&auth.user, Some(&auth.password));
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
                .body(body.to_string());
        }
        let transport_error = |e: reqwest::Error| {
            if e.is_timeout() {
                RegistryError::Timeout {
                    method: method_name.clone(),
                    url: url_text.clone(),
                    timeout: self.timeout,
                }
            } else {
                RegistryError::Transport {
                    method: method_name.clone(),
                    url: url_text.clone(),
                    reason: describe_reqwest_error(e),
                }
            }
        };
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport_error)?;
        if !status.is_success() {
            return Err(http_error(method_name, url_text, status.as_u16(), &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| RegistryError::InvalidResponse {
            method: method_name,
            url: url_text,
            reason: e.to_string(),
        })
    }
}

/// The JSON the registry stores: full, defaults included (see the module doc).
fn schema_json(schema: &Schema) -> Result<String, RegistryError> {
    serde_json::to_string(schema).map_err(|e| RegistryError::InvalidSchema {
        what: "the schema to send".to_string(),
        reason: e.to_string(),
    })
}

fn schema_request_body(schema: &Schema) -> Result<serde_json::Value, RegistryError> {
    Ok(serde_json::json!({ "schema": schema_json(schema)? }))
}

fn check_avro_only(
    schema_type: Option<&str>,
    references: &[serde_json::Value],
    what: impl Fn() -> String,
) -> Result<(), RegistryError> {
    if let Some(kind) = schema_type.filter(|kind| !kind.eq_ignore_ascii_case("AVRO")) {
        return Err(RegistryError::InvalidSchema {
            what: what(),
            reason: format!("it is a {kind} schema"),
        });
    }
    if !references.is_empty() {
        return Err(RegistryError::InvalidSchema {
            what: what(),
            reason: "it uses schema references, which this client does not resolve".to_string(),
        });
    }
    Ok(())
}

fn parse_schema(text: &str, what: impl Fn() -> String) -> Result<Schema, RegistryError> {
    Schema::parse_str(text).map_err(|e| RegistryError::InvalidSchema {
        what: what(),
        reason: e.to_string(),
    })
}

/// An HTTP error status with the registry's `{"error_code": .., "message": ..}` if it sent one.
fn http_error(method: String, url: String, status: u16, body: &[u8]) -> RegistryError {
    #[derive(Deserialize)]
    struct ErrorBody {
        error_code: Option<u32>,
        message: Option<String>,
    }
    let (error_code, message) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) => (
            parsed.error_code,
            parsed.message.unwrap_or_else(|| "(no message)".to_string()),
        ),
        Err(_) => {
            // Not the registry speaking (a proxy or load balancer): keep the start of it.
            const KEEP: usize = 200;
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let cut = text
                .char_indices()
                .nth(KEEP)
                .map_or(text.len(), |(at, _)| at);
            let ellipsis = if cut < text.len() { "…" } else { "" };
            (None, format!("{}{ellipsis}", &text[..cut]))
        }
    };
    RegistryError::Http {
        method,
        url,
        status,
        error_code,
        message,
    }
}

/// A reqwest error's causes, without the URL (the caller names it once).
fn describe_reqwest_error(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `base_url` for an error message, with any `user:password@` replaced.
fn redact_userinfo(base_url: &str) -> String {
    let Some(scheme_end) = base_url.find("://") else {
        return base_url.to_string();
    };
    let authority_start = scheme_end + 3;
    let authority_end = base_url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(base_url.len(), |at| authority_start + at);
    match base_url[authority_start..authority_end].rfind('@') {
        Some(at) => format!(
            "{}***@{}",
            &base_url[..authority_start],
            &base_url[authority_start + at + 1..]
        ),
        None => base_url.to_string(),
    }
}

/// Percent-decodes URL credentials (url keeps them escaped).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = bytes
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_url_error_names_the_url_and_what_is_expected() {
        let err = SchemaRegistryClient::new("localhost:8081").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`localhost:8081`"), "{text}");
        assert!(text.contains("expected an absolute http://"), "{text}");

        let err = SchemaRegistryClient::new("not a url").unwrap_err();
        assert!(matches!(err, RegistryError::InvalidUrl { .. }), "{err}");
    }

    #[test]
    fn credentials_in_the_url_become_basic_auth_and_never_show() {
        let client = SchemaRegistryClient::new("https://alice:s%3Acret@registry:8081/").unwrap();
        assert_eq!(client.base_url().as_str(), "https://registry:8081/");
        let auth = client.auth.as_ref().unwrap();
        assert_eq!(
            (auth.user.as_str(), auth.password.as_str()),
            ("alice", "s:cret")
        );
        let debug = format!("{client:?}");
        assert!(
            !debug.contains("s:cret") && !debug.contains("s%3Acret"),
            "{debug}"
        );
        assert!(debug.contains("alice"), "{debug}");

        let err = SchemaRegistryClient::new("ftp://alice:s3cret@registry/").unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn basic_auth_password_is_redacted_in_debug() {
        let client = SchemaRegistryClient::new("http://localhost:8081")
            .unwrap()
            .with_basic_auth("svc", "hunter2");
        let debug = format!("{client:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }

    #[test]
    fn subjects_are_escaped_as_one_path_segment() {
        let client = SchemaRegistryClient::new("http://registry:8081/prefix/").unwrap();
        let url = client
            .endpoint(&["subjects", "a/b c?d%", "versions"])
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://registry:8081/prefix/subjects/a%2Fb%20c%3Fd%25/versions"
        );
        let err = client
            .endpoint(&["subjects", "..", "versions"])
            .unwrap_err();
        assert!(matches!(err, RegistryError::InvalidSubject { .. }), "{err}");
    }

    #[test]
    fn http_errors_carry_the_registry_error_code_and_message() {
        let err = http_error(
            "GET".into(),
            "http://r/subjects/x/versions/latest".into(),
            404,
            br#"{"error_code":40401,"message":"Subject 'x' not found."}"#,
        );
        assert_eq!(err.status(), Some(404));
        assert_eq!(err.error_code(), Some(error_codes::SUBJECT_NOT_FOUND));
        assert!(err.to_string().contains("Subject 'x' not found."), "{err}");

        let err = http_error(
            "GET".into(),
            "http://r/".into(),
            502,
            b"<html>Bad gateway</html>",
        );
        assert_eq!((err.status(), err.error_code()), (Some(502), None));
        assert!(err.to_string().contains("Bad gateway"), "{err}");
    }
}
