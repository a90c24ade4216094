//! The `refresh_families`, `refresh_tokens` and `revoked_access_tokens` tables.
//!
//! A password grant begins a family; every refresh rotates its token within the family. The family
//! row is the unit of revocation, and every rule that two requests could break together locks it:
//! rotation, revocation and reuse detection serialize on it, so a revoked family never keeps a
//! child that a concurrent refresh was creating.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::auth_events::{self, NewEvent};
use super::schema::{refresh_families, refresh_tokens, revoked_access_tokens, users};
use crate::domain::rules::{FamilyState, PresentedToken, RotationDecision, decide_rotation};
use crate::domain::{EventKind, ScopeSet};

/// SHA-256 of the token. The token has 256 bits of entropy, so a fast hash is enough: there is
/// nothing to brute-force, and lookups stay a single index probe.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = refresh_families, check_for_backend(diesel::pg::Pg))]
pub struct Family {
    pub id: Uuid,
    pub user_id: Uuid,
    pub scope: ScopeSet,
    pub auth_time: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub client_addr: Option<String>,
    /// PostgreSQL arrays may hold NULLs in general; this one never does (nothing writes one).
    pub amr: Vec<Option<String>>,
    /// The registered client the family was issued to (`None`: no registered client).
    pub client_id: Option<String>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = refresh_tokens, check_for_backend(diesel::pg::Pg))]
struct StoredToken {
    id: Uuid,
    scope: ScopeSet,
    expires_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
}

/// Who a grant is for and what they get: the answer of a transaction that issued tokens.
#[derive(Debug, Clone)]
pub struct Grantee {
    pub user_id: Uuid,
    pub family_id: Uuid,
    pub client_id: Option<String>,
    pub username: String,
    /// For OpenID Connect's claims (ID token, userinfo).
    pub full_name: Option<String>,
    pub email: Option<String>,
    pub email_verified: bool,
    pub roles: Vec<String>,
    pub scopes: ScopeSet,
    /// The access token's issue time, by the database's clock.
    pub issued_at: DateTime<Utc>,
    /// When and how the person signed in (a refresh keeps both).
    pub auth_time: DateTime<Utc>,
    pub amr: Vec<String>,
}

/// A refresh token about to be stored.
pub struct NewToken<'a> {
    pub hash: &'a [u8],
    /// When it expires if used not at all (clamped to the family's end).
    pub expires_at: DateTime<Utc>,
}

/// A family about to begin (a password grant, an authorization code, a device code).
pub struct FamilyStart<'a> {
    /// The family's id, chosen by the caller (a code exchange records it with the code's spending).
    pub family_id: Uuid,
    pub user_id: Uuid,
    /// When the credential check began: nothing is stored if the user's credentials were
    /// invalidated since.
    pub auth_time: DateTime<Utc>,
    /// The access token's issue time: the check's start for a password grant (its answer follows at
    /// once), the exchange for a code signed in earlier.
    pub issued_at: DateTime<Utc>,
    /// The registered client the tokens are for.
    pub client_id: Option<&'a str>,
    /// Empty: every scope the user's roles allow.
    pub requested: &'a ScopeSet,
    pub token: NewToken<'a>,
    pub family_expires_at: DateTime<Utc>,
    pub client_addr: Option<&'a str>,
    /// How the person signed in (RFC 8176 methods).
    pub amr: &'a [String],
    /// The person's stored consent to `client_id` must still cover the scopes (a code for a
    /// third-party app: a Disconnect since its consent was read ends it here).
    pub consent_required: bool,
}

#[derive(Debug)]
pub enum Start<S> {
    /// Stored, and signed by the caller's `sign` before the transaction committed.
    Issued(S),
    /// A password change, deactivation or sign-out-everywhere happened after the check began.
    Invalidated,
    ScopeNotAllowed(ScopeSet),
}

