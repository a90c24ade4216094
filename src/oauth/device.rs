//! The device authorization grant's rules (RFC 8628), without a database: user codes, and what a
//! poll is answered. `db::authorizations` stores the state; `routes` carry the answers.

use chrono::{DateTime, Utc};

/// The letters of a user code: no vowels (no words), no look-alikes such as 0/O or 1/I (RFC 8628 §6.1).
const ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
const USER_CODE_LETTERS: usize = 8;
/// How long a device code lives.
pub const DEVICE_CODE_TTL: chrono::Duration = chrono::Duration::seconds(600);
/// The first polling interval, in seconds; every `slow_down` adds [`SLOW_DOWN_STEP`].
pub const INTERVAL_SECS: i32 = 5;
pub const SLOW_DOWN_STEP: i32 = 5;

/// A fresh user code: 8 letters of [`ALPHABET`] (20^8, about 34 bits: guessing one at `/device`
/// is throttled like a password, and a code lives ten minutes).
pub fn new_user_code() -> String {
    let mut code = String::with_capacity(USER_CODE_LETTERS);
    while code.len() < USER_CODE_LETTERS {
        for byte in crate::random::bytes(16) {
            // 240 is the largest multiple of 20 below 256: no letter is likelier than another.
            if byte < 240 && code.len() < USER_CODE_LETTERS {
                code.push(ALPHABET[usize::from(byte % 20)] as char);
            }
        }
    }
    code
}

/// How a person is shown the code: `XXXX-XXXX`.
pub fn display(user_code: &str) -> String {
    let (first, second) = user_code.split_at(user_code.len().min(4));
    format!("{first}-{second}")
}

/// What a person typed, as stored: case, dashes and spaces ignored; `None` when it cannot be a code.
pub fn normalize(typed: &str) -> Option<String> {
    let letters: String =
        typed.chars().filter(|c| !matches!(c, '-' | ' ')).map(|c| c.to_ascii_uppercase()).collect();
    (letters.len() == USER_CODE_LETTERS && letters.bytes().all(|b| ALPHABET.contains(&b))).then_some(letters)
}

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
    let too_soon = state
        .last_polled_at
        .is_some_and(|last| now < last + chrono::Duration::seconds(i64::from(state.interval_secs)));
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
    fn user_codes_use_the_alphabet_and_read_back_however_typed() {
        for _ in 0..200 {
            let code = new_user_code();
            assert_eq!(code.len(), 8);
            assert!(code.bytes().all(|b| ALPHABET.contains(&b)), "{code}");
            let shown = display(&code);
            assert_eq!(shown.len(), 9);
            assert_eq!(normalize(&shown).as_deref(), Some(code.as_str()));
            assert_eq!(normalize(&shown.to_lowercase()).as_deref(), Some(code.as_str()));
        }
        assert_eq!(normalize("bcdf ghjk").as_deref(), Some("BCDFGHJK"));
        for bad in ["BCDF-GHJ", "BCDF-GHJKL", "ABCD-EFGH", "BCDF-GHJ1", ""] {
            assert_eq!(normalize(bad), None, "{bad}");
        }
    }

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
