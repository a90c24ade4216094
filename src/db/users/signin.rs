//! Sign-in: claim a verification against an account's real hash, then settle it; the lockout's
//! counters are read under the account's row lock and ruled on by `domain::rules::lockout`.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Bool, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

use crate::db::auth_events::{self, NewEvent};
use crate::db::schema::users;
use crate::domain::rules::{
    ClaimDecision, LockState, LockoutPolicy, decide_claim, decide_failure, decide_release, decide_success,
};

use super::*;

/// The outcome of asking to verify a password against an account's real hash.
#[derive(Debug)]
pub enum Claim {
    /// The verification may run; settle it with [`record_success`], [`record_failure`] or [`release_claim`].
    Granted(GrantedCheck),
    /// The account is locked: no verification against its hash may run now.
    Refused {
        user_id: Uuid,
    },
    /// Not locked, but as many checks as may still fail are running: none may start until one of
    /// them settles (a success frees the account, failures lock it). Ask again shortly.
    Busy,
    UnknownUser,
}

/// What a granted check needs to verify a password, and nothing more.
#[derive(Debug, QueryableByName)]
pub struct GrantedCheck {
    #[diesel(sql_type = SqlUuid)]
    pub user_id: Uuid,
    #[diesel(sql_type = Text)]
    pub username: String,
    #[diesel(sql_type = Text)]
    pub password_hash: String,
    #[diesel(sql_type = Bool)]
    pub is_active: bool,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub last_login_at: Option<DateTime<Utc>>,
    /// When the check began, by the database's clock: tokens and sessions it leads to count from here,
    /// so an invalidation committed after this instant ends them.
    #[diesel(sql_type = Timestamptz)]
    pub began_at: DateTime<Utc>,
}

/// An account's row as the sign-in rules need it, locked, with the database's clock read once the
/// lock is held. `FOR NO KEY UPDATE`, the lock an UPDATE of these columns takes anyway: it does not
/// conflict with the key-share lock that inserting an audit row referencing the user takes.
#[derive(QueryableByName)]
struct LockedAccount {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    username: String,
    #[diesel(sql_type = Text)]
    password_hash: String,
    #[diesel(sql_type = Bool)]
    is_active: bool,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    last_login_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Integer)]
    failed_logins: i32,
    #[diesel(sql_type = Integer)]
    lockouts: i32,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    locked_until: Option<DateTime<Utc>>,
    #[diesel(sql_type = Integer)]
    check_claims: i32,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    claims_expire_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Timestamptz)]
    now: DateTime<Utc>,
}

impl LockedAccount {
    fn lock_state(&self) -> LockState {
        LockState {
            failed_logins: self.failed_logins,
            lockouts: self.lockouts,
            locked_until: self.locked_until,
            check_claims: self.check_claims,
            claims_expire_at: self.claims_expire_at,
        }
    }
}

const LOCKED_ACCOUNT: &str = "SELECT id, username, password_hash, is_active, last_login_at, failed_logins, lockouts, \
                                     locked_until, check_claims, claims_expire_at, clock_timestamp() AS now \
                              FROM users";

/// `username`'s account, locked (`lock`) or as last committed.
fn account_named(conn: &mut PgConnection, username: &str, lock: bool) -> QueryResult<Option<LockedAccount>> {
    if !storable(username) {
        return Ok(None);
    }
    let locking = if lock { " FOR NO KEY UPDATE" } else { "" };
    diesel::sql_query(format!("{LOCKED_ACCOUNT} WHERE lower(username) = lower($1){locking}"))
        .bind::<Text, _>(username)
        .get_result(conn)
        .optional()
}

/// The account `user_id`, locked (`lock`) or as last committed.
fn account_of(conn: &mut PgConnection, user_id: Uuid, lock: bool) -> QueryResult<Option<LockedAccount>> {
    let locking = if lock { " FOR NO KEY UPDATE" } else { "" };
    diesel::sql_query(format!("{LOCKED_ACCOUNT} WHERE id = $1{locking}"))
        .bind::<SqlUuid, _>(user_id)
        .get_result(conn)
        .optional()
}

