//! A circuit breaker per endpoint: stop calling an endpoint that is down, and find out
//! with one call when it is back.
//!
//! ```text
//!            N failures in a row, or failure ratio ≥ r over ≥ m calls in the window
//!   Closed ─────────────────────────────────────────────────────────────────────▶ Open
//!     ▲                                                                            │
//!     │ the probe succeeds                                   cool-down has passed  │
//!     └──────────────────────────── HalfOpen ◀─────────────────────────────────────┘
//!                                      │ the probe fails: Open again, a new cool-down
//!                                      ▼
//! ```
//!
//! * **Closed**: every call goes through. A failure is a sign of an unhealthy endpoint
//!   ([`ErrorClass::is_endpoint_failure`]: 5xx, 408, timeouts, connection and DNS
//!   failures); any other answer, a 400 or a 429 included, shows the endpoint up and counts
//!   as a success. The circuit opens after `consecutive_failures` failures in a row, or
//!   when at least `min_requests` calls of the current window (a fixed window of
//!   `window`, 5 min by default) failed at a ratio of `failure_ratio` or more (70%, as
//!   Convoy).
//! * **Open**: calls are refused without a connection ([`Admission::Refused`], the outcome
//!   `circuit-open`), and the topology moves the event to its next retry tier. Answers to
//!   calls made before the circuit opened change nothing.
//! * **HalfOpen**: after `cooldown` one call, the probe, goes through; others are still
//!   refused. Its success closes the circuit, its failure opens it again. A probe that
//!   never reports (its caller gave up) is replaced by another after one more cool-down,
//!   so the circuit never stays half-open for good.
//!
//! Time is tokio's clock, so tests move it on a paused runtime.

use std::time::Duration;

use tokio::time::Instant;

use super::classify::ErrorClass;

/// When a circuit opens and for how long.
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerConfig {
    /// Failures in a row that open the circuit.
    pub consecutive_failures: u32,
    /// The failure ratio over a window that opens the circuit (with `min_requests`).
    pub failure_ratio: f64,
    /// The fewest calls in a window before its ratio counts.
    pub min_requests: u32,
    /// The window of the ratio.
    pub window: Duration,
    /// How long the circuit stays open before a probe.
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            failure_ratio: 0.7,
            min_requests: 10,
            window: Duration::from_secs(300),
            cooldown: Duration::from_secs(30),
        }
    }
}

/// Where a circuit is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    /// The stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half-open",
        }
    }

    /// The value of the `sluice_http_circuit_state` gauge: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> f64 {
        match self {
            CircuitState::Closed => 0.0,
            CircuitState::Open => 1.0,
            CircuitState::HalfOpen => 2.0,
        }
    }
}

/// Whether a call may go ahead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Yes, the circuit is closed.
    Allowed,
    /// Yes, as the half-open circuit's probe: report its result with `probe: true`.
    Probe,
    /// No: the circuit is open, for about `retry_in` more.
    Refused { retry_in: Duration },
}

/// What a call showed about the endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallResult {
    /// The endpoint answered (any answer but a failure).
    Success,
    /// A sign of an unhealthy endpoint.
    Failure,
    /// Nothing: the call never reached the endpoint (refused by a limit of our own).
    Unknown,
}

impl CallResult {
    /// What an attempt that ended in `class` (or delivered, `None`) showed.
    pub fn of(class: Option<ErrorClass>) -> Self {
        match class {
            None => CallResult::Success,
            Some(c) if c.is_endpoint_failure() => CallResult::Failure,
            Some(ErrorClass::RateLimited | ErrorClass::CircuitOpen) => CallResult::Unknown,
            Some(ErrorClass::ForbiddenDestination | ErrorClass::InvalidRequest) => {
                CallResult::Unknown
            }
            Some(ErrorClass::FailingTooLong) => CallResult::Unknown,
            Some(_) => CallResult::Success,
        }
    }
}

/// One endpoint's circuit. Not shared by itself: the deliverer keeps it behind a lock.
#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: State,
    consecutive_failures: u32,
    window_start: Instant,
    window_calls: u32,
    window_failures: u32,
}

