//! The [`Deliverer`]: one signed POST of one event to one endpoint, with every protection
//! in front of it, ending in a classified [`Outcome`].
//!
//! `deliver` goes through these steps, and the first that refuses ends it:
//!
//! 1. **Disabled?** An endpoint disabled earlier (410, or failing too long) gets no call:
//!    `EndpointDisabled`.
//! 2. **SSRF guard.** The host is resolved once and every address checked
//!    ([`super::guard`]): `Permanent(forbidden-destination)` with no connection, or
//!    `Retryable(dns)` when the name does not resolve.
//! 3. **Circuit breaker.** An open circuit refuses: `Retryable(circuit-open)`, retry-after
//!    the rest of its cool-down; or, if the endpoint has now failed for `disable.after.ms`,
//!    `EndpointDisabled(failing-too-long)`.
//! 4. **Limits.** A permit of the endpoint's concurrency limit (waited for), then its turn
//!    under the rate limit: `Retryable(rate-limited)` when that is too far off.
//! 5. **Request.** The checked addresses are pinned for the client's resolver, and the
//!    POST goes out with the endpoint's and the event's headers, `Idempotency-Key` and
//!    `webhook-id`, and, for an endpoint with secrets, `webhook-timestamp` and
//!    `webhook-signature` signed at this attempt's time. The response body is read up to `response.max.bytes` and handed
//!    back, never logged.
//! 6. **Classification** ([`super::classify`]); the breaker and the endpoint's health learn
//!    the result; a 410 disables the endpoint; the metrics count it.
//!
//! One `reqwest::Client` serves every endpoint. Its connection pool is kept per scheme,
//! host and port, so each endpoint has keep-alive connections of its own (at most
//! `pool.max.idle.per.endpoint` idle), over HTTP/1.1, or HTTP/2 where TLS negotiates it.
//! Redirects are never followed and proxy settings are ignored. A `Deliverer` is cheap to
//! clone; clones share the client, the limits and the breakers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Client, StatusCode, redirect};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::breaker::{Admission, CallResult, CircuitBreaker, CircuitState};
use super::classify::{ErrorClass, Outcome, classify_error, classify_status, status_class};
use super::config::HttpConfig;
use super::endpoint::{DeliveryRequest, Endpoint, EndpointId};
use super::guard::{Guard, GuardError, Pinned};
use super::health::EndpointHealth;
use super::limits::KeyedRateLimit;
use super::metrics::{EndpointMetrics, InFlight};
use super::signing::{
    IDEMPOTENCY_KEY, WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP, signature_header,
};

const USER_AGENT: &str = concat!("sluice/", env!("CARGO_PKG_VERSION"));

/// What one delivery came to.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub outcome: Outcome,
    /// The answer's status; `None` when no answer came (or no request was sent).
    pub status: Option<StatusCode>,
    /// The response body, up to `response.max.bytes`. For the caller to read (an FCM
    /// message name, an error code), never to log: it may echo patient data.
    pub body: Bytes,
    /// Whether the body went on past the cap.
    pub truncated: bool,
    /// How long the request took; zero when none was sent.
    pub elapsed: Duration,
}

impl Delivery {
    fn refused(outcome: Outcome) -> Self {
        Delivery {
            outcome,
            status: None,
            body: Bytes::new(),
            truncated: false,
            elapsed: Duration::ZERO,
        }
    }
}

/// Delivers events to endpoints over HTTP. See the module documentation for the steps.
#[derive(Clone)]
pub struct Deliverer {
    inner: Arc<Inner>,
}

struct Inner {
    config: HttpConfig,
    client: Client,
    guard: Guard,
    pinned: Pinned,
    rate: Option<KeyedRateLimit<EndpointId>>,
    endpoints: Mutex<HashMap<EndpointId, Arc<EndpointState>>>,
}

/// What the deliverer keeps per endpoint.
struct EndpointState {
    permits: Semaphore,
    breaker: Mutex<CircuitBreaker>,
    health: Mutex<EndpointHealth>,
    metrics: EndpointMetrics,
}

