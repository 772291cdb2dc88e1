//! The retry schedule: after which failure an event waits how long, and in which tier.
//!
//! The first attempt is immediate. After it fails, retry `n` (1-based) waits the `n`-th
//! delay of the schedule in tier `n`: in the webhooks topology, the topic
//! `api.webhooks.outbound.retry-<n>`. The default schedule is Svix's: 5 s, 5 min, 30 min,
//! 2 h, 5 h, 10 h, 10 h, so eight attempts over about 27.6 hours.
//!
//! * **Jitter.** Each delay is scaled by a random factor within ±`jitter` (±20% by
//!   default), so the events of an endpoint that failed together do not all come back in
//!   the same second.
//! * **`maxRetries`.** An event may allow fewer retries than the schedule has tiers; it may
//!   also allow more, and those wait the last delay again, in the last tier.
//! * **`Retry-After`.** A server's `Retry-After` is honoured when it asks for longer than
//!   the schedule, up to `retry.after.max.ms` (1 h by default); it never makes a retry
//!   sooner than the schedule.
//! * **Throttling.** After a 429, a 408 or a timeout the retry waits at least
//!   `retry.throttled.min.ms` (60 s, as Svix does): the receiver is overloaded, and the
//!   first tier's 5 s would only add to its load.
//!
//! [`RetrySchedule::dispose`] turns a delivery's [`Outcome`] into what the topology does
//! with the event ([`Disposition`]).

use std::time::Duration;

use rand::Rng;

use super::classify::{ErrorClass, Outcome};

/// Svix's schedule: the delay before each retry.
pub const SVIX_DELAYS: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];
/// ±20% on every delay.
pub const DEFAULT_JITTER: f64 = 0.2;
/// The longest `Retry-After` honoured.
pub const DEFAULT_RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);
/// The least wait after a 429, a 408 or a timeout.
pub const DEFAULT_THROTTLED_MIN: Duration = Duration::from_secs(60);

/// When an event is retried, and in which tier.
#[derive(Clone, Debug, PartialEq)]
pub struct RetrySchedule {
    /// The delay before retry `n` is `delays[n - 1]`; at least one.
    pub delays: Vec<Duration>,
    /// The most a delay is scaled up or down, as a fraction (0.2: ±20%); within 0..1.
    pub jitter: f64,
    /// The longest `Retry-After` honoured.
    pub retry_after_max: Duration,
    /// The least wait after a 429, a 408 or a timeout.
    pub throttled_min: Duration,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        RetrySchedule {
            delays: SVIX_DELAYS.to_vec(),
            jitter: DEFAULT_JITTER,
            retry_after_max: DEFAULT_RETRY_AFTER_MAX,
            throttled_min: DEFAULT_THROTTLED_MIN,
        }
    }
}

/// What follows a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NextAttempt {
    /// Retry in tier `tier` (1-based) after `delay`.
    Retry { tier: u32, delay: Duration },
    /// No retries are left.
    Exhausted,
}

/// What the topology does with an event after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Done.
    Delivered,
    /// Move it to retry tier `tier`, due after `delay`.
    Retry { tier: u32, delay: Duration },
    /// Dead-letter it: `class` is the last attempt's reason; `exhausted` when it failed
    /// in a retryable way but has no retries left.
    DeadLetter { class: ErrorClass, exhausted: bool },
    /// Dead-letter it for replay: the endpoint is disabled.
    EndpointDisabled { class: ErrorClass },
}

impl Disposition {
    /// The stable lower-case name, for headers and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Disposition::Delivered => "delivered",
            Disposition::Retry { .. } => "retry",
            Disposition::DeadLetter { .. } => "dead-letter",
            Disposition::EndpointDisabled { .. } => "endpoint-disabled",
        }
    }
}

impl RetrySchedule {
    /// A schedule with these delays and the default jitter and clamps.
    pub fn with_delays(delays: Vec<Duration>) -> Self {
        RetrySchedule {
            delays,
            ..RetrySchedule::default()
        }
    }

    /// The number of retry tiers.
    pub fn tiers(&self) -> u32 {
        self.delays.len() as u32
    }

    /// What follows a retryable failure of an event that has been retried `retries_done`
    /// times already (its `retryCount`; 0 after the first attempt), allowing at most
    /// `max_retries` retries (the schedule's length when `None`).
    pub fn next_attempt(
        &self,
        retries_done: u32,
        max_retries: Option<u32>,
        class: ErrorClass,
        retry_after: Option<Duration>,
        rng: &mut impl Rng,
    ) -> NextAttempt {
        let max_retries = max_retries.unwrap_or(self.tiers());
        if retries_done >= max_retries || self.delays.is_empty() {
            return NextAttempt::Exhausted;
        }
        let tier = (retries_done + 1).min(self.tiers());
        let scheduled = self.delays[tier as usize - 1];
        let mut delay = self.jittered(scheduled, rng.random::<f64>());
        if let Some(asked) = retry_after {
            delay = delay.max(asked.min(self.retry_after_max));
        }
        if class.is_throttle() {
            delay = delay.max(self.throttled_min);
        }
        NextAttempt::Retry { tier, delay }
    }

