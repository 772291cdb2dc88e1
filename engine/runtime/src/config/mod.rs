//! Worker configuration: Kafka-Streams-style keys from a TOML file, the environment and
//! flags, checked all at once.
//!
//! Keys are dotted names (`num.stream.threads`). In a TOML file they may be written dotted
//! or as tables — `[kafka]` followed by `"security.protocol" = "SSL"` is the key
//! `kafka.security.protocol` — because the file is flattened to dotted names before it is
//! read. An environment variable `SLUICE_CONFIG_NUM_STREAM_THREADS` is the key
//! `num.stream.threads` (upper case, `_` for `.`), and `SLUICE_BROKERS` (what
//! `scripts/broker.sh` exports) is `bootstrap.servers`; other `SLUICE_*` variables are the
//! project's scripts' own (see [`ConfigBuilder::env`]). Later sources win:
//! defaults < file < environment < flags.
//!
//! Keys under `kafka.` are passed to librdkafka unchanged (without the prefix); that is
//! how TLS and SASL are configured. `kafka.consumer.<property>` and
//! `kafka.producer.<property>` reach only that client (librdkafka warns about consumer
//! properties given to a producer and the reverse). Any other unknown key is an error naming it, so a typo
//! never silently falls back to a default. Values of secret keys (passwords, keys, tokens)
//! never appear in errors, logs or `Debug` output.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod keys;

pub use keys::is_secret;
use keys::{ENGINE_OWNED, KEYS, default_commit_interval};

/// Exactly-once (Kafka transactions, the default) or at-least-once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessingGuarantee {
    ExactlyOnceV2,
    AtLeastOnce,
}

impl ProcessingGuarantee {
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessingGuarantee::ExactlyOnceV2 => "exactly_once_v2",
            ProcessingGuarantee::AtLeastOnce => "at_least_once",
        }
    }
}

/// Which Kafka client a `kafka.*` property is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KafkaClient {
    Consumer,
    Producer,
    Admin,
}

/// A configuration problem, naming the key, the bad value (unless secret) and the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{key} is required: {hint}")]
    Missing { key: String, hint: String },
    #[error("{key} = {value:?} is invalid: {accepted}")]
    Invalid {
        key: String,
        value: String,
        accepted: String,
    },
    #[error(
        "unknown configuration key `{key}` (from {source_name}): the keys are {known}, or kafka.* for librdkafka properties"
    )]
    Unknown {
        key: String,
        source_name: String,
        known: String,
    },
    #[error(
        "environment variable {variable} is not read: configuration keys come from \
         SLUICE_CONFIG_* variables; write {instead} to set {key}"
    )]
    Unprefixed {
        variable: String,
        key: String,
        instead: String,
    },
    #[error("cannot read config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{} configuration problems:\n  - {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  - "))]
    Many(Vec<ConfigError>),
}

/// The checked configuration of a worker.
#[derive(Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    pub application_id: String,
    pub bootstrap_servers: String,
    pub num_stream_threads: usize,
    pub processing_guarantee: ProcessingGuarantee,
    pub commit_interval: Duration,
    /// How long a task reading several partitions waits for data on an empty one beyond
    /// what the broker is known to hold; `None` (-1): it never waits.
    pub max_task_idle: Option<Duration>,
    pub state_dir: PathBuf,
    /// Block cache shared by every RocksDB store of the worker.
    pub state_cache_max_bytes: usize,
    /// Write buffers (memtables) shared by every RocksDB store of the worker.
    pub state_write_buffer_max_bytes: usize,
    pub topic_partitions: Option<i32>,
    pub topic_replication_factor: i32,
    pub startup_timeout: Duration,
    /// Kafka static group membership (KIP-345) for the stream threads.
    pub static_membership: bool,
    /// Where /metrics, /healthz and /readyz are served; `None` when `metrics.address=off`.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// The schema registry; `None` without `schema.registry.url`.
    pub schema_registry: Option<SchemaRegistryConfig>,
    /// The topology's own keys that are set (see [`ConfigBuilder::accept`]), unchecked.
    pub topology: BTreeMap<String, String>,
    /// librdkafka properties, without the `kafka.` prefix.
    pub kafka: BTreeMap<String, String>,
}