/// The HTTP client could not be built (its TLS setup failed).
#[derive(Debug, thiserror::Error)]
#[error("the HTTP client cannot be built: {0}")]
pub struct BuildError(#[source] reqwest::Error);

impl Deliverer {
    /// A deliverer with its own connection pools, limits and breakers.
    pub fn new(config: HttpConfig) -> Result<Self, BuildError> {
        let pinned = Pinned::default();
        let client = Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .redirect(redirect::Policy::none())
            // A proxy would make the connection in our place, to an address the guard
            // never saw.
            .no_proxy()
            .dns_resolver(Arc::new(pinned.clone()))
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_endpoint)
            .tcp_nodelay(true)
            .user_agent(USER_AGENT)
            .build()
            .map_err(BuildError)?;
        let rate = config
            .rate_limit
            .map(|limit| KeyedRateLimit::new(limit, config.rate_max_wait));
        super::metrics::describe();
        Ok(Deliverer {
            inner: Arc::new(Inner {
                guard: Guard::new(config.allow_cidrs.clone()),
                config,
                client,
                pinned,
                rate,
                endpoints: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn config(&self) -> &HttpConfig {
        &self.inner.config
    }

    /// Delivers `request` to `endpoint` once.
    pub async fn deliver(&self, endpoint: &Endpoint, request: &DeliveryRequest) -> Delivery {
        let state = self.state(endpoint.id());
        let delivery = self.attempt(endpoint, request, &state).await;
        let class = delivery.outcome.class();
        state.metrics.delivery(
            delivery.outcome.kind(),
            class.map_or("none", ErrorClass::as_str),
            status_class(delivery.status),
        );
        delivery
    }

    async fn attempt(
        &self,
        endpoint: &Endpoint,
        request: &DeliveryRequest,
        state: &EndpointState,
    ) -> Delivery {
        let config = &self.inner.config;
        if let Some(class) = lock(&state.health).disabled() {
            return Delivery::refused(Outcome::EndpointDisabled { class });
        }

        let addrs = match self
            .inner
            .guard
            .resolve(endpoint.url(), config.connect_timeout)
            .await
        {
            Ok(addrs) => addrs,
            Err(GuardError::Forbidden { .. }) => {
                let class = ErrorClass::ForbiddenDestination;
                return Delivery::refused(Outcome::Permanent { class });
            }
            Err(GuardError::NoHost) => {
                let class = ErrorClass::InvalidRequest;
                return Delivery::refused(Outcome::Permanent { class });
            }
            Err(GuardError::Unresolved { .. }) => {
                // The endpoint's name is its own: not resolving is the endpoint failing.
                let outcome = Outcome::retryable(ErrorClass::Dns);
                return Delivery::refused(self.learn(state, outcome, false));
            }
        };

        let probe = match self.admit(state) {
            Ok(probe) => probe,
            Err(outcome) => return Delivery::refused(outcome),
        };

        let Ok(_permit) = state.permits.acquire().await else {
            unreachable!("the semaphore is never closed");
        };
        if let Some(rate) = &self.inner.rate
            && let Err(wait) = rate.until_ready(endpoint.id()).await
        {
            let outcome = Outcome::Retryable {
                class: ErrorClass::RateLimited,
                retry_after: Some(wait),
            };
            return Delivery::refused(self.learn(state, outcome, probe));
        }

        if let Some(host) = endpoint.url().host_str() {
            self.inner.pinned.pin(host, &addrs);
        }
        let mut delivery = self.post(endpoint, request, state).await;
        delivery.outcome = self.learn(state, delivery.outcome, probe);
        delivery
    }

    /// Asks the breaker: `Ok(probe)` to go ahead, or the outcome of a refusal.
    fn admit(&self, state: &EndpointState) -> Result<bool, Outcome> {
        let now = Instant::now();
        let admission = lock(&state.breaker).admit(now);
        state
            .metrics
            .circuit_state
            .set(lock(&state.breaker).state(now).gauge());
        match admission {
            Admission::Allowed => Ok(false),
            Admission::Probe => Ok(true),
            Admission::Refused { retry_in } => {
                let disabled = lock(&state.health).check(now, self.inner.config.disable_after);
                if let Some(class) = disabled {
                    state.metrics.disabled.set(1.0);
                    return Err(Outcome::EndpointDisabled { class });
                }
                Err(Outcome::Retryable {
                    class: ErrorClass::CircuitOpen,
                    retry_after: Some(retry_in),
                })
            }
        }
    }

    /// Tells the breaker and the endpoint's health what `outcome` showed, and disables the
    /// endpoint when it says so: the outcome, or `EndpointDisabled` if the endpoint has now
    /// been failing for too long.
    fn learn(&self, state: &EndpointState, outcome: Outcome, probe: bool) -> Outcome {
        let now = Instant::now();
        let result = CallResult::of(outcome.class());
        let circuit = {
            let mut breaker = lock(&state.breaker);
            breaker.record(now, result, probe);
            breaker.state(now)
        };
        state.metrics.circuit_state.set(circuit.gauge());
        let mut health = lock(&state.health);
        if let Outcome::EndpointDisabled { class } = outcome {
            health.disable(class);
        }
        let disabled = health.record(now, result, self.inner.config.disable_after);
        drop(health);
        match disabled {
            Some(class) => {
                state.metrics.disabled.set(1.0);
                match outcome {
                    Outcome::EndpointDisabled { .. } => outcome,
                    _ => Outcome::EndpointDisabled { class },
                }
            }
            None => outcome,
        }
    }

    async fn post(
        &self,
        endpoint: &Endpoint,
        request: &DeliveryRequest,
        state: &EndpointState,
    ) -> Delivery {
        let headers = match signed_headers(endpoint, request) {
            Ok(headers) => headers,
            Err(outcome) => return Delivery::refused(outcome),
        };
        let _in_flight = InFlight::start(&state.metrics.in_flight);
        let started = Instant::now();
        let sent = self
            .inner
            .client
            .post(endpoint.url().clone())
            .headers(headers)
            .body(request.body().clone())
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(e) => {
                let elapsed = started.elapsed();
                state.metrics.attempt(elapsed);
                let class = classify_error(&e);
                let outcome = if class == ErrorClass::InvalidRequest {
                    Outcome::Permanent { class }
                } else {
                    Outcome::retryable(class)
                };
                return Delivery {
                    elapsed,
                    ..Delivery::refused(outcome)
                };
            }
        };
        let status = response.status();
        let outcome = classify_status(status, response.headers(), SystemTime::now());
        let (body, truncated) =
            read_capped(&mut response, self.inner.config.response_max_bytes).await;
        let elapsed = started.elapsed();
        state.metrics.attempt(elapsed);
        Delivery {
            outcome,
            status: Some(status),
            body,
            truncated,
            elapsed,
        }
    }

    /// The state kept for endpoint `id`, made on first use.
    fn state(&self, id: &EndpointId) -> Arc<EndpointState> {
        let mut endpoints = lock(&self.inner.endpoints);
        if let Some(state) = endpoints.get(id) {
            return state.clone();
        }
        let config = &self.inner.config;
        let state = Arc::new(EndpointState {
            // A limit of 0 (possible in a config built by hand) would stall every delivery.
            permits: Semaphore::new(config.endpoint_concurrency.max(1)),
            breaker: Mutex::new(CircuitBreaker::new(config.breaker.clone())),
            health: Mutex::new(EndpointHealth::default()),
            metrics: EndpointMetrics::new(id),
        });
        endpoints.insert(id.clone(), state.clone());
        state
    }

    /// Where endpoint `id`'s circuit is now.
    pub fn circuit_state(&self, id: &EndpointId) -> CircuitState {
        lock(&self.state(id).breaker).state(Instant::now())
    }

    /// Why endpoint `id` is disabled, or `None` when it is not.
    pub fn disabled(&self, id: &EndpointId) -> Option<ErrorClass> {
        lock(&self.state(id).health).disabled()
    }

    /// Disables endpoint `id` (a topology that remembers a disabled endpoint across
    /// restarts says so when it starts).
    pub fn disable(&self, id: &EndpointId, class: ErrorClass) {
        let state = self.state(id);
        lock(&state.health).disable(class);
        state.metrics.disabled.set(1.0);
    }

    /// Enables endpoint `id` again, forgetting its failures: for a replay once it is fixed.
    pub fn enable(&self, id: &EndpointId) {
        let state = self.state(id);
        lock(&state.health).enable();
        state.metrics.disabled.set(0.0);
    }
}

/// The request's headers: the endpoint's, the event's (which win), the content type,
/// `Idempotency-Key` and `webhook-id`, and the timestamp and signature headers for an
/// endpoint with secrets.
fn signed_headers(endpoint: &Endpoint, request: &DeliveryRequest) -> Result<HeaderMap, Outcome> {
    let invalid = || Outcome::Permanent {
        class: ErrorClass::InvalidRequest,
    };
    let mut headers = endpoint.headers().clone();
    for name in request.headers().keys() {
        headers.remove(name);
    }
    for (name, value) in request.headers() {
        headers.append(name, value.clone());
    }
    if !headers.contains_key(CONTENT_TYPE) {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    // The event id was checked to be visible ASCII when the request was made.
    let id = HeaderValue::from_str(request.event_id()).map_err(|_| invalid())?;
    headers.insert(IDEMPOTENCY_KEY, id.clone());
    // Sent signed or not: it is what receivers de-duplicate retries on.
    headers.insert(WEBHOOK_ID, id);
    if !endpoint.secrets().is_empty() {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let signature = signature_header(
            endpoint.secrets(),
            request.event_id(),
            timestamp,
            request.body(),
        );
        headers.insert(WEBHOOK_TIMESTAMP, HeaderValue::from(timestamp));
        headers.insert(
            WEBHOOK_SIGNATURE,
            HeaderValue::from_str(&signature).map_err(|_| invalid())?,
        );
    }
    Ok(headers)
}

/// Reads the body up to `cap` bytes. A body that fails mid-way ends where it failed: the
/// status has already decided the outcome.
async fn read_capped(response: &mut reqwest::Response, cap: usize) -> (Bytes, bool) {
    let mut body = BytesMut::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = cap - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return (body.freeze(), true);
        }
        body.extend_from_slice(&chunk);
    }
    (body.freeze(), false)
}

/// Locks a mutex; a panic elsewhere while it was held leaves plain counters behind, still
/// fit to use.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