fn lock_account(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<Option<LockedAccount>> {
    account_of(conn, user_id, true)
}

fn store_lock_state(conn: &mut PgConnection, user_id: Uuid, state: &LockState) -> QueryResult<()> {
    store_lock_state_signed_in(conn, user_id, state, false)
}

/// The lockout's columns of `users`, as a [`LockState`] sets them (`None` sets NULL).
#[derive(AsChangeset)]
#[diesel(table_name = users, treat_none_as_null = true)]
struct LockCounters {
    failed_logins: i32,
    lockouts: i32,
    locked_until: Option<DateTime<Utc>>,
    check_claims: i32,
    claims_expire_at: Option<DateTime<Utc>>,
}

impl From<&LockState> for LockCounters {
    fn from(state: &LockState) -> Self {
        Self {
            failed_logins: state.failed_logins,
            lockouts: state.lockouts,
            locked_until: state.locked_until,
            check_claims: state.check_claims,
            claims_expire_at: state.claims_expire_at,
        }
    }
}

/// The lock state, and with `signed_in` the sign-in's time as the last one, in one statement.
fn store_lock_state_signed_in(
    conn: &mut PgConnection,
    user_id: Uuid,
    state: &LockState,
    signed_in: bool,
) -> QueryResult<()> {
    diesel::update(users::table.find(user_id))
        .set((
            LockCounters::from(state),
            // `None` sets nothing.
            signed_in.then_some(users::last_login_at.eq(diesel::dsl::now)),
        ))
        .execute(conn)
        .map(|_| ())
}

/// Claims one verification against the real hash of `username`'s account: [`decide_claim`] rules
/// on the account's counters, and a granted claim is stored only over the counters it was decided
/// on. However many guesses arrive at once, on however many instances, at most `policy.threshold`
/// verifications run per lock window (the others are [`Claim::Busy`] until those settle); claims
/// expire after `policy.claim_ttl` (a crashed instance cannot hold them).
pub fn claim_check(conn: &mut PgConnection, username: &str, policy: &LockoutPolicy) -> QueryResult<Claim> {
    claim_with(conn, policy, |conn, lock| account_named(conn, username, lock))
}

/// [`claim_check`] for the account `user_id`: a sign-in's second step is a verification like the
/// password's, under the same lockout (at most `threshold` running at once, failures counted).
pub fn claim_check_of(conn: &mut PgConnection, user_id: Uuid, policy: &LockoutPolicy) -> QueryResult<Claim> {
    claim_with(conn, policy, |conn, lock| account_of(conn, user_id, lock))
}

/// Optimistic first: the account as last committed, the decision, and a claim stored by one
/// `UPDATE` that matches only if nothing it was decided on changed meanwhile (two round trips, no
/// transaction: every sign-in passes here). When something did (a racing check, a password change),
/// the same again under the account's row lock.
fn claim_with(
    conn: &mut PgConnection,
    policy: &LockoutPolicy,
    account: impl Fn(&mut PgConnection, bool) -> QueryResult<Option<LockedAccount>>,
) -> QueryResult<Claim> {
    let read = account(conn, false)?;
    if let Some(claim) = claim_if_unchanged(conn, read, policy)? {
        return Ok(claim);
    }
    conn.transaction(|conn| {
        let locked = account(conn, true)?;
        claim_locked(conn, locked, policy)
    })
}

/// The claim of [`claim_locked`] from an account read without its lock: `None` when the account's
/// counters, hash or state changed before the claim could be stored.
fn claim_if_unchanged(
    conn: &mut PgConnection,
    account: Option<LockedAccount>,
    policy: &LockoutPolicy,
) -> QueryResult<Option<Claim>> {
    let Some(account) = account else { return Ok(Some(Claim::UnknownUser)) };
    let before = account.lock_state();
    match decide_claim(&before, policy, account.now) {
        ClaimDecision::Locked => Ok(Some(Claim::Refused { user_id: account.id })),
        ClaimDecision::Busy => Ok(Some(Claim::Busy)),
        ClaimDecision::Grant(state) => {
            let stored = diesel::update(
                users::table
                    .find(account.id)
                    .filter(users::failed_logins.eq(before.failed_logins))
                    .filter(users::lockouts.eq(before.lockouts))
                    .filter(users::locked_until.is_not_distinct_from(before.locked_until))
                    .filter(users::check_claims.eq(before.check_claims))
                    .filter(users::claims_expire_at.is_not_distinct_from(before.claims_expire_at))
                    // The hash about to be verified and the state read with it are still the account's.
                    .filter(users::password_hash.eq(&account.password_hash))
                    .filter(users::is_active.eq(account.is_active)),
            )
            .set(LockCounters::from(&state))
            .execute(conn)?;
            Ok((stored == 1).then(|| Claim::Granted(granted(account))))
        }
    }
}

fn claim_locked(conn: &mut PgConnection, account: Option<LockedAccount>, policy: &LockoutPolicy) -> QueryResult<Claim> {
    let Some(account) = account else { return Ok(Claim::UnknownUser) };
    match decide_claim(&account.lock_state(), policy, account.now) {
        ClaimDecision::Locked => Ok(Claim::Refused { user_id: account.id }),
        ClaimDecision::Busy => Ok(Claim::Busy),
        ClaimDecision::Grant(state) => {
            store_lock_state(conn, account.id, &state)?;
            Ok(Claim::Granted(granted(account)))
        }
    }
}

fn granted(account: LockedAccount) -> GrantedCheck {
    GrantedCheck {
        user_id: account.id,
        username: account.username,
        password_hash: account.password_hash,
        is_active: account.is_active,
        last_login_at: account.last_login_at,
        began_at: account.now,
    }
}

/// Applies `decide` to the account's counters under its row lock.
fn settle(
    conn: &mut PgConnection,
    user_id: Uuid,
    decide: impl FnOnce(&LockState, DateTime<Utc>) -> LockState,
) -> QueryResult<()> {
    if let Some(account) = lock_account(conn, user_id)? {
        store_lock_state(conn, user_id, &decide(&account.lock_state(), account.now))?;
    }
    Ok(())
}

/// The claim given back without a verdict (the check never ran: the queue timed it out).
pub fn release_claim(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<()> {
    conn.transaction(|conn| settle(conn, user_id, decide_release))
}

/// A hash to store in place of the one that was verified (a cheaper cost than configured).
pub struct HashUpgrade<'a> {
    pub verified: &'a str,
    pub new_hash: &'a str,
}

/// A successful sign-in: gives the claim back, forgets earlier failures and lockouts, remembers when,
/// stores an upgraded hash (only if the verified one is still current: a concurrent password change
/// wins) and records `event`, all at once. Without an upgrade (nearly always), optimistic like the
/// claim: the counters as last committed, then one statement that writes them and the audit row
/// only if they are unchanged; on a collision, under the row lock.
pub fn record_success(
    conn: &mut PgConnection,
    user_id: Uuid,
    upgrade: Option<HashUpgrade<'_>>,
    event: &NewEvent,
) -> QueryResult<()> {
    if upgrade.is_none()
        && let Some(account) = account_of(conn, user_id, false)?
        && success_if_unchanged(conn, &account, event)?
    {
        return Ok(());
    }
    conn.transaction(|conn| {
        if let Some(account) = lock_account(conn, user_id)? {
            let state = decide_success(&account.lock_state(), account.now);
            store_lock_state_signed_in(conn, user_id, &state, true)?;
        }
        if let Some(upgrade) = upgrade {
            diesel::update(users::table.find(user_id).filter(users::password_hash.eq(upgrade.verified)))
                .set(users::password_hash.eq(upgrade.new_hash))
                .execute(conn)?;
        }
        auth_events::record(conn, event)
    })
}

/// The success's counters (from `account`, read without its lock) and `event`, in one statement that
/// writes both only if the counters are still those read; false when they were not (nothing written).
fn success_if_unchanged(conn: &mut PgConnection, account: &LockedAccount, event: &NewEvent) -> QueryResult<bool> {
    let before = account.lock_state();
    let after = decide_success(&before, account.now);
    let statement = format!(
        "WITH settled AS ( \
             UPDATE users SET failed_logins = $2, lockouts = $3, locked_until = $4, check_claims = $5, \
                              claims_expire_at = $6, last_login_at = now() \
             WHERE id = $1 AND failed_logins = $7 AND lockouts = $8 AND locked_until IS NOT DISTINCT FROM $9 \
               AND check_claims = $10 AND claims_expire_at IS NOT DISTINCT FROM $11 \
             RETURNING id) \
         INSERT INTO auth_events ({}) \
         SELECT $12, $13, $14, $15, $16, $17, $18, $19, $20 FROM settled",
        auth_events::EVENT_COLUMNS
    );
    let query = diesel::sql_query(statement)
        .into_boxed()
        .bind::<SqlUuid, _>(account.id)
        .bind::<Integer, _>(after.failed_logins)
        .bind::<Integer, _>(after.lockouts)
        .bind::<Nullable<Timestamptz>, _>(after.locked_until)
        .bind::<Integer, _>(after.check_claims)
        .bind::<Nullable<Timestamptz>, _>(after.claims_expire_at)
        .bind::<Integer, _>(before.failed_logins)
        .bind::<Integer, _>(before.lockouts)
        .bind::<Nullable<Timestamptz>, _>(before.locked_until)
        .bind::<Integer, _>(before.check_claims)
        .bind::<Nullable<Timestamptz>, _>(before.claims_expire_at);
    let written = auth_events::bind_event(query, event).execute(conn)?;
    Ok(written == 1)
}

/// A confirmed password (a signed-in user proved they know it): gives the claim back and forgets
/// earlier failures, like a sign-in, without counting as one.
pub fn record_confirmation(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<()> {
    conn.transaction(|conn| settle(conn, user_id, decide_success))
}

/// A failed verification: gives the claim back and counts the failure ([`decide_failure`]); the
/// failure that reaches the threshold locks the account, and the instant the lock ends is returned.
/// Run it before writing rows that reference the user (audit events): their foreign-key lock taken
/// first would deadlock two concurrent failures.
pub fn record_failure(
    conn: &mut PgConnection,
    user_id: Uuid,
    policy: &LockoutPolicy,
) -> QueryResult<Option<DateTime<Utc>>> {
    conn.transaction(|conn| {
        let Some(account) = lock_account(conn, user_id)? else { return Ok(None) };
        let (state, locked_until) = decide_failure(&account.lock_state(), policy, account.now);
        store_lock_state(conn, user_id, &state)?;
        Ok(locked_until)
    })
}
