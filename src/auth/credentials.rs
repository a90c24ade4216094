//! Checking a username and password: the one routine behind `POST /token` and `POST /login`.
//!
//! 1. a place in the hashing queue is taken (refused at once when the queue, or this client's or
//!    this account's share of it, is full);
//! 2. the verification is *claimed* in one statement, before bcrypt runs: an account that is locked,
//!    or has as many checks failed or running as the lockout threshold, gets no claim, so however
//!    many guesses race on however many instances, at most five verifications against the real hash
//!    run per lock window (a check that finds five running waits for them to settle: a success frees
//!    the account, five failures lock it);
//! 3. bcrypt runs with no database connection held: against the real hash with a claim, against a
//!    dummy hash without one (unknown user, locked account), so every answer costs the same;
//! 4. the verdict is settled and audited in one transaction.
//!
//! A success carries when the check began (by the database's clock): whatever it leads to (tokens,
//! a session) is refused if a password change, deactivation or sign-out-everywhere committed after
//! that instant.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::Connection as _;
use secrecy::SecretString;
use uuid::Uuid;

use crate::auth::password::{MAX_WAIT, PasswordHasher, Ticket, Verification};
use crate::db::{
    self, PgPool,
    auth_events::NewEvent,
    users::{Claim, HashUpgrade},
};
use crate::domain::rules::LockoutPolicy;
use crate::domain::{AddressBucket, Channel, EventKind, FailureReason};
use crate::errors::ServerError;
use crate::metrics::{LoginLabels, Metrics, Outcome};

/// The lockout's numbers (see [`LockoutPolicy`]).
const LOCKOUT: LockoutPolicy = LockoutPolicy::DEFAULT;

/// Who signed in.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user_id: Uuid,
    pub username: String,
    /// The sign-in before this one, if any.
    pub previous_sign_in: Option<DateTime<Utc>>,
    /// When the credential check began, by the database's clock.
    pub began_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Unknown user, wrong password, inactive or locked account: deliberately one case.
    #[error("incorrect username or password")]
    InvalidCredentials,
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// Where an attempt came from, for the audit trail and the queue's per-address share.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub channel: Channel,
    pub client: Option<IpAddr>,
}

impl Attempt {
    pub fn client_addr(&self) -> Option<String> {
        self.client.map(|ip| ip.to_string())
    }

    fn event(&self, kind: EventKind, username: &str) -> NewEvent {
        NewEvent::new(kind, self.channel).attempted(username).client(self.client_addr())
    }
}

/// What a successful check is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// A sign-in: recorded as `login_ok`, and remembered as the user's latest sign-in.
    SignIn,
    /// A signed-in user proving they still know their password (before changing it): it counts
    /// towards the lockout like a sign-in, but a success is no sign-in.
    Confirm,
}

/// How long an overload answer (a full queue, a client over its share, a busy account) is held
/// back: a client that retries at once then loops at most this often, and holding it costs an
/// idle timer, not a thread or a database connection.
pub const SHED_HOLD: Duration = Duration::from_millis(500);

/// A place in the hashing queue for a check of `username` from `attempt`, taken before anything
/// else (the database included) is spent on it. A refusal is answered only after [`SHED_HOLD`].
pub async fn admit(
    hasher: &PasswordHasher,
    metrics: &Metrics,
    username: &str,
    attempt: &Attempt,
) -> Result<Ticket, LoginError> {
    let bucket = attempt.client.map(AddressBucket::of);
    match hasher.admit(bucket.as_ref().map(AddressBucket::as_str), username) {
        Ok(ticket) => Ok(ticket),
        Err(refused) => {
            metrics
                .logins
                .get_or_create(&LoginLabels { channel: attempt.channel.as_str(), outcome: Outcome::busy })
                .inc();
            tokio::time::sleep(SHED_HOLD).await;
            Err(refused.into())
        }
    }
}

/// Checks `password` for `username` (see the module documentation for the steps), in the place
/// `ticket` holds.
pub async fn check_password(
    pool: &PgPool,
    ticket: Ticket,
    metrics: &Metrics,
    username: &str,
    password: SecretString,
    attempt: &Attempt,
) -> Result<SignedIn, LoginError> {
    check(pool, ticket, metrics, username, password, attempt, Purpose::SignIn).await
}

/// Checks that a signed-in user's `password` is still theirs, with every safeguard of a sign-in
/// (the same queue, lockout and audit of failures), recording nothing when it matches.
pub async fn confirm_password(
    pool: &PgPool,
    hasher: &PasswordHasher,
    metrics: &Metrics,
    username: &str,
    password: SecretString,
    attempt: &Attempt,
) -> Result<(), LoginError> {
    let ticket = admit(hasher, metrics, username, attempt).await?;
    check(pool, ticket, metrics, username, password, attempt, Purpose::Confirm).await.map(|_| ())
}

/// How often a check that found the account's claims all taken asks again.
const CLAIM_RETRY_EVERY: Duration = Duration::from_millis(25);

/// A claim on `username`'s account ([`db::users::claim_check`]), waiting while it is busy: a
/// correct password that arrives while five other checks of the account run (more simultaneous
/// sign-ins than the lockout threshold, across instances) waits for one of them to settle rather
/// than be refused, and a guess that arrives then waits to learn whether they locked the account.
/// The wait ends at the check's `deadline` (the same one the hashing queue keeps, so the two waits
/// never add up): past it the check is answered busy (`503`).
async fn claim_when_free(pool: &PgPool, username: &str, deadline: std::time::Instant) -> Result<Claim, ServerError> {
    let deadline = tokio::time::Instant::from_std(deadline);
    loop {
        let name = username.to_owned();
        let claim = db::run(pool, move |conn| db::users::claim_check(conn, &name, &LOCKOUT)).await?;
        if !matches!(claim, Claim::Busy) {
            return Ok(claim);
        }
        if tokio::time::Instant::now() + CLAIM_RETRY_EVERY > deadline {
            return Err(ServerError::Busy { retry_after_secs: MAX_WAIT.as_secs() });
        }
        tokio::time::sleep(CLAIM_RETRY_EVERY).await;
    }
}

