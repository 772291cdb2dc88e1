//! [`MongoConfig`]: the `mongodb.*` configuration keys, checked, with the URI's secrets kept
//! out of `Debug` and of every error.

use std::fmt;
use std::time::Duration;

use mongodb::options::ClientOptions;

use super::MongoClient;

/// The connection string. Secret: user info and secret query values are redacted in
/// `Debug` and errors.
pub const URI: &str = "mongodb.uri";
pub const MAX_POOL_SIZE: &str = "mongodb.max.pool.size";
pub const CONNECT_TIMEOUT_MS: &str = "mongodb.connect.timeout.ms";
pub const SERVER_SELECTION_TIMEOUT_MS: &str = "mongodb.server.selection.timeout.ms";
pub const REQUEST_TIMEOUT_MS: &str = "mongodb.request.timeout.ms";

/// Every `mongodb.*` key, for "unknown key" errors and documentation.
pub const KEYS: &[&str] = &[
    URI,
    MAX_POOL_SIZE,
    CONNECT_TIMEOUT_MS,
    SERVER_SELECTION_TIMEOUT_MS,
    REQUEST_TIMEOUT_MS,
];

/// Connections per worker: lookups are short reads, and misses are few once the cache is
/// warm, so the driver's default of 10 is plenty.
pub const DEFAULT_MAX_POOL_SIZE: u32 = 10;
/// Short, unlike the driver's 10 s / 30 s: a lookup that cannot reach MongoDB should fail
/// as transient soon, so the task pauses and retries instead of holding records in flight.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// The whole of one lookup or one write batch, server selection included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A configuration problem: the key, what is wrong and the fix. Never the URI's secrets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MongoConfigError {
    #[error("{key} is required: {hint}")]
    Missing { key: String, hint: String },
    #[error("{key} = {value} is invalid: {accepted}")]
    Invalid {
        key: String,
        /// Quoted, or `<redacted>` for the URI.
        value: String,
        accepted: String,
    },
    #[error("unknown configuration key `{key}`: the mongodb keys are {}", KEYS.join(", "))]
    Unknown { key: String },
}

/// Where and how to reach MongoDB. Built from the worker's `mongodb.*` keys
/// ([`MongoConfig::from_keys`]) or from a URI ([`MongoConfig::new`]).
///
/// ```
/// use sluice_connectors::mongo::MongoConfig;
///
/// let config = MongoConfig::from_keys([
///     ("mongodb.uri", "mongodb://reader:s3cret@db.example.org:27017/?authSource=admin"),
///     ("mongodb.request.timeout.ms", "2000"),
/// ])
/// .unwrap()
/// .expect("mongodb.uri is set");
/// assert_eq!(config.request_timeout().as_millis(), 2000);
/// // The password never shows.
/// assert!(!format!("{config:?}").contains("s3cret"));
/// assert_eq!(
///     config.redacted_uri(),
///     "mongodb://reader:<redacted>@db.example.org:27017/?authSource=admin"
/// );
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct MongoConfig {
    uri: String,
    max_pool_size: u32,
    connect_timeout: Duration,
    server_selection_timeout: Duration,
    request_timeout: Duration,
}

