//! A webhooks worker on a test broker: the topics, the worker with short tier delays and
//! loopback allow-listed, and ways to send webhooks and read what came of them.

use std::collections::HashMap;
use std::time::Duration;

use sluice_runtime::Worker;
use sluice_topologies::webhooks::{self, WebhooksConfig};

use crate::support::{self, ReadBack, TestBroker};

pub const INPUT: &str = "api.webhooks.outbound";
pub const DLQ: &str = "api.webhooks.outbound.dlq";
pub const ATTEMPTS: &str = "api.webhooks.delivery-attempts";
/// The signing secret (the Standard Webhooks spec's example).
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The tiers' delays in the tests (instead of Svix's minutes and hours).
pub const DELAYS_MS: [u64; 4] = [300, 600, 900, 1200];

pub struct Harness {
    pub broker: TestBroker,
    pub config: WebhooksConfig,
    worker: Option<Worker>,
    producer: rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext>,
    /// Every worker's state directory, one per start; removed once the worker has stopped.
    state_dirs: Vec<support::ScratchDir>,
}

impl Harness {
    /// A broker with the topology's topics and a worker on it; `settings` add to the
    /// tests' `webhooks.*` keys.
    pub fn start(settings: &[(&str, &str)]) -> Self {
        let broker = TestBroker::start();
        let delays = DELAYS_MS.map(|d| d.to_string()).join(",");
        let mut keys: Vec<(String, String)> = vec![
            ("webhooks.retry.delays.ms".into(), delays),
            // Only 127.0.0.1: other loopback addresses stand for private ones.
            ("webhooks.allow.cidrs".into(), "127.0.0.1/32".into()),
            ("webhooks.retry.throttled.min.ms".into(), "200".into()),
            ("webhooks.timeout.ms".into(), "1000".into()),
            ("webhooks.connect.timeout.ms".into(), "1000".into()),
            ("webhooks.signing.secrets".into(), SECRET.into()),
        ];
        keys.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = WebhooksConfig::from_map(keys).unwrap();
        let mut topics = vec![INPUT.to_string(), DLQ.to_string(), ATTEMPTS.to_string()];
        topics.extend((1..=config.http.retry.tiers()).map(|n| config.tier_topic(n)));
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        broker.create_topics(&topics, 2);
        let (worker, state_dir) = start_worker(&broker, &config);
        let producer = support::producer(&broker.brokers);
        Harness {
            broker,
            config,
            worker: Some(worker),
            producer,
            state_dirs: vec![state_dir],
        }
    }

    /// Stops the worker and starts another in its place (what was disabled in the first is
    /// enabled in the second: endpoint health is per process).
    pub fn restart_worker(&mut self) {
        if let Some(worker) = self.worker.take() {
            worker.stop();
            worker.join().unwrap();
        }
        let (worker, state_dir) = start_worker(&self.broker, &self.config);
        self.worker = Some(worker);
        self.state_dirs.push(state_dir);
    }

    /// Sends one webhook input as is.
    pub fn send_raw(&self, key: &str, value: &[u8]) {
        support::send_with_headers(&self.producer, INPUT, None, key, value, &[]);
    }

    /// Sends a webhook to `url` with `event_id` (as the platform's envelope's eventId).
    pub fn send(&self, event_id: &str, url: &str) {
        let value = serde_json::json!({
            "metadata": {"eventId": event_id, "eventType": "webhook", "eventSource": "api",
                "timestamp": "2026-01-01T00:00:00Z", "version": "1"},
            "payload": {"url": url, "headers": {"x-tenant": "t1"},
                "payload": {"patient": "PAYLOAD-SECRET"}, "retryConfig": {"maxRetries": 4},
                "retryCount": 0}
        });
        self.send_raw(event_id, &serde_json::to_vec(&value).unwrap());
    }

    pub fn committed(&self, topic: &str) -> Vec<ReadBack> {
        support::read_committed(&self.broker.brokers, topic)
    }

    /// The delivery-attempt events, as JSON.
    pub fn attempts(&self) -> Vec<serde_json::Value> {
        self.committed(ATTEMPTS)
            .into_iter()
            .map(|r| serde_json::from_slice(&r.value.unwrap()).unwrap())
            .collect()
    }

    /// The dead letters' headers.
    pub fn dead_letters(&self) -> Vec<HashMap<String, String>> {
        self.committed(DLQ).into_iter().map(|r| r.headers).collect()
    }

    pub fn wait_until(&self, what: &str, condition: impl FnMut() -> bool) {
        support::wait_until(what, Duration::from_secs(60), condition);
    }
}

/// A worker in a state directory of its own, as a freshly placed instance has.
fn start_worker(broker: &TestBroker, config: &WebhooksConfig) -> (Worker, support::ScratchDir) {
    let dir = support::ScratchDir::new("sluice-webhooks");
    let worker_config = broker.worker_config("webhooks", dir.path(), &[]);
    let worker = Worker::start(webhooks::topology(config.clone()), worker_config).unwrap();
    (worker, dir)
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            worker.stop();
            let _ = worker.join();
        }
    }
}
