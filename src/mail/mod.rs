//! Mail: what each mail says ([`templates`]), when a failed delivery is tried again ([`retry_after`]),
//! and the delivery loop ([`delivery`]) that takes mails from the outbox (`db::outbox`) and hands
//! them to the SMTP server, or, under `--dev` without one, prints them.

pub mod delivery;
pub mod templates;

pub use templates::{Notice, Recipient, Sender};

use std::time::Duration;

use chrono::{DateTime, Utc};

/// How long a lease on an outbox row lasts: longer than an SMTP exchange may take
/// ([`SMTP_TIMEOUT`]), so a live instance never loses a row it is sending, and short enough that a
/// crashed instance's rows are taken over within 90 seconds (the lease plus a poll).
pub const LEASE: Duration = Duration::from_secs(60);
/// The longest one SMTP exchange may take.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(20);
/// A mail is retried this long after it was queued, then marked `failed`.
pub const GIVE_UP_AFTER: chrono::Duration = chrono::Duration::hours(24);

// Checked when compiling: a lease outlives the exchange it covers.
const _: () = assert!(LEASE.as_secs() > 2 * SMTP_TIMEOUT.as_secs());

/// When a mail whose `attempts`-th delivery just failed is tried again: 30 s after the first failure
/// (so within a minute), doubling to at most an hour; `None` once it was queued more than
/// [`GIVE_UP_AFTER`] ago (it is then `failed`).
pub fn retry_after(attempts: i32, queued_at: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if now - queued_at >= GIVE_UP_AFTER {
        return None;
    }
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 7)).unwrap_or(7);
    let wait = (chrono::Duration::seconds(30) * 2_i32.pow(doublings)).min(chrono::Duration::hours(1));
    Some(now + wait)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn a_failed_mail_is_retried_within_a_minute_then_less_often_for_a_day() {
        let queued = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let at = |secs: i64| queued + chrono::Duration::seconds(secs);
        let cases = [
            (1, at(0), Some(at(30))),
            (2, at(30), Some(at(90))),
            (3, at(90), Some(at(210))),
            (8, at(5000), Some(at(5000 + 3600))),
            (30, at(50_000), Some(at(50_000 + 3600))),
            (40, at(86_400), None),
            (i32::MAX, at(10), Some(at(3610))),
        ];
        for (attempts, now, expected) in cases {
            assert_eq!(retry_after(attempts, queued, now), expected, "attempt {attempts} at {now}");
        }
    }
}