impl fmt::Debug for MongoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoConfig")
            .field("uri", &self.redacted_uri())
            .field("max_pool_size", &self.max_pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("server_selection_timeout", &self.server_selection_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl MongoConfig {
    /// A configuration for `uri` with the default pool size and timeouts. The URI is only
    /// checked for its scheme here; [`MongoConfig::connect`] parses the rest.
    pub fn new(uri: impl Into<String>) -> Result<Self, MongoConfigError> {
        let uri = uri.into();
        if !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://")) {
            return Err(invalid(
                URI,
                &uri,
                "a MongoDB connection string starting with mongodb:// or mongodb+srv://",
            ));
        }
        Ok(Self {
            uri,
            max_pool_size: DEFAULT_MAX_POOL_SIZE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            server_selection_timeout: DEFAULT_SERVER_SELECTION_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        })
    }

    /// The configuration given by the `mongodb.*` keys among `keys` (other keys are not
    /// this module's and are ignored). `Ok(None)` when no `mongodb.*` key is set: the
    /// caller falls back to its embedded reference data. Setting another `mongodb.*` key
    /// without `mongodb.uri` is an error, as is an unknown `mongodb.*` key: both are
    /// typos that would otherwise silently switch MongoDB off.
    pub fn from_keys<'a>(
        keys: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Option<Self>, MongoConfigError> {
        let mine: Vec<(&str, &str)> = keys
            .into_iter()
            .filter(|(key, _)| key.starts_with("mongodb."))
            .collect();
        if let Some((key, _)) = mine.iter().find(|(key, _)| !KEYS.contains(key)) {
            return Err(MongoConfigError::Unknown {
                key: key.to_string(),
            });
        }
        let value = |key: &str| {
            mine.iter()
                .rev()
                .find(|(k, _)| *k == key)
                .map(|(_, value)| *value)
        };
        let Some(uri) = value(URI) else {
            return match mine.first() {
                None => Ok(None),
                Some((key, _)) => Err(MongoConfigError::Missing {
                    key: URI.to_string(),
                    hint: format!(
                        "{key} is set, so MongoDB is meant to be used: set {URI} to its connection string (mongodb://host:27017), or remove the mongodb.* keys to use the embedded reference data"
                    ),
                }),
            };
        };
        let mut config = Self::new(uri)?;
        if let Some(v) = value(MAX_POOL_SIZE) {
            config.max_pool_size = parse_number(MAX_POOL_SIZE, v, 1, 1_000)? as u32;
        }
        if let Some(v) = value(CONNECT_TIMEOUT_MS) {
            config.connect_timeout = parse_millis(CONNECT_TIMEOUT_MS, v)?;
        }
        if let Some(v) = value(SERVER_SELECTION_TIMEOUT_MS) {
            config.server_selection_timeout = parse_millis(SERVER_SELECTION_TIMEOUT_MS, v)?;
        }
        if let Some(v) = value(REQUEST_TIMEOUT_MS) {
            config.request_timeout = parse_millis(REQUEST_TIMEOUT_MS, v)?;
        }
        Ok(Some(config))
    }

    pub fn with_max_pool_size(self, max_pool_size: u32) -> Self {
        Self {
            max_pool_size,
            ..self
        }
    }

    pub fn with_connect_timeout(self, connect_timeout: Duration) -> Self {
        Self {
            connect_timeout,
            ..self
        }
    }

    pub fn with_server_selection_timeout(self, server_selection_timeout: Duration) -> Self {
        Self {
            server_selection_timeout,
            ..self
        }
    }

    pub fn with_request_timeout(self, request_timeout: Duration) -> Self {
        Self {
            request_timeout,
            ..self
        }
    }

    pub fn max_pool_size(&self) -> u32 {
        self.max_pool_size
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    pub fn server_selection_timeout(&self) -> Duration {
        self.server_selection_timeout
    }

    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The URI with its password and secret query values replaced by `<redacted>`: what
    /// logs and errors may show.
    pub fn redacted_uri(&self) -> String {
        redact_uri(&self.uri)
    }

    /// A client for this configuration. The driver connects lazily: this parses the URI
    /// (resolving `mongodb+srv://` through DNS) and returns without reaching a server, so a
    /// MongoDB that is down shows as transient lookup errors, not as a failure to start.
    pub async fn connect(&self) -> Result<MongoClient, MongoConfigError> {
        let mut options = ClientOptions::parse(&self.uri).await.map_err(|e| {
            // The driver's message may quote parts of the URI: scrub its secrets.
            let reason = scrub(&self.uri, &e.kind.to_string());
            invalid(
                URI,
                &self.uri,
                &format!("{reason} (the form is mongodb://[user:password@]host[:port][/?options])"),
            )
        })?;
        options.max_pool_size = Some(self.max_pool_size);
        options.connect_timeout = Some(self.connect_timeout);
        options.server_selection_timeout = Some(self.server_selection_timeout);
        options.app_name.get_or_insert_with(|| "sluice".to_string());
        let client = mongodb::Client::with_options(options)
            .map_err(|e| invalid(URI, &self.uri, &scrub(&self.uri, &e.kind.to_string())))?;
        Ok(MongoClient::new(client, self.clone()))
    }
}

fn invalid(key: &str, value: &str, accepted: &str) -> MongoConfigError {
    MongoConfigError::Invalid {
        key: key.to_string(),
        value: if key == URI {
            "<redacted>".to_string()
        } else {
            format!("{value:?}")
        },
        accepted: accepted.to_string(),
    }
}

fn parse_number(key: &str, value: &str, min: u64, max: u64) -> Result<u64, MongoConfigError> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| invalid(key, value, &format!("a whole number from {min} to {max}")))
}

fn parse_millis(key: &str, value: &str) -> Result<Duration, MongoConfigError> {
    parse_number(key, value, 1, 3_600_000).map(Duration::from_millis)
}