/// Why a transaction that issues tokens failed. Either way it rolled back: nothing is stored
/// unless the answer that reports it can be sent.
#[derive(Debug, thiserror::Error)]
pub enum IssueFailure {
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    #[error("cannot sign the access token")]
    Sign(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<IssueFailure> for crate::errors::ServerError {
    fn from(failure: IssueFailure) -> Self {
        match failure {
            IssueFailure::Query(err) => err.into(),
            IssueFailure::Sign(err) => crate::errors::ServerError::Internal(err.into()),
        }
    }
}

/// Signs the access token of a grant inside the transaction that stores it.
pub type Signer<'a, S> = Box<dyn FnOnce(&Grantee) -> Result<S, IssueFailure> + 'a>;

/// A signed answer names its access token (id and expiry), which is stored beside the refresh
/// token issued with it: everything a family issued can then be refused at once.
pub trait IssuedAccess {
    fn access_token(&self) -> Option<(Uuid, DateTime<Utc>)>;
}

/// Nothing signed (the tests of the transactions themselves).
impl IssuedAccess for () {
    fn access_token(&self) -> Option<(Uuid, DateTime<Utc>)> {
        None
    }
}

#[derive(QueryableByName)]
struct LockedUser {
    #[diesel(sql_type = diesel::sql_types::Text)]
    username: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    full_name: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    email: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    email_verified: bool,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    is_active: bool,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    tokens_valid_after: DateTime<Utc>,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    now: DateTime<Utc>,
}

/// Locks the user's row against invalidation (which updates it) until the transaction ends, and
/// reads the database's clock once the lock is held. What the user's roles allow is read by the
/// next statement ([`super::users::roles_and_allowed_scopes`]), never by this one: a statement's
/// snapshot is taken before it waits for the lock, so a role change committed while it waited
/// would be missed.
fn lock_user(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<Option<LockedUser>> {
    diesel::sql_query(
        "SELECT username, full_name, email, email_verified, is_active, tokens_valid_after, clock_timestamp() AS now \
         FROM users WHERE id = $1 FOR SHARE",
    )
    .bind::<diesel::sql_types::Uuid, _>(user_id)
    .get_result(conn)
    .optional()
}

/// Begins a family for a password grant, re-checking under the user's row lock that nothing
/// invalidated the user's credentials since the check began, and records `event`. `sign` makes
/// the answer before the transaction commits: if it fails, nothing was stored.
pub fn start_family<S: IssuedAccess>(
    conn: &mut PgConnection,
    start: &FamilyStart<'_>,
    event: NewEvent,
    sign: Signer<'_, S>,
) -> Result<Start<S>, IssueFailure> {
    conn.transaction(|conn| start_family_in_transaction(conn, start, event, sign))
}

/// [`start_family`] inside the caller's transaction (a code exchange, a device's delivery): the
/// same work without a savepoint, two round trips fewer. It writes nothing before it knows it issues.
pub fn start_family_in_transaction<S: IssuedAccess>(
    conn: &mut PgConnection,
    start: &FamilyStart<'_>,
    event: NewEvent,
    sign: Signer<'_, S>,
) -> Result<Start<S>, IssueFailure> {
    let Some(user) = lock_user(conn, start.user_id)? else { return Ok(Start::Invalidated) };
    if !user.is_active || start.auth_time < user.tokens_valid_after {
        return Ok(Start::Invalidated);
    }
    if let (true, Some(client_id)) = (start.consent_required, start.client_id)
        && !super::authorizations::consent_covers(conn, start.user_id, client_id, start.requested)?
    {
        return Ok(Start::Invalidated);
    }
    let (roles, allowed) = super::users::roles_and_allowed_scopes(conn, start.user_id)?;
    let scopes = if start.requested.is_empty() { allowed.clone() } else { start.requested.clone() };
    if !scopes.is_subset(&allowed) {
        return Ok(Start::ScopeNotAllowed(scopes.difference(&allowed)));
    }
    let grantee = Grantee {
        user_id: start.user_id,
        family_id: start.family_id,
        client_id: start.client_id.map(str::to_owned),
        username: user.username,
        full_name: user.full_name,
        email: user.email,
        email_verified: user.email_verified,
        roles,
        scopes,
        issued_at: start.issued_at,
        auth_time: start.auth_time,
        amr: start.amr.to_vec(),
    };
    let signed = sign(&grantee)?;
    let event = event.user(start.user_id).detail(grantee.scopes.to_string());
    insert_family(conn, start, &grantee.scopes, signed.access_token(), &event)?;
    Ok(Start::Issued(signed))
}

/// A new family, its first refresh token and the audit event, in one statement (three would be two
/// round trips more for every token issued). The token's reference to the family is checked at the
/// statement's end, when the family is there.
fn insert_family(
    conn: &mut PgConnection,
    start: &FamilyStart<'_>,
    scopes: &ScopeSet,
    access: Option<(Uuid, DateTime<Utc>)>,
    event: &NewEvent,
) -> QueryResult<()> {
    use diesel::sql_types::{Array, Bytea, Nullable, Text, Timestamptz, Uuid as SqlUuid};
    let statement = format!(
        "WITH family AS ( \
             INSERT INTO refresh_families (id, user_id, scope, auth_time, expires_at, client_addr, amr, client_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)), \
         token AS ( \
             INSERT INTO refresh_tokens (id, family_id, token_hash, scope, expires_at, access_jti, access_expires_at) \
             VALUES ($9, $1, $10, $3, $11, $12, $13)) \
         INSERT INTO auth_events ({}) VALUES ($14, $15, $16, $17, $18, $19, $20, $21, $22)",
        auth_events::EVENT_COLUMNS
    );
    let query = diesel::sql_query(statement)
        .into_boxed()
        .bind::<SqlUuid, _>(start.family_id)
        .bind::<SqlUuid, _>(start.user_id)
        .bind::<Text, _>(scopes)
        .bind::<Timestamptz, _>(start.auth_time)
        .bind::<Timestamptz, _>(start.family_expires_at)
        .bind::<Nullable<Text>, _>(start.client_addr)
        .bind::<Array<Text>, _>(start.amr)
        .bind::<Nullable<Text>, _>(start.client_id)
        .bind::<SqlUuid, _>(Uuid::now_v7())
        .bind::<Bytea, _>(start.token.hash)
        .bind::<Timestamptz, _>(start.token.expires_at.min(start.family_expires_at))
        .bind::<Nullable<SqlUuid>, _>(access.map(|(jti, _)| jti))
        .bind::<Nullable<Timestamptz>, _>(access.map(|(_, expires_at)| expires_at));
    auth_events::bind_event(query, event).execute(conn).map(|_| ())
}

fn insert_token(
    conn: &mut PgConnection,
    family_id: Uuid,
    scopes: &ScopeSet,
    token: &NewToken<'_>,
    family_expires_at: DateTime<Utc>,
    access: Option<(Uuid, DateTime<Utc>)>,
) -> QueryResult<()> {
    diesel::insert_into(refresh_tokens::table)
        .values((
            refresh_tokens::id.eq(Uuid::now_v7()),
            refresh_tokens::family_id.eq(family_id),
            refresh_tokens::token_hash.eq(token.hash),
            refresh_tokens::scope.eq(scopes),
            refresh_tokens::expires_at.eq(token.expires_at.min(family_expires_at)),
            refresh_tokens::access_jti.eq(access.map(|(jti, _)| jti)),
            refresh_tokens::access_expires_at.eq(access.map(|(_, expires_at)| expires_at)),
        ))
        .execute(conn)
        .map(|_| ())
}

/// The outcome of presenting a refresh token.
#[derive(Debug)]
pub enum Rotation<S> {
    /// Rotated, and signed by the caller's `sign` before the transaction committed.
    Rotated(S),
    /// The token was already used: it leaked, or the client is confused. The family is revoked now.
    Reused { user_id: Uuid, family_id: Uuid },
    /// Unknown, expired, revoked, or its user deactivated or signed out since.
    Refused,
    /// The request asked for scopes the family never had.
    ScopeWidened(ScopeSet),
}

/// RFC 6749 §6: exchanges the token whose hash is `presented` for `new_token`, in one transaction
/// that holds the family's row lock: loads the rows, lets [`decide_rotation`] rule, writes what it
/// decided. `requested`: narrower scopes, or `None` for the token's own. Records a `refresh` (or
/// `reuse_detected`) event built from `event`. `sign` makes the answer before the transaction
/// commits: if it fails, the presented token is still unused and the client may retry.
// The transaction's inputs are separate values the callers already hold; a struct would only wrap them.
#[allow(clippy::too_many_arguments)]
pub fn rotate<S: IssuedAccess>(
    conn: &mut PgConnection,
    presented: &[u8],
    client_id: Option<&str>,
    requested: Option<&ScopeSet>,
    new_token: &NewToken<'_>,
    now: DateTime<Utc>,
    event: NewEvent,
    sign: Signer<'_, S>,
) -> Result<Rotation<S>, IssueFailure> {
    conn.transaction(|conn| {
        let Some((family_id, user_id)) = family_of(conn, presented)? else { return Ok(Rotation::Refused) };
        // Locks in the order invalidation takes them (user, then family), so the two never deadlock.
        let Some(user) = lock_user(conn, user_id)? else { return Ok(Rotation::Refused) };
        let family = lock_family(conn, family_id)?;
        // Read again under the family's lock: every rotation of this family is serialized here.
        let Some(stored) = find_token(conn, presented)? else { return Ok(Rotation::Refused) };
        // RFC 6749 §6: a token issued to a client is refreshed by that client only (a confidential
        // one has authenticated by now); one issued to no registered client, by anyone.
        if family.client_id.as_deref().is_some_and(|owner| client_id != Some(owner)) {
            return Ok(Rotation::Refused);
        }
        let (roles, allowed) = super::users::roles_and_allowed_scopes(conn, family.user_id)?;
        let token =
            PresentedToken { scope: &stored.scope, expires_at: stored.expires_at, used: stored.used_at.is_some() };
        let state = FamilyState {
            revoked: family.revoked_at.is_some(),
            expires_at: family.expires_at,
            auth_time: family.auth_time,
            user_active: user.is_active,
            tokens_valid_after: user.tokens_valid_after,
        };
        let scopes = match decide_rotation(&token, &state, requested, &allowed, now) {
            RotationDecision::Refuse => return Ok(Rotation::Refused),
            RotationDecision::Widened(extra) => return Ok(Rotation::ScopeWidened(extra)),
            RotationDecision::Reuse => {
                revoke_locked_family(conn, family.id, now)?;
                let reuse = NewEvent { kind: EventKind::ReuseDetected, ..event };
                auth_events::record(conn, &reuse.user(family.user_id).detail(format!("family {} revoked", family.id)))?;
                return Ok(Rotation::Reused { user_id: family.user_id, family_id: family.id });
            }
            RotationDecision::Rotate(scopes) => scopes,
        };
        diesel::update(refresh_tokens::table.find(stored.id)).set(refresh_tokens::used_at.eq(now)).execute(conn)?;
        diesel::update(refresh_families::table.find(family.id))
            .set((refresh_families::last_used_at.eq(now), refresh_families::scope.eq(&scopes)))
            .execute(conn)?;
        let refreshed = event.user(family.user_id).attempted(&user.username).detail(scopes.to_string());
        auth_events::record(conn, &refreshed)?;
        let grantee = Grantee {
            user_id: family.user_id,
            family_id: family.id,
            client_id: family.client_id,
            username: user.username,
            full_name: user.full_name,
            email: user.email,
            email_verified: user.email_verified,
            roles,
            scopes,
            issued_at: user.now,
            auth_time: family.auth_time,
            amr: family.amr.into_iter().flatten().collect(),
        };
        let family_expires_at = family.expires_at;
        let signed = sign(&grantee)?;
        insert_token(conn, family.id, &grantee.scopes, new_token, family_expires_at, signed.access_token())?;
        Ok(Rotation::Rotated(signed))
    })
}

/// The family and user of the token with this hash (read without a lock).
fn family_of(conn: &mut PgConnection, hash: &[u8]) -> QueryResult<Option<(Uuid, Uuid)>> {
    refresh_tokens::table
        .inner_join(refresh_families::table)
        .filter(refresh_tokens::token_hash.eq(hash))
        .select((refresh_tokens::family_id, refresh_families::user_id))
        .first(conn)
        .optional()
}

fn find_token(conn: &mut PgConnection, hash: &[u8]) -> QueryResult<Option<StoredToken>> {
    refresh_tokens::table
        .filter(refresh_tokens::token_hash.eq(hash))
        .select(StoredToken::as_select())
        .first(conn)
        .optional()
}

pub(super) fn lock_family(conn: &mut PgConnection, family_id: Uuid) -> QueryResult<Family> {
    refresh_families::table.find(family_id).select(Family::as_select()).for_no_key_update().first(conn)
}

pub(super) fn revoke_locked_family(conn: &mut PgConnection, family_id: Uuid, now: DateTime<Utc>) -> QueryResult<()> {
    diesel::update(refresh_families::table.find(family_id).filter(refresh_families::revoked_at.is_null()))
        .set(refresh_families::revoked_at.eq(now))
        .execute(conn)
        .map(|_| ())
}

/// Refuses every access token issued in the family that has not expired yet (their ids are on the
/// family's refresh tokens).
pub fn revoke_access_tokens_of_family(
    conn: &mut PgConnection,
    family_id: Uuid,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> QueryResult<usize> {
    diesel::sql_query(
        "INSERT INTO revoked_access_tokens (jti, user_id, expires_at) \
         SELECT access_jti, $2, access_expires_at FROM refresh_tokens \
         WHERE family_id = $1 AND access_jti IS NOT NULL AND access_expires_at > $3 \
         ON CONFLICT DO NOTHING",
    )
    .bind::<diesel::sql_types::Uuid, _>(family_id)
    .bind::<diesel::sql_types::Uuid, _>(user_id)
    .bind::<diesel::sql_types::Timestamptz, _>(now)
    .execute(conn)
}

/// RFC 7009 for a refresh token: ends the family of the token whose hash is `presented` (waiting
/// for a rotation in progress to finish, whose child then ends too). Returns the family's user and
/// id, or `None` when no such token exists.
pub fn revoke_family_of(
    conn: &mut PgConnection,
    presented: &[u8],
    now: DateTime<Utc>,
) -> QueryResult<Option<(Uuid, Uuid)>> {
    conn.transaction(|conn| {
        let Some((family_id, _)) = family_of(conn, presented)? else { return Ok(None) };
        let family = lock_family(conn, family_id)?;
        revoke_locked_family(conn, family.id, now)?;
        Ok(Some((family.user_id, family.id)))
    })
}

/// The user's families that can still be refreshed (not revoked, not past their maximum age), newest first.
pub fn live_families_of_user(conn: &mut PgConnection, user_id: Uuid, now: DateTime<Utc>) -> QueryResult<Vec<Family>> {
    refresh_families::table
        .filter(refresh_families::user_id.eq(user_id))
        .filter(refresh_families::revoked_at.is_null())
        .filter(refresh_families::expires_at.gt(now))
        .select(Family::as_select())
        .order(refresh_families::created_at.desc())
        .load(conn)
}

/// Ends the user's family with this id under the family's lock (a refresh in progress finishes
/// first, and its child ends with the family), taking the user's row first like every family lock
/// does, and records `event`; false when the user has no such live family.
pub fn revoke_family_of_user(
    conn: &mut PgConnection,
    user_id: Uuid,
    family_id: Uuid,
    now: DateTime<Utc>,
    event: &NewEvent,
) -> QueryResult<bool> {
    conn.transaction(|conn| {
        if lock_user(conn, user_id)?.is_none() {
            return Ok(false);
        }
        let family = refresh_families::table
            .find(family_id)
            .filter(refresh_families::user_id.eq(user_id))
            .select(Family::as_select())
            .for_no_key_update()
            .first(conn)
            .optional()?;
        let Some(family) = family.filter(|family| family.revoked_at.is_none()) else { return Ok(false) };
        revoke_locked_family(conn, family.id, now)?;
        auth_events::record(conn, event)?;
        Ok(true)
    })
}

/// Ends every family of the user (their row lock is taken family by family).
pub fn revoke_all_of_user(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<usize> {
    diesel::update(
        refresh_families::table
            .filter(refresh_families::user_id.eq(user_id))
            .filter(refresh_families::revoked_at.is_null()),
    )
    .set(refresh_families::revoked_at.eq(diesel::dsl::now))
    .execute(conn)
}

/// Refresh tokens that could still be exchanged: neither used nor expired, in a live family.
pub fn outstanding_count(conn: &mut PgConnection, now: DateTime<Utc>) -> QueryResult<i64> {
    refresh_tokens::table
        .inner_join(refresh_families::table)
        .filter(refresh_tokens::used_at.is_null())
        .filter(refresh_tokens::expires_at.gt(now))
        .filter(refresh_families::revoked_at.is_null())
        .filter(refresh_families::expires_at.gt(now))
        .count()
        .get_result(conn)
}

/// Refuses the access token with this `jti` until it would have expired anyway. False when its
/// user does not exist (nothing to revoke).
pub fn revoke_access_token(
    conn: &mut PgConnection,
    jti: Uuid,
    user_id: Uuid,
    expires_at: DateTime<Utc>,
) -> QueryResult<bool> {
    let exists: bool = diesel::select(diesel::dsl::exists(users::table.find(user_id))).get_result(conn)?;
    if !exists {
        return Ok(false);
    }
    diesel::insert_into(revoked_access_tokens::table)
        .values((
            revoked_access_tokens::jti.eq(jti),
            revoked_access_tokens::user_id.eq(user_id),
            revoked_access_tokens::expires_at.eq(expires_at),
        ))
        .on_conflict_do_nothing()
        .execute(conn)?;
    Ok(true)
}

/// Deletes rows that can no longer matter: used or expired tokens of families that ended, expired
/// families, expired revocations.
pub fn purge_expired(conn: &mut PgConnection, now: DateTime<Utc>) -> QueryResult<usize> {
    let families = diesel::delete(refresh_families::table.filter(
        refresh_families::expires_at.lt(now).or(refresh_families::id.ne_all(
            refresh_tokens::table.filter(refresh_tokens::expires_at.ge(now)).select(refresh_tokens::family_id),
        )),
    ))
    .execute(conn)?;
    let tokens = diesel::delete(refresh_tokens::table.filter(refresh_tokens::expires_at.lt(now))).execute(conn)?;
    let revoked =
        diesel::delete(revoked_access_tokens::table.filter(revoked_access_tokens::expires_at.lt(now))).execute(conn)?;
    Ok(families + tokens + revoked)
}

/// A refresh token as RFC 7662 introspection describes it.
#[derive(Debug, Clone, Queryable)]
pub struct LiveRefreshToken {
    pub scope: ScopeSet,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub user_id: Uuid,
    pub username: String,
}

/// The token whose hash is `presented`, if it could be exchanged at `now`: unused, unexpired, in a
/// live family that no invalidation ended, of an active user.
pub fn live(conn: &mut PgConnection, presented: &[u8], now: DateTime<Utc>) -> QueryResult<Option<LiveRefreshToken>> {
    refresh_tokens::table
        .inner_join(refresh_families::table.inner_join(users::table))
        .filter(refresh_tokens::token_hash.eq(presented))
        .filter(refresh_tokens::used_at.is_null())
        .filter(refresh_tokens::expires_at.gt(now))
        .filter(refresh_families::revoked_at.is_null())
        .filter(refresh_families::expires_at.gt(now))
        .filter(users::is_active.eq(true))
        .filter(refresh_families::auth_time.ge(users::tokens_valid_after))
        .select((
            refresh_tokens::scope,
            refresh_tokens::issued_at,
            refresh_tokens::expires_at,
            users::id,
            users::username,
        ))
        .first(conn)
        .optional()
}
