//! Webhook delivery: the events on `api.webhooks.outbound`, each POSTed to its endpoint
//! through the connectors crate's [`Deliverer`] (signing, SSRF guard, limits, breakers),
//! retried through durable retry-tier topics, and dead-lettered when retries run out.
//!
//! ```text
//! api.webhooks.outbound ──► main-in ► parse ► deliver ► route ─┬─► retry-n (n ≥ 1)
//! api.webhooks.outbound.retry-1 ──► retry-1-in ► … (held)      ├─► delivery-attempts
//! …                                                            └─► .dlq
//! ```
//!
//! One chain per topic read (the main topic and each tier), each its own sub-topology: a
//! tier only ever feeds a *later* tier, so no chain writes the topic it reads, and a
//! backlog on one tier never takes another's in-flight capacity. A tier's records are
//! held until their `webhook-due-at` header
//! ([`TopologyBuilder::hold_until_due`]): its partition pauses until its head is due,
//! while the other tiers and the main topic go on. Every move (to a tier, to the
//! dead-letter topic, the attempt events) is produced in the transaction that commits
//! the consumed offset.
//!
//! The number of retries is `retryConfig.maxRetries`, bounded by the number of tiers
//! (`webhooks.retry.delays.ms`; Svix's seven by default, so eight attempts).
//!
//! There is no order by default. With `webhooks.ordering=key`, a key's webhooks are
//! delivered one at a time through retries too ([`fifo`]).
//!
//! One concern a file: [`input`] (parsing and validation), [`deliver`] (the attempt),
//! [`route`] (where its outcome goes), [`headers`] (the Kafka headers), [`config`],
//! [`fifo`] (ordering by key), [`replay`] (dead letters back to the input).

pub mod config;
pub mod deliver;
pub mod fifo;
pub mod headers;
pub mod input;
pub mod replay;
pub mod route;

use std::time::Duration;

use sluice_connectors::http::Deliverer;
use sluice_engine::operators::AsyncOptions;
use sluice_engine::serde::JsonEventSerde;
use sluice_engine::{ErrorPolicy, JsonEvent, Record, Serdes, Topology, TopologyBuilder};

pub use config::{Clock, Ordering, WebhooksConfig};
use input::Webhook;
use route::{Router, chain_name, tier_node};

/// The topology's name.
pub const NAME: &str = "webhooks";
/// The default input topic.
pub const INPUT_TOPIC: &str = "api.webhooks.outbound";
/// The default topic of delivery-attempt events.
pub const ATTEMPTS_TOPIC: &str = "api.webhooks.delivery-attempts";

/// Every configuration key the topology reads, with its `webhooks.` prefix: its own and
/// the deliverer's.
pub fn config_keys() -> Vec<&'static str> {
    static KEYS: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
        config::KEYS
            .iter()
            .chain(sluice_connectors::http::config::KEYS)
            .map(|key| &*Box::leak(format!("webhooks.{key}").into_boxed_str()))
            .collect()
    });
    KEYS.clone()
}

/// Builds the topology in a worker from its `webhooks.*` keys.
pub fn build(
    context: &sluice_runtime::BuildContext<'_>,
) -> Result<Topology, sluice_runtime::BuildError> {
    let config = WebhooksConfig::from_map(context.settings.iter())?;
    Ok(topology(config))
}

/// Record keys: as the producer wrote them, or none.
pub type Key = Option<Vec<u8>>;