/// Query options whose values are secret (lower case): a key file password, and AWS
/// session tokens passed in the mechanism properties.
const SECRET_OPTIONS: &[&str] = &["tlscertificatekeyfilepassword", "authmechanismproperties"];

/// The password of the URI's user info, and the values of its secret query options.
fn secrets(uri: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let after_scheme = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    let (authority, query) = match after_scheme.split_once('?') {
        Some((authority, query)) => (authority, Some(query)),
        None => (after_scheme, None),
    };
    // User info ends at the last '@' before the path: a password may hold a raw '@'.
    let hosts_end = authority.find('/').unwrap_or(authority.len());
    if let Some(at) = authority[..hosts_end].rfind('@')
        && let Some((_, password)) = authority[..at].split_once(':')
        && !password.is_empty()
    {
        found.push(password);
    }
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        if let Some((key, value)) = pair.split_once('=')
            && SECRET_OPTIONS.contains(&key.to_ascii_lowercase().as_str())
            && !value.is_empty()
        {
            found.push(value);
        }
    }
    found
}

pub(crate) fn redact_uri(uri: &str) -> String {
    scrub(uri, uri)
}

/// `text` with each of `uri`'s secrets, as written and percent-decoded, replaced.
pub(crate) fn scrub(uri: &str, text: &str) -> String {
    let mut out = text.to_string();
    for secret in secrets(uri) {
        for form in [secret.to_string(), percent_decode(secret)] {
            if !form.is_empty() {
                out = out.replace(&form, "<redacted>");
            }
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_mongodb_key_means_the_embedded_default() {
        let keys = [("application.id", "enrichment")];
        assert_eq!(MongoConfig::from_keys(keys), Ok(None));
    }

    #[test]
    fn every_key_is_read_and_the_defaults_fill_the_rest() {
        let config = MongoConfig::from_keys([
            (URI, "mongodb://localhost:27017"),
            (MAX_POOL_SIZE, "4"),
            (CONNECT_TIMEOUT_MS, "1500"),
            (SERVER_SELECTION_TIMEOUT_MS, "2500"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(config.max_pool_size(), 4);
        assert_eq!(config.connect_timeout(), Duration::from_millis(1500));
        assert_eq!(
            config.server_selection_timeout(),
            Duration::from_millis(2500)
        );
        assert_eq!(config.request_timeout(), DEFAULT_REQUEST_TIMEOUT);
    }

    #[test]
    fn a_bad_value_names_the_key_and_what_it_accepts() {
        let e = MongoConfig::from_keys([(URI, "mongodb://h"), (REQUEST_TIMEOUT_MS, "soon")])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "mongodb.request.timeout.ms = \"soon\" is invalid: a whole number from 1 to 3600000"
        );
        let e = MongoConfig::from_keys([(URI, "mongodb://h"), (MAX_POOL_SIZE, "0")]).unwrap_err();
        assert!(
            e.to_string().starts_with("mongodb.max.pool.size = \"0\""),
            "{e}"
        );
    }

    #[test]
    fn a_timeout_without_a_uri_or_an_unknown_key_is_refused() {
        let e = MongoConfig::from_keys([(CONNECT_TIMEOUT_MS, "100")]).unwrap_err();
        assert!(
            matches!(&e, MongoConfigError::Missing { key, .. } if key == URI),
            "{e}"
        );
        let e =
            MongoConfig::from_keys([(URI, "mongodb://h"), ("mongodb.pool.size", "3")]).unwrap_err();
        assert_eq!(
            e,
            MongoConfigError::Unknown {
                key: "mongodb.pool.size".into()
            }
        );
        assert!(e.to_string().contains(MAX_POOL_SIZE), "{e}");
    }

    #[test]
    fn credentials_never_show_in_debug_or_errors() {
        let uri = "mongodb://app:p%40ss@db1:27017,db2/?tlsCertificateKeyFilePassword=k3y&w=1";
        let config = MongoConfig::new(uri).unwrap();
        let debug = format!("{config:?}");
        for secret in ["p%40ss", "p@ss", "k3y"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        assert!(debug.contains("app:<redacted>@db1:27017,db2"), "{debug}");
        assert!(debug.contains("w=1"), "{debug}");

        // A URI refused for its scheme is not echoed either.
        let e = MongoConfig::new("postgres://app:hunter2@db").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(e.to_string().contains("mongodb://"), "{e}");
    }

    #[tokio::test]
    async fn a_uri_the_driver_refuses_is_reported_without_its_password() {
        let config = MongoConfig::new("mongodb://app:hunter2@db:notaport").unwrap();
        let e = config.connect().await.unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("mongodb.uri = <redacted> is invalid"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
    }
}