#[derive(Clone, Copy, Debug)]
enum State {
    Closed,
    /// Calls are refused until `until`.
    Open {
        until: Instant,
    },
    /// A probe went at `probe_until - cooldown`; another may go at `probe_until`.
    HalfOpen {
        probe_until: Instant,
    },
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        CircuitBreaker {
            config,
            state: State::Closed,
            consecutive_failures: 0,
            window_start: Instant::now(),
            window_calls: 0,
            window_failures: 0,
        }
    }

    /// Where the circuit is at `now`. An open circuit whose cool-down has passed reads as
    /// half-open: the next call is the probe.
    pub fn state(&self, now: Instant) -> CircuitState {
        match self.state {
            State::Closed => CircuitState::Closed,
            State::Open { until } if now < until => CircuitState::Open,
            State::Open { .. } | State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Whether a call may go ahead at `now`.
    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.state {
            State::Closed => Admission::Allowed,
            State::Open { until } | State::HalfOpen { probe_until: until } if now < until => {
                Admission::Refused {
                    retry_in: until - now,
                }
            }
            State::Open { .. } | State::HalfOpen { .. } => {
                self.state = State::HalfOpen {
                    probe_until: now + self.config.cooldown,
                };
                Admission::Probe
            }
        }
    }

    /// Reports what an admitted call showed; `probe` when it was admitted as the probe.
    pub fn record(&mut self, now: Instant, result: CallResult, probe: bool) {
        match (self.state, probe) {
            (State::HalfOpen { .. }, true) => match result {
                CallResult::Success => self.close(now),
                CallResult::Failure => self.open(now),
                // The probe never reached the endpoint: let the next call probe.
                CallResult::Unknown => self.state = State::Open { until: now },
            },
            (State::Closed, _) => self.count(now, result),
            // A call admitted before the circuit opened: what it says is old news.
            _ => {}
        }
    }

    fn count(&mut self, now: Instant, result: CallResult) {
        if now >= self.window_start + self.config.window {
            self.window_start = now;
            self.window_calls = 0;
            self.window_failures = 0;
        }
        match result {
            CallResult::Unknown => return,
            CallResult::Success => self.consecutive_failures = 0,
            CallResult::Failure => {
                self.consecutive_failures += 1;
                self.window_failures += 1;
            }
        }
        self.window_calls += 1;
        let ratio_trips = self.window_calls >= self.config.min_requests
            && f64::from(self.window_failures)
                >= self.config.failure_ratio * f64::from(self.window_calls);
        if self.consecutive_failures >= self.config.consecutive_failures || ratio_trips {
            self.open(now);
        }
    }

    fn open(&mut self, now: Instant) {
        self.state = State::Open {
            until: now + self.config.cooldown,
        };
    }

    fn close(&mut self, now: Instant) {
        self.state = State::Closed;
        self.consecutive_failures = 0;
        self.window_start = now;
        self.window_calls = 0;
        self.window_failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            consecutive_failures: 3,
            failure_ratio: 0.5,
            min_requests: 6,
            window: Duration::from_secs(60),
            cooldown: Duration::from_secs(30),
        })
    }

    fn call(b: &mut CircuitBreaker, result: CallResult) {
        assert_eq!(b.admit(Instant::now()), Admission::Allowed);
        b.record(Instant::now(), result, false);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_refuses_calls() {
        let mut b = breaker();
        call(&mut b, CallResult::Failure);
        call(&mut b, CallResult::Failure);
        assert_eq!(b.state(Instant::now()), CircuitState::Closed);
        call(&mut b, CallResult::Failure);
        assert_eq!(b.state(Instant::now()), CircuitState::Open);
        advance(Duration::from_secs(10)).await;
        assert_eq!(
            b.admit(Instant::now()),
            Admission::Refused {
                retry_in: Duration::from_secs(20)
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_run_of_failures() {
        let mut b = breaker();
        // Five calls: fewer than the window needs, so only the run of failures counts.
        for result in [
            CallResult::Failure,
            CallResult::Failure,
            CallResult::Success,
            CallResult::Failure,
            CallResult::Failure,
        ] {
            call(&mut b, result);
        }
        assert_eq!(b.state(Instant::now()), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_the_failure_ratio_once_the_window_has_enough_calls() {
        let mut b = breaker();
        // Failure, failure, success: never three in a row, but 4 of 6 failed (≥ 50%).
        for result in [
            CallResult::Failure,
            CallResult::Failure,
            CallResult::Success,
            CallResult::Failure,
            CallResult::Success,
        ] {
            call(&mut b, result);
        }
        assert_eq!(b.state(Instant::now()), CircuitState::Closed, "5 calls < 6");
        call(&mut b, CallResult::Failure);
        assert_eq!(b.state(Instant::now()), CircuitState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn the_ratio_window_starts_afresh() {
        let mut b = breaker();
        for result in [
            CallResult::Failure,
            CallResult::Failure,
            CallResult::Success,
        ] {
            call(&mut b, result);
        }
        advance(Duration::from_secs(61)).await;
        for result in [
            CallResult::Success,
            CallResult::Failure,
            CallResult::Success,
            CallResult::Failure,
            CallResult::Success,
        ] {
            call(&mut b, result);
        }
        // 2 of the new window's 5 failed; with the old window's it would be 4 of 8.
        call(&mut b, CallResult::Success);
        assert_eq!(b.state(Instant::now()), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_cooldown_one_probe_goes_and_its_success_closes() {
        let mut b = breaker();
        for _ in 0..3 {
            call(&mut b, CallResult::Failure);
        }
        advance(Duration::from_secs(30)).await;
        assert_eq!(b.state(Instant::now()), CircuitState::HalfOpen);
        assert_eq!(b.admit(Instant::now()), Admission::Probe);
        assert!(
            matches!(b.admit(Instant::now()), Admission::Refused { .. }),
            "one probe at a time"
        );
        b.record(Instant::now(), CallResult::Success, true);
        assert_eq!(b.state(Instant::now()), CircuitState::Closed);
        assert_eq!(b.admit(Instant::now()), Admission::Allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_the_circuit_for_another_cooldown() {
        let mut b = breaker();
        for _ in 0..3 {
            call(&mut b, CallResult::Failure);
        }
        advance(Duration::from_secs(30)).await;
        assert_eq!(b.admit(Instant::now()), Admission::Probe);
        advance(Duration::from_secs(2)).await;
        b.record(Instant::now(), CallResult::Failure, true);
        assert_eq!(b.state(Instant::now()), CircuitState::Open);
        advance(Duration::from_secs(29)).await;
        assert!(matches!(b.admit(Instant::now()), Admission::Refused { .. }));
        advance(Duration::from_secs(1)).await;
        assert_eq!(b.admit(Instant::now()), Admission::Probe);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_never_reports_is_replaced_after_a_cooldown() {
        let mut b = breaker();
        for _ in 0..3 {
            call(&mut b, CallResult::Failure);
        }
        advance(Duration::from_secs(30)).await;
        assert_eq!(b.admit(Instant::now()), Admission::Probe);
        advance(Duration::from_secs(29)).await;
        assert!(matches!(b.admit(Instant::now()), Admission::Refused { .. }));
        advance(Duration::from_secs(1)).await;
        assert_eq!(b.admit(Instant::now()), Admission::Probe);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_never_reached_the_endpoint_lets_the_next_call_probe() {
        let mut b = breaker();
        for _ in 0..3 {
            call(&mut b, CallResult::Failure);
        }
        advance(Duration::from_secs(30)).await;
        assert_eq!(b.admit(Instant::now()), Admission::Probe);
        b.record(Instant::now(), CallResult::Unknown, true);
        assert_eq!(b.admit(Instant::now()), Admission::Probe);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_of_calls_made_before_the_circuit_opened_change_nothing() {
        let mut b = breaker();
        for _ in 0..3 {
            call(&mut b, CallResult::Failure);
        }
        b.record(Instant::now(), CallResult::Success, false);
        assert_eq!(b.state(Instant::now()), CircuitState::Open);
    }

    #[test]
    fn client_errors_and_throttles_show_the_endpoint_up() {
        assert_eq!(CallResult::of(None), CallResult::Success);
        assert_eq!(
            CallResult::of(Some(ErrorClass::ClientError)),
            CallResult::Success
        );
        assert_eq!(
            CallResult::of(Some(ErrorClass::TooManyRequests)),
            CallResult::Success
        );
        assert_eq!(
            CallResult::of(Some(ErrorClass::ServerError)),
            CallResult::Failure
        );
        assert_eq!(
            CallResult::of(Some(ErrorClass::Timeout)),
            CallResult::Failure
        );
        assert_eq!(
            CallResult::of(Some(ErrorClass::RateLimited)),
            CallResult::Unknown
        );
    }
}