/// How a worker reaches its schema registry, and what it does there at start.
#[derive(Clone, PartialEq, Eq)]
pub struct SchemaRegistryConfig {
    pub url: String,
    /// `user:password`; secret.
    pub basic_auth_user_info: Option<String>,
    pub request_timeout: Duration,
    pub ssl_ca_location: Option<PathBuf>,
    pub ssl_certificate_location: Option<PathBuf>,
    pub ssl_key_location: Option<PathBuf>,
    /// Register each output's schema at start (`auto.register.schemas`).
    pub auto_register_schemas: bool,
    /// Without registering, write with the subject's latest version (`use.latest.version`).
    pub use_latest_version: bool,
}

impl fmt::Debug for SchemaRegistryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaRegistryConfig")
            .field("url", &redact_url_credentials(&self.url))
            .field(
                "basic_auth_user_info",
                &self.basic_auth_user_info.as_ref().map(|_| "<redacted>"),
            )
            .field("request_timeout", &self.request_timeout)
            .field("ssl_ca_location", &self.ssl_ca_location)
            .field("ssl_certificate_location", &self.ssl_certificate_location)
            .field("ssl_key_location", &self.ssl_key_location)
            .field("auto_register_schemas", &self.auto_register_schemas)
            .field("use_latest_version", &self.use_latest_version)
            .finish()
    }
}

/// `url` with any `user:password@` replaced, for logs and `Debug`.
pub fn redact_url_credentials(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}<redacted>@{}", &url[..scheme_end + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

impl fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kafka = redacted(&self.kafka);
        f.debug_struct("WorkerConfig")
            .field("application_id", &self.application_id)
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("num_stream_threads", &self.num_stream_threads)
            .field("processing_guarantee", &self.processing_guarantee)
            .field("commit_interval", &self.commit_interval)
            .field("max_task_idle", &self.max_task_idle)
            .field("state_dir", &self.state_dir)
            .field("state_cache_max_bytes", &self.state_cache_max_bytes)
            .field(
                "state_write_buffer_max_bytes",
                &self.state_write_buffer_max_bytes,
            )
            .field("topic_partitions", &self.topic_partitions)
            .field("topic_replication_factor", &self.topic_replication_factor)
            .field("startup_timeout", &self.startup_timeout)
            .field("static_membership", &self.static_membership)
            .field("metrics_address", &self.metrics_address)
            .field("schema_registry", &self.schema_registry)
            .field("topology", &redacted(&self.topology))
            .field("kafka", &kafka)
            .finish()
    }
}

/// `settings` with the values of secret keys replaced, for `Debug`.
fn redacted(settings: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    settings
        .iter()
        .map(|(k, v)| {
            let shown = if is_secret(k) {
                "<redacted>"
            } else {
                v.as_str()
            };
            (k.as_str(), shown)
        })
        .collect()
}

impl WorkerConfig {
    /// The librdkafka properties for one kind of client: every `kafka.<property>`, plus
    /// `kafka.consumer.<property>` or `kafka.producer.<property>` for that client.
    pub fn kafka_for(&self, client: KafkaClient) -> impl Iterator<Item = (&str, &str)> {
        self.kafka.iter().filter_map(move |(key, value)| {
            let scoped = |prefix: &str, wanted: KafkaClient| {
                key.strip_prefix(prefix)
                    .map(|k| (client == wanted).then_some(k))
            };
            let key = scoped("consumer.", KafkaClient::Consumer)
                .or_else(|| scoped("producer.", KafkaClient::Producer))
                .unwrap_or(Some(key.as_str()))?;
            Some((key, value.as_str()))
        })
    }
}

/// Collects configuration layers, then checks them together.
#[derive(Default)]
pub struct ConfigBuilder {
    /// key -> (value, where it came from)
    values: BTreeMap<String, (String, String)>,
    /// Keys of the topology's own ([`accept`](ConfigBuilder::accept)).
    topology_keys: Vec<&'static str>,
    errors: Vec<ConfigError>,
}

/// The prefix of environment variables that are configuration keys:
/// `SLUICE_CONFIG_NUM_STREAM_THREADS` is `num.stream.threads`.
pub const ENV_PREFIX: &str = "SLUICE_CONFIG_";

/// The one other variable read as a key: what `scripts/broker.sh start` prints for a
/// shell to export, read like `--brokers`.
pub const ENV_BROKERS: &str = "SLUICE_BROKERS";