async fn check(
    pool: &PgPool,
    ticket: Ticket,
    metrics: &Metrics,
    username: &str,
    password: SecretString,
    attempt: &Attempt,
    purpose: Purpose,
) -> Result<SignedIn, LoginError> {
    let counted = |outcome: Outcome| {
        metrics.logins.get_or_create(&LoginLabels { channel: attempt.channel.as_str(), outcome }).inc();
    };
    let claim = match claim_when_free(pool, username, ticket.deadline()).await {
        Ok(claim) => claim,
        Err(err) => {
            if matches!(err, ServerError::Busy { .. }) {
                counted(Outcome::busy);
                tokio::time::sleep(SHED_HOLD).await;
            }
            return Err(err.into());
        }
    };
    let stored = match &claim {
        Claim::Granted(check) => Some(check.password_hash.clone()),
        Claim::Refused { .. } | Claim::Busy | Claim::UnknownUser => None,
    };
    let verification = match ticket.verify(password, stored).await {
        Ok(verification) => verification,
        Err(err) => {
            if let Claim::Granted(check) = &claim {
                // The check never ran: give the claim back rather than let it count until it expires.
                let user_id = check.user_id;
                let _ = db::run(pool, move |conn| db::users::release_claim(conn, user_id)).await;
            }
            return Err(ServerError::from(err).into());
        }
    };

    let failed = |reason: FailureReason, user_id: Option<Uuid>| {
        let event = attempt.event(EventKind::LoginFailed, username).reason(reason);
        match user_id {
            Some(user_id) => event.user(user_id),
            None => event,
        }
    };
    match claim {
        // `claim_when_free` waits out a busy account; this only keeps the match whole.
        Claim::Busy => {
            counted(Outcome::busy);
            Err(ServerError::Busy { retry_after_secs: MAX_WAIT.as_secs() }.into())
        }
        Claim::UnknownUser => {
            counted(Outcome::invalid_credentials);
            let event = failed(FailureReason::UnknownUser, None);
            db::run(pool, move |conn| db::auth_events::record(conn, &event)).await?;
            Err(LoginError::InvalidCredentials)
        }
        Claim::Refused { user_id } => {
            counted(Outcome::locked);
            let event = failed(FailureReason::Locked, Some(user_id));
            db::run(pool, move |conn| db::auth_events::record(conn, &event)).await?;
            Err(LoginError::InvalidCredentials)
        }
        Claim::Granted(check) => match verification {
            Verification::Mismatch => {
                counted(Outcome::invalid_credentials);
                let event = failed(FailureReason::WrongPassword, Some(check.user_id));
                let lockout = attempt.event(EventKind::Lockout, username).user(check.user_id);
                let user_id = check.user_id;
                let locked = db::run(pool, move |conn| {
                    conn.transaction(|conn| {
                        // The user's row first: see `record_failure`.
                        let locked = db::users::record_failure(conn, user_id, &LOCKOUT)?;
                        db::auth_events::record(conn, &event)?;
                        if let Some(until) = locked {
                            db::auth_events::record(
                                conn,
                                &lockout.detail(format!("locked until {}", until.to_rfc3339())),
                            )?;
                        }
                        Ok(locked.is_some())
                    })
                })
                .await?;
                if locked {
                    metrics.lockouts.inc();
                }
                Err(LoginError::InvalidCredentials)
            }
            Verification::Match | Verification::MatchRehashed(_) if !check.is_active => {
                counted(Outcome::inactive_user);
                let event = failed(FailureReason::InactiveUser, Some(check.user_id));
                let user_id = check.user_id;
                db::run(pool, move |conn| {
                    conn.transaction(|conn| {
                        db::users::release_claim(conn, user_id)?;
                        db::auth_events::record(conn, &event)
                    })
                })
                .await?;
                Err(LoginError::InvalidCredentials)
            }
            Verification::Match | Verification::MatchRehashed(_) => {
                counted(Outcome::ok);
                let new_hash = match verification {
                    Verification::MatchRehashed(new_hash) => Some(new_hash),
                    _ => None,
                };
                let event = attempt.event(EventKind::LoginOk, username).user(check.user_id);
                let (user_id, verified) = (check.user_id, check.password_hash.clone());
                db::run(pool, move |conn| {
                    let upgrade = new_hash.as_deref().map(|new_hash| HashUpgrade { verified: &verified, new_hash });
                    match purpose {
                        Purpose::SignIn => db::users::record_success(conn, user_id, upgrade, &event),
                        // The hash is about to be replaced: no upgrade, no event, no "last sign-in".
                        Purpose::Confirm => db::users::record_confirmation(conn, user_id),
                    }
                })
                .await?;
                Ok(SignedIn {
                    user_id: check.user_id,
                    username: check.username,
                    previous_sign_in: check.last_login_at,
                    began_at: check.began_at,
                })
            }
        },
    }
}

// Checked when compiling: a claim outlives the longest a check can take (its wait plus hashing)
// by a wide margin, so a check never loses its claim while it runs.
const _: () = assert!(LOCKOUT.claim_ttl.num_seconds() >= 2 * MAX_WAIT.as_secs() as i64);