    /// `delay` scaled by a factor within ±`jitter`: `unit` (in 0..1) picks where, 0 the
    /// shortest and 1 the longest.
    pub fn jittered(&self, delay: Duration, unit: f64) -> Duration {
        // A jitter of 1 or more (possible in a schedule built by hand, not through the
        // configuration keys) would scale below zero, where `mul_f64` panics.
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - jitter + 2.0 * jitter * unit.clamp(0.0, 1.0);
        delay.mul_f64(factor)
    }

    /// What the topology does with an event whose attempt ended in `outcome`.
    pub fn dispose(
        &self,
        outcome: &Outcome,
        retries_done: u32,
        max_retries: Option<u32>,
        rng: &mut impl Rng,
    ) -> Disposition {
        match *outcome {
            Outcome::Delivered => Disposition::Delivered,
            Outcome::Permanent { class } => Disposition::DeadLetter {
                class,
                exhausted: false,
            },
            Outcome::EndpointDisabled { class } => Disposition::EndpointDisabled { class },
            Outcome::Retryable { class, retry_after } => {
                match self.next_attempt(retries_done, max_retries, class, retry_after, rng) {
                    NextAttempt::Retry { tier, delay } => Disposition::Retry { tier, delay },
                    NextAttempt::Exhausted => Disposition::DeadLetter {
                        class,
                        exhausted: true,
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn rng() -> SmallRng {
        SmallRng::seed_from_u64(13)
    }

    fn retry(schedule: &RetrySchedule, done: u32, rng: &mut SmallRng) -> NextAttempt {
        schedule.next_attempt(done, None, ErrorClass::ServerError, None, rng)
    }

    #[test]
    fn the_default_is_svixs_schedule_with_seven_tiers() {
        let schedule = RetrySchedule::default();
        let secs: Vec<u64> = schedule.delays.iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, [5, 300, 1800, 7200, 18000, 36000, 36000]);
        assert_eq!(schedule.jitter, 0.2);
    }

    #[test]
    fn jitter_spans_exactly_plus_minus_the_fraction() {
        let schedule = RetrySchedule::default();
        let d = Duration::from_secs(100);
        assert_eq!(schedule.jittered(d, 0.0), Duration::from_secs(80));
        assert_eq!(schedule.jittered(d, 0.5), Duration::from_secs(100));
        assert_eq!(schedule.jittered(d, 1.0), Duration::from_secs(120));
        let wild = RetrySchedule {
            jitter: 3.0,
            ..RetrySchedule::default()
        };
        assert_eq!(wild.jittered(d, 0.0), Duration::ZERO, "never below zero");
    }

    #[test]
    fn each_retry_waits_its_tiers_delay_within_the_jitter() {
        let schedule = RetrySchedule::default();
        let mut rng = rng();
        for _ in 0..200 {
            for (done, base) in schedule.delays.iter().enumerate() {
                let NextAttempt::Retry { tier, delay } = retry(&schedule, done as u32, &mut rng)
                else {
                    panic!("retry {done} exhausted");
                };
                assert_eq!(tier, done as u32 + 1);
                assert!(
                    delay >= base.mul_f64(0.8) && delay <= base.mul_f64(1.2),
                    "{delay:?}"
                );
            }
        }
    }

    #[test]
    fn jitter_varies_the_delays() {
        let schedule = RetrySchedule::default();
        let mut rng = rng();
        let delays: std::collections::HashSet<_> =
            (0..20).map(|_| retry(&schedule, 0, &mut rng)).collect();
        assert!(delays.len() > 10, "{delays:?}");
    }

    #[test]
    fn after_the_last_tier_retries_are_exhausted() {
        let schedule = RetrySchedule::default();
        assert_eq!(retry(&schedule, 7, &mut rng()), NextAttempt::Exhausted);
    }

    #[test]
    fn max_retries_from_the_event_is_honoured() {
        let schedule = RetrySchedule::default();
        let mut rng = rng();
        let class = ErrorClass::Connect;
        assert!(matches!(
            schedule.next_attempt(1, Some(2), class, None, &mut rng),
            NextAttempt::Retry { tier: 2, .. }
        ));
        assert_eq!(
            schedule.next_attempt(2, Some(2), class, None, &mut rng),
            NextAttempt::Exhausted
        );
        assert_eq!(
            schedule.next_attempt(0, Some(0), class, None, &mut rng),
            NextAttempt::Exhausted
        );
        // More retries than tiers: the last tier, its delay again.
        let NextAttempt::Retry { tier, delay } =
            schedule.next_attempt(9, Some(12), class, None, &mut rng)
        else {
            panic!("exhausted");
        };
        assert_eq!(tier, 7);
        assert!(delay >= Duration::from_secs(28800) && delay <= Duration::from_secs(43200));
    }

    #[test]
    fn retry_after_lengthens_a_retry_up_to_the_clamp_and_never_shortens_it() {
        let schedule = RetrySchedule {
            jitter: 0.0,
            ..RetrySchedule::default()
        };
        let mut rng = rng();
        let at = |after: u64, rng: &mut SmallRng| {
            schedule.next_attempt(
                1,
                None,
                ErrorClass::ServerError,
                Some(Duration::from_secs(after)),
                rng,
            )
        };
        let tier2 = |secs| NextAttempt::Retry {
            tier: 2,
            delay: Duration::from_secs(secs),
        };
        assert_eq!(at(900, &mut rng), tier2(900), "honoured");
        assert_eq!(at(10, &mut rng), tier2(300), "not sooner than the schedule");
        assert_eq!(
            at(86400, &mut rng),
            tier2(3600),
            "clamped to retry_after_max"
        );
    }

    #[test]
    fn throttling_waits_at_least_the_throttled_minimum() {
        let schedule = RetrySchedule::default();
        let mut rng = rng();
        for class in [
            ErrorClass::TooManyRequests,
            ErrorClass::Timeout,
            ErrorClass::RequestTimeout,
        ] {
            assert_eq!(
                schedule.next_attempt(0, None, class, None, &mut rng),
                NextAttempt::Retry {
                    tier: 1,
                    delay: Duration::from_secs(60)
                },
                "{class}"
            );
        }
        // A longer Retry-After still wins.
        assert_eq!(
            schedule.next_attempt(
                0,
                None,
                ErrorClass::TooManyRequests,
                Some(Duration::from_secs(120)),
                &mut rng
            ),
            NextAttempt::Retry {
                tier: 1,
                delay: Duration::from_secs(120)
            }
        );
    }

    #[test]
    fn outcomes_map_to_what_the_topology_does() {
        let schedule = RetrySchedule::default();
        let mut rng = rng();
        let class = ErrorClass::ClientError;
        assert_eq!(
            schedule.dispose(&Outcome::Delivered, 3, None, &mut rng),
            Disposition::Delivered
        );
        assert_eq!(
            schedule.dispose(&Outcome::Permanent { class }, 0, None, &mut rng),
            Disposition::DeadLetter {
                class,
                exhausted: false
            }
        );
        let gone = ErrorClass::Gone;
        assert_eq!(
            schedule.dispose(
                &Outcome::EndpointDisabled { class: gone },
                0,
                None,
                &mut rng
            ),
            Disposition::EndpointDisabled { class: gone }
        );
        let failed = Outcome::retryable(ErrorClass::ServerError);
        assert!(matches!(
            schedule.dispose(&failed, 0, None, &mut rng),
            Disposition::Retry { tier: 1, .. }
        ));
        assert_eq!(
            schedule.dispose(&failed, 7, None, &mut rng),
            Disposition::DeadLetter {
                class: ErrorClass::ServerError,
                exhausted: true
            }
        );
    }

    /// Five attempts of an endpoint that fails four times, on paused time: the retries
    /// come at the schedule's times, and the whole run takes the sum of the first four
    /// delays within the jitter.
    #[tokio::test(start_paused = true)]
    async fn a_run_of_retries_follows_the_schedule_on_the_clock() {
        let schedule = RetrySchedule::default();
        let mut rng = rng();
        let start = tokio::time::Instant::now();
        let mut attempts_at = vec![];
        let mut retries_done = 0;
        loop {
            attempts_at.push(start.elapsed());
            let outcome = if attempts_at.len() <= 4 {
                Outcome::retryable(ErrorClass::ServerError)
            } else {
                Outcome::Delivered
            };
            match schedule.dispose(&outcome, retries_done, None, &mut rng) {
                Disposition::Retry { tier, delay } => {
                    assert_eq!(tier, retries_done + 1);
                    tokio::time::sleep(delay).await;
                    retries_done += 1;
                }
                Disposition::Delivered => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(attempts_at.len(), 5);
        let mut expected = Duration::ZERO;
        for (n, at) in attempts_at.iter().enumerate().skip(1) {
            expected += SVIX_DELAYS[n - 1];
            let gap = *at - attempts_at[n - 1];
            let base = SVIX_DELAYS[n - 1];
            assert!(
                gap >= base.mul_f64(0.8) && gap <= base.mul_f64(1.2),
                "{n}: {gap:?}"
            );
        }
        let total = start.elapsed();
        assert!(total >= expected.mul_f64(0.8) && total <= expected.mul_f64(1.2));
    }
}
