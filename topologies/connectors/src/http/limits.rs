//! Per-endpoint rate limits: GCRA, through governor, on tokio's clock.
//!
//! GCRA (the generic cell rate algorithm) keeps one timestamp per endpoint and lets
//! requests through at `per_second` on average with bursts of `burst`. A request over the
//! limit waits for its turn when that comes within `max_wait`; otherwise it is refused
//! without a connection as `rate-limited`, with the wait as its retry-after, and the
//! topology moves the event to a retry tier instead of holding the partition's in-flight
//! slots for long.
//!
//! governor runs on a clock given to it; here that clock reads tokio's, so tests move it
//! on a paused runtime.
//!
//! The other per-endpoint limit, concurrency, is a tokio semaphore per endpoint kept by
//! the deliverer: waiting for a permit needs no more than that.

use std::hash::Hash;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use super::config::RateLimit;

/// governor's clock on tokio's: a `Duration` since the limiter was made.
#[derive(Clone, Debug)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// One GCRA limit, kept per key.
pub struct KeyedRateLimit<K: Hash + Eq + Clone> {
    limiter: RateLimiter<K, HashMapStateStore<K>, TokioClock, NoOpMiddleware<Duration>>,
    clock: TokioClock,
    max_wait: Duration,
}

impl<K: Hash + Eq + Clone> KeyedRateLimit<K> {
    pub fn new(limit: RateLimit, max_wait: Duration) -> Self {
        let quota = Quota::per_second(limit.per_second).allow_burst(limit.burst);
        let clock = TokioClock::default();
        KeyedRateLimit {
            limiter: RateLimiter::hashmap_with_clock(quota, clock.clone()),
            clock,
            max_wait,
        }
    }

    /// Waits for `key`'s turn. `Err(wait)` when the turn is further off than the longest
    /// wait: the request is refused, and `wait` is when to come back.
    pub async fn until_ready(&self, key: &K) -> Result<(), Duration> {
        loop {
            match self.limiter.check_key(key) {
                Ok(()) => return Ok(()),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.clock.now());
                    if wait > self.max_wait {
                        return Err(wait);
                    }
                    // Another request may take the turn first: look again after the wait.
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;
    use tokio::time::Instant;

    fn limit(per_second: u32, burst: u32, max_wait: Duration) -> KeyedRateLimit<&'static str> {
        KeyedRateLimit::new(
            RateLimit {
                per_second: NonZeroU32::new(per_second).unwrap(),
                burst: NonZeroU32::new(burst).unwrap(),
            },
            max_wait,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_goes_at_once_and_then_requests_are_spaced() {
        let limit = limit(10, 3, Duration::from_secs(1));
        let start = Instant::now();
        for _ in 0..3 {
            limit.until_ready(&"a").await.unwrap();
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        limit.until_ready(&"a").await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        limit.until_ready(&"a").await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn endpoints_do_not_share_a_limit() {
        let limit = limit(1, 1, Duration::ZERO);
        limit.until_ready(&"a").await.unwrap();
        limit.until_ready(&"b").await.unwrap();
        assert!(limit.until_ready(&"a").await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_turn_further_off_than_the_longest_wait_is_refused_with_the_wait() {
        let limit = limit(2, 1, Duration::from_millis(100));
        limit.until_ready(&"a").await.unwrap();
        assert_eq!(
            limit.until_ready(&"a").await,
            Err(Duration::from_millis(500))
        );
        tokio::time::advance(Duration::from_millis(450)).await;
        let start = Instant::now();
        limit.until_ready(&"a").await.unwrap();
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(50),
            "waited its turn"
        );
    }
}
