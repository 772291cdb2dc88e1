//! MongoDB: reference-data lookups for enrichment, and the upserts that load the data.
//!
//! * [`MongoConfig`]: the `mongodb.*` keys (`mongodb.uri`, pool size, timeouts); the URI is
//!   a secret, redacted in `Debug` and errors.
//! * [`MongoClient`]: the driver's pooled client with the configured request timeout; one
//!   per worker, cloned into every lookup.
//! * [`MongoLookup`]: a [`Lookup`](sluice_engine::lookup::Lookup): find one document by
//!   an indexed key, deserialize it into the value type.
//! * [`MongoClient::upsert_all`], [`MongoClient::ensure_unique_index`]: loading.
//!
//! # Failures
//!
//! | what happened | lookup answer |
//! |---|---|
//! | no document has the key | `Ok(None)` |
//! | no server within the server-selection timeout, network error, timeout, server error, authentication | `LookupError::transient` |
//! | the document found does not deserialize into the value type | `LookupError::permanent`, naming the collection and the field |
//!
//! Authentication failures are transient too: they are not the record's fault, and the
//! engine's contract is that only a request this key makes bad is permanent. A document
//! that does not fit is permanent because retrying reads the same document.
//!
//! Messages name the collection, the field and the kind of failure, never a key or a
//! value: a server's own error text (which may quote a key, as a duplicate-key error does)
//! is left out, only its code and code name are kept.

mod config;
mod lookup;
mod write;

use std::time::Duration;

use mongodb::Collection;
use mongodb::bson::Document;
use mongodb::error::ErrorKind;

pub use config::{
    CONNECT_TIMEOUT_MS, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_POOL_SIZE, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_SERVER_SELECTION_TIMEOUT, KEYS, MAX_POOL_SIZE, MongoConfig, MongoConfigError,
    REQUEST_TIMEOUT_MS, SERVER_SELECTION_TIMEOUT_MS, URI,
};
pub use lookup::MongoLookup;
pub use write::UpsertSummary;

/// The driver's client (a pool, cheap to clone) and the configuration it was made from.
#[derive(Clone, Debug)]
pub struct MongoClient {
    client: mongodb::Client,
    config: MongoConfig,
}

impl MongoClient {
    fn new(client: mongodb::Client, config: MongoConfig) -> Self {
        Self { client, config }
    }

    /// The driver's client, for what this module does not wrap.
    pub fn driver(&self) -> &mongodb::Client {
        &self.client
    }

    pub fn config(&self) -> &MongoConfig {
        &self.config
    }

    fn collection(&self, database: &str, collection: &str) -> Collection<Document> {
        self.client.database(database).collection(collection)
    }

    /// Runs `operation` under the request timeout; a timeout or a driver error becomes a
    /// [`MongoError`] naming `what` (a database.collection, never a key).
    async fn request<T>(
        &self,
        what: &str,
        operation: impl IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> Result<T, MongoError> {
        let timeout = self.config.request_timeout();
        match tokio::time::timeout(timeout, operation.into_future()).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(classify(&e, &self.config).context(what)),
            Err(_) => Err(MongoError::transient(format!(
                "no answer within {} ms ({REQUEST_TIMEOUT_MS})",
                timeout.as_millis()
            ))
            .context(what)),
        }
    }
}

/// A MongoDB operation that failed: transient (MongoDB down, slow, refusing) or permanent
/// (the data or the request is bad). The message names the collection and the kind of
/// failure, never a key or a value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct MongoError {
    transient: bool,
    message: String,
}

impl MongoError {
    fn transient(message: impl Into<String>) -> Self {
        Self {
            transient: true,
            message: message.into(),
        }
    }

    fn permanent(message: impl Into<String>) -> Self {
        Self {
            transient: false,
            message: message.into(),
        }
    }

    fn context(self, what: &str) -> Self {
        Self {
            message: format!("mongodb {what}: {}", self.message),
            ..self
        }
    }

