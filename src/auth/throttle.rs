//! Per-client-address throttling of the endpoints that check passwords (`/token`, `/login`).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// Short bursts are normal (a retyped password, a script's retry); a steady stream is not.
const BURST: u32 = 10;
/// Forget addresses that have been quiet, once this many are tracked.
const RETAIN_ABOVE: usize = 10_000;

pub struct LoginThrottle {
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    clock: DefaultClock,
}

impl LoginThrottle {
    /// `per_minute == 0` turns throttling off (benchmarks of the hashing path).
    pub fn new(per_minute: u32) -> Self {
        let limiter = NonZeroU32::new(per_minute).map(|rate| {
            let burst = NonZeroU32::new(BURST.min(rate.get())).unwrap_or(rate);
            DefaultKeyedRateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst))
        });
        Self { limiter, clock: DefaultClock::default() }
    }

    /// `Err(wait)` when `addr` has to slow down.
    pub fn check(&self, addr: Option<IpAddr>) -> Result<(), Duration> {
        let (Some(limiter), Some(addr)) = (&self.limiter, addr) else { return Ok(()) };
        if limiter.len() > RETAIN_ABOVE {
            limiter.retain_recent();
        }
        limiter.check_key(&addr).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
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
    fn an_address_is_stopped_after_its_burst_and_others_are_not() {
        let throttle = LoginThrottle::new(60);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..BURST {
            assert!(throttle.check(Some(a)).is_ok());
        }
        let wait = throttle.check(Some(a)).unwrap_err();
        assert!(wait <= Duration::from_secs(1));
        assert!(throttle.check(Some("192.0.2.2".parse().unwrap())).is_ok());
    }

    #[test]
    fn zero_turns_it_off() {
        let throttle = LoginThrottle::new(0);
        for _ in 0..100 {
            assert!(throttle.check(Some("192.0.2.1".parse().unwrap())).is_ok());
        }
    }
}
