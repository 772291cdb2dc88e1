//! The outbound HTTP configuration, read from string keys and checked all at once.
//!
//! Each user of the deliverer has its own prefix: the webhooks topology reads
//! `webhooks.timeout.ms`, a pharmacy sink would read `pharmacy.timeout.ms`. The keys, after
//! the prefix:
//!
//! | key | default | what |
//! |---|---|---|
//! | `connect.timeout.ms` | 5000, or `timeout.ms` if less | connecting (TCP and TLS), and resolving the host; at most `timeout.ms` |
//! | `timeout.ms` | 15000 | a whole attempt, from sending to the last byte read |
//! | `response.max.bytes` | 65536 | the most of a response body read; the rest is dropped |
//! | `allow.cidrs` | (none) | comma-separated CIDRs the SSRF guard lets through |
//! | `pool.idle.timeout.ms` | 90000 | how long an idle keep-alive connection is kept |
//! | `pool.max.idle.per.endpoint` | 32 | idle connections kept per endpoint |
//! | `endpoint.concurrency` | 16 | requests in flight per endpoint at most |
//! | `endpoint.rate.per.second` | (none) | requests per second per endpoint (GCRA); none: no limit |
//! | `endpoint.rate.burst` | = rate | requests that may go at once after a quiet spell |
//! | `endpoint.rate.max.wait.ms` | 1000 | the longest a request waits for the rate limit before it is refused as `rate-limited` |
//! | `retry.delays.ms` | 5000,300000,1800000,7200000,18000000,36000000,36000000 | the delay of each retry tier |
//! | `retry.jitter` | 0.2 | the most each delay is scaled up or down (±20%) |
//! | `retry.after.max.ms` | 3600000 | the longest `Retry-After` honoured |
//! | `retry.throttled.min.ms` | 60000 | the least wait after a 429, a 408 or a timeout |
//! | `breaker.consecutive.failures` | 5 | failures in a row that open an endpoint's circuit |
//! | `breaker.failure.ratio` | 0.7 | the failure ratio over a window that opens it |
//! | `breaker.min.requests` | 10 | the fewest calls in a window before its ratio counts |
//! | `breaker.window.ms` | 300000 | the window of the ratio |
//! | `breaker.cooldown.ms` | 30000 | how long a circuit stays open before a probe |
//! | `disable.after.ms` | 432000000 | how long an endpoint fails before it is disabled (5 days) |
//!
//! A key under the prefix that is not one of these is an error naming it, so a typo never
//! falls back to a default silently. Every error names the full key and what would be
//! accepted.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;

use ipnet::IpNet;

use super::breaker::BreakerConfig;
use super::health::DEFAULT_DISABLE_AFTER;
use super::retry::RetrySchedule;

/// A requests-per-second limit with a burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

/// How the deliverer talks to endpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpConfig {
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub response_max_bytes: usize,
    pub allow_cidrs: Vec<IpNet>,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_endpoint: usize,
    pub endpoint_concurrency: usize,
    pub rate_limit: Option<RateLimit>,
    pub rate_max_wait: Duration,
    pub retry: RetrySchedule,
    pub breaker: BreakerConfig,
    pub disable_after: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            response_max_bytes: 64 * 1024,
            allow_cidrs: Vec::new(),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_endpoint: 32,
            endpoint_concurrency: 16,
            rate_limit: None,
            rate_max_wait: Duration::from_secs(1),
            retry: RetrySchedule::default(),
            breaker: BreakerConfig::default(),
            disable_after: DEFAULT_DISABLE_AFTER,
        }
    }
}

/// A configuration problem: the full key, the value (configuration, never a secret here)
/// and what would be accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{key} = {value:?} is invalid: {fix}")]
    Invalid {
        key: String,
        value: String,
        fix: String,
    },
    #[error("unknown configuration key `{key}`: the keys under {prefix}. are {known}")]
    Unknown {
        key: String,
        prefix: String,
        known: String,
    },
    #[error("{} configuration problems:\n  - {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  - "))]
    Many(Vec<ConfigError>),
}

