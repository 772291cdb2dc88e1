//! The delivery operator: one attempt per record through the connectors crate's
//! [`Deliverer`], and what the retry schedule makes of it.
//!
//! It runs inside `map_async`: the stream thread stays free, many attempts run at once,
//! and the input is done (its offset committable) only once its attempt's outcome has
//! been routed. An attempt in flight at a crash is made again after the restart, with the
//! same `webhook-id`/`Idempotency-Key`, for the receiver to de-duplicate on. Every outcome
//! is a result here, never an error: durable retries are the tiers' job, not the
//! operator's in-call retry or the runtime's pause-and-rewind.

use std::time::Duration;

use sluice_connectors::http::{
    Deliverer, DeliveryRequest, Disposition, ErrorClass, Outcome, RetrySchedule,
};
use sluice_engine::Record;
use sluice_engine::operators::Call;

use super::config::Clock;
use super::headers;
use super::input::Webhook;

/// What the attempts for one record came to, for the router.
#[derive(Clone, Debug)]
pub struct Attempted {
    pub webhook: Webhook,
    pub webhook_id: String,
    /// Epoch milliseconds.
    pub first_attempt_at: i64,
    /// The attempts made in place before the last (ordering by key), oldest first.
    pub earlier: Vec<Attempt>,
    /// The last attempt: its disposition is where the record goes.
    pub last: Attempt,
}

/// One attempt.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub attempt: u32,
    pub status: Option<u16>,
    pub class: Option<ErrorClass>,
    pub outcome: &'static str,
    pub latency: Duration,
    pub disposition: Disposition,
    /// Epoch milliseconds.
    pub attempted_at: i64,
}

/// Makes the attempt for `record`, read in retry tier `tier` (0: the main topic).
pub async fn attempt(
    deliverer: &Deliverer,
    schedule: &RetrySchedule,
    clock: &Clock,
    tier: u32,
    record: &Record<super::Key, Webhook>,
    call: &Call,
) -> Attempted {
    let webhook = &record.value;
    // The id the first attempt used, carried by the tiers; on a first attempt, the
    // input's event id (the envelope's, or its lineage header), or its position.
    let webhook_id = record
        .headers
        .get_str(headers::WEBHOOK_ID)
        .unwrap_or_else(|| call.idempotency_key())
        .to_string();
    let attempted_at = clock.now_ms();
    let first_attempt_at = record
        .headers
        .get_str(headers::FIRST_ATTEMPT_AT)
        .and_then(|t| t.parse().ok())
        .unwrap_or(attempted_at);
    // A record on tier `tier` has had at least `tier` retries, whatever its retryCount
    // says: so the next move is to a later tier, never back to this one.
    let retries_done = webhook.retry_count.max(tier);
    // The tiers bound the retries: the last tier does not feed itself.
    let max_retries = Some(
        webhook
            .max_retries
            .unwrap_or(schedule.tiers())
            .min(schedule.tiers()),
    );
    let request = DeliveryRequest::new(&webhook_id, webhook.body.clone()).and_then(|request| {
        webhook
            .headers
            .iter()
            .try_fold(request, |request, (name, value)| {
                request.with_header(name, value)
            })
    });
    let (status, outcome, latency) = match request {
        Ok(request) => {
            let delivery = deliverer.deliver(&webhook.endpoint, &request).await;
            (
                delivery.status.map(|s| s.as_u16()),
                delivery.outcome,
                delivery.elapsed,
            )
        }
        // An event id that cannot be a header (checked fields cannot fail here).
        Err(_) => (
            None,
            Outcome::Permanent {
                class: ErrorClass::InvalidRequest,
            },
            Duration::ZERO,
        ),
    };
    let disposition = schedule.dispose(&outcome, retries_done, max_retries, &mut rand::rng());
    Attempted {
        last: Attempt {
            attempt: retries_done + 1,
            status,
            class: outcome.class(),
            outcome: outcome.kind(),
            latency,
            disposition,
            attempted_at,
        },
        earlier: Vec::new(),
        first_attempt_at,
        webhook_id,
        webhook: webhook.clone(),
    }
}

/// Attempts `record` until it is delivered or dead-lettered, waiting out each retry's
/// delay in place instead of moving to a retry tier: for ordering by key, where the
/// webhooks after it wait for it. The delays are the tiers' (jitter and `Retry-After`
/// included); `retryConfig.maxRetries` still bounds the attempts.
pub async fn attempt_in_place(
    deliverer: &Deliverer,
    schedule: &RetrySchedule,
    clock: &Clock,
    mut record: Record<super::Key, Webhook>,
    call: &Call,
) -> Attempted {
    let mut earlier = Vec::new();
    loop {
        let mut attempted = attempt(deliverer, schedule, clock, 0, &record, call).await;
        let Disposition::Retry { delay, .. } = attempted.last.disposition else {
            attempted.earlier = earlier;
            return attempted;
        };
        // What a tier would carry: the id and first attempt's time stay, the count goes up.
        record
            .headers
            .insert(headers::WEBHOOK_ID, attempted.webhook_id.as_str());
        record.headers.insert(
            headers::FIRST_ATTEMPT_AT,
            attempted.first_attempt_at.to_string(),
        );
        record.value.retry_count = attempted.last.attempt;
        earlier.push(attempted.last);
        tokio::time::sleep(delay).await;
    }
}
