//! The Kafka headers the webhooks topology reads and writes.
//!
//! Carried from tier to tier (so every attempt of one event agrees): the webhook id and
//! the first attempt's time. On a retry-tier record: its due time. On a dead letter: what
//! the attempts came to. Values name hosts, statuses and classes, never a URL's path or
//! query, a header value or the payload.

/// The event's id on every attempt: `webhook-id` and `Idempotency-Key` of the request.
pub const WEBHOOK_ID: &str = "webhook-id";
/// When a retry-tier record is due, epoch milliseconds: its tier holds it until then.
pub const DUE_AT: &str = "webhook-due-at";
/// When the first attempt was made, epoch milliseconds.
pub const FIRST_ATTEMPT_AT: &str = "webhook-first-attempt-at";
/// When the last attempt was made, epoch milliseconds (dead letters).
pub const LAST_ATTEMPT_AT: &str = "webhook-last-attempt-at";
/// How many attempts were made (dead letters).
pub const ATTEMPTS: &str = "webhook-attempts";
/// The last answer's status, or `none` when no answer came (dead letters).
pub const LAST_STATUS: &str = "webhook-last-status";
/// The last attempt's error class, such as `server-error` (dead letters).
pub const LAST_ERROR_CLASS: &str = "webhook-last-error-class";
/// The endpoint's host (never its path or query) (dead letters).
pub const ENDPOINT_HOST: &str = "webhook-endpoint-host";
/// Why the event was dead-lettered: `exhausted`, `permanent`, `forbidden-destination`,
/// `endpoint-disabled` or `invalid-request` (dead letters).
pub const REASON: &str = "webhook-reason";
