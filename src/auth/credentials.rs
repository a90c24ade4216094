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
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::auth::password::{MAX_WAIT, PasswordHasher, Ticket, Verification};
use crate::auth::second_factor::passkey::{self, CEREMONY_TTL, RelyingParty};
use crate::auth::second_factor::{self, AfterPassword, CodeVerdict, Policy, SignInMethod, StoredApp, TotpSealer};
use crate::db::passkeys::Ceremony;
use crate::db::{
    self, PgPool,
    auth_events::NewEvent,
    second_factors::Factors,
    users::{Claim, HashUpgrade},
};
use crate::domain::rules::LockoutPolicy;
use crate::domain::{AddressBucket, Channel, EventKind, FailureReason};
use crate::errors::ServerError;
use crate::metrics::{LoginLabels, Metrics, Outcome, SecondFactorLabels};

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
    /// How: the password alone, or with a second factor.
    pub method: SignInMethod,
}

/// What a sign-in's second factor needs: the sealer that opens app secrets, and whom the policy
/// requires one of.
pub struct SecondFactors {
    pub sealer: TotpSealer,
    pub policy: Policy,
    /// The passkeys' relying party; `None` when passkeys are off (an IP-address issuer).
    pub passkeys: Option<RelyingParty>,
}

/// How a channel takes the second step of a sign-in.
#[derive(Debug)]
pub enum SecondStep {
    /// The browser: a user with a second factor is asked for it on the next page (`/login/verify`).
    NextPage,
    /// `POST /token`: the code comes with the password (field `otp`), or not at all.
    WithPassword(Option<SecretString>),
}

/// A right password, and what it leads to.
#[derive(Debug)]
pub enum SignIn {
    /// Signed in (every required factor given).
    Complete(SignedIn),
    /// The browser must now give the second factor: nothing is signed in yet, the lockout's
    /// failure count stays as it was (only a complete sign-in resets it).
    SecondStepDue(SignedIn),
    /// Signed in, but the policy requires a second factor the user has not added: the browser is
    /// kept on the enrolment page until they add one.
    MustEnrol(SignedIn),
}

