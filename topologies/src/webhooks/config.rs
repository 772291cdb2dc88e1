//! [`WebhooksConfig`]: the topology's settings, from the worker's `webhooks.*` keys.
//!
//! Keys of the topology itself (below) beside the connectors crate's HTTP keys
//! ([`HttpConfig::from_map`]: timeouts, `allow.cidrs`, limits, breaker, and the tiers'
//! delays `retry.delays.ms`), all under `webhooks.`.

use std::fmt;
use std::sync::Arc;

use sluice_connectors::http::{ConfigError, EndpointDirectory, HttpConfig, Secret};

/// Where the topology reads the time of an attempt (epoch milliseconds), from which a
/// retry's due time is counted: the system clock, or a test's (a TestDriver's wall clock).
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    pub fn new(now_ms: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        Clock(Arc::new(now_ms))
    }

    pub fn now_ms(&self) -> i64 {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new(|| chrono::Utc::now().timestamp_millis())
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}

/// The topology's own keys, after `webhooks.`.
pub const KEYS: &[&str] = &[
    "input.topic",
    "attempts.topic",
    "max.in.flight",
    "signing.secrets",
    "endpoints.file",
    "secrets.file",
    "ordering",
];

/// In what order a key's webhooks are delivered (`webhooks.ordering`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ordering {
    /// `none`, the default: no order. A failed webhook moves to the retry tiers and the
    /// webhooks after it go on.
    #[default]
    None,
    /// `key`: webhooks of one record key are delivered one at a time, in the order of
    /// their partition, through retries too; other keys go on. See [`super::fifo`].
    Key,
}

/// The webhooks topology's settings.
#[derive(Clone, Debug)]
pub struct WebhooksConfig {
    /// `webhooks.input.topic`: where webhooks come in; the tiers are
    /// `<input>.retry-<n>` and the dead-letter topic `<input>.dlq`.
    pub input_topic: String,
    /// `webhooks.attempts.topic`: the delivery-attempt events.
    pub attempts_topic: String,
    /// `webhooks.max.in.flight`: attempts in flight per task (per partition of a topic).
    pub max_in_flight: usize,
    /// `webhooks.signing.secrets`: the `whsec_` secrets every request is signed with
    /// (Standard Webhooks), comma-separated; more than one while a secret is rotated.
    /// None: requests go unsigned (and without `webhook-id`; `Idempotency-Key` stays).
    pub secrets: Vec<Secret>,
    /// `webhooks.endpoints.file` and `webhooks.secrets.file`: the endpoints webhooks may
    /// name by `endpointId`, and the secrets they may name by `secretRef`.
    pub directory: Arc<EndpointDirectory>,
    /// `webhooks.ordering`: `none` or `key`.
    pub ordering: Ordering,
    /// The deliverer's settings, `webhooks.*` keys of [`HttpConfig`].
    pub http: HttpConfig,
    /// The time of attempts (the system clock but in tests).
    pub clock: Clock,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            input_topic: super::INPUT_TOPIC.to_string(),
            attempts_topic: super::ATTEMPTS_TOPIC.to_string(),
            max_in_flight: 100,
            secrets: Vec::new(),
            directory: Arc::default(),
            ordering: Ordering::None,
            http: HttpConfig::default(),
            clock: Clock::default(),
        }
    }
}

