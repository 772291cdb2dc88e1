//! Worker configuration: Kafka-Streams-style keys from a TOML file, the environment and
//! flags, checked all at once.
//!
//! Keys are dotted names (`num.stream.threads`). In a TOML file they may be written dotted
//! or as tables — `[kafka]` followed by `"security.protocol" = "SSL"` is the key
//! `kafka.security.protocol` — because the file is flattened to dotted names before it is
//! read. An environment variable `SLUICE_NUM_STREAM_THREADS` is the key
//! `num.stream.threads` (upper case, `_` for `.`). Later sources win:
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
    #[error("cannot read config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{} configuration problems:\n  - {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  - "))]
    Many(Vec<ConfigError>),
}

/// Every key the worker reads, with its default and what it accepts.
const KEYS: &[(&str, Option<&str>, &str)] = &[
    (
        "application.id",
        None,
        "a name of [A-Za-z0-9._-]; the consumer group and the prefix of internal topics",
    ),
    (
        "bootstrap.servers",
        None,
        "host:port[,host:port...] of the Kafka cluster",
    ),
    (
        "num.stream.threads",
        Some("1"),
        "a whole number from 1 to 64",
    ),
    (
        "processing.guarantee",
        Some("exactly_once_v2"),
        "exactly_once_v2 or at_least_once",
    ),
    (
        "commit.interval.ms",
        None,
        "a whole number of milliseconds from 1 to 600000 (default 100 under exactly_once_v2, 5000 under at_least_once)",
    ),
    ("state.dir", Some("/tmp/sluice"), "a directory path"),
    (
        "max.task.idle.ms",
        Some("0"),
        "-1, or a whole number of milliseconds from 0 to 600000: how long a task reading several partitions (a join or merge of topics) waits for an empty one before processing the others out of timestamp order; 0 waits only while the broker holds records for it, -1 never waits",
    ),
    (
        "state.cache.max.bytes",
        Some("67108864"),
        "a whole number of bytes from 1048576 to 1099511627776: the block cache all RocksDB stores of the worker share",
    ),
    (
        "state.write.buffer.max.bytes",
        Some("33554432"),
        "a whole number of bytes from 1048576 to 1099511627776: the memtables all RocksDB stores of the worker share",
    ),
    (
        "topic.partitions",
        None,
        "a whole number from 1 to 10000: partitions of topics the worker creates (default: as many as its source topics have)",
    ),
    (
        "topic.replication.factor",
        Some("-1"),
        "-1 (the broker's default) or a whole number from 1 to 32",
    ),
    (
        "static.membership",
        Some("false"),
        "true or false: true gives each stream thread a group.instance.id derived from the state dir, so a restarted worker takes its old place at once, but a stopped worker's partitions move only after kafka.consumer.session.timeout.ms",
    ),
    (
        "metrics.address",
        Some("0.0.0.0:9464"),
        "host:port for /metrics, /healthz and /readyz (port 0 picks a free one), or `off`",
    ),
    (
        "startup.timeout.ms",
        Some("30000"),
        "a whole number of milliseconds from 100 to 600000: how long to wait for the cluster at start",
    ),
];

/// librdkafka properties the worker sets itself, because its guarantees rest on them.
const ENGINE_OWNED: &[(&str, &str)] = &[
    ("group.id", "use application.id"),
    ("group.instance.id", "use static.membership"),
    ("enable.auto.commit", "commits follow processing.guarantee"),
    (
        "enable.auto.offset.store",
        "commits follow processing.guarantee",
    ),
    ("isolation.level", "it follows processing.guarantee"),
    (
        "transactional.id",
        "it derives from application.id and the state dir",
    ),
    ("enable.idempotence", "it follows processing.guarantee"),
];

/// Substrings of key names whose values are secret.
const SECRET_MARKERS: &[&str] = &[
    "password",
    "secret",
    "token",
    "key.pem",
    "private",
    "sasl.jaas",
];

/// librdkafka's configuration errors quote the rejected value: hide it when the key is secret.
pub fn redact_kafka_error(e: rdkafka::error::KafkaError) -> rdkafka::error::KafkaError {
    match e {
        rdkafka::error::KafkaError::ClientConfig(res, desc, key, _) if is_secret(&key) => {
            rdkafka::error::KafkaError::ClientConfig(res, desc, key, "<redacted>".into())
        }
        other => other,
    }
}

pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_MARKERS.iter().any(|m| key.contains(m))
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
    /// librdkafka properties, without the `kafka.` prefix.
    pub kafka: BTreeMap<String, String>,
}

impl fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kafka: BTreeMap<&str, &str> = self
            .kafka
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    if is_secret(k) {
                        "<redacted>"
                    } else {
                        v.as_str()
                    },
                )
            })
            .collect();
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
            .field("kafka", &kafka)
            .finish()
    }
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
    errors: Vec<ConfigError>,
}