    pub fn is_transient(&self) -> bool {
        self.transient
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<MongoError> for sluice_engine::lookup::LookupError {
    fn from(e: MongoError) -> Self {
        if e.transient {
            Self::transient(e.message)
        } else {
            Self::permanent(e.message)
        }
    }
}

/// What a driver error means for the caller. Only the kind, an I/O error's own text and a
/// server error's code are kept: the driver's messages may quote keys (a duplicate key)
/// or parts of the URI.
fn classify(e: &mongodb::error::Error, config: &MongoConfig) -> MongoError {
    let millis = |d: Duration| d.as_millis();
    match e.kind.as_ref() {
        ErrorKind::ServerSelection { .. } => MongoError::transient(format!(
            "no server available within {} ms ({SERVER_SELECTION_TIMEOUT_MS}); is MongoDB up at {}?",
            millis(config.server_selection_timeout()),
            hosts_of(config)
        )),
        ErrorKind::Io(io) => MongoError::transient(format!("network error: {}", io.kind())),
        ErrorKind::ConnectionPoolCleared { .. } => {
            MongoError::transient("connection pool cleared after a network error")
        }
        ErrorKind::DnsResolve { .. } => MongoError::transient("DNS resolution failed"),
        ErrorKind::Authentication { .. } => MongoError::transient(
            "authentication failed: check the user and password in mongodb.uri",
        ),
        ErrorKind::Command(c) => {
            MongoError::transient(format!("server error {} ({})", c.code, c.code_name))
        }
        ErrorKind::Write(_) | ErrorKind::InsertMany(_) | ErrorKind::BulkWrite(_) => {
            MongoError::transient("write failed on the server")
        }
        ErrorKind::InvalidResponse { .. } => {
            MongoError::transient("the server sent a response the driver cannot read")
        }
        ErrorKind::Shutdown => MongoError::transient("the client is shut down"),
        ErrorKind::BsonSerialization(_) => {
            MongoError::permanent("the key does not serialize to BSON")
        }
        ErrorKind::BsonDeserialization(_) => {
            MongoError::permanent("a reply does not deserialize from BSON")
        }
        // Anything else is not about this record: transient, so nothing is dead-lettered
        // for a fault of the service or of its configuration.
        _ => MongoError::transient("request failed in the driver"),
    }
}

/// The URI up to its path: the hosts, for "is MongoDB up at ...?".
fn hosts_of(config: &MongoConfig) -> String {
    let uri = config.redacted_uri();
    let (scheme, rest) = uri.split_once("://").unwrap_or(("mongodb", &uri));
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}://{hosts}")
}

/// A serde error as a message that names the field, without the value serde quotes
/// ("invalid type: string \"...\", expected u8" keeps only "expected u8").
pub(crate) fn describe_field_error(path: &str, message: &str) -> String {
    let field = if path.is_empty() || path == "." {
        "the document".to_string()
    } else {
        format!("field `{path}`")
    };
    if message.starts_with("missing field") || message.starts_with("unknown field") {
        // "missing field `gpi`": a field name, no value.
        let name = message.split(", expected").next().unwrap_or(message);
        return format!("{field}: {name}");
    }
    match message.split_once(", expected ") {
        Some((_, expected)) => format!("{field}: wrong type or value, expected {expected}"),
        None => format!("{field}: wrong type or value"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_error_keeps_the_field_and_the_expectation_and_drops_the_value() {
        assert_eq!(
            describe_field_error("tier", "invalid type: string \"pt-00042\", expected u8"),
            "field `tier`: wrong type or value, expected u8"
        );
        assert_eq!(
            describe_field_error(".", "missing field `gpi`"),
            "the document: missing field `gpi`"
        );
        assert_eq!(
            describe_field_error("status", "unknown variant `gold`, expected one of `a`, `b`"),
            "field `status`: wrong type or value, expected one of `a`, `b`"
        );
    }

    #[test]
    fn a_network_failure_is_transient_and_a_key_that_is_no_bson_is_permanent() {
        let config = MongoConfig::new("mongodb://app:pw@db:27017").unwrap();
        let refused = mongodb::error::Error::from(std::io::ErrorKind::ConnectionRefused);
        let refused = classify(&refused, &config);
        assert!(refused.is_transient());
        assert_eq!(refused.message(), "network error: connection refused");

        let not_a_document = mongodb::bson::to_document(&42_u8).unwrap_err();
        let permanent = classify(&mongodb::error::Error::from(not_a_document), &config);
        assert!(!permanent.is_transient());
        assert_eq!(permanent.message(), "the key does not serialize to BSON");
    }

    #[test]
    fn the_hosts_shown_in_an_outage_have_no_credentials() {
        let config = MongoConfig::new("mongodb://u:pw@h1:1,h2:2/reference?w=1").unwrap();
        assert_eq!(hosts_of(&config), "mongodb://h1:1,h2:2");
    }
}
