//! What an attempt's answer (or its failure) means: delivered, worth retrying, never worth
//! retrying, or the endpoint is gone.
//!
//! | answer | [`Outcome`] | [`ErrorClass`] |
//! |---|---|---|
//! | 2xx | `Delivered` | — |
//! | 408 | `Retryable` | `request-timeout` |
//! | 429 | `Retryable` | `too-many-requests` |
//! | 5xx | `Retryable` | `server-error` |
//! | no answer in time (connect or total timeout) | `Retryable` | `timeout` |
//! | refused, reset or failed TLS handshake | `Retryable` | `connect` |
//! | the host does not resolve | `Retryable` | `dns` |
//! | any other failure on the wire | `Retryable` | `transport` |
//! | 410 | `EndpointDisabled` | `gone` |
//! | 3xx (redirects are never followed) | `Permanent` | `redirect` |
//! | other 4xx, and 1xx | `Permanent` | `client-error` |
//!
//! A retryable answer carries the server's `Retry-After` (seconds or an HTTP-date), as the
//! server sent it: the retry schedule clamps it ([`super::retry`]). The deliverer adds
//! refusals of its own that make no request: `forbidden-destination` and `invalid-request`
//! (permanent), `circuit-open` and `rate-limited` (retryable), `failing-too-long` (the
//! endpoint is disabled).

use std::fmt;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// Why a delivery did not succeed. A small closed set whose names are stable: they go into
/// dead-letter headers and metric labels, and dashboards and replays select on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// 5xx.
    ServerError,
    /// 408 Request Timeout.
    RequestTimeout,
    /// 429 Too Many Requests.
    TooManyRequests,
    /// No answer in time: the connect timeout or the total timeout passed.
    Timeout,
    /// The connection was refused or reset, or the TLS handshake failed.
    Connect,
    /// The host name did not resolve.
    Dns,
    /// Any other failure on the wire, such as a connection closed mid-answer.
    Transport,
    /// Refused by this endpoint's own rate limit before any request.
    RateLimited,
    /// Refused by this endpoint's open circuit breaker before any request.
    CircuitOpen,
    /// 3xx: redirects are never followed.
    Redirect,
    /// Any other 4xx (and 1xx): the request itself is refused.
    ClientError,
    /// 410 Gone: the receiver says the endpoint no longer exists.
    Gone,
    /// The endpoint failed for longer than `disable.after.ms`.
    FailingTooLong,
    /// The SSRF guard refused the destination's address; no connection was made.
    ForbiddenDestination,
    /// The request cannot be sent as given (a header the HTTP stack refuses).
    InvalidRequest,
}

impl ErrorClass {
    /// Every class, for tests and dashboards that list them.
    pub const ALL: [ErrorClass; 15] = [
        ErrorClass::ServerError,
        ErrorClass::RequestTimeout,
        ErrorClass::TooManyRequests,
        ErrorClass::Timeout,
        ErrorClass::Connect,
        ErrorClass::Dns,
        ErrorClass::Transport,
        ErrorClass::RateLimited,
        ErrorClass::CircuitOpen,
        ErrorClass::Redirect,
        ErrorClass::ClientError,
        ErrorClass::Gone,
        ErrorClass::FailingTooLong,
        ErrorClass::ForbiddenDestination,
        ErrorClass::InvalidRequest,
    ];

    /// The stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::ServerError => "server-error",
            ErrorClass::RequestTimeout => "request-timeout",
            ErrorClass::TooManyRequests => "too-many-requests",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Connect => "connect",
            ErrorClass::Dns => "dns",
            ErrorClass::Transport => "transport",
            ErrorClass::RateLimited => "rate-limited",
            ErrorClass::CircuitOpen => "circuit-open",
            ErrorClass::Redirect => "redirect",
            ErrorClass::ClientError => "client-error",
            ErrorClass::Gone => "gone",
            ErrorClass::FailingTooLong => "failing-too-long",
            ErrorClass::ForbiddenDestination => "forbidden-destination",
            ErrorClass::InvalidRequest => "invalid-request",
        }
    }

    /// Whether this says the endpoint is unhealthy. These count towards its circuit
    /// breaker and towards disabling it; an answer such as a 400 or a 429 shows the
    /// endpoint up, and a refusal of our own says nothing about it.
    pub fn is_endpoint_failure(self) -> bool {
        matches!(
            self,
            ErrorClass::ServerError
                | ErrorClass::RequestTimeout
                | ErrorClass::Timeout
                | ErrorClass::Connect
                | ErrorClass::Dns
                | ErrorClass::Transport
        )
    }

    /// Whether the receiver asked us to slow down (the retry schedule waits longer then).
    pub fn is_throttle(self) -> bool {
        matches!(
            self,
            ErrorClass::TooManyRequests | ErrorClass::Timeout | ErrorClass::RequestTimeout
        )
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What became of one delivery attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer.
    Delivered,
    /// Not delivered, and a later attempt may be: move the event to the next retry tier.
    Retryable {
        class: ErrorClass,
        /// The server's `Retry-After`, unclamped; or how long our own refusal lasts
        /// (rate limit, open circuit).
        retry_after: Option<Duration>,
    },
    /// Not delivered, and no later attempt will be: dead-letter the event now.
    Permanent { class: ErrorClass },
    /// The endpoint is disabled (410 Gone, or failing for too long): keep the event in
    /// the dead-letter topic for a replay once the endpoint is fixed.
    EndpointDisabled { class: ErrorClass },
}

