//! The per-account lockout: whether a password check may run against an account's real hash, and
//! what a failed one does. `db::users` loads the account's counters under its row lock, asks these
//! functions, and writes the answer in the same transaction, so the rule holds however many checks
//! arrive at once on however many instances.

use chrono::{DateTime, Duration, Utc};

/// The lockout's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Consecutive failures (counting checks still running) that lock the account.
    pub threshold: i32,
    /// The first lock's length; each further lock doubles it…
    pub first_lock: Duration,
    /// …up to this.
    pub longest_lock: Duration,
    /// A running check's claim is forgotten this long after it was made (a crashed instance
    /// cannot hold it for good).
    pub claim_ttl: Duration,
}

impl LockoutPolicy {
    pub const DEFAULT: LockoutPolicy = LockoutPolicy {
        threshold: 5,
        first_lock: Duration::minutes(1),
        longest_lock: Duration::hours(1),
        claim_ttl: Duration::seconds(30),
    };

    /// How long the lock that follows `earlier_locks` locks lasts.
    pub fn lock_length(&self, earlier_locks: i32) -> Duration {
        let doublings = u32::try_from(earlier_locks.clamp(0, 16)).unwrap_or(16);
        (self.first_lock * 2_i32.pow(doublings)).min(self.longest_lock)
    }
}

/// An account's lockout counters, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockState {
    pub failed_logins: i32,
    pub lockouts: i32,
    pub locked_until: Option<DateTime<Utc>>,
    /// Checks running now (claimed, not settled)…
    pub check_claims: i32,
    /// …until this instant; after it they count as none.
    pub claims_expire_at: Option<DateTime<Utc>>,
}

impl LockState {
    /// Claims that still count at `now`.
    pub fn live_claims(&self, now: DateTime<Utc>) -> i32 {
        if self.claims_expire_at.is_some_and(|at| at > now) { self.check_claims } else { 0 }
    }

    pub fn is_locked(&self, now: DateTime<Utc>) -> bool {
        self.locked_until.is_some_and(|until| until > now)
    }

    /// The counters with one claim given back (a check settled or abandoned).
    fn released(&self, now: DateTime<Utc>) -> LockState {
        LockState { check_claims: (self.live_claims(now) - 1).max(0), ..*self }
    }
}

/// Whether a check may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimDecision {
    /// Yes: store these counters (one more claim).
    Grant(LockState),
    /// The account is locked (or as many failures as lock it have been counted).
    Locked,
    /// Not locked, but as many checks as may still fail are running: ask again once one settles.
    Busy,
}

pub fn decide_claim(state: &LockState, policy: &LockoutPolicy, now: DateTime<Utc>) -> ClaimDecision {
    if state.is_locked(now) || state.failed_logins >= policy.threshold {
        return ClaimDecision::Locked;
    }
    let live = state.live_claims(now);
    if state.failed_logins + live >= policy.threshold {
        return ClaimDecision::Busy;
    }
    ClaimDecision::Grant(LockState { check_claims: live + 1, claims_expire_at: Some(now + policy.claim_ttl), ..*state })
}

/// A failed check: its claim given back and the failure counted; the failure that reaches the
/// threshold locks the account (and starts the count again). Returns the counters to store and,
/// when this failure locked the account, until when.
pub fn decide_failure(
    state: &LockState,
    policy: &LockoutPolicy,
    now: DateTime<Utc>,
) -> (LockState, Option<DateTime<Utc>>) {
    let released = state.released(now);
    let failures = state.failed_logins + 1;
    if failures >= policy.threshold {
        let until = now + policy.lock_length(state.lockouts);
        let locked =
            LockState { failed_logins: 0, lockouts: state.lockouts + 1, locked_until: Some(until), ..released };
        return (locked, Some(until));
    }
    (LockState { failed_logins: failures, ..released }, None)
}

/// A check that proved the password (a sign-in or a confirmation): its claim given back, earlier
/// failures and locks forgotten.
pub fn decide_success(state: &LockState, now: DateTime<Utc>) -> LockState {
    LockState { failed_logins: 0, lockouts: 0, locked_until: None, ..state.released(now) }
}