/// The keys after the prefix.
pub const KEYS: &[&str] = &[
    "connect.timeout.ms",
    "timeout.ms",
    "response.max.bytes",
    "allow.cidrs",
    "pool.idle.timeout.ms",
    "pool.max.idle.per.endpoint",
    "endpoint.concurrency",
    "endpoint.rate.per.second",
    "endpoint.rate.burst",
    "endpoint.rate.max.wait.ms",
    "retry.delays.ms",
    "retry.jitter",
    "retry.after.max.ms",
    "retry.throttled.min.ms",
    "breaker.consecutive.failures",
    "breaker.failure.ratio",
    "breaker.min.requests",
    "breaker.window.ms",
    "breaker.cooldown.ms",
    "disable.after.ms",
];

/// Reads the keys of one prefix and gathers every problem.
struct Reader<'a> {
    prefix: &'a str,
    values: BTreeMap<String, String>,
    errors: Vec<ConfigError>,
}

impl Reader<'_> {
    fn key(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    fn invalid(&mut self, name: &str, value: &str, fix: impl Into<String>) {
        self.errors.push(ConfigError::Invalid {
            key: self.key(name),
            value: value.to_owned(),
            fix: fix.into(),
        });
    }

    fn parsed<T: std::str::FromStr>(&mut self, name: &str, accepted: &str) -> Option<T> {
        let value = self.values.get(name)?.clone();
        match value.trim().parse() {
            Ok(v) => Some(v),
            Err(_) => {
                self.invalid(name, &value, accepted);
                None
            }
        }
    }

    /// A positive number of milliseconds.
    fn millis(&mut self, name: &str, into: &mut Duration) {
        if let Some(ms) = self.parsed::<u64>(name, "a whole number of milliseconds, above 0") {
            if ms == 0 {
                self.invalid(name, "0", "a whole number of milliseconds, above 0");
            } else {
                *into = Duration::from_millis(ms);
            }
        }
    }

    fn count<T: std::str::FromStr + PartialOrd + Copy + std::fmt::Display>(
        &mut self,
        name: &str,
        range: std::ops::RangeInclusive<T>,
        into: &mut T,
    ) {
        let accepted = format!("a whole number from {} to {}", range.start(), range.end());
        if let Some(v) = self.parsed::<T>(name, &accepted) {
            if range.contains(&v) {
                *into = v;
            } else {
                let value = self.values[name].clone();
                self.invalid(name, &value, accepted);
            }
        }
    }

    fn fraction(&mut self, name: &str, low_open: bool, high: f64, into: &mut f64) {
        let accepted = format!(
            "a number {} 0 and at most {high}",
            if low_open { "above" } else { "from" }
        );
        if let Some(v) = self.parsed::<f64>(name, &accepted) {
            let above_low = if low_open { v > 0.0 } else { v >= 0.0 };
            if above_low && v <= high {
                *into = v;
            } else {
                let value = self.values[name].clone();
                self.invalid(name, &value, accepted);
            }
        }
    }
}