impl WebhooksConfig {
    /// Reads the `webhooks.*` keys of `entries` (others are left alone); missing keys keep
    /// their defaults; every problem is reported at once.
    pub fn from_map<K, V>(entries: impl IntoIterator<Item = (K, V)>) -> Result<Self, ConfigError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut config = WebhooksConfig::default();
        let mut errors = Vec::new();
        let mut http_entries = Vec::new();
        let (mut endpoints_file, mut secrets_file) = (None, None);
        for (key, value) in entries {
            let (key, value) = (key.as_ref(), value.as_ref());
            let Some(name) = key.strip_prefix("webhooks.") else {
                continue;
            };
            let invalid = |fix: &str| ConfigError::Invalid {
                key: key.to_string(),
                value: value.to_string(),
                fix: fix.to_string(),
            };
            match name {
                "input.topic" | "attempts.topic" => {
                    if !sluice_engine::topology::valid_name(value) {
                        errors.push(invalid("a topic name of [A-Za-z0-9._-]"));
                    } else if name == "input.topic" {
                        config.input_topic = value.to_string();
                    } else {
                        config.attempts_topic = value.to_string();
                    }
                }
                "signing.secrets" => {
                    let parsed: Result<Vec<Secret>, _> = value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(Secret::parse)
                        .collect();
                    match parsed {
                        Ok(secrets) => config.secrets = secrets,
                        // The value is a secret: never echoed.
                        Err(_) => errors.push(ConfigError::Invalid {
                            key: key.to_string(),
                            value: "(redacted)".to_string(),
                            fix: "comma-separated whsec_ secrets (base64 of 24 to 64 bytes)"
                                .to_string(),
                        }),
                    }
                }
                "endpoints.file" => endpoints_file = Some(value.to_string()),
                "secrets.file" => secrets_file = Some(value.to_string()),
                "ordering" => match value.trim() {
                    "none" => config.ordering = Ordering::None,
                    "key" => config.ordering = Ordering::Key,
                    _ => errors.push(invalid("none (no order) or key (one at a time per key)")),
                },
                "max.in.flight" => match value.trim().parse::<usize>() {
                    Ok(n) if (1..=10_000).contains(&n) => config.max_in_flight = n,
                    _ => errors.push(invalid("a whole number from 1 to 10000")),
                },
                _ => http_entries.push((key.to_string(), value.to_string())),
            }
        }
        let paths = (
            endpoints_file.as_deref().map(std::path::Path::new),
            secrets_file.as_deref().map(std::path::Path::new),
        );
        match EndpointDirectory::from_files(paths.0, paths.1) {
            Ok(directory) => config.directory = Arc::new(directory),
            Err(e) => {
                // The key of the file the problem is in (its path is no secret).
                let key = match paths.1 == Some(e.file()) {
                    true => "webhooks.secrets.file",
                    false => "webhooks.endpoints.file",
                };
                errors.push(ConfigError::Invalid {
                    key: key.to_string(),
                    value: e.file().display().to_string(),
                    fix: format!("{e}; fix the file (the format is in the webhooks docs)"),
                });
            }
        }
        match HttpConfig::from_map("webhooks", http_entries) {
            Ok(http) => config.http = http,
            Err(ConfigError::Many(many)) => errors.extend(many),
            Err(e) => errors.push(e),
        }
        match errors.len() {
            0 => Ok(config),
            1 => Err(errors.remove(0)),
            _ => Err(ConfigError::Many(errors)),
        }
    }

    /// Retry tier `n`'s topic (1-based).
    pub fn tier_topic(&self, n: u32) -> String {
        format!("{}.retry-{n}", self.input_topic)
    }

    /// The dead-letter topic.
    pub fn dead_letter_topic(&self) -> String {
        format!("{}.dlq", self.input_topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn topology_and_http_keys_read_together_and_problems_are_reported_at_once() {
        let config = WebhooksConfig::from_map([
            ("webhooks.input.topic", "hooks"),
            ("webhooks.max.in.flight", "8"),
            ("webhooks.retry.delays.ms", "200,400"),
            ("webhooks.allow.cidrs", "127.0.0.0/8"),
            ("kafka.other", "left alone"),
        ])
        .unwrap();
        assert_eq!(config.tier_topic(2), "hooks.retry-2");
        assert_eq!(config.dead_letter_topic(), "hooks.dlq");
        assert_eq!(config.max_in_flight, 8);
        assert_eq!(
            config.http.retry.delays,
            [Duration::from_millis(200), Duration::from_millis(400)]
        );

        let err = WebhooksConfig::from_map([
            ("webhooks.signing.secrets", "whsec_NOT-BASE64-SECRET"),
            ("webhooks.max.in.flight", "0"),
            ("webhooks.timeout.ms", "soon"),
            ("webhooks.no.such.key", "1"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("4 configuration problems"), "{err}");
        assert!(
            !err.contains("NOT-BASE64-SECRET"),
            "a secret in an error: {err}"
        );
        assert!(err.contains("webhooks.max.in.flight"), "{err}");
        assert!(err.contains("webhooks.timeout.ms"), "{err}");
        assert!(err.contains("webhooks.no.such.key"), "{err}");
    }
}