impl ConfigBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` from `source_name` (a file, `environment`, `flag`), overriding earlier layers.
    pub fn set(&mut self, key: &str, value: impl Into<String>, source_name: &str) -> &mut Self {
        let key = key.trim();
        if !key.starts_with("kafka.") && !KEYS.iter().any(|(k, _, _)| *k == key) {
            self.errors.push(ConfigError::Unknown {
                key: key.to_string(),
                source_name: source_name.to_string(),
                known: KEYS
                    .iter()
                    .map(|(k, _, _)| *k)
                    .collect::<Vec<_>>()
                    .join(", "),
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

    /// Reads every `SLUICE_*` variable of `vars` (pass `std::env::vars()`).
    pub fn env(&mut self, vars: impl IntoIterator<Item = (String, String)>) -> &mut Self {
        for (name, value) in vars {
            // The crash-test hook (see runtime::failpoint) is not a configuration key.
            if name == super::failpoint::ENV {
                continue;
            }
            if let Some(rest) = name.strip_prefix("SLUICE_") {
                let key = rest.to_ascii_lowercase().replace('_', ".");
                self.set(&key, value, &format!("environment variable {name}"));
            }
        }
        self
    }

    /// Checks every value; all problems are reported together.
    pub fn build(&self) -> Result<WorkerConfig, ConfigError> {
        let mut errors = self.errors.clone();
        let get = |key: &str| -> Option<&str> {
            self.values.get(key).map(|(v, _)| v.as_str()).or_else(|| {
                KEYS.iter()
                    .find(|(k, _, _)| *k == key)
                    .and_then(|(_, default, _)| *default)
            })
        };
        let accepted = |key: &str| {
            KEYS.iter()
                .find(|(k, _, _)| *k == key)
                .map(|(_, _, a)| a.to_string())
                .unwrap_or_default()
        };
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
            "set it in the config file, by SLUICE_APPLICATION_ID or --application-id",
            &mut errors,
        );
        if !application_id.is_empty() && !crate::topology::valid_name(&application_id) {
            errors.push(invalid("application.id", &application_id));
        }
        let bootstrap_servers = required(
            "bootstrap.servers",
            "give the cluster with --brokers host:port, SLUICE_BOOTSTRAP_SERVERS or the config file",
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
        let num_stream_threads =
            number("num.stream.threads", 1..=64, &mut errors).unwrap_or(1) as usize;
        let processing_guarantee = match get("processing.guarantee").unwrap_or_default() {
            "exactly_once_v2" | "exactly_once" => ProcessingGuarantee::ExactlyOnceV2,
            "at_least_once" => ProcessingGuarantee::AtLeastOnce,
            other => {
                errors.push(invalid("processing.guarantee", other));
                ProcessingGuarantee::ExactlyOnceV2
            }
        };
        let default_commit = match processing_guarantee {
            ProcessingGuarantee::ExactlyOnceV2 => 100,
            ProcessingGuarantee::AtLeastOnce => 5000,
        };
        let commit_interval = Duration::from_millis(
            number("commit.interval.ms", 1..=600_000, &mut errors).unwrap_or(default_commit) as u64,
        );
        let topic_partitions =
            number("topic.partitions", 1..=10_000, &mut errors).map(|n| n as i32);
        let max_task_idle = match number("max.task.idle.ms", -1..=600_000, &mut errors) {
            Some(-1) => None,
            Some(ms) => Some(Duration::from_millis(ms as u64)),
            None => Some(Duration::ZERO),
        };
        let state_cache_max_bytes = number("state.cache.max.bytes", 1 << 20..=1 << 40, &mut errors)
            .unwrap_or(64 << 20) as usize;
        let state_write_buffer_max_bytes = number(
            "state.write.buffer.max.bytes",
            1 << 20..=1 << 40,
            &mut errors,
        )
        .unwrap_or(32 << 20) as usize;
        let topic_replication_factor = match get("topic.replication.factor") {
            Some(v) => match v.trim().parse::<i32>() {
                Ok(n) if n == -1 || (1..=32).contains(&n) => n,
                _ => {
                    errors.push(invalid("topic.replication.factor", v));
                    -1
                }
            },
            None => -1,
        };
        let startup_timeout = Duration::from_millis(
            number("startup.timeout.ms", 100..=600_000, &mut errors).unwrap_or(30_000) as u64,
        );
        let static_membership = match get("static.membership").unwrap_or("false") {
            "true" => true,
            "false" => false,
            other => {
                errors.push(invalid("static.membership", other));
                false
            }
        };
        let metrics_address = match get("metrics.address").unwrap_or("0.0.0.0:9464").trim() {
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

        match errors.len() {
            0 => Ok(WorkerConfig {
                application_id,
                bootstrap_servers,
                num_stream_threads,
                processing_guarantee,
                commit_interval,
                max_task_idle,
                state_dir: PathBuf::from(get("state.dir").unwrap_or("/tmp/sluice")),
                state_cache_max_bytes,
                state_write_buffer_max_bytes,
                topic_partitions,
                topic_replication_factor,
                startup_timeout,
                static_membership,
                metrics_address,
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
mod tests {
    use super::*;

    fn minimal() -> ConfigBuilder {
        let mut b = ConfigBuilder::new();
        b.set("application.id", "app", "flag")
            .set("bootstrap.servers", "127.0.0.1:9092", "flag");
        b
    }

    #[test]
    fn defaults_follow_the_processing_guarantee() {
        let c = minimal().build().unwrap();
        assert_eq!(c.processing_guarantee, ProcessingGuarantee::ExactlyOnceV2);
        assert_eq!(c.commit_interval, Duration::from_millis(100));
        assert_eq!(c.num_stream_threads, 1);
        let c = minimal()
            .set("processing.guarantee", "at_least_once", "flag")
            .build()
            .unwrap();
        assert_eq!(c.commit_interval, Duration::from_millis(5000));
    }

    #[test]
    fn a_toml_file_may_use_dotted_keys_or_tables() {
        let dir = std::env::temp_dir().join(format!("sluice-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sluice.toml");
        std::fs::write(
            &path,
            "application.id = \"orders\"\nbootstrap.servers = \"k:9092\"\nnum.stream.threads = 4\n\
             [kafka]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.password\" = \"hunter2\"\n",
        )
        .unwrap();
        let c = ConfigBuilder::new().file(&path).build().unwrap();
        assert_eq!(c.num_stream_threads, 4);
        assert_eq!(c.kafka["security.protocol"], "SASL_SSL");
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }

    #[test]
    fn environment_overrides_the_file_and_flags_override_the_environment() {
        let mut b = minimal();
        b.env([("SLUICE_NUM_STREAM_THREADS".to_string(), "3".to_string())]);
        assert_eq!(b.build().unwrap().num_stream_threads, 3);
        b.set("num.stream.threads", "5", "flag");
        assert_eq!(b.build().unwrap().num_stream_threads, 5);
    }

    #[test]
    fn a_bad_value_names_the_key_the_value_and_what_is_accepted() {
        let err = minimal()
            .set("commit.interval.ms", "soon", "flag")
            .build()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "commit.interval.ms = \"soon\" is invalid: a whole number of milliseconds from 1 to 600000 (default 100 under exactly_once_v2, 5000 under at_least_once)"
        );
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_it_and_its_source() {
        let err = minimal()
            .env([("SLUICE_NUM_STREAM_THREAD".to_string(), "3".to_string())])
            .build()
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("unknown configuration key `num.stream.thread`"),
            "{text}"
        );
        assert!(text.contains("SLUICE_NUM_STREAM_THREAD"), "{text}");
    }

    #[test]
    fn every_problem_is_reported_at_once_and_secrets_are_not_echoed() {
        let err = ConfigBuilder::new()
            .set("processing.guarantee", "maybe", "flag")
            .set("kafka.sasl.password", "hunter2", "flag")
            .build()
            .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("3 configuration problems"), "{text}");
        assert!(text.contains("application.id is required"), "{text}");
        assert!(text.contains("bootstrap.servers is required"), "{text}");
        assert!(text.contains("exactly_once_v2 or at_least_once"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn scoped_kafka_properties_reach_only_their_client() {
        let c = minimal()
            .set("kafka.security.protocol", "SSL", "flag")
            .set("kafka.consumer.session.timeout.ms", "6000", "flag")
            .set("kafka.producer.linger.ms", "20", "flag")
            .build()
            .unwrap();
        let consumer: Vec<_> = c.kafka_for(KafkaClient::Consumer).collect();
        let producer: Vec<_> = c.kafka_for(KafkaClient::Producer).collect();
        let admin: Vec<_> = c.kafka_for(KafkaClient::Admin).collect();
        assert_eq!(
            consumer,
            [("session.timeout.ms", "6000"), ("security.protocol", "SSL")]
        );
        assert_eq!(
            producer,
            [("linger.ms", "20"), ("security.protocol", "SSL")]
        );
        assert_eq!(admin, [("security.protocol", "SSL")]);
    }

    #[test]
    fn librdkafka_config_errors_hide_secret_values() {
        let e = rdkafka::config::ClientConfig::new()
            .set("ssl.key.password", "hunter2")
            .set("no.such.property", "x")
            .create::<rdkafka::consumer::BaseConsumer>()
            .err()
            .unwrap();
        // The unknown key is reported with its (non-secret) value…
        assert!(
            redact_kafka_error(e)
                .to_string()
                .contains("no.such.property")
        );
        let secret = rdkafka::error::KafkaError::ClientConfig(
            rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            "invalid value".into(),
            "sasl.password".into(),
            "hunter2".into(),
        );
        // …and a secret one never is.
        let text = redact_kafka_error(secret).to_string();
        assert!(
            !text.contains("hunter2") && text.contains("<redacted>"),
            "{text}"
        );
    }

    #[test]
    fn kafka_properties_the_guarantees_rest_on_are_refused() {
        let err = minimal()
            .set("kafka.consumer.isolation.level", "read_uncommitted", "flag")
            .build()
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("the worker sets isolation.level itself for its guarantees"),
            "{err}"
        );
    }

    #[test]
    fn malformed_bootstrap_servers_are_rejected() {
        let err = minimal()
            .set("bootstrap.servers", "localhost", "flag")
            .build()
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("bootstrap.servers = \"localhost\" is invalid"),
            "{err}"
        );
    }
}