impl HttpConfig {
    /// Reads the keys under `prefix` (`webhooks` reads `webhooks.timeout.ms`) from string
    /// key/values, such as the worker's flattened configuration; keys outside the prefix
    /// are left alone, keys inside it must be known. Missing keys keep their defaults.
    pub fn from_map<K, V>(
        prefix: &str,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, ConfigError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut reader = Reader {
            prefix,
            values: BTreeMap::new(),
            errors: Vec::new(),
        };
        let dotted = format!("{prefix}.");
        for (key, value) in entries {
            let Some(name) = key.as_ref().strip_prefix(&dotted) else {
                continue;
            };
            if !KEYS.contains(&name) {
                reader.errors.push(ConfigError::Unknown {
                    key: key.as_ref().to_owned(),
                    prefix: prefix.to_owned(),
                    known: KEYS.join(", "),
                });
                continue;
            }
            reader
                .values
                .insert(name.to_owned(), value.as_ref().to_owned());
        }

        let mut c = HttpConfig::default();
        let r = &mut reader;
        r.millis("connect.timeout.ms", &mut c.connect_timeout);
        r.millis("timeout.ms", &mut c.timeout);
        r.count(
            "response.max.bytes",
            1..=16 * 1024 * 1024,
            &mut c.response_max_bytes,
        );
        if let Some(list) = r.values.get("allow.cidrs").cloned() {
            for cidr in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match cidr.parse::<IpNet>() {
                    Ok(net) => c.allow_cidrs.push(net),
                    Err(_) => r.invalid(
                        "allow.cidrs",
                        cidr,
                        "comma-separated CIDRs such as 127.0.0.0/8,::1/128",
                    ),
                }
            }
        }
        r.millis("pool.idle.timeout.ms", &mut c.pool_idle_timeout);
        r.count(
            "pool.max.idle.per.endpoint",
            0..=10_000,
            &mut c.pool_max_idle_per_endpoint,
        );
        r.count(
            "endpoint.concurrency",
            1..=10_000,
            &mut c.endpoint_concurrency,
        );
        let mut rate = 0u32;
        r.count("endpoint.rate.per.second", 1..=1_000_000, &mut rate);
        let mut burst = rate;
        r.count("endpoint.rate.burst", 1..=1_000_000, &mut burst);
        match (NonZeroU32::new(rate), NonZeroU32::new(burst)) {
            (Some(per_second), Some(burst)) => c.rate_limit = Some(RateLimit { per_second, burst }),
            (None, Some(_)) => {
                let value = r.values["endpoint.rate.burst"].clone();
                r.invalid(
                    "endpoint.rate.burst",
                    &value,
                    format!(
                        "set {} too, or remove the burst",
                        r.key("endpoint.rate.per.second")
                    ),
                );
            }
            _ => {}
        }
        r.millis("endpoint.rate.max.wait.ms", &mut c.rate_max_wait);
        if let Some(list) = r.values.get("retry.delays.ms").cloned() {
            let delays: Result<Vec<u64>, _> = list.split(',').map(|d| d.trim().parse()).collect();
            match delays {
                Ok(d) if !d.is_empty() && d.iter().all(|&ms| ms > 0) => {
                    c.retry.delays = d.into_iter().map(Duration::from_millis).collect();
                }
                _ => r.invalid(
                    "retry.delays.ms",
                    &list,
                    "comma-separated milliseconds above 0, one per retry tier, such as 5000,300000,1800000",
                ),
            }
        }
        r.fraction("retry.jitter", false, 0.9, &mut c.retry.jitter);
        r.millis("retry.after.max.ms", &mut c.retry.retry_after_max);
        r.millis("retry.throttled.min.ms", &mut c.retry.throttled_min);
        r.count(
            "breaker.consecutive.failures",
            1..=1_000_000,
            &mut c.breaker.consecutive_failures,
        );
        r.fraction(
            "breaker.failure.ratio",
            true,
            1.0,
            &mut c.breaker.failure_ratio,
        );
        r.count(
            "breaker.min.requests",
            1..=1_000_000,
            &mut c.breaker.min_requests,
        );
        r.millis("breaker.window.ms", &mut c.breaker.window);
        r.millis("breaker.cooldown.ms", &mut c.breaker.cooldown);
        r.millis("disable.after.ms", &mut c.disable_after);

