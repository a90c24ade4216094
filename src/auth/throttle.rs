//! Per-client-address throttling of the endpoints that check passwords (`/token`, `/login`).
//!
//! The budget is a burst of [`BURST`] attempts, then `GATEHOUSE_LOGIN_RATE_PER_MINUTE`, per address
//! (an IPv6 client per /64). The authoritative count lives in PostgreSQL, so every instance spends
//! the same budget; an in-process limiter with the same budget answers first, so an address that
//! this instance alone has already seen exhaust its budget is refused without a query.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::db::{self, PgPool, throttle::Budget};
use crate::domain::AddressBucket;
use crate::errors::ServerError;

/// Short bursts are normal (a retyped password, a script's retry); a steady stream is not.
pub const BURST: u32 = 10;
/// Forget quiet addresses once this many are tracked in process.
const RETAIN_ABOVE: usize = 10_000;

pub struct LoginThrottle {
    budget: Option<Budget>,
    first_gate: Option<DefaultKeyedRateLimiter<AddressBucket>>,
    clock: DefaultClock,
}

impl LoginThrottle {
    /// `per_minute == 0` turns throttling off.
    pub fn new(per_minute: u32) -> Self {
        let Some(rate) = NonZeroU32::new(per_minute) else {
            return Self { budget: None, first_gate: None, clock: DefaultClock::default() };
        };
        // The burst is the same whatever the rate: a slow rate still lets a person retype a password
        // a few times before they have to wait.
        let burst = NonZeroU32::new(BURST).unwrap_or(rate);
        let quota = Quota::per_minute(rate).allow_burst(burst);
        Self {
            budget: Some(Budget { emission_interval: quota.replenish_interval(), burst: burst.get() }),
            first_gate: Some(DefaultKeyedRateLimiter::keyed(quota)),
            clock: DefaultClock::default(),
        }
    }

    /// Spends one attempt of `bucket`'s budget: `Ok(Err(wait))` when it has to slow down.
    pub async fn check(
        &self,
        pool: &PgPool,
        bucket: Option<AddressBucket>,
    ) -> Result<Result<(), Duration>, ServerError> {
        let (Some(budget), Some(first_gate), Some(bucket)) = (self.budget, &self.first_gate, bucket) else {
            return Ok(Ok(()));
        };
        if first_gate.len() > RETAIN_ABOVE {
            first_gate.retain_recent();
        }
        if let Err(not_until) = first_gate.check_key(&bucket) {
            return Ok(Err(not_until.wait_time_from(self.clock.now())));
        }
        db::run(pool, move |conn| db::throttle::take(conn, &bucket, budget)).await
    }
}

/// Whole seconds for `Retry-After`, rounded up: a client that waits as long as it is told must not
/// be refused again.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1900)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[test]
    fn the_budget_is_the_burst_then_the_rate() {
        let throttle = LoginThrottle::new(30);
        let budget = throttle.budget.unwrap();
        assert_eq!(budget.burst, 10);
        assert_eq!(budget.emission_interval, Duration::from_secs(2));
        assert!(LoginThrottle::new(0).budget.is_none());
        let slow = LoginThrottle::new(2).budget.unwrap();
        assert_eq!((slow.burst, slow.emission_interval), (10, Duration::from_secs(30)), "a slow rate keeps the burst");
    }
}
