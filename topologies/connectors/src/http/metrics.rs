//! The metrics of outbound HTTP: names, help texts, and what records them.
//!
//! Through the `metrics` facade, so whatever recorder the worker installs (Prometheus)
//! gets them; without one they cost nothing. Names follow `sluice_http_<what>_<unit>[_total]`.
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `sluice_http_deliveries_total` | counter | `endpoint`, `outcome`, `class`, `status_class` | calls of `deliver`, by outcome (`delivered`, `retryable`, `permanent`, `endpoint-disabled`), error class (`none` when delivered) and status class (`2xx`…`5xx`, `none` without an answer) |
//! | `sluice_http_attempt_duration_seconds` | histogram | `endpoint` | time of each request sent, from sending to the end of the capped body; its count is the number of requests (refusals send none) |
//! | `sluice_http_requests_in_flight` | gauge | `endpoint` | requests sent and not yet answered |
//! | `sluice_http_circuit_state` | gauge | `endpoint` | the endpoint's circuit: 0 closed, 1 open, 2 half-open |
//! | `sluice_http_endpoint_disabled` | gauge | `endpoint` | 1 while the endpoint is disabled, else 0 |
//!
//! `endpoint` is the endpoint's id: a configured id or the URL's host, never its path or
//! query, nor anything read from an event. `class` and `outcome` are the stable names of
//! [`ErrorClass`](super::ErrorClass) and [`Outcome::kind`](super::Outcome::kind).

use std::time::Duration;

use metrics::{
    Gauge, Histogram, Label, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};

use super::endpoint::EndpointId;

pub const DELIVERIES: &str = "sluice_http_deliveries_total";
pub const ATTEMPT_DURATION: &str = "sluice_http_attempt_duration_seconds";
pub const REQUESTS_IN_FLIGHT: &str = "sluice_http_requests_in_flight";
pub const CIRCUIT_STATE: &str = "sluice_http_circuit_state";
pub const ENDPOINT_DISABLED: &str = "sluice_http_endpoint_disabled";

/// Registers the help text of every outbound HTTP metric with the installed recorder.
pub fn describe() {
    describe_counter!(
        DELIVERIES,
        "Deliveries, by endpoint, outcome, error class and status class."
    );
    describe_histogram!(
        ATTEMPT_DURATION,
        metrics::Unit::Seconds,
        "Time of each HTTP request sent to an endpoint, to the end of the capped response body."
    );
    describe_gauge!(
        REQUESTS_IN_FLIGHT,
        "HTTP requests sent to an endpoint and not yet answered."
    );
    describe_gauge!(
        CIRCUIT_STATE,
        "An endpoint's circuit breaker: 0 closed, 1 open, 2 half-open."
    );
    describe_gauge!(
        ENDPOINT_DISABLED,
        "1 while an endpoint is disabled, else 0."
    );
}

/// One endpoint's handles, taken when the deliverer first sees it, so a delivery costs an
/// atomic add for them. The deliveries counter has too many label combinations to take
/// up front; it is looked up per delivery.
pub(crate) struct EndpointMetrics {
    endpoint: Label,
    pub attempt_duration: Histogram,
    pub in_flight: Gauge,
    pub circuit_state: Gauge,
    pub disabled: Gauge,
}

impl EndpointMetrics {
    pub fn new(id: &EndpointId) -> Self {
        let endpoint = Label::new("endpoint", id.as_str().to_owned());
        let labels = [endpoint.clone()];
        let metrics = EndpointMetrics {
            attempt_duration: histogram!(ATTEMPT_DURATION, labels.iter()),
            in_flight: gauge!(REQUESTS_IN_FLIGHT, labels.iter()),
            circuit_state: gauge!(CIRCUIT_STATE, labels.iter()),
            disabled: gauge!(ENDPOINT_DISABLED, labels.iter()),
            endpoint,
        };
        metrics.circuit_state.set(0.0);
        metrics.disabled.set(0.0);
        metrics
    }

    pub fn delivery(&self, outcome: &'static str, class: &'static str, status_class: &'static str) {
        let labels = [
            self.endpoint.clone(),
            Label::from_static_parts("outcome", outcome),
            Label::from_static_parts("class", class),
            Label::from_static_parts("status_class", status_class),
        ];
        counter!(DELIVERIES, labels.iter()).increment(1);
    }

    pub fn attempt(&self, took: Duration) {
        self.attempt_duration.record(took.as_secs_f64());
    }
}

/// Counts a request in flight until dropped, however the request ends (a caller that gives
/// up drops it mid-way).
pub(crate) struct InFlight<'a>(&'a Gauge);

impl<'a> InFlight<'a> {
    pub fn start(gauge: &'a Gauge) -> Self {
        gauge.increment(1.0);
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