/// Why a second step failed.
#[derive(Debug, thiserror::Error)]
pub enum SecondStepError {
    /// The code was missing, wrong or spent: counted by the lockout.
    #[error("the code is not right")]
    Wrong,
    /// The account is locked (now, or by this very failure): the half-signed-in session ends.
    #[error("the account is locked")]
    Locked,
    #[error(transparent)]
    Server(#[from] ServerError),
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
enum Purpose<'a> {
    /// A sign-in: recorded as `login_ok` once complete, and remembered as the user's latest sign-in.
    SignIn(&'a SecondFactors, SecondStep),
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
/// `ticket` holds, and the second factor as `second` offers it. With a code sent along, a missing
/// or wrong one is the same failure as a wrong password (same answer, same lockout count); the code
/// is looked at only after bcrypt ran, so the time is the same too.
#[allow(clippy::too_many_arguments)]
pub async fn check_password(
    pool: &PgPool,
    ticket: Ticket,
    metrics: &Metrics,
    factors: &SecondFactors,
    username: &str,
    password: SecretString,
    second: SecondStep,
    attempt: &Attempt,
) -> Result<SignIn, LoginError> {
    check(pool, ticket, metrics, username, password, attempt, Purpose::SignIn(factors, second)).await
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

/// A sign-in's second step from the browser: `code` (an app code or a recovery code) for the user
/// whose password was checked at `began_at`. Under the account's lockout like a password: a claim
/// first (so racing guesses cannot outrun the count), a failure counted, only a success resetting it.
pub async fn check_second_step(
    pool: &PgPool,
    metrics: &Metrics,
    factors: &SecondFactors,
    user_id: Uuid,
    code: Option<SecretString>,
    attempt: &Attempt,
) -> Result<SignedIn, SecondStepError> {
    let claim = claim_of_user(pool, user_id).await?;
    let check = match claim {
        Claim::Granted(check) => check,
        Claim::Refused { .. } => {
            metrics.second_factor.get_or_create(&SecondFactorLabels { outcome: "locked" }).inc();
            return Err(SecondStepError::Locked);
        }
        Claim::Busy => return Err(ServerError::Busy { retry_after_secs: MAX_WAIT.as_secs() }.into()),
        Claim::UnknownUser => return Err(SecondStepError::Locked),
    };
    if !check.is_active {
        let user_id = check.user_id;
        db::run(pool, move |conn| db::users::release_claim(conn, user_id)).await?;
        return Err(SecondStepError::Locked);
    }
    let events = StepEvents::new(attempt, &check.username, check.user_id);
    let sealer_key = factors;
    let settled = {
        let user_id = check.user_id;
        let code = code.map(|code| code.expose_secret().to_owned());
        // The sealer is not `'static`: open the secret here, decide and write on the blocking pool.
        let loaded = db::run(pool, move |conn| db::second_factors::of_user(conn, user_id)).await?;
        let app = opened_app(sealer_key, user_id, &loaded);
        db::run(pool, move |conn| settle_code(conn, user_id, app, code.as_deref(), None, events)).await?
    };
    count_step(metrics, &settled);
    match settled {
        Settled::Passed(method) => Ok(SignedIn {
            user_id: check.user_id,
            username: check.username,
            previous_sign_in: check.last_login_at,
            began_at: check.began_at,
            method,
        }),
        Settled::Failed { locked: true } => {
            metrics.lockouts.inc();
            Err(SecondStepError::Locked)
        }
        Settled::Failed { locked: false } => Err(SecondStepError::Wrong),
    }
}

/// A claim on the account `user_id`, waiting while it is busy (as [`claim_when_free`]).
async fn claim_of_user(pool: &PgPool, user_id: Uuid) -> Result<Claim, ServerError> {
    let deadline = tokio::time::Instant::now() + MAX_WAIT;
    loop {
        let claim = db::run(pool, move |conn| db::users::claim_check_of(conn, user_id, &LOCKOUT)).await?;
        if !matches!(claim, Claim::Busy) || tokio::time::Instant::now() + CLAIM_RETRY_EVERY > deadline {
            return Ok(claim);
        }
        tokio::time::sleep(CLAIM_RETRY_EVERY).await;
    }
}

/// The user's confirmed app with its secret opened (`None`: no app, or a secret this master secret
/// cannot open, which then matches no code).
fn opened_app(factors: &SecondFactors, user_id: Uuid, loaded: &Factors) -> Option<StoredApp> {
    let row = loaded.app.as_ref()?;
    Some(StoredApp { secret: factors.sealer.open(user_id, &row.secret_sealed)?, last_used_step: row.last_used_step })
}

/// The audit rows a second step may write.
struct StepEvents {
    passed: NewEvent,
    used: NewEvent,
    failed: NewEvent,
    lockout: NewEvent,
}

impl StepEvents {
    fn new(attempt: &Attempt, username: &str, user_id: Uuid) -> Self {
        Self {
            passed: attempt.event(EventKind::LoginOk, username).user(user_id),
            used: attempt.event(EventKind::SecondFactorUsed, username).user(user_id),
            failed: attempt.event(EventKind::LoginFailed, username).user(user_id).reason(FailureReason::SecondFactor),
            lockout: attempt.event(EventKind::Lockout, username).user(user_id),
        }
    }
}

/// What a second step came to.
enum Settled {
    Passed(SignInMethod),
    Failed { locked: bool },
}

/// Judges `code` against the user's app and recovery codes and writes the verdict in one
/// transaction: the step or code spent by one conditional update and the sign-in recorded, or the
/// failure counted by the lockout.
fn settle_code(
    conn: &mut diesel::PgConnection,
    user_id: Uuid,
    app: Option<StoredApp>,
    code: Option<&str>,
    upgrade: Option<(String, String)>,
    events: StepEvents,
) -> diesel::QueryResult<Settled> {
    let verdict = second_factor::judge_code(user_id, app.as_ref(), code, Utc::now());
    conn.transaction(|conn| {
        let passed = match verdict {
            CodeVerdict::SpendStep(step) => {
                db::second_factors::spend_step(conn, user_id, step)?.then_some(SignInMethod::PasswordAndApp)
            }
            CodeVerdict::SpendRecoveryCode(hash) => db::second_factors::spend_recovery_code(conn, user_id, &hash)?
                .then_some(SignInMethod::PasswordAndRecoveryCode),
            CodeVerdict::Missing | CodeVerdict::Wrong => None,
        };
        match passed {
            Some(method) => {
                let upgrade = upgrade.as_ref().map(|(verified, new_hash)| HashUpgrade { verified, new_hash });
                db::users::record_success(conn, user_id, upgrade, &events.passed)?;
                let how = match method {
                    SignInMethod::PasswordAndRecoveryCode => "recovery code",
                    SignInMethod::PasswordAndPasskey | SignInMethod::Passkey => "passkey",
                    SignInMethod::Password | SignInMethod::PasswordAndApp => "authenticator app",
                };
                db::auth_events::record(conn, &events.used.detail(how))?;
                Ok(Settled::Passed(method))
            }
            None => {
                let locked = count_failure(conn, user_id, &events.failed, events.lockout)?;
                Ok(Settled::Failed { locked })
            }
        }
    })
}

fn count_step(metrics: &Metrics, settled: &Settled) {
    let outcome = match settled {
        Settled::Passed(SignInMethod::PasswordAndRecoveryCode) => "recovery_code",
        Settled::Passed(SignInMethod::PasswordAndPasskey | SignInMethod::Passkey) => "passkey",
        Settled::Passed(_) => "ok",
        Settled::Failed { .. } => "failed",
    };
    metrics.second_factor.get_or_create(&SecondFactorLabels { outcome }).inc();
}

/// How often a check that found the account's claims all taken asks again.
const CLAIM_RETRY_EVERY: Duration = Duration::from_millis(25);

/// A claim on `username`'s account ([`db::users::claim_check`]), waiting while it is busy: a
/// correct password that arrives while five other checks of the account run (more simultaneous
/// sign-ins than the lockout threshold, across instances) waits for one of them to settle rather
/// than be refused, and a guess that arrives then waits to learn whether they locked the account.
/// The wait ends at the check's `deadline` (the same one the hashing queue keeps, so the two waits
/// never add up): past it the check is answered busy (`503`).
async fn claim_when_free(
    pool: &PgPool,
    username: &str,
    deadline: std::time::Instant,
    with_factors: bool,
) -> Result<(Claim, Option<(Factors, bool)>), ServerError> {
    let deadline = tokio::time::Instant::from_std(deadline);
    loop {
        let name = username.to_owned();
        // A granted sign-in's second factors (and whether the account is an admin's) come in the
        // same trip to the database: see `check` for why they are read whatever the verdict.
        let claimed = db::run(pool, move |conn| {
            let claim = db::users::claim_check(conn, &name, &LOCKOUT)?;
            let factors = match &claim {
                Claim::Granted(check) if with_factors => {
                    Some(db::second_factors::of_user_and_admin(conn, check.user_id)?)
                }
                _ => None,
            };
            Ok((claim, factors))
        })
        .await?;
        if !matches!(claimed.0, Claim::Busy) {
            return Ok(claimed);
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
    purpose: Purpose<'_>,
) -> Result<SignIn, LoginError> {
    let counted = |outcome: Outcome| {
        metrics.logins.get_or_create(&LoginLabels { channel: attempt.channel.as_str(), outcome }).inc();
    };
    // A sign-in's second factors are read for every account whose password is checked, before bcrypt
    // and whatever its verdict: a right password with a wrong code then costs what a wrong password
    // costs (the answer is the same, so the time must be too).
    let for_sign_in = matches!(purpose, Purpose::SignIn(..));
    let (claim, second_factors) = match claim_when_free(pool, username, ticket.deadline(), for_sign_in).await {
        Ok(claimed) => claimed,
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
                let locked = db::run(pool, move |conn| count_failure(conn, user_id, &event, lockout)).await?;
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
                let new_hash = match verification {
                    Verification::MatchRehashed(new_hash) => Some(new_hash),
                    _ => None,
                };
                let user_id = check.user_id;
                let signed_in = |method| SignedIn {
                    user_id: check.user_id,
                    username: check.username.clone(),
                    previous_sign_in: check.last_login_at,
                    began_at: check.began_at,
                    method,
                };
                let (factors, second) = match purpose {
                    Purpose::Confirm => {
                        counted(Outcome::ok);
                        // The hash is about to be replaced: no upgrade, no event, no "last sign-in".
                        db::run(pool, move |conn| db::users::record_confirmation(conn, user_id)).await?;
                        return Ok(SignIn::Complete(signed_in(SignInMethod::Password)));
                    }
                    Purpose::SignIn(factors, second) => (factors, second),
                };
                let policy = factors.policy;
                let (stored, is_admin) = match second_factors {
                    Some(loaded) => loaded,
                    None => db::run(pool, move |conn| db::second_factors::of_user_and_admin(conn, user_id)).await?,
                };
                // Passkeys count only while they can be used (a relying party is configured).
                let has_second_factor = stored.app.is_some() || (stored.passkeys > 0 && factors.passkeys.is_some());
                let upgrade = new_hash.map(|new_hash| (check.password_hash.clone(), new_hash));
                let events = StepEvents::new(attempt, username, user_id);
                match (second_factor::after_password(has_second_factor, policy, is_admin), second) {
                    (AfterPassword::Complete, _) | (AfterPassword::MustEnrol, SecondStep::NextPage) => {
                        counted(Outcome::ok);
                        let must_enrol = stored.app.is_none() && policy.covers(is_admin);
                        db::run(pool, move |conn| {
                            let upgrade =
                                upgrade.as_ref().map(|(verified, new_hash)| HashUpgrade { verified, new_hash });
                            db::users::record_success(conn, user_id, upgrade, &events.passed)
                        })
                        .await?;
                        let done = signed_in(SignInMethod::Password);
                        Ok(if must_enrol { SignIn::MustEnrol(done) } else { SignIn::Complete(done) })
                    }
                    (AfterPassword::SecondStep, SecondStep::NextPage) => {
                        // Not signed in yet: the claim goes back, the failure count stays.
                        db::run(pool, move |conn| db::users::release_claim(conn, user_id)).await?;
                        Ok(SignIn::SecondStepDue(signed_in(SignInMethod::Password)))
                    }
                    (AfterPassword::MustEnrol, SecondStep::WithPassword(_)) => {
                        // The password grant cannot enrol: refused until the person adds a factor on
                        // the website (not a lockout failure: the password was right).
                        counted(Outcome::invalid_credentials);
                        let failed = events.failed;
                        db::run(pool, move |conn| {
                            conn.transaction(|conn| {
                                db::users::release_claim(conn, user_id)?;
                                db::auth_events::record(conn, &failed.detail("second factor required, none added"))
                            })
                        })
                        .await?;
                        Err(LoginError::InvalidCredentials)
                    }
                    (AfterPassword::SecondStep, SecondStep::WithPassword(code)) => {
                        let app = opened_app(factors, user_id, &stored);
                        let code = code.map(|code| code.expose_secret().to_owned());
                        let settled = db::run(pool, move |conn| {
                            settle_code(conn, user_id, app, code.as_deref(), upgrade, events)
                        })
                        .await?;
                        count_step(metrics, &settled);
                        match settled {
                            Settled::Passed(method) => {
                                counted(Outcome::ok);
                                Ok(SignIn::Complete(signed_in(method)))
                            }
                            Settled::Failed { locked } => {
                                counted(Outcome::invalid_credentials);
                                if locked {
                                    metrics.lockouts.inc();
                                }
                                Err(LoginError::InvalidCredentials)
                            }
                        }
                    }
                }
            }
        },
    }
}

/// A failed check of the account's password or second factor, counted by the lockout in one
/// transaction: the failure (the user's row first: see `record_failure`), its audit row, and the
/// lockout's when this failure locks the account. Returns whether it did.
fn count_failure(
    conn: &mut diesel::PgConnection,
    user_id: Uuid,
    failed: &NewEvent,
    lockout: NewEvent,
) -> diesel::QueryResult<bool> {
    conn.transaction(|conn| {
        let locked = db::users::record_failure(conn, user_id, &LOCKOUT)?;
        db::auth_events::record(conn, failed)?;
        if let Some(until) = locked {
            db::auth_events::record(conn, &lockout.detail(format!("locked until {}", until.to_rfc3339())))?;
        }
        Ok(locked.is_some())
    })
}

/// A sign-in's second factors, and whether the user is an admin (whom the policy may cover).
// Checked when compiling: a claim outlives the longest a check can take (its wait plus hashing)
// by a wide margin, so a check never loses its claim while it runs.
const _: () = assert!(LOCKOUT.claim_ttl.num_seconds() >= 2 * MAX_WAIT.as_secs() as i64);

/// Why a passkey ceremony failed: the browser learns only that it did (and whether to start over).
#[derive(Debug, thiserror::Error)]
pub enum PasskeyFailure {
    /// Passkeys are off (an IP-address issuer without `GATEHOUSE_WEBAUTHN_RP_ID`).
    #[error("passkeys are not available here")]
    Off,
    /// Unknown, expired or already finished ceremony; or not this session's.
    #[error("the passkey request expired: try again")]
    NoCeremony,
    /// The browser's answer did not verify, or names no passkey of this account.
    #[error("that passkey did not work")]
    Refused,
    /// The account is locked, inactive or gone.
    #[error("the account cannot sign in now")]
    Locked,
    /// Adding a passkey: the current password was not right.
    #[error("this is not your current password")]
    WrongPassword,
    #[error(transparent)]
    Server(#[from] ServerError),
}

fn relying_party(factors: &SecondFactors) -> Result<&RelyingParty, PasskeyFailure> {
    factors.passkeys.as_ref().ok_or(PasskeyFailure::Off)
}

fn ceremony_expiry() -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(CEREMONY_TTL).unwrap_or(chrono::Duration::minutes(5))
}

/// Begins a passkey second step for `user_id` (half signed in): the browser's options, and the
/// ceremony id it sends back. `Refused` when the user has no passkey.
pub async fn begin_passkey_second_step(
    pool: &PgPool,
    factors: &SecondFactors,
    user_id: Uuid,
) -> Result<(Uuid, serde_json::Value), PasskeyFailure> {
    let rp = relying_party(factors)?;
    let rows = db::run(pool, move |conn| db::passkeys::of_user(conn, user_id)).await?;
    let stored: Vec<_> = rows.iter().filter_map(|row| passkey::stored(&row.passkey).ok()).collect();
    if stored.is_empty() {
        return Err(PasskeyFailure::Refused);
    }
    let (options, state) = rp.begin_second_step(&stored).map_err(ServerError::internal)?;
    let expires_at = ceremony_expiry();
    let id = db::run(pool, move |conn| {
        db::passkeys::begin_ceremony(conn, Ceremony::SecondStep, Some(user_id), &state, expires_at)
    })
    .await?;
    Ok((id, options))
}

/// Begins a sign-in with a discoverable passkey (no username).
pub async fn begin_passkey_sign_in(
    pool: &PgPool,
    factors: &SecondFactors,
) -> Result<(Uuid, serde_json::Value), PasskeyFailure> {
    let rp = relying_party(factors)?;
    let (options, state) = rp.begin_sign_in().map_err(ServerError::internal)?;
    let expires_at = ceremony_expiry();
    let id = db::run(pool, move |conn| db::passkeys::begin_ceremony(conn, Ceremony::SignIn, None, &state, expires_at))
        .await?;
    Ok((id, options))
}

/// A browser's answer to a passkey ceremony.
pub struct PasskeyAnswer {
    /// `SecondStep` (for `expected_user`, the half-signed-in one) or `SignIn`.
    pub kind: Ceremony,
    pub ceremony: Uuid,
    pub expected_user: Option<Uuid>,
    /// The browser's `credential.toJSON()`.
    pub credential: serde_json::Value,
}

/// Finishes a passkey ceremony: it is taken (once, on any instance), the assertion verified against
/// the account's passkeys, and the sign-in recorded under the account's lockout like any other.
pub async fn finish_passkey(
    pool: &PgPool,
    metrics: &Metrics,
    factors: &SecondFactors,
    answer: PasskeyAnswer,
    attempt: &Attempt,
) -> Result<SignedIn, PasskeyFailure> {
    let PasskeyAnswer { kind, ceremony, expected_user, credential } = answer;
    let rp = relying_party(factors)?;
    let now = Utc::now();
    let taken = db::run(pool, move |conn| db::passkeys::take_ceremony(conn, ceremony, kind, now)).await?;
    let Some((ceremony_user, state, _)) = taken else { return Err(PasskeyFailure::NoCeremony) };
    if kind == Ceremony::SecondStep && (ceremony_user.is_none() || ceremony_user != expected_user) {
        return Err(PasskeyFailure::NoCeremony);
    }
    // Whose passkey: the half-signed-in user's, or (sign-in) the one the assertion names.
    let user_id = match ceremony_user {
        Some(user_id) => user_id,
        None => {
            let credential_id = RelyingParty::credential_of(&credential).map_err(|_| PasskeyFailure::Refused)?;
            let row = db::run(pool, move |conn| db::passkeys::by_credential(conn, &credential_id)).await?;
            row.ok_or(PasskeyFailure::Refused)?.user_id
        }
    };
    let check = match claim_of_user(pool, user_id).await? {
        Claim::Granted(check) if check.is_active => check,
        Claim::Granted(check) => {
            let user_id = check.user_id;
            db::run(pool, move |conn| db::users::release_claim(conn, user_id)).await?;
            return Err(PasskeyFailure::Locked);
        }
        Claim::Refused { .. } | Claim::Busy | Claim::UnknownUser => return Err(PasskeyFailure::Locked),
    };
    let rows = db::run(pool, move |conn| db::passkeys::of_user(conn, user_id)).await?;
    let verified = match kind {
        Ceremony::SecondStep => {
            let stored: Vec<_> = rows.iter().filter_map(|row| passkey::stored(&row.passkey).ok()).collect();
            rp.finish_second_step(&credential, &state, &stored)
        }
        _ => {
            let credential_id = RelyingParty::credential_of(&credential).unwrap_or_default();
            match rows.iter().find(|row| row.credential_id == credential_id).map(|row| passkey::stored(&row.passkey)) {
                Some(Ok(stored)) => rp.finish_sign_in(&credential, &state, &stored),
                _ => Err(passkey::PasskeyError::Refused("no such passkey".to_owned())),
            }
        }
    };
    let events = StepEvents::new(attempt, &check.username, user_id);
    let used = match verified {
        Ok(used) => used,
        Err(err) => {
            log::info!("passkey refused for user {user_id}: {err}");
            metrics.second_factor.get_or_create(&SecondFactorLabels { outcome: "failed" }).inc();
            if kind == Ceremony::SecondStep {
                // A failed second step, like a wrong code: counted by the lockout, and when it locks
                // the half-signed-in session ends.
                let (failed, lockout) = (events.failed.detail("passkey refused"), events.lockout);
                let locked = db::run(pool, move |conn| count_failure(conn, user_id, &failed, lockout)).await?;
                if locked {
                    metrics.lockouts.inc();
                    return Err(PasskeyFailure::Locked);
                }
                return Err(PasskeyFailure::Refused);
            }
            // A discoverable sign-in names an account only by the passkey it presents: a stranger's
            // failed attempt must not count against (and so lock) that account.
            let failed = NewEvent { kind: EventKind::SecondFactorFailed, ..events.failed }.detail("passkey refused");
            db::run(pool, move |conn| {
                conn.transaction(|conn| {
                    db::users::release_claim(conn, user_id)?;
                    db::auth_events::record(conn, &failed)
                })
            })
            .await?;
            return Err(PasskeyFailure::Refused);
        }
    };
    let row_id = rows.iter().find(|row| row.credential_id.as_slice() == used.cred_id().as_ref()).map(|row| row.id);
    let stored = passkey::to_stored(&used).map_err(ServerError::internal)?;
    let method = if kind == Ceremony::SecondStep { SignInMethod::PasswordAndPasskey } else { SignInMethod::Passkey };
    db::run(pool, move |conn| {
        conn.transaction(|conn| {
            db::users::record_success(conn, user_id, None, &events.passed)?;
            if let Some(row_id) = row_id {
                db::passkeys::record_use(conn, row_id, &stored)?;
            }
            db::auth_events::record(conn, &events.used.detail("passkey"))
        })
    })
    .await?;
    metrics.second_factor.get_or_create(&SecondFactorLabels { outcome: "passkey" }).inc();
    metrics.logins.get_or_create(&LoginLabels { channel: attempt.channel.as_str(), outcome: Outcome::ok }).inc();
    Ok(SignedIn {
        user_id,
        username: check.username,
        previous_sign_in: check.last_login_at,
        began_at: check.began_at,
        method,
    })
}