        if !r.values.contains_key("connect.timeout.ms") {
            // The default connect timeout never outlasts a shorter total one.
            c.connect_timeout = c.connect_timeout.min(c.timeout);
        } else if r.errors.is_empty() && c.connect_timeout > c.timeout {
            let value = r.values["connect.timeout.ms"].clone();
            r.invalid(
                "connect.timeout.ms",
                &value,
                format!(
                    "at most {} ({} ms)",
                    r.key("timeout.ms"),
                    c.timeout.as_millis()
                ),
            );
        }
        match reader.errors.len() {
            0 => Ok(c),
            1 => Err(reader.errors.remove(0)),
            _ => Err(ConfigError::Many(reader.errors)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<HttpConfig, ConfigError> {
        HttpConfig::from_map("webhooks", pairs.iter().copied())
    }

    #[test]
    fn the_defaults_are_the_issues() {
        let c = read(&[]).unwrap();
        assert_eq!(c, HttpConfig::default());
        assert_eq!(c.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.timeout, Duration::from_secs(15));
        assert_eq!(c.response_max_bytes, 65536);
        assert!(c.allow_cidrs.is_empty());
        assert_eq!(c.retry.delays.len(), 7);
        assert_eq!(c.disable_after, Duration::from_secs(432_000));
    }

    #[test]
    fn keys_under_the_prefix_are_read() {
        let c = read(&[
            ("webhooks.timeout.ms", "2000"),
            ("webhooks.connect.timeout.ms", "500"),
            ("webhooks.allow.cidrs", "127.0.0.0/8, ::1/128"),
            ("webhooks.endpoint.rate.per.second", "50"),
            ("webhooks.retry.delays.ms", "100,200"),
            ("webhooks.breaker.failure.ratio", "0.5"),
            ("kafka.bootstrap.servers", "elsewhere:9092"),
        ])
        .unwrap();
        assert_eq!(c.timeout, Duration::from_secs(2));
        assert_eq!(c.connect_timeout, Duration::from_millis(500));
        assert_eq!(
            c.allow_cidrs,
            vec![
                "127.0.0.0/8".parse::<IpNet>().unwrap(),
                "::1/128".parse().unwrap()
            ]
        );
        let rate = c.rate_limit.unwrap();
        assert_eq!((rate.per_second.get(), rate.burst.get()), (50, 50));
        assert_eq!(
            c.retry.delays,
            [Duration::from_millis(100), Duration::from_millis(200)]
        );
        assert_eq!(c.breaker.failure_ratio, 0.5);
    }

    #[test]
    fn an_error_names_the_key_the_value_and_the_fix() {
        let err = read(&[("webhooks.timeout.ms", "15s")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "webhooks.timeout.ms = \"15s\" is invalid: a whole number of milliseconds, above 0"
        );
        let err = read(&[("webhooks.allow.cidrs", "127.0.0.0/8,10.0.0.0/33")]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("webhooks.allow.cidrs = \"10.0.0.0/33\""),
            "{text}"
        );
        assert!(text.contains("127.0.0.0/8,::1/128"), "{text}");
    }

    #[test]
    fn an_unknown_key_under_the_prefix_is_refused_with_the_known_ones() {
        let err = read(&[("webhooks.timout.ms", "100")]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`webhooks.timout.ms`"), "{text}");
        assert!(text.contains("timeout.ms"), "{text}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = read(&[
            ("webhooks.timeout.ms", "0"),
            ("webhooks.retry.jitter", "1.5"),
            ("webhooks.breaker.failure.ratio", "0"),
            ("webhooks.endpoint.concurrency", "0"),
        ])
        .unwrap_err();
        let ConfigError::Many(errors) = err else {
            panic!("{err}");
        };
        let keys: Vec<String> = errors
            .iter()
            .map(|e| match e {
                ConfigError::Invalid { key, .. } => key.clone(),
                other => panic!("{other}"),
            })
            .collect();
        assert_eq!(
            keys,
            [
                "webhooks.timeout.ms",
                "webhooks.endpoint.concurrency",
                "webhooks.retry.jitter",
                "webhooks.breaker.failure.ratio"
            ]
        );
    }

    #[test]
    fn the_connect_timeout_cannot_exceed_the_total() {
        let err = read(&[("webhooks.connect.timeout.ms", "20000")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "webhooks.connect.timeout.ms = \"20000\" is invalid: at most webhooks.timeout.ms (15000 ms)"
        );
    }

    #[test]
    fn a_burst_needs_a_rate_and_delays_need_at_least_one_tier() {
        let err = read(&[("webhooks.endpoint.rate.burst", "5")]).unwrap_err();
        assert!(
            err.to_string()
                .contains("set webhooks.endpoint.rate.per.second too"),
            "{err}"
        );
        for delays in ["", "5000,,1", "0", "5s"] {
            let err = read(&[("webhooks.retry.delays.ms", delays)]).unwrap_err();
            assert!(
                err.to_string().starts_with("webhooks.retry.delays.ms"),
                "{err}"
            );
        }
    }

    #[test]
    fn another_prefix_reads_its_own_keys() {
        let c = HttpConfig::from_map(
            "pharmacy",
            [
                ("pharmacy.timeout.ms", "3000"),
                ("webhooks.timeout.ms", "bad"),
            ],
        )
        .unwrap();
        assert_eq!(c.timeout, Duration::from_secs(3));
        assert_eq!(
            c.connect_timeout,
            Duration::from_secs(3),
            "the default, cut to the total"
        );
    }
}
