//! Outbound HTTP: one machinery for every topology that calls an HTTP endpoint (webhooks,
//! pharmacy, FCM and APNs push, FHIR rest-hooks).
//!
//! A topology gives a [`Deliverer`] an [`Endpoint`] and a [`DeliveryRequest`]; the
//! deliverer sends one signed POST, with the SSRF guard, the endpoint's circuit breaker
//! and its concurrency and rate limits in front, and answers with a classified
//! [`Outcome`]. The topology then asks its [`RetrySchedule`] what to do with the event
//! ([`RetrySchedule::dispose`]):
//!
//! | [`Disposition`] | the topology |
//! |---|---|
//! | `Delivered` | is done with the event |
//! | `Retry { tier, delay }` | moves it to retry tier `tier`, due after `delay` |
//! | `DeadLetter { class, exhausted }` | dead-letters it, with `class` as the reason |
//! | `EndpointDisabled { class }` | dead-letters it for a replay once the endpoint is fixed |
//!
//! Durable retries (the tier topics and their due times) are the topology's: the
//! deliverer makes one attempt per call and keeps no event.
//!
//! Shaped like Vector's sinks, one concern a file:
//!
//! * [`config`]: [`HttpConfig`], read from `<prefix>.*` string keys and checked at once.
//! * [`endpoint`]: [`Endpoint`], [`EndpointId`], [`DeliveryRequest`].
//! * [`directory`]: [`EndpointDirectory`], endpoints and secrets configured by id.
//! * [`guard`]: the SSRF guard and the resolver that pins checked addresses.
//! * [`classify`]: [`Outcome`] and [`ErrorClass`] from a status or an error.
//! * [`signing`]: Standard Webhooks signatures and the redacted [`Secret`].
//! * [`retry`]: the tiers, their delays and jitter, `Retry-After`.
//! * [`breaker`], [`limits`], [`health`]: per-endpoint protection and auto-disable.
//! * [`metrics`]: the instrumentation (the table of names is there).
//! * [`service`]: the [`Deliverer`], tying them together.
//!
//! Nothing here logs or puts into an error a URL's path or query, a header value, a
//! secret, or a body: they can hold credentials and patient data.

pub mod breaker;
pub mod classify;
pub mod config;
pub mod directory;
pub mod endpoint;
pub mod guard;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod retry;
pub mod service;
pub mod signing;

pub use breaker::{BreakerConfig, CircuitState};
pub use classify::{ErrorClass, Outcome};
pub use config::{ConfigError, HttpConfig, RateLimit};
pub use directory::{DirectoryError, EndpointDirectory};
pub use endpoint::{DeliveryRequest, Endpoint, EndpointId, RequestError};
pub use guard::{Guard, GuardError};
pub use retry::{Disposition, NextAttempt, RetrySchedule};
pub use service::{BuildError, Deliverer, Delivery};
pub use signing::{Secret, SecretError};
