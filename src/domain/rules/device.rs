//! RFC 8628 §3.5: what a device's poll is answered, decided from the device code's row (loaded under
//! its lock) and `now`.

use chrono::{DateTime, Utc};

/// How long a device code lives.
pub const DEVICE_CODE_TTL: chrono::Duration = chrono::Duration::seconds(600);
/// The first polling interval, in seconds; every `slow_down` adds [`SLOW_DOWN_STEP`].
pub const INTERVAL_SECS: i32 = 5;
pub const SLOW_DOWN_STEP: i32 = 5;

/// A device code's state as a poll finds it.
#[derive(Debug, Clone, Copy)]
pub struct DeviceState {
    pub expires_at: DateTime<Utc>,
    pub interval_secs: i32,
    pub last_polled_at: Option<DateTime<Utc>>,
    pub decision: Option<Decision>,
    pub delivered: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Denied,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Denied => "denied",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "allowed" => Some(Decision::Allowed),
            "denied" => Some(Decision::Denied),
            _ => None,
        }
    }
}

/// A poll's answer (RFC 8628 §3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollOutcome {
    /// The tokens, now and never again.
    Deliver,
    Pending,
    /// Too soon after the previous poll: the interval grows.
    SlowDown,
    Denied,
    Expired,
    /// Delivered before: `invalid_grant`.
    AlreadyDelivered,
}

/// Decides a poll at `now`. A poll sooner than the interval after the previous one is `slow_down`
/// whatever else holds (the first poll has no previous one); then the code's own state rules.
pub fn decide_poll(state: &DeviceState, now: DateTime<Utc>) -> PollOutcome {
    if state.delivered {
        return PollOutcome::AlreadyDelivered;
    }
    if state.expires_at <= now {
        return PollOutcome::Expired;
    }
    let too_soon =
        state.last_polled_at.is_some_and(|last| now < last + chrono::Duration::seconds(i64::from(state.interval_secs)));
    if too_soon {
        return PollOutcome::SlowDown;
    }
    match state.decision {
        None => PollOutcome::Pending,
        Some(Decision::Denied) => PollOutcome::Denied,
        Some(Decision::Allowed) => PollOutcome::Deliver,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_follow_rfc_8628() {
        let now = Utc::now();
        let fresh = DeviceState {
            expires_at: now + DEVICE_CODE_TTL,
            interval_secs: INTERVAL_SECS,
            last_polled_at: None,
            decision: None,
            delivered: false,
        };
        assert_eq!(decide_poll(&fresh, now), PollOutcome::Pending, "the first poll has no previous one");
        let polled = DeviceState { last_polled_at: Some(now - chrono::Duration::seconds(2)), ..fresh };
        assert_eq!(decide_poll(&polled, now), PollOutcome::SlowDown);
        let waited = DeviceState { last_polled_at: Some(now - chrono::Duration::seconds(5)), ..fresh };
        assert_eq!(decide_poll(&waited, now), PollOutcome::Pending);
        let allowed = DeviceState { decision: Some(Decision::Allowed), ..waited };
        assert_eq!(decide_poll(&allowed, now), PollOutcome::Deliver);
        assert_eq!(decide_poll(&DeviceState { delivered: true, ..allowed }, now), PollOutcome::AlreadyDelivered);
        let denied = DeviceState { decision: Some(Decision::Denied), ..waited };
        assert_eq!(decide_poll(&denied, now), PollOutcome::Denied);
        assert_eq!(decide_poll(&allowed, now + DEVICE_CODE_TTL), PollOutcome::Expired);
    }
}
