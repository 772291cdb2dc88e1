//! Routing what an attempt came to, all in the transaction of the consumed offset:
//!
//! * every attempt: an event on `api.webhooks.delivery-attempts` (endpoint host, attempt,
//!   status, latency, outcome; never the payload, the URL's path or a header value);
//! * a retry: the event, `retryCount` one up, on retry tier `n` with its due time, the
//!   webhook id and the first attempt's time in headers;
//! * a dead letter (retries exhausted, a permanent failure, a refused destination, a
//!   disabled endpoint): the event on the dead-letter topic with what the attempts came
//!   to in headers.
//!
//! The router forwards to its children by name: [`ATTEMPTS`], [`DEAD_LETTERS`], and
//! [`tier_node`]`(n)` for each later tier.

use sluice_connectors::http::Disposition;
use sluice_engine::operators::{Context, Processor};
use sluice_engine::policy::headers as dlq;
use sluice_engine::serde::JsonEventSerde;
use sluice_engine::{ErrorKind, ProcessError, Record, Serde};

use super::deliver::{Attempt, Attempted};
use super::{Key, headers};

/// The child that writes delivery-attempt events.
pub const ATTEMPTS: &str = "attempts";
/// The child that writes dead letters.
pub const DEAD_LETTERS: &str = "dead-letters";

/// The name of the sink node writing retry tier `tier`, in the chain reading `from`.
pub fn tier_node(from: u32, tier: u32) -> String {
    format!("{}-to-retry-{tier}", chain_name(from))
}

/// The name of the chain reading tier `tier` (0: the main topic); its nodes' prefix.
pub fn chain_name(tier: u32) -> String {
    match tier {
        0 => "main".to_string(),
        n => format!("retry-{n}"),
    }
}

/// Routes the attempts of the chain reading tier `tier`.
pub struct Router {
    pub tier: u32,
    pub attempts_node: String,
    pub dead_letters_node: String,
}

impl Processor<Key, Attempted> for Router {
    type KeyOut = Key;
    type ValueOut = Vec<u8>;

    fn process(
        &mut self,
        record: Record<Key, Attempted>,
        ctx: &mut Context<'_, Key, Vec<u8>>,
    ) -> Result<(), ProcessError> {
        let a = &record.value;
        let host = a.webhook.endpoint.id().as_str().to_string();
        for attempt in a.earlier.iter().chain([&a.last]) {
            ctx.forward_to(&self.attempts_node, self.attempt_event(a, attempt, &host));
        }

        let mut out_headers = record.headers.clone();
        out_headers.insert(headers::WEBHOOK_ID, a.webhook_id.as_str());
        out_headers.insert(headers::FIRST_ATTEMPT_AT, a.first_attempt_at.to_string());
        let last = &a.last;
        let reason = match last.disposition {
            Disposition::Delivered => return Ok(()),
            Disposition::Retry { tier, delay } => {
                let retried = a.webhook.with_retry_count(last.attempt);
                let value = encode(&retried)?;
                let due = last.attempted_at + delay.as_millis() as i64;
                out_headers.insert(headers::DUE_AT, due.to_string());
                ctx.forward_to(
                    &tier_node(self.tier, tier),
                    Record {
                        key: record.key,
                        value,
                        headers: out_headers,
                        timestamp: record.timestamp,
                    },
                );
                return Ok(());
            }
            Disposition::DeadLetter { class, exhausted } => match class.as_str() {
                "forbidden-destination" | "invalid-request" => class.as_str(),
                _ if exhausted => "exhausted",
                _ => "permanent",
            },
            Disposition::EndpointDisabled { .. } => "endpoint-disabled",
        };
        let class = last.class.map_or("none", |c| c.as_str());
        out_headers.remove(headers::DUE_AT);
        out_headers.insert(headers::REASON, reason);
        out_headers.insert(headers::ATTEMPTS, last.attempt.to_string());
        out_headers.insert(
            headers::LAST_STATUS,
            last.status.map_or("none".to_string(), |s| s.to_string()),
        );
        out_headers.insert(headers::LAST_ERROR_CLASS, class);
        out_headers.insert(headers::ENDPOINT_HOST, host);
        out_headers.insert(headers::LAST_ATTEMPT_AT, last.attempted_at.to_string());
        out_headers.insert(dlq::ERROR_KIND, ErrorKind::Processing.as_str());
        out_headers.insert(
            dlq::ERROR_MESSAGE,
            format!(
                "webhook not delivered: {reason} after {} attempts (last: {class})",
                last.attempt
            ),
        );
        out_headers.insert(dlq::OPERATOR, format!("{}-deliver", chain_name(self.tier)));
        ctx.forward_to(
            &self.dead_letters_node,
            Record {
                key: record.key,
                value: encode(&a.webhook.event)?,
                headers: out_headers,
                timestamp: record.timestamp,
            },
        );
        Ok(())
    }
}

impl Router {
    /// The delivery-attempt event of `attempt`: no payload, URL path or header value.
    fn attempt_event(&self, a: &Attempted, attempt: &Attempt, host: &str) -> Record<Key, Vec<u8>> {
        let event = serde_json::json!({
            "webhookId": a.webhook_id,
            "endpoint": host,
            "attempt": attempt.attempt,
            "status": attempt.status,
            "latencyMs": attempt.latency.as_millis() as u64,
            "outcome": attempt.outcome,
            "errorClass": attempt.class.map(|c| c.as_str()),
            "disposition": attempt.disposition.as_str(),
            "tier": self.tier,
            "attemptedAt": attempt.attempted_at,
        });
        let mut attempt_headers = sluice_engine::Headers::new();
        attempt_headers.insert(headers::WEBHOOK_ID, a.webhook_id.as_str());
        Record {
            key: Some(a.webhook_id.as_bytes().to_vec()),
            value: serde_json::to_vec(&event).expect("JSON serializes"),
            headers: attempt_headers,
            timestamp: attempt.attempted_at,
        }
    }
}

fn encode(event: &sluice_engine::JsonEvent) -> Result<Vec<u8>, ProcessError> {
    JsonEventSerde
        .serialize("", event)
        .map_err(|e| ProcessError::new(ErrorKind::Serialization, e.message))
        .map(Option::unwrap_or_default)
}
