//! Auto-disable: an endpoint that has failed for days is switched off.
//!
//! Each endpoint remembers since when it has been failing: the time of the first failure
//! ([`ErrorClass::is_endpoint_failure`]) after its last success. An endpoint still failing
//! `disable_after` later (5 days by default, as Svix) is disabled, and so is one that
//! answers 410 Gone. A disabled endpoint gets no more calls: each delivery to it ends at
//! once as `EndpointDisabled`, and the topology keeps the event in the dead-letter topic,
//! for a replay once someone has fixed the endpoint and enabled it again.
//!
//! This is the bookkeeping of one process on tokio's clock. A topology that must remember
//! a disabled endpoint across restarts keeps that in its own state and enables or
//! disables the endpoint here when it starts.

use std::time::Duration;

use tokio::time::Instant;

use super::breaker::CallResult;
use super::classify::ErrorClass;

/// Svix's: 5 days.
pub const DEFAULT_DISABLE_AFTER: Duration = Duration::from_secs(5 * 24 * 3600);

/// One endpoint's failing-since and disabled marks.
#[derive(Clone, Debug, Default)]
pub struct EndpointHealth {
    failing_since: Option<Instant>,
    disabled: Option<ErrorClass>,
}

impl EndpointHealth {
    /// Why the endpoint is disabled, or `None` when it is not.
    pub fn disabled(&self) -> Option<ErrorClass> {
        self.disabled
    }

    /// Since when it has been failing without a success in between.
    pub fn failing_since(&self) -> Option<Instant> {
        self.failing_since
    }

    /// Reports what a call showed at `now`; the class that disables the endpoint when it
    /// has now been failing for `disable_after`.
    pub fn record(
        &mut self,
        now: Instant,
        result: CallResult,
        disable_after: Duration,
    ) -> Option<ErrorClass> {
        match result {
            CallResult::Success => self.failing_since = None,
            CallResult::Unknown => {}
            CallResult::Failure => {
                let since = *self.failing_since.get_or_insert(now);
                if now.duration_since(since) >= disable_after {
                    self.disable(ErrorClass::FailingTooLong);
                }
            }
        }
        self.disabled
    }

    /// Whether an endpoint whose circuit refuses calls has been failing for
    /// `disable_after` by `now` (the open circuit makes no calls that would tell).
    pub fn check(&mut self, now: Instant, disable_after: Duration) -> Option<ErrorClass> {
        if let Some(since) = self.failing_since
            && now.duration_since(since) >= disable_after
        {
            self.disable(ErrorClass::FailingTooLong);
        }
        self.disabled
    }

    /// Disables the endpoint, giving `class` as the reason.
    pub fn disable(&mut self, class: ErrorClass) {
        self.disabled.get_or_insert(class);
    }

    /// Enables the endpoint again, forgetting its failures.
    pub fn enable(&mut self) {
        *self = EndpointHealth::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[tokio::test(start_paused = true)]
    async fn an_endpoint_failing_for_the_whole_period_is_disabled() {
        let mut health = EndpointHealth::default();
        let fail = |h: &mut EndpointHealth| {
            h.record(Instant::now(), CallResult::Failure, DEFAULT_DISABLE_AFTER)
        };
        assert_eq!(fail(&mut health), None);
        let since = health.failing_since().unwrap();
        advance(4 * DAY).await;
        assert_eq!(fail(&mut health), None);
        assert_eq!(
            health.failing_since(),
            Some(since),
            "the first failure counts"
        );
        advance(DAY).await;
        assert_eq!(fail(&mut health), Some(ErrorClass::FailingTooLong));
        assert_eq!(health.disabled(), Some(ErrorClass::FailingTooLong));
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_starts_the_count_again() {
        let mut health = EndpointHealth::default();
        health.record(Instant::now(), CallResult::Failure, DEFAULT_DISABLE_AFTER);
        advance(4 * DAY).await;
        health.record(Instant::now(), CallResult::Success, DEFAULT_DISABLE_AFTER);
        assert_eq!(health.failing_since(), None);
        health.record(Instant::now(), CallResult::Failure, DEFAULT_DISABLE_AFTER);
        advance(4 * DAY).await;
        let now = Instant::now();
        assert_eq!(
            health.record(now, CallResult::Failure, DEFAULT_DISABLE_AFTER),
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_circuit_does_not_hide_how_long_the_endpoint_has_failed() {
        let mut health = EndpointHealth::default();
        health.record(Instant::now(), CallResult::Failure, DEFAULT_DISABLE_AFTER);
        advance(5 * DAY).await;
        assert_eq!(
            health.check(Instant::now(), DEFAULT_DISABLE_AFTER),
            Some(ErrorClass::FailingTooLong)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_reason_stays_until_the_endpoint_is_enabled() {
        let mut health = EndpointHealth::default();
        health.disable(ErrorClass::Gone);
        health.disable(ErrorClass::FailingTooLong);
        assert_eq!(health.disabled(), Some(ErrorClass::Gone));
        health.enable();
        assert_eq!(health.disabled(), None);
        assert_eq!(health.failing_since(), None);
    }
}