impl Outcome {
    /// The stable lower-case name of the kind of outcome, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retryable { .. } => "retryable",
            Outcome::Permanent { .. } => "permanent",
            Outcome::EndpointDisabled { .. } => "endpoint-disabled",
        }
    }

    /// Why it was not delivered; `None` when it was.
    pub fn class(&self) -> Option<ErrorClass> {
        match *self {
            Outcome::Delivered => None,
            Outcome::Retryable { class, .. }
            | Outcome::Permanent { class }
            | Outcome::EndpointDisabled { class } => Some(class),
        }
    }

    pub(crate) fn retryable(class: ErrorClass) -> Self {
        Outcome::Retryable {
            class,
            retry_after: None,
        }
    }
}

/// Classifies an answer by its status, taking `Retry-After` from its headers when the
/// answer is retryable. `now` reads an HTTP-date `Retry-After`.
pub fn classify_status(status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Outcome {
    let code = status.as_u16();
    let class = match code {
        200..=299 => return Outcome::Delivered,
        410 => {
            return Outcome::EndpointDisabled {
                class: ErrorClass::Gone,
            };
        }
        408 => ErrorClass::RequestTimeout,
        429 => ErrorClass::TooManyRequests,
        500..=599 => ErrorClass::ServerError,
        300..=399 => {
            return Outcome::Permanent {
                class: ErrorClass::Redirect,
            };
        }
        _ => {
            return Outcome::Permanent {
                class: ErrorClass::ClientError,
            };
        }
    };
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now));
    Outcome::Retryable { class, retry_after }
}

/// Classifies a request that got no answer. reqwest reports a connect timeout as both a
/// timeout and a connect error; it is a timeout here, the more specific of the two.
pub fn classify_error(error: &reqwest::Error) -> ErrorClass {
    if error.is_timeout() {
        ErrorClass::Timeout
    } else if error.is_connect() {
        ErrorClass::Connect
    } else if error.is_builder() {
        ErrorClass::InvalidRequest
    } else {
        ErrorClass::Transport
    }
}

/// `Retry-After` as delay-seconds (`120`) or an HTTP-date (`Wed, 21 Oct 2015 07:28:00
/// GMT`). A date already past is a zero delay; anything else unreadable is no hint.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `2xx`, `3xx`, `4xx`, `5xx`, or `none` when no answer came: the status label of metrics.
pub fn status_class(status: Option<StatusCode>) -> &'static str {
    match status.map(|s| s.as_u16() / 100) {
        Some(1) => "1xx",
        Some(2) => "2xx",
        Some(3) => "3xx",
        Some(4) => "4xx",
        Some(5) => "5xx",
        _ => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn classify(code: u16) -> Outcome {
        classify_status(
            StatusCode::from_u16(code).unwrap(),
            &HeaderMap::new(),
            SystemTime::now(),
        )
    }

    #[test]
    fn every_2xx_is_delivered() {
        for code in [200, 201, 202, 204, 299] {
            assert_eq!(classify(code), Outcome::Delivered, "{code}");
        }
    }

    #[test]
    fn timeouts_throttles_and_server_errors_are_retryable() {
        for (code, class) in [
            (408, ErrorClass::RequestTimeout),
            (429, ErrorClass::TooManyRequests),
            (500, ErrorClass::ServerError),
            (502, ErrorClass::ServerError),
            (503, ErrorClass::ServerError),
            (599, ErrorClass::ServerError),
        ] {
            assert_eq!(classify(code), Outcome::retryable(class), "{code}");
        }
    }

    #[test]
    fn other_client_errors_and_redirects_are_permanent() {
        for code in [400, 401, 403, 404, 409, 413, 422] {
            let class = ErrorClass::ClientError;
            assert_eq!(classify(code), Outcome::Permanent { class }, "{code}");
        }
        for code in [301, 302, 303, 307, 308] {
            let class = ErrorClass::Redirect;
            assert_eq!(classify(code), Outcome::Permanent { class }, "{code}");
        }
    }

    #[test]
    fn gone_disables_the_endpoint() {
        let class = ErrorClass::Gone;
        assert_eq!(classify(410), Outcome::EndpointDisabled { class });
    }

    #[test]
    fn retry_after_is_read_in_seconds_or_as_an_http_date() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:30:30 GMT", now),
            Some(Duration::from_secs(150))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date already past"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn a_retryable_answer_carries_its_retry_after() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        let outcome = classify_status(StatusCode::SERVICE_UNAVAILABLE, &headers, SystemTime::now());
        assert_eq!(
            outcome,
            Outcome::Retryable {
                class: ErrorClass::ServerError,
                retry_after: Some(Duration::from_secs(7))
            }
        );
    }

    #[test]
    fn class_names_are_stable_lower_case_and_distinct() {
        let names: Vec<&str> = ErrorClass::ALL.iter().map(|c| c.as_str()).collect();
        for name in &names {
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "{name}"
            );
        }
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
    }

    #[test]
    fn only_signs_of_an_unhealthy_endpoint_count_against_it() {
        let failures: Vec<_> = ErrorClass::ALL
            .into_iter()
            .filter(|c| c.is_endpoint_failure())
            .collect();
        assert_eq!(
            failures,
            [
                ErrorClass::ServerError,
                ErrorClass::RequestTimeout,
                ErrorClass::Timeout,
                ErrorClass::Connect,
                ErrorClass::Dns,
                ErrorClass::Transport
            ]
        );
    }

    #[test]
    fn status_classes_label_answers_and_their_absence() {
        assert_eq!(status_class(Some(StatusCode::OK)), "2xx");
        assert_eq!(status_class(Some(StatusCode::FOUND)), "3xx");
        assert_eq!(status_class(Some(StatusCode::GONE)), "4xx");
        assert_eq!(status_class(Some(StatusCode::BAD_GATEWAY)), "5xx");
        assert_eq!(status_class(None), "none");
    }
}