/// A check abandoned without a verdict (the queue timed it out): only its claim given back.
pub fn decide_release(state: &LockState, now: DateTime<Utc>) -> LockState {
    state.released(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000 + seconds, 0).unwrap_or_default()
    }

    const P: LockoutPolicy = LockoutPolicy::DEFAULT;

    fn fresh() -> LockState {
        LockState { failed_logins: 0, lockouts: 0, locked_until: None, check_claims: 0, claims_expire_at: None }
    }

    #[test]
    fn claims_follow_the_table() {
        let now = at(0);
        let claims = |n: i32| LockState { check_claims: n, claims_expire_at: Some(at(10)), ..fresh() };
        #[rustfmt::skip]
        let cases: Vec<(&str, LockState, ClaimDecision)> = vec![
            ("a fresh account grants", fresh(),
                ClaimDecision::Grant(LockState { check_claims: 1, claims_expire_at: Some(now + P.claim_ttl), ..fresh() })),
            ("four failures still grant one more", LockState { failed_logins: 4, ..fresh() },
                ClaimDecision::Grant(LockState { failed_logins: 4, check_claims: 1, claims_expire_at: Some(now + P.claim_ttl), ..fresh() })),
            ("four failures and one running: busy", LockState { failed_logins: 4, ..claims(1) }, ClaimDecision::Busy),
            ("five running: busy", claims(5), ClaimDecision::Busy),
            ("four running: a fifth may start", claims(4),
                ClaimDecision::Grant(LockState { check_claims: 5, claims_expire_at: Some(now + P.claim_ttl), ..fresh() })),
            ("expired claims count as none", LockState { check_claims: 5, claims_expire_at: Some(at(0)), ..fresh() },
                ClaimDecision::Grant(LockState { check_claims: 1, claims_expire_at: Some(now + P.claim_ttl), ..fresh() })),
            ("a lock refuses", LockState { locked_until: Some(at(1)), ..fresh() }, ClaimDecision::Locked),
            ("a lock that ended grants", LockState { locked_until: Some(at(0)), ..fresh() },
                ClaimDecision::Grant(LockState { locked_until: Some(at(0)), check_claims: 1, claims_expire_at: Some(now + P.claim_ttl), ..fresh() })),
            ("the threshold reached refuses", LockState { failed_logins: 5, ..fresh() }, ClaimDecision::Locked),
        ];
        for (case, state, expected) in cases {
            assert_eq!(decide_claim(&state, &P, now), expected, "{case}");
        }
    }

    #[test]
    fn the_fifth_failure_locks_for_a_minute_doubling_to_an_hour() {
        let now = at(0);
        let running = LockState { failed_logins: 4, check_claims: 1, claims_expire_at: Some(at(30)), ..fresh() };
        let (after, locked) = decide_failure(&running, &P, now);
        assert_eq!(locked, Some(now + Duration::minutes(1)));
        assert_eq!(
            after,
            LockState { failed_logins: 0, lockouts: 1, locked_until: locked, check_claims: 0, ..running }
        );
        assert_eq!(decide_claim(&after, &P, now + Duration::seconds(59)), ClaimDecision::Locked);
        let lengths: Vec<i64> = (0..9).map(|locks| P.lock_length(locks).num_minutes()).collect();
        assert_eq!(lengths, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(P.lock_length(i32::MAX), Duration::hours(1), "no overflow");
    }

    #[test]
    fn an_earlier_failure_only_counts() {
        let (after, locked) = decide_failure(&LockState { failed_logins: 2, ..fresh() }, &P, at(0));
        assert_eq!((after.failed_logins, locked), (3, None));
    }

    #[test]
    fn success_forgets_failures_and_locks_and_release_only_gives_the_claim_back() {
        let state = LockState {
            failed_logins: 3,
            lockouts: 2,
            locked_until: Some(at(-5)),
            check_claims: 2,
            claims_expire_at: Some(at(30)),
        };
        assert_eq!(
            decide_success(&state, at(0)),
            LockState { failed_logins: 0, lockouts: 0, locked_until: None, check_claims: 1, ..state }
        );
        assert_eq!(decide_release(&state, at(0)), LockState { check_claims: 1, ..state });
        // Never below zero, also when the claims expired meanwhile.
        assert_eq!(decide_release(&state, at(31)).check_claims, 0);
    }
}
