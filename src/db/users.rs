//! The `users` and `user_roles` tables: accounts, their roles, sign-in claims and lockouts, and the
//! cut-off that ends every earlier token and session of a user.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Bool, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

use super::auth_events::{self, NewEvent};
use super::schema::{account_counts, role_scopes, roles, user_roles, users};
use crate::domain::rules::{
    AccountState, AdminContext, ChangeDecision, ClaimDecision, LockState, LockoutPolicy, RequestedChange,
    decide_change, decide_claim, decide_failure, decide_release, decide_success,
};
use crate::domain::{EventKind, ScopeSet};

diesel::define_sql_function! {
    /// SQL `lower()`, for case-insensitive username lookups that use `users_username_lower_key`.
    fn lower(text: Text) -> Text;
}

diesel::define_sql_function! {
    /// The user's role names, sorted (a SQL function from the migrations).
    fn user_role_names(user_id: SqlUuid) -> diesel::sql_types::Array<Text>;
}

/// A user as the rest of the service sees it: never carries the password hash.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg))]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub email: Option<String>,
    pub full_name: Option<String>,
    pub is_active: bool,
    /// Tokens and sessions from credential checks that began before this instant no longer work.
    pub tokens_valid_after: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
}

#[derive(Insertable)]
#[diesel(table_name = users)]
pub struct NewUser<'a> {
    pub id: Uuid,
    pub username: &'a str,
    pub email: Option<&'a str>,
    pub full_name: Option<&'a str>,
    pub password_hash: &'a str,
}

pub fn find_by_id(conn: &mut PgConnection, id: Uuid) -> QueryResult<Option<User>> {
    users::table.find(id).select(User::as_select()).first(conn).optional()
}

/// PostgreSQL text cannot hold a NUL character, so no stored username has one; a name with one (a
/// `%00` in an address) matches nobody rather than failing the query.
fn storable(text: &str) -> bool {
    !text.contains('\0')
}

pub fn find_by_username(conn: &mut PgConnection, username: &str) -> QueryResult<Option<User>> {
    if !storable(username) {
        return Ok(None);
    }
    users::table.filter(lower(users::username).eq(lower(username))).select(User::as_select()).first(conn).optional()
}

// --- Sign-in: claim a verification, then settle it ---

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

fn lock_account_named(conn: &mut PgConnection, username: &str) -> QueryResult<Option<LockedAccount>> {
    if !storable(username) {
        return Ok(None);
    }
    diesel::sql_query(format!("{LOCKED_ACCOUNT} WHERE lower(username) = lower($1) FOR NO KEY UPDATE"))
        .bind::<Text, _>(username)
        .get_result(conn)
        .optional()
}

