//! The one table of the worker's configuration keys: each key's default and what it
//! accepts. The builder reads defaults from here and nowhere else; the error for a bad
//! value quotes what the key accepts from here too.

use std::time::Duration;

use super::ProcessingGuarantee;

/// A configuration key the worker reads.
pub(crate) struct Key {
    pub(crate) name: &'static str,
    /// Its value when no layer sets it; `None`: required, or derived (see `accepted`).
    pub(crate) default: Option<&'static str>,
    /// What it accepts, for error messages and documentation.
    pub(crate) accepted: &'static str,
}

const fn key(name: &'static str, default: Option<&'static str>, accepted: &'static str) -> Key {
    Key {
        name,
        default,
        accepted,
    }
}

/// Every key the worker reads, with its default and what it accepts.
pub(crate) const KEYS: &[Key] = &[
    key(
        "application.id",
        None,
        "a name of [A-Za-z0-9._-]; the consumer group and the prefix of internal topics",
    ),
    key(
        "bootstrap.servers",
        None,
        "host:port[,host:port...] of the Kafka cluster",
    ),
    key(
        "num.stream.threads",
        Some("1"),
        "a whole number from 1 to 64",
    ),
    key(
        "processing.guarantee",
        Some("exactly_once_v2"),
        "exactly_once_v2 or at_least_once",
    ),
    key(
        "commit.interval.ms",
        None,
        "a whole number of milliseconds from 1 to 600000 (default 100 under exactly_once_v2, 5000 under at_least_once)",
    ),
    key("state.dir", Some("/tmp/sluice"), "a directory path"),
    key(
        "max.task.idle.ms",
        Some("0"),
        "-1, or a whole number of milliseconds from 0 to 600000: how long a task reading several partitions (a join or merge of topics) waits for an empty one before processing the others out of timestamp order; 0 waits only while the broker holds records for it, -1 never waits",
    ),
    key(
        "state.cache.max.bytes",
        Some("67108864"),
        "a whole number of bytes from 1048576 to 1099511627776: the block cache all RocksDB stores of the worker share",
    ),
    key(
        "state.write.buffer.max.bytes",
        Some("33554432"),
        "a whole number of bytes from 1048576 to 1099511627776: the memtables all RocksDB stores of the worker share",
    ),
    key(
        "topic.partitions",
        None,
        "a whole number from 1 to 10000: partitions of topics the worker creates (default: as many as its source topics have)",
    ),
    key(
        "topic.replication.factor",
        Some("-1"),
        "-1 (the broker's default) or a whole number from 1 to 32",
    ),
    key(
        "static.membership",
        Some("false"),
        "true or false: true gives each stream thread a group.instance.id derived from the state dir, so a restarted worker takes its old place at once, but a stopped worker's partitions move only after kafka.consumer.session.timeout.ms",
    ),
    key(
        "metrics.address",
        Some("0.0.0.0:9464"),
        "host:port for /metrics, /healthz and /readyz (port 0 picks a free one), or `off`",
    ),
    key(
        "schema.registry.url",
        None,
        "the http:// or https:// base URL of a Confluent-compatible schema registry; without it Avro records carry local schema ids, which only the demo and the TestDriver should use",
    ),
    key(
        "schema.registry.basic.auth.user.info",
        None,
        "user:password for the registry's HTTP basic auth",
    ),
    key(
        "schema.registry.request.timeout.ms",
        Some("10000"),
        "a whole number of milliseconds from 100 to 600000: the bound of one registry request",
    ),
    key(
        "schema.registry.ssl.ca.location",
        None,
        "a PEM file of CA certificates the registry's certificate is checked against, besides the public roots",
    ),
    key(
        "schema.registry.ssl.certificate.location",
        None,
        "a PEM file of the client certificate for mutual TLS with the registry (with schema.registry.ssl.key.location)",
    ),
    key(
        "schema.registry.ssl.key.location",
        None,
        "a PEM file of the client's private key for mutual TLS with the registry (with schema.registry.ssl.certificate.location)",
    ),
    key(
        "auto.register.schemas",
        Some("true"),
        "true or false: true registers each output's schema under <topic>-value at start; false finds the id the subject already has for it",
    ),
    key(
        "use.latest.version",
        Some("false"),
        "true or false: with auto.register.schemas=false, write with the subject's latest version instead of finding the output's own schema",
    ),
    key(
        "startup.timeout.ms",
        Some("30000"),
        "a whole number of milliseconds from 100 to 600000: how long to wait for the cluster at start",
    ),
];

/// The default of `commit.interval.ms`, which depends on the guarantee (as in Kafka
/// Streams): short under exactly-once, where a commit ends the transaction that holds
/// outputs back from read_committed consumers.
pub(crate) fn default_commit_interval(guarantee: ProcessingGuarantee) -> Duration {
    match guarantee {
        ProcessingGuarantee::ExactlyOnceV2 => Duration::from_millis(100),
        ProcessingGuarantee::AtLeastOnce => Duration::from_millis(5000),
    }
}

/// The key named `name`, if the worker reads it.
pub(crate) fn find(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// librdkafka properties the worker sets itself, because its guarantees rest on them.
pub(crate) const ENGINE_OWNED: &[(&str, &str)] = &[
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
    "user.info",
    // A connection URI (mongodb://user:password@host) carries its credentials.
    ".uri",
];

/// Whether the value of `key` is secret: it never appears in errors, logs or `Debug`.
pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_MARKERS.iter().any(|m| key.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_is_accepted_by_the_builder() {
        // A default the builder refuses would make every worker fail to start.
        let mut builder = super::super::ConfigBuilder::new();
        builder
            .set("application.id", "app", "test")
            .set("bootstrap.servers", "localhost:9092", "test")
            // The registry's settings are refused without a registry to apply them to.
            .set("schema.registry.url", "http://localhost:8081", "test");
        for key in KEYS {
            if let Some(default) = key.default {
                builder.set(key.name, default, "test");
            }
        }
        builder.build().expect("the defaults are valid values");
    }
}