impl ConfigBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts `keys` as well as the worker's own: the keys the topology reads (its
    /// services, its caches). Call it before setting any. Their values reach the topology
    /// unchecked, in [`WorkerConfig::topology`]; the topology checks them when it is built.
    pub fn accept(&mut self, keys: &[&'static str]) -> &mut Self {
        self.topology_keys.extend_from_slice(keys);
        self
    }

    /// Sets `key` from `source_name` (a file, `environment`, `flag`), overriding earlier layers.
    pub fn set(&mut self, key: &str, value: impl Into<String>, source_name: &str) -> &mut Self {
        let key = key.trim();
        if !key.starts_with("kafka.")
            && keys::find(key).is_none()
            && !self.topology_keys.contains(&key)
        {
            let known = KEYS
                .iter()
                .map(|k| k.name)
                .chain(self.topology_keys.iter().copied());
            self.errors.push(ConfigError::Unknown {
                key: key.to_string(),
                source_name: source_name.to_string(),
                known: known.collect::<Vec<_>>().join(", "),
            });
            return self;
        }
        self.values
            .insert(key.to_string(), (value.into(), source_name.to_string()));
        self
    }

    /// Reads a TOML file, flattening tables into dotted keys.
    pub fn file(&mut self, path: &Path) -> &mut Self {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                self.errors.push(ConfigError::File {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                });
                return self;
            }
        };
        let table: toml::Table = match text.parse() {
            Ok(table) => table,
            Err(e) => {
                // toml's message quotes the offending line, which may hold a secret: keep
                // only its position.
                let at = e
                    .span()
                    .map(|s| format!(" at byte {}", s.start))
                    .unwrap_or_default();
                self.errors.push(ConfigError::File {
                    path: path.to_path_buf(),
                    reason: format!("not valid TOML{at}"),
                });
                return self;
            }
        };
        let mut flat = Vec::new();
        flatten("", &toml::Value::Table(table), &mut flat);
        let source = path.display().to_string();
        for (key, value) in flat {
            match value {
                Some(v) => {
                    self.set(&key, v, &source);
                }
                None => self.errors.push(ConfigError::Invalid {
                    key,
                    value: "<array or date>".into(),
                    accepted: "a string, number or boolean".into(),
                }),
            }
        }
        self
    }

    /// Reads the configuration keys among the environment variables `vars` (pass
    /// `std::env::vars()`), by one rule: `SLUICE_CONFIG_<KEY>` is a key (upper case, `_` for
    /// `.`), and `SLUICE_BROKERS` is `bootstrap.servers`. Every other `SLUICE_*` variable
    /// belongs to the project's scripts (`SLUICE_BROKER_HOST`, `SLUICE_CACHE_DIR`, ...) and
    /// is not configuration, except one whose name would be a key under the prefix
    /// (`SLUICE_NUM_STREAM_THREADS`): that is an error naming the variable to write
    /// instead, so a setting is never silently ignored.
    pub fn env(&mut self, vars: impl IntoIterator<Item = (String, String)>) -> &mut Self {
        let key_of = |rest: &str| rest.to_ascii_lowercase().replace('_', ".");
        for (name, value) in vars {
            let source = format!("environment variable {name}");
            if let Some(rest) = name.strip_prefix(ENV_PREFIX) {
                self.set(&key_of(rest), value, &source);
            } else if name == ENV_BROKERS {
                self.set("bootstrap.servers", value, &source);
            } else if let Some(rest) = name.strip_prefix("SLUICE_") {
                let key = key_of(rest);
                if keys::find(&key).is_some() {
                    self.errors.push(ConfigError::Unprefixed {
                        variable: name.clone(),
                        key,
                        instead: format!("{ENV_PREFIX}{rest}"),
                    });
                }
            }
        }
        self
    }

    /// Checks every value; all problems are reported together.
    pub fn build(&self) -> Result<WorkerConfig, ConfigError> {
        let mut errors = self.errors.clone();
        // A key's value, else its default from the one table of keys.
        let get = |key: &str| -> Option<&str> {
            self.values
                .get(key)
                .map(|(v, _)| v.as_str())
                .or_else(|| keys::find(key).and_then(|k| k.default))
        };
        let accepted = |key: &str| keys::find(key).map_or("", |k| k.accepted).to_string();
        let invalid = |key: &str, value: &str| ConfigError::Invalid {
            key: key.to_string(),
            value: if is_secret(key) {
                "<redacted>".into()
            } else {
                value.to_string()
            },
            accepted: accepted(key),
        };
        let required = |key: &str, hint: &str, errors: &mut Vec<ConfigError>| -> String {
            match get(key) {
                Some(v) if !v.trim().is_empty() => v.trim().to_string(),
                _ => {
                    errors.push(ConfigError::Missing {
                        key: key.to_string(),
                        hint: hint.to_string(),
                    });
                    String::new()
                }
            }
        };
        let number = |key: &str,
                      range: std::ops::RangeInclusive<i64>,
                      errors: &mut Vec<ConfigError>|
         -> Option<i64> {
            let value = get(key)?;
            match value.trim().parse::<i64>() {
                Ok(n) if range.contains(&n) => Some(n),
                _ => {
                    errors.push(invalid(key, value));
                    None
                }
            }
        };

        let application_id = required(
            "application.id",
            "set it in the config file, by SLUICE_CONFIG_APPLICATION_ID or --application-id",
            &mut errors,
        );
        if !application_id.is_empty() && !sluice_engine::topology::valid_name(&application_id) {
            errors.push(invalid("application.id", &application_id));
        }
        let bootstrap_servers = required(
            "bootstrap.servers",
            "give the cluster with --brokers host:port, SLUICE_BROKERS or the config file",
            &mut errors,
        );
        if !bootstrap_servers.is_empty()
            && !bootstrap_servers.split(',').all(|s| {
                s.trim()
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            })
        {
            errors.push(invalid("bootstrap.servers", &bootstrap_servers));
        }
        // Past this point every key with a default has a value; a value that fails its
        // check is reported, and the placeholder beside it is never used.
        let num_stream_threads =
            number("num.stream.threads", 1..=64, &mut errors).unwrap_or_default() as usize;
        let processing_guarantee = match get("processing.guarantee").unwrap_or_default() {
            "exactly_once_v2" | "exactly_once" => ProcessingGuarantee::ExactlyOnceV2,
            "at_least_once" => ProcessingGuarantee::AtLeastOnce,
            other => {
                errors.push(invalid("processing.guarantee", other));
                ProcessingGuarantee::ExactlyOnceV2
            }
        };
        let commit_interval = number("commit.interval.ms", 1..=600_000, &mut errors)
            .map(|ms| Duration::from_millis(ms as u64))
            .unwrap_or_else(|| default_commit_interval(processing_guarantee));
        let topic_partitions =
            number("topic.partitions", 1..=10_000, &mut errors).map(|n| n as i32);
        let max_task_idle = match number("max.task.idle.ms", -1..=600_000, &mut errors) {
            Some(-1) => None,
            ms => Some(Duration::from_millis(ms.unwrap_or_default() as u64)),
        };
        let state_cache_max_bytes = number("state.cache.max.bytes", 1 << 20..=1 << 40, &mut errors)
            .unwrap_or_default() as usize;
        let state_write_buffer_max_bytes = number(
            "state.write.buffer.max.bytes",
            1 << 20..=1 << 40,
            &mut errors,
        )
        .unwrap_or_default() as usize;
        let topic_replication_factor =
            match number("topic.replication.factor", -1..=32, &mut errors) {
                Some(0) => {
                    errors.push(invalid("topic.replication.factor", "0"));
                    -1
                }
                n => n.unwrap_or(-1) as i32,
            };
        let startup_timeout = Duration::from_millis(
            number("startup.timeout.ms", 100..=600_000, &mut errors).unwrap_or_default() as u64,
        );
        let static_membership = match get("static.membership").unwrap_or_default() {
            "true" => true,
            "false" => false,
            other => {
                errors.push(invalid("static.membership", other));
                false
            }
        };
        let metrics_address = match get("metrics.address").unwrap_or_default().trim() {
            "off" => None,
            address => match std::net::ToSocketAddrs::to_socket_addrs(address)
                .ok()
                .and_then(|mut a| a.next())
            {
                Some(address) => Some(address),
                None => {
                    errors.push(invalid("metrics.address", address));
                    None
                }
            },
        };
        let flag = |key: &str, errors: &mut Vec<ConfigError>| match get(key).unwrap_or_default() {
            "true" => true,
            "false" => false,
            other => {
                errors.push(invalid(key, other));
                false
            }
        };
        let path = |key: &str| get(key).map(|p| PathBuf::from(p.trim()));
        let auto_register_schemas = flag("auto.register.schemas", &mut errors);
        let use_latest_version = flag("use.latest.version", &mut errors);
        let request_timeout = Duration::from_millis(
            number(
                "schema.registry.request.timeout.ms",
                100..=600_000,
                &mut errors,
            )
            .unwrap_or_default() as u64,
        );
        let schema_registry = match get("schema.registry.url").map(str::trim) {
            Some(url) if !url.is_empty() => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    errors.push(ConfigError::Invalid {
                        key: "schema.registry.url".into(),
                        value: redact_url_credentials(url),
                        accepted: accepted("schema.registry.url"),
                    });
                }
                let user_info = get("schema.registry.basic.auth.user.info").map(str::to_string);
                if user_info.as_deref().is_some_and(|u| !u.contains(':')) {
                    errors.push(invalid("schema.registry.basic.auth.user.info", ""));
                }
                let certificate = path("schema.registry.ssl.certificate.location");
                let key = path("schema.registry.ssl.key.location");
                if certificate.is_some() != key.is_some() {
                    errors.push(ConfigError::Missing {
                        key: if certificate.is_some() {
                            "schema.registry.ssl.key.location".into()
                        } else {
                            "schema.registry.ssl.certificate.location".into()
                        },
                        hint: "mutual TLS with the registry needs both the client certificate \
                               and its private key"
                            .into(),
                    });
                }
                Some(SchemaRegistryConfig {
                    url: url.to_string(),
                    basic_auth_user_info: user_info,
                    request_timeout,
                    ssl_ca_location: path("schema.registry.ssl.ca.location"),
                    ssl_certificate_location: certificate,
                    ssl_key_location: key,
                    auto_register_schemas,
                    use_latest_version,
                })
            }
            _ => {
                for (key, _) in self.values.range("schema.registry.".to_string()..) {
                    if !key.starts_with("schema.registry.") {
                        break;
                    }
                    errors.push(ConfigError::Missing {
                        key: "schema.registry.url".into(),
                        hint: format!("{key} is set, but no registry to use it with"),
                    });
                }
                None
            }
        };
        for (key, _) in self.values.iter() {
            let property = key.strip_prefix("kafka.").map(|k| {
                k.strip_prefix("consumer.")
                    .or(k.strip_prefix("producer."))
                    .unwrap_or(k)
            });
            if let Some(property) = property
                && let Some((_, instead)) = ENGINE_OWNED.iter().find(|(p, _)| *p == property)
            {
                errors.push(ConfigError::Invalid {
                    key: key.clone(),
                    value: "<set>".into(),
                    accepted: format!(
                        "the worker sets {property} itself for its guarantees; {instead}"
                    ),
                });
            }
        }
        let kafka = self
            .values
            .iter()
            .filter_map(|(k, (v, _))| k.strip_prefix("kafka.").map(|k| (k.to_string(), v.clone())))
            .collect();
        let topology = self
            .values
            .iter()
            .filter(|(k, _)| self.topology_keys.contains(&k.as_str()))
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect();

        match errors.len() {
            0 => Ok(WorkerConfig {
                application_id,
                bootstrap_servers,
                num_stream_threads,
                processing_guarantee,
                commit_interval,
                max_task_idle,
                state_dir: PathBuf::from(get("state.dir").unwrap_or_default()),
                state_cache_max_bytes,
                state_write_buffer_max_bytes,
                topic_partitions,
                topic_replication_factor,
                startup_timeout,
                static_membership,
                metrics_address,
                schema_registry,
                topology,
                kafka,
            }),
            1 => Err(errors.remove(0)),
            _ => Err(ConfigError::Many(errors)),
        }
    }
}

/// Flattens TOML tables into dotted keys; `None` marks values that are not scalars.
fn flatten(prefix: &str, value: &toml::Value, out: &mut Vec<(String, Option<String>)>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match value {
        toml::Value::Table(table) => {
            for (k, v) in table {
                flatten(&key(k), v, out);
            }
        }
        toml::Value::String(s) => out.push((prefix.to_string(), Some(s.clone()))),
        toml::Value::Integer(i) => out.push((prefix.to_string(), Some(i.to_string()))),
        toml::Value::Float(f) => out.push((prefix.to_string(), Some(f.to_string()))),
        toml::Value::Boolean(b) => out.push((prefix.to_string(), Some(b.to_string()))),
        toml::Value::Array(_) | toml::Value::Datetime(_) => out.push((prefix.to_string(), None)),
    }
}

#[cfg(test)]
mod tests;