fn lock_account(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<Option<LockedAccount>> {
    diesel::sql_query(format!("{LOCKED_ACCOUNT} WHERE id = $1 FOR NO KEY UPDATE"))
        .bind::<SqlUuid, _>(user_id)
        .get_result(conn)
        .optional()
}

fn store_lock_state(conn: &mut PgConnection, user_id: Uuid, state: &LockState) -> QueryResult<()> {
    diesel::update(users::table.find(user_id))
        .set((
            users::failed_logins.eq(state.failed_logins),
            users::lockouts.eq(state.lockouts),
            users::locked_until.eq(state.locked_until),
            users::check_claims.eq(state.check_claims),
            users::claims_expire_at.eq(state.claims_expire_at),
        ))
        .execute(conn)
        .map(|_| ())
}

/// Claims one verification against the real hash of `username`'s account: the account's row is
/// locked, [`decide_claim`] rules on its counters, and a granted claim is stored before the lock
/// is let go. However many guesses arrive at once, on however many instances, at most
/// `policy.threshold` verifications run per lock window (the others are [`Claim::Busy`] until
/// those settle); claims expire after `policy.claim_ttl` (a crashed instance cannot hold them).
pub fn claim_check(conn: &mut PgConnection, username: &str, policy: &LockoutPolicy) -> QueryResult<Claim> {
    conn.transaction(|conn| {
        let Some(account) = lock_account_named(conn, username)? else { return Ok(Claim::UnknownUser) };
        match decide_claim(&account.lock_state(), policy, account.now) {
            ClaimDecision::Locked => Ok(Claim::Refused { user_id: account.id }),
            ClaimDecision::Busy => Ok(Claim::Busy),
            ClaimDecision::Grant(state) => {
                store_lock_state(conn, account.id, &state)?;
                Ok(Claim::Granted(GrantedCheck {
                    user_id: account.id,
                    username: account.username,
                    password_hash: account.password_hash,
                    is_active: account.is_active,
                    last_login_at: account.last_login_at,
                    began_at: account.now,
                }))
            }
        }
    })
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
/// wins) and records `event`, all at once.
pub fn record_success(
    conn: &mut PgConnection,
    user_id: Uuid,
    upgrade: Option<HashUpgrade<'_>>,
    event: &NewEvent,
) -> QueryResult<()> {
    conn.transaction(|conn| {
        settle(conn, user_id, decide_success)?;
        diesel::update(users::table.find(user_id)).set(users::last_login_at.eq(diesel::dsl::now)).execute(conn)?;
        if let Some(upgrade) = upgrade {
            diesel::update(users::table.find(user_id).filter(users::password_hash.eq(upgrade.verified)))
                .set(users::password_hash.eq(upgrade.new_hash))
                .execute(conn)?;
        }
        auth_events::record(conn, event)
    })
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

// --- Bearer checks and sessions ---

/// What a bearer-token check needs: the user, their roles, and whether the token's `jti` was revoked.
#[derive(Debug, Clone)]
pub struct TokenHolder {
    pub user: User,
    pub roles: Vec<String>,
    pub token_revoked: bool,
}

/// The bearer checks of many concurrent API requests at once: one answer per `(user id, jti)` pair,
/// in order, `None` where the user does not exist. Every API request needs this, so a batch is one
/// round trip whatever its size: [`TokenHoldersQuery`], a statement PostgreSQL keeps prepared.
pub fn token_holders(conn: &mut PgConnection, checks: &[(Uuid, Uuid)]) -> QueryResult<Vec<Option<TokenHolder>>> {
    let query = TokenHoldersQuery {
        user_ids: checks.iter().map(|&(user_id, _)| user_id).collect(),
        jtis: checks.iter().map(|&(_, jti)| jti).collect(),
    };
    let mut revoked: HashSet<Uuid> = HashSet::new();
    let holders: HashMap<Uuid, (User, Vec<String>)> = query
        .load::<(User, Vec<String>, Vec<Uuid>)>(conn)?
        .into_iter()
        .map(|(user, roles, revoked_jtis)| {
            // Every row carries the same list: the batch's revoked jtis.
            revoked.extend(revoked_jtis);
            (user.id, (user, roles))
        })
        .collect();
    Ok(checks
        .iter()
        .map(|(user_id, jti)| {
            holders.get(user_id).map(|(user, roles)| TokenHolder {
                user: user.clone(),
                roles: roles.clone(),
                token_revoked: revoked.contains(jti),
            })
        })
        .collect())
}

/// The users of a batch of bearer tokens with their roles, and which of the batch's `jti`s were
/// revoked, in one statement. Written by hand because Diesel's query builder has no `array_agg`, and
/// a statement Diesel can keep prepared (a fixed text: `QueryId` says so) costs PostgreSQL no
/// planning per batch; `user_role_names()` in the select list, which it replaces here, ran the SQL
/// function executor once per row and took half the statement's time.
#[derive(Debug, Clone)]
pub struct TokenHoldersQuery {
    pub user_ids: Vec<Uuid>,
    pub jtis: Vec<Uuid>,
}

impl diesel::query_builder::QueryId for TokenHoldersQuery {
    type QueryId = Self;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl diesel::query_builder::Query for TokenHoldersQuery {
    type SqlType = (
        (SqlUuid, Text, Nullable<Text>, Nullable<Text>, Bool, Timestamptz, Timestamptz, Nullable<Timestamptz>),
        diesel::sql_types::Array<Text>,
        diesel::sql_types::Array<SqlUuid>,
    );
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for TokenHoldersQuery {
    fn walk_ast<'b>(&'b self, mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>) -> QueryResult<()> {
        out.push_sql(
            "SELECT u.id, u.username, u.email, u.full_name, u.is_active, u.tokens_valid_after, u.created_at, \
                    u.last_login_at, \
                    coalesce((SELECT array_agg(role_name ORDER BY role_name) FROM user_roles WHERE user_id = u.id), \
                             '{}'), \
                    coalesce((SELECT array_agg(jti) FROM revoked_access_tokens WHERE jti = ANY(",
        );
        out.push_bind_param::<diesel::sql_types::Array<SqlUuid>, _>(&self.jtis)?;
        out.push_sql(")), '{}') FROM users u WHERE u.id = ANY(");
        out.push_bind_param::<diesel::sql_types::Array<SqlUuid>, _>(&self.user_ids)?;
        out.push_sql(")");
        Ok(())
    }
}

impl RunQueryDsl<PgConnection> for TokenHoldersQuery {}

/// The user with their current roles, in one statement (every page view of a signed-in browser).
pub fn with_roles(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<Option<(User, Vec<String>)>> {
    users::table.find(user_id).select((User::as_select(), user_role_names(users::id))).first(conn).optional()
}

/// The user's role names, sorted.
pub fn roles_of(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<Vec<String>> {
    user_roles::table
        .filter(user_roles::user_id.eq(user_id))
        .select(user_roles::role_name)
        .order(user_roles::role_name)
        .load(conn)
}

/// Every scope one of the user's roles allows.
pub fn allowed_scopes(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<ScopeSet> {
    let names: Vec<String> = user_roles::table
        .inner_join(roles::table.inner_join(role_scopes::table))
        .filter(user_roles::user_id.eq(user_id))
        .select(role_scopes::scope_name)
        .distinct()
        .load(conn)?;
    // Scope names are CHECKed by the schema to be valid scope tokens.
    ScopeSet::parse(&names.join(" ")).map_err(|err| diesel::result::Error::DeserializationError(Box::new(err)))
}

// --- Administration ---

/// The outcome of creating a user or changing their roles or active flag.
#[derive(Debug)]
pub enum UserWrite {
    Done(User),
    UsernameTaken,
    UnknownRole(String),
    UnknownUser,
    /// The change would leave no active admin: nothing was written.
    LastAdmin,
    /// The acting admin lost the role (or was deactivated) after their request was authorized:
    /// nothing was written.
    ActorNotAdmin,
}

/// Inserts the user and their roles in one transaction: either all of it is stored or none.
pub fn create(conn: &mut PgConnection, new_user: &NewUser<'_>, role_names: &[String]) -> QueryResult<UserWrite> {
    conn.transaction(|conn| {
        if let Some(unknown) = unknown_role(conn, role_names)? {
            return Ok(UserWrite::UnknownRole(unknown));
        }
        // The unique index on lower(username) decides between concurrent creators.
        let inserted = diesel::insert_into(users::table)
            .values(new_user)
            .on_conflict_do_nothing()
            .returning(User::as_returning())
            .get_result(conn)
            .optional()?;
        let Some(user) = inserted else { return Ok(UserWrite::UsernameTaken) };
        replace_roles(conn, user.id, role_names)?;
        Ok(UserWrite::Done(user))
    })
}

/// [`create`], and `event` (about the new user) recorded in the same transaction.
pub fn create_recorded(
    conn: &mut PgConnection,
    new_user: &NewUser<'_>,
    role_names: &[String],
    event: NewEvent,
) -> QueryResult<UserWrite> {
    conn.transaction(|conn| {
        let written = create(conn, new_user, role_names)?;
        if let UserWrite::Done(user) = &written {
            auth_events::record(conn, &event.user(user.id).detail(roles_detail(role_names)))?;
        }
        Ok(written)
    })
}

/// What an administrator changes about an account in one go (`None`: leave it as it is).
#[derive(Debug, Clone, Default)]
pub struct AccountChange {
    /// Exactly these roles (an empty list removes all of them).
    pub roles: Option<Vec<String>>,
    pub active: Option<bool>,
}

/// Applies `change` to `username`'s account in one transaction, recording one event per thing that
/// changed (built from `event`), unless it would remove the last active admin, or `acting_admin`
/// (`None`: the operator) no longer is one (see [`as_admin`]; the last admin is named first, so of
/// two admins demoting each other at once, the second hears why).
///
/// Every change that could remove an admin (a role change, a deactivation) first locks the `admin`
/// role's row, so such changes run one at a time, on however many instances: two admins demoting
/// each other at the same moment cannot both see the other one still standing. The lock comes
/// before the user's row (the order nothing else takes them in reverse), and the count of the
/// other active admins is read under it.
pub fn change(
    conn: &mut PgConnection,
    username: &str,
    change: &AccountChange,
    event: &NewEvent,
    acting_admin: Option<Uuid>,
) -> QueryResult<UserWrite> {
    conn.transaction(|conn| {
        lock_admin_changes(conn)?;
        let Some(user) = lock_by_username(conn, username)? else { return Ok(UserWrite::UnknownUser) };
        if let Some(roles) = &change.roles
            && let Some(unknown) = unknown_role(conn, roles)?
        {
            return Ok(UserWrite::UnknownRole(unknown));
        }
        let before = AccountState { active: user.is_active, roles: roles_of(conn, user.id)? };
        let context = AdminContext {
            other_active_admins: other_active_admins(conn, user.id)?,
            actor_still_admin: match acting_admin {
                Some(admin) => is_active_admin(conn, admin)?,
                None => true,
            },
        };
        let requested = RequestedChange { roles: change.roles.clone(), active: change.active };
        let (active_after, roles_after) = match decide_change(&before, &requested, &context) {
            ChangeDecision::LastAdmin => return Ok(UserWrite::LastAdmin),
            ChangeDecision::ActorNotAdmin => return Ok(UserWrite::ActorNotAdmin),
            ChangeDecision::Apply { active, roles } => (active, roles),
        };
        let mut events = Vec::new();
        // The active flag before the roles: the counters' triggers take their rows in that order.
        if let Some(active_after) = active_after {
            diesel::update(users::table.find(user.id))
                .set((users::is_active.eq(active_after), users::updated_at.eq(diesel::dsl::now)))
                .execute(conn)?;
            let kind = if active_after { EventKind::Activated } else { EventKind::Deactivated };
            if !active_after {
                // Reactivating later must not bring old tokens back to life.
                invalidate_credentials(conn, user.id)?;
            }
            events.push(NewEvent { kind, ..event.clone() }.user(user.id));
        }
        if let Some(roles_after) = roles_after {
            replace_roles(conn, user.id, &roles_after)?;
            let detail = format!("{} → {}", roles_detail(&before.roles), roles_detail(&roles_after));
            events.insert(0, NewEvent { kind: EventKind::RolesChanged, ..event.clone() }.user(user.id).detail(detail));
        }
        auth_events::record_many(conn, &events)?;
        Ok(find_by_id(conn, user.id)?.map_or(UserWrite::UnknownUser, UserWrite::Done))
    })
}

/// Runs `write` in one transaction, but only if `admin` still is an active admin: `None` (nothing
/// written) when they were demoted or deactivated since their request was authorized (a bcrypt run
/// may lie between the two). The admin lock is taken first, as every change that could remove an
/// admin takes it, so such a change either committed before the check or waits until this
/// transaction ends: an admin's change never lands after their own demotion.
pub fn as_admin<T>(
    conn: &mut PgConnection,
    admin: Uuid,
    write: impl FnOnce(&mut PgConnection) -> QueryResult<T>,
) -> QueryResult<Option<T>> {
    conn.transaction(|conn| {
        lock_admin_changes(conn)?;
        if !is_active_admin(conn, admin)? {
            return Ok(None);
        }
        write(conn).map(Some)
    })
}

fn is_active_admin(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        user_roles::table
            .inner_join(users::table)
            .filter(users::id.eq(user_id))
            .filter(users::is_active.eq(true))
            .filter(user_roles::role_name.eq(crate::domain::RoleName::ADMIN)),
    ))
    .get_result(conn)
}

/// Serializes every change that could remove an admin (see [`change`]), and every change an admin
/// makes with one (see [`as_admin`]): administration is rare, and its bcrypt runs happen outside.
///
/// `FOR NO KEY UPDATE`: it conflicts with itself (and with a test holding `FOR UPDATE`), but not with
/// the key-share lock that inserting a `user_roles` row takes on its role, so a creation from the
/// command line never waits for it.
fn lock_admin_changes(conn: &mut PgConnection) -> QueryResult<()> {
    roles::table
        .filter(roles::name.eq(crate::domain::RoleName::ADMIN))
        .select(roles::name)
        .for_no_key_update()
        .load::<String>(conn)
        .map(|_| ())
}

fn lock_by_username(conn: &mut PgConnection, username: &str) -> QueryResult<Option<User>> {
    if !storable(username) {
        return Ok(None);
    }
    users::table
        .filter(lower(users::username).eq(lower(username)))
        .select(User::as_select())
        .for_no_key_update()
        .first(conn)
        .optional()
}

/// Active users other than `user_id` who hold the admin role.
fn other_active_admins(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<i64> {
    user_roles::table
        .inner_join(users::table)
        .filter(user_roles::role_name.eq(crate::domain::RoleName::ADMIN))
        .filter(users::is_active.eq(true))
        .filter(users::id.ne(user_id))
        .count()
        .get_result(conn)
}

fn roles_detail(roles: &[String]) -> String {
    if roles.is_empty() { "no roles".to_owned() } else { roles.join(", ") }
}

fn unknown_role(conn: &mut PgConnection, role_names: &[String]) -> QueryResult<Option<String>> {
    let known: Vec<String> = roles::table.filter(roles::name.eq_any(role_names)).select(roles::name).load(conn)?;
    Ok(role_names.iter().find(|name| !known.contains(name)).cloned())
}

/// Roles removed one by one and added in name order: each row's trigger updates its role's counter,
/// and every writer must take those in one order (see migration 7).
fn replace_roles(conn: &mut PgConnection, user_id: Uuid, role_names: &[String]) -> QueryResult<()> {
    let held = roles_of(conn, user_id)?;
    // Removing {user} and adding {admin, user} would otherwise take `role:user` before
    // `role:admin`, the reverse of a user created with both at the same moment: a deadlock. So
    // every counter this change moves is taken first, in name order.
    let mut counters: Vec<String> = held.iter().chain(role_names).map(|role| format!("role:{role}")).collect();
    counters.sort();
    counters.dedup();
    account_counts::table
        .filter(account_counts::name.eq_any(&counters))
        .order(account_counts::name)
        .select(account_counts::name)
        .for_update()
        .load::<String>(conn)?;
    for held in held {
        diesel::delete(user_roles::table.find((user_id, &held))).execute(conn)?;
    }
    let mut sorted: Vec<&String> = role_names.iter().collect();
    sorted.sort();
    sorted.dedup();
    let rows: Vec<_> =
        sorted.iter().map(|role| (user_roles::user_id.eq(user_id), user_roles::role_name.eq(*role))).collect();
    diesel::insert_into(user_roles::table).values(&rows).on_conflict_do_nothing().execute(conn)?;
    Ok(())
}

/// Every role that exists, by name.
pub fn all_role_names(conn: &mut PgConnection) -> QueryResult<Vec<String>> {
    roles::table.select(roles::name).order(roles::name).load(conn)
}

/// Stores a new password hash and ends every earlier token and session of the user, in one
/// transaction; the cut-off is the moment the hash is stored, and is returned.
pub fn set_password_hash(conn: &mut PgConnection, user_id: Uuid, password_hash: &str) -> QueryResult<DateTime<Utc>> {
    conn.transaction(|conn| {
        diesel::update(users::table.find(user_id))
            .set((users::password_hash.eq(password_hash), users::updated_at.eq(diesel::dsl::now)))
            .execute(conn)?;
        invalidate_credentials(conn, user_id)
    })
}

#[derive(QueryableByName)]
struct Cutoff {
    #[diesel(sql_type = Timestamptz)]
    tokens_valid_after: DateTime<Utc>,
}

/// Ends every access token, refresh token and session the user holds: anything that comes from a
/// credential check that began before now (the database's clock, read once the user's row is
/// locked, so a check that raced with this one is on one side of it) stops working. Returns the cut-off.
pub fn invalidate_credentials(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<DateTime<Utc>> {
    conn.transaction(|conn| {
        let cutoff: Cutoff = diesel::sql_query(
            "UPDATE users SET tokens_valid_after = clock_timestamp() WHERE id = $1 RETURNING tokens_valid_after",
        )
        .bind::<SqlUuid, _>(user_id)
        .get_result(conn)?;
        super::refresh_tokens::revoke_all_of_user(conn, user_id)?;
        super::sessions::delete_all_of_user(conn, user_id)?;
        Ok(cutoff.tokens_valid_after)
    })
}

/// A new password hash stored, every earlier token and session ended, and `event` recorded, in one
/// transaction; returns the cut-off.
pub fn set_password_recorded(
    conn: &mut PgConnection,
    user_id: Uuid,
    password_hash: &str,
    event: &NewEvent,
) -> QueryResult<DateTime<Utc>> {
    conn.transaction(|conn| {
        let cutoff = set_password_hash(conn, user_id, password_hash)?;
        auth_events::record(conn, event)?;
        Ok(cutoff)
    })
}

/// A user's own password change from one of their sessions: like [`set_password_recorded`], but
/// only while that session is still theirs. The check of the current password ran before (a bcrypt
/// run or two, long enough for anything to happen meanwhile): if the session was ended, or every
/// session of the user was (sign-out everywhere, another password change, a deactivation), the
/// change is refused and `None` returned, so an ended session can neither change the password nor
/// come back as the one the change keeps. The user's row is locked first, then the session's, the
/// order every invalidation takes them in.
pub fn change_own_password(
    conn: &mut PgConnection,
    user_id: Uuid,
    session_id: Uuid,
    password_hash: &str,
    event: &NewEvent,
) -> QueryResult<Option<DateTime<Utc>>> {
    use super::schema::sessions;
    conn.transaction(|conn| {
        let user =
            users::table.find(user_id).select(users::is_active).for_no_key_update().first::<bool>(conn).optional()?;
        if user != Some(true) {
            return Ok(None);
        }
        let session = sessions::table
            .filter(sessions::id.eq(session_id))
            .filter(sessions::user_id.eq(user_id))
            .select(sessions::id)
            .for_update()
            .first::<Uuid>(conn)
            .optional()?;
        if session.is_none() {
            return Ok(None);
        }
        set_password_recorded(conn, user_id, password_hash, event).map(Some)
    })
}

/// Sign out everywhere: every token and session of the user ended and `event` recorded, in one
/// transaction; returns the cut-off.
pub fn sign_out_everywhere(conn: &mut PgConnection, user_id: Uuid, event: &NewEvent) -> QueryResult<DateTime<Utc>> {
    conn.transaction(|conn| {
        let cutoff = invalidate_credentials(conn, user_id)?;
        auth_events::record(conn, event)?;
        Ok(cutoff)
    })
}

/// Users with their roles, by username: those whose username or email address contains `search`
/// (any case), `limit` at most after skipping `offset`. The trigram indexes of migration 7 find the
/// matches; the page's ids are picked first from the (username_key, id) index, so a deep page skips
/// rows inside the index, and only the page's own users are read and get their roles looked up.
pub fn search(
    conn: &mut PgConnection,
    search: Option<&str>,
    offset: i64,
    limit: Option<i64>,
) -> QueryResult<Vec<(User, Vec<String>)>> {
    if search.is_some_and(|text| !storable(text)) {
        return Ok(Vec::new());
    }
    let mut page = users::table.select(users::id).into_boxed();
    if let Some(search) = search.filter(|text| !text.is_empty()) {
        let pattern = format!("%{}%", escape_like(&search.to_lowercase()));
        page = page.filter(
            lower(users::username)
                .like(pattern.clone())
                .or(diesel::dsl::sql::<Bool>("lower(users.email) LIKE ").bind::<Text, _>(pattern)),
        );
    }
    let page = page.order((users::username_key, users::id)).offset(offset);
    let page = match limit {
        Some(limit) => page.limit(limit),
        None => page,
    };
    users::table
        .filter(users::id.eq_any(page))
        .select((User::as_select(), user_role_names(users::id)))
        .order((users::username_key, users::id))
        .load(conn)
}

/// `text` matched literally by LIKE: its wildcards and the escape character escaped.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_wildcards_in_a_search_match_only_themselves() {
        assert_eq!(super::escape_like(r"50%_off\"), r"50\%\_off\\");
    }
}