/// The webhooks topology.
///
/// # Panics
/// If the HTTP client cannot be built (its TLS setup failed).
pub fn topology(config: WebhooksConfig) -> Topology {
    let deliverer = Deliverer::new(config.http.clone()).unwrap_or_else(|e| panic!("webhooks: {e}"));
    let tiers = config.http.retry.tiers();
    let builder = TopologyBuilder::new(NAME);
    builder.error_policy(ErrorPolicy::dead_letter(config.dead_letter_topic()));
    // An attempt may wait for its endpoint's concurrency and rate limits, connect, and
    // then take the whole request timeout: the operator's own timeout is past all that,
    // so a slow endpoint is an outcome (a retry tier), not a stalled partition.
    let http = &config.http;
    let timeout = http.connect_timeout + http.timeout + http.rate_max_wait + Duration::from_secs(5);
    // Webhooks promise no order. Results leave in order within a key only: a stalled
    // endpoint holds back its own key's outcomes, not the partition's (keyless records
    // still share one order).
    let options = AsyncOptions::new()
        .capacity(config.max_in_flight)
        .timeout(timeout)
        .key_ordered();
    // Ordered by key, a webhook of the main topic may wait for its key's earlier ones and
    // then for its own retries in place: no bound would be right, so a year stands for
    // none (a timeout would pause and rewind the partition, not help).
    let in_place = config.ordering == Ordering::Key;
    let in_place_options = options
        .clone()
        .timeout(Duration::from_secs(365 * 24 * 3600));
    let queue = fifo::KeyQueue::default();
    for tier in 0..=tiers {
        let name = chain_name(tier);
        let topic = match tier {
            0 => config.input_topic.clone(),
            n => config.tier_topic(n),
        };
        let deliverer = deliverer.clone();
        let schedule = http.retry.clone();
        let (directory, secrets) = (config.directory.clone(), config.secrets.clone());
        let clock = config.clock.clone();
        let queue = (in_place && tier == 0).then(|| queue.clone());
        let routed = builder
            .source(
                &format!("{name}-in"),
                &[topic.as_str()],
                Serdes::optional(Serdes::bytes()),
                JsonEventSerde,
            )
            .try_map(
                &format!("{name}-parse"),
                move |r: Record<Key, JsonEvent>| {
                    let Record {
                        key,
                        value,
                        headers,
                        timestamp,
                    } = r;
                    Ok(Record {
                        key,
                        value: Webhook::parse(value, &directory, &secrets)?,
                        headers,
                        timestamp,
                    })
                },
            )
            .map_async(
                &format!("{name}-deliver"),
                match queue.is_some() {
                    true => in_place_options.clone(),
                    false => options.clone(),
                },
                move |record: Record<Key, Webhook>, call| {
                    let (deliverer, schedule, clock, queue) = (
                        deliverer.clone(),
                        schedule.clone(),
                        clock.clone(),
                        queue.clone(),
                    );
                    async move {
                        let (key, headers, timestamp) =
                            (record.key.clone(), record.headers.clone(), record.timestamp);
                        let value = match (&queue, &key) {
                            (Some(queue), Some(k)) => {
                                let _turn = queue.turn(k).await;
                                deliver::attempt_in_place(
                                    &deliverer, &schedule, &clock, record, &call,
                                )
                                .await
                            }
                            _ => {
                                deliver::attempt(
                                    &deliverer, &schedule, &clock, tier, &record, &call,
                                )
                                .await
                            }
                        };
                        Ok(Record {
                            key,
                            value,
                            headers,
                            timestamp,
                        })
                    }
                },
            );
        let attempts_node = format!("{name}-{}", route::ATTEMPTS);
        let dead_letters_node = format!("{name}-{}", route::DEAD_LETTERS);
        let routed = {
            let (attempts_node, dead_letters_node) =
                (attempts_node.clone(), dead_letters_node.clone());
            routed.process(&format!("{name}-route"), move || Router {
                tier,
                attempts_node: attempts_node.clone(),
                dead_letters_node: dead_letters_node.clone(),
            })
        };
        let key = || Serdes::optional(Serdes::bytes());
        routed.to(
            &attempts_node,
            &config.attempts_topic,
            key(),
            Serdes::bytes(),
        );
        routed.to_dead_letters(
            &dead_letters_node,
            &config.dead_letter_topic(),
            key(),
            Serdes::bytes(),
        );
        for next in tier + 1..=tiers {
            routed.to(
                &tier_node(tier, next),
                &config.tier_topic(next),
                key(),
                Serdes::bytes(),
            );
        }
    }
    let held: Vec<String> = (1..=tiers).map(|n| config.tier_topic(n)).collect();
    let held: Vec<&str> = held.iter().map(String::as_str).collect();
    builder.hold_until_due(&held, headers::DUE_AT);
    builder
        .build()
        .expect("the webhooks topology is valid for any configuration")
}
