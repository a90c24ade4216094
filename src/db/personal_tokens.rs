//! The `personal_access_tokens` table. The rules are `auth::pat`'s: here rows are loaded under the
//! locks that make those rules hold for racing requests on any instance, and written.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Bool, Bytea, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

use super::auth_events::{self, NewEvent};
use super::schema::personal_access_tokens;
use super::users::User;
use crate::domain::ScopeSet;

/// A token as its owner and admins see it: never the secret, nor its hash.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = personal_access_tokens, check_for_backend(diesel::pg::Pg))]
pub struct PersonalToken {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub scope: ScopeSet,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub last_used_address: Option<String>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Insertable)]
#[diesel(table_name = personal_access_tokens)]
pub struct NewPersonalToken<'a> {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: &'a str,
    pub token_hash: &'a [u8],
    pub scope: &'a ScopeSet,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A token's owner as a new token needs them, read under their row's lock.
#[derive(Debug, QueryableByName)]
pub struct LockedOwner {
    #[diesel(sql_type = Bool)]
    pub is_active: bool,
    #[diesel(sql_type = Timestamptz)]
    pub tokens_valid_after: DateTime<Utc>,
    /// The database's clock once the lock is held: the clock every cut-off is read from, so a new
    /// token is stamped with it.
    #[diesel(sql_type = Timestamptz)]
    pub now: DateTime<Utc>,
}

/// Locks the user's row `FOR SHARE` until the transaction ends: an invalidation (which updates the
/// row) racing a new token either commits first, and is seen here, or waits, and its cut-off comes
/// after the token's `created_at`. `None` when there is no such user.
pub fn lock_owner(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<Option<LockedOwner>> {
    diesel::sql_query(
        "SELECT is_active, tokens_valid_after, clock_timestamp() AS now FROM users WHERE id = $1 FOR SHARE",
    )
    .bind::<SqlUuid, _>(user_id)
    .get_result(conn)
    .optional()
}

/// Stores a new token and records `event` (its detail names the token, never its secret).
pub fn insert(conn: &mut PgConnection, token: &NewPersonalToken<'_>, event: NewEvent) -> QueryResult<PersonalToken> {
    let stored = diesel::insert_into(personal_access_tokens::table)
        .values(token)
        .returning(PersonalToken::as_returning())
        .get_result::<PersonalToken>(conn)?;
    auth_events::record(conn, &event.detail(format!("token {} ({})", stored.id, stored.name)))?;
    Ok(stored)
}

/// The user's tokens that are not revoked, newest first (expired and cut-off ones included until
/// purged: their owner sees why a script stopped working).
pub fn of_user(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<Vec<PersonalToken>> {
    personal_access_tokens::table
        .filter(personal_access_tokens::user_id.eq(user_id))
        .filter(personal_access_tokens::revoked_at.is_null())
        .select(PersonalToken::as_select())
        .order((personal_access_tokens::created_at.desc(), personal_access_tokens::id.desc()))
        .load(conn)
}

/// Revokes the token `id` if it belongs to `owner` (`None`: any owner, the command line) and is not
/// revoked yet, recording `event` for its owner; returns the revoked token, or `None` when there is
/// no such token (another user's id included: that is not found, not forbidden). Every bearer check
/// whose lookup starts after the commit sees the revocation.
pub fn revoke(
    conn: &mut PgConnection,
    id: Uuid,
    owner: Option<Uuid>,
    now: DateTime<Utc>,
    event: NewEvent,
) -> QueryResult<Option<PersonalToken>> {
    conn.transaction(|conn| {
        let live = personal_access_tokens::table
            .filter(personal_access_tokens::id.eq(id))
            .filter(personal_access_tokens::revoked_at.is_null());
        let set = personal_access_tokens::revoked_at.eq(now);
        let revoked: Option<PersonalToken> = match owner {
            Some(owner) => diesel::update(live.filter(personal_access_tokens::user_id.eq(owner)))
                .set(set)
                .returning(PersonalToken::as_returning())
                .get_result(conn)
                .optional()?,
            None => {
                diesel::update(live).set(set).returning(PersonalToken::as_returning()).get_result(conn).optional()?
            }
        };
        if let Some(token) = &revoked {
            auth_events::record(
                conn,
                &event.user(token.user_id).detail(format!("token {} ({})", token.id, token.name)),
            )?;
        }
        Ok(revoked)
    })
}

/// RFC 7009 for a personal access token: revokes the token whose hash is `presented` if it is not
/// revoked yet, recording `event` for its owner. Whoever holds a token may end it (one found in a
/// leak is revoked by whoever found it). `None` when there is no such live token.
pub fn revoke_presented(
    conn: &mut PgConnection,
    presented: &[u8],
    now: DateTime<Utc>,
    event: NewEvent,
) -> QueryResult<Option<PersonalToken>> {
    conn.transaction(|conn| {
        let revoked: Option<PersonalToken> = diesel::update(
            personal_access_tokens::table
                .filter(personal_access_tokens::token_hash.eq(presented))
                .filter(personal_access_tokens::revoked_at.is_null()),
        )
        .set(personal_access_tokens::revoked_at.eq(now))
        .returning(PersonalToken::as_returning())
        .get_result(conn)
        .optional()?;
        if let Some(token) = &revoked {
            auth_events::record(
                conn,
                &event.user(token.user_id).detail(format!("token {} ({})", token.id, token.name)),
            )?;
        }
        Ok(revoked)
    })
}

/// A presented token's row with its owner and the roles they hold now: all a bearer check needs (the
/// scopes those roles allow come from the instance's copy of the role definitions).
#[derive(Debug, Clone)]
pub struct PresentedToken {
    pub id: Uuid,
    pub token_hash: Vec<u8>,
    pub scope: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub user: User,
    pub roles: Vec<String>,
}

/// The token's own columns of [`PresentedTokensQuery`], in its order.
#[derive(Queryable)]
struct TokenColumns {
    id: Uuid,
    token_hash: Vec<u8>,
    scope: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
}

/// The token whose hash is `presented`, whatever its state, with its owner.
pub fn presented(conn: &mut PgConnection, presented: &[u8]) -> QueryResult<Option<PresentedToken>> {
    Ok(presented_many(conn, &[presented.to_vec()])?.into_iter().next().flatten())
}

/// The tokens whose hashes are `hashes` (a bearer batch), each with its owner, in one statement:
/// the answer for each hash, in order (`None`: no such token). A plain read: a revocation counts
/// for every lookup whose statement starts after the revocation committed, and no use of a token
/// takes a lock or writes (row locks would cost a write per request and contend when one script
/// sends many requests with one token).
pub fn presented_many(conn: &mut PgConnection, hashes: &[Vec<u8>]) -> QueryResult<Vec<Option<PresentedToken>>> {
    let found: HashMap<Vec<u8>, PresentedToken> = PresentedTokensQuery { hashes: hashes.to_vec() }
        .load::<(TokenColumns, User, Vec<String>)>(conn)?
        .into_iter()
        .map(|(token, user, roles)| PresentedToken {
            id: token.id,
            token_hash: token.token_hash,
            scope: token.scope,
            created_at: token.created_at,
            expires_at: token.expires_at,
            revoked_at: token.revoked_at,
            last_used_at: token.last_used_at,
            user,
            roles,
        })
        .map(|token| (token.token_hash.clone(), token))
        .collect();
    // One script sending many requests at once puts its token in a batch several times.
    Ok(hashes.iter().map(|hash| found.get(hash).cloned()).collect())
}

/// The statement of [`presented_many`], written by hand for the reason `users::TokenHoldersQuery`
/// is: Diesel keeps a statement with a fixed text prepared, so PostgreSQL plans it once per
/// connection, not once per batch (planning took longer than running it).
struct PresentedTokensQuery {
    hashes: Vec<Vec<u8>>,
}

impl diesel::query_builder::QueryId for PresentedTokensQuery {
    type QueryId = Self;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl diesel::query_builder::Query for PresentedTokensQuery {
    type SqlType = (
        (SqlUuid, Bytea, Text, Timestamptz, Timestamptz, Nullable<Timestamptz>, Nullable<Timestamptz>),
        (SqlUuid, Text, Nullable<Text>, Bool, Nullable<Text>, Bool, Timestamptz, Timestamptz, Nullable<Timestamptz>),
        Array<Text>,
    );
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for PresentedTokensQuery {
    fn walk_ast<'b>(&'b self, mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>) -> QueryResult<()> {
        // The tokens by their unique hashes; then each distinct owner once, by primary key, with their
        // role names, as the access-token lookup reads them (a batch's tokens mostly share an owner:
        // one script, one person). A plain join would read the owner and aggregate their roles once
        // per token, and its generic plan hash-joins a scan of every user.
        out.push_sql(
            "WITH t AS MATERIALIZED ( \
                 SELECT p.id, p.user_id, p.token_hash, p.scope, p.created_at, p.expires_at, p.revoked_at, \
                        p.last_used_at \
                 FROM personal_access_tokens p WHERE p.token_hash = ANY(",
        );
        out.push_bind_param::<Array<Bytea>, _>(&self.hashes)?;
        out.push_sql(
            ")), o AS MATERIALIZED ( \
                 SELECT u.id, u.username, u.email, u.email_verified, u.full_name, u.is_active, \
                        u.tokens_valid_after, u.created_at, u.last_login_at, \
                        coalesce((SELECT array_agg(role_name) FROM user_roles WHERE user_id = u.id), '{}') AS roles \
                 FROM users u WHERE u.id = ANY(ARRAY(SELECT DISTINCT user_id FROM t))) \
             SELECT t.id, t.token_hash, t.scope, t.created_at, t.expires_at, t.revoked_at, t.last_used_at, \
                    o.id, o.username, o.email, o.email_verified, o.full_name, o.is_active, o.tokens_valid_after, \
                    o.created_at, o.last_login_at, o.roles \
             FROM t JOIN o ON o.id = t.user_id",
        );
        Ok(())
    }
}

impl RunQueryDsl<PgConnection> for PresentedTokensQuery {}

/// Writes a use at `now` from `address` unless one was written after `stale_before`: the condition
/// is in the statement, so of racing requests on any number of instances one writes and the others
/// find the fresh value (PostgreSQL re-reads the row after waiting for the writer's lock).
pub fn record_use(
    conn: &mut PgConnection,
    id: Uuid,
    now: DateTime<Utc>,
    address: Option<&str>,
    stale_before: DateTime<Utc>,
) -> QueryResult<bool> {
    let written = diesel::update(personal_access_tokens::table.find(id).filter(
        personal_access_tokens::last_used_at.is_null().or(personal_access_tokens::last_used_at.le(stale_before)),
    ))
    .set((personal_access_tokens::last_used_at.eq(now), personal_access_tokens::last_used_address.eq(address)))
    .execute(conn)?;
    Ok(written > 0)
}

/// How long an expired or revoked token stays listed (so its owner sees why a script stopped)
/// before the purge deletes it.
pub const KEPT_AFTER_END_DAYS: i64 = 30;

/// Deletes tokens that expired or were revoked more than [`KEPT_AFTER_END_DAYS`] before `now`: they
/// can never work again. Returns how many went.
pub fn purge_expired(conn: &mut PgConnection, now: DateTime<Utc>) -> QueryResult<usize> {
    let before = now - chrono::Duration::days(KEPT_AFTER_END_DAYS);
    diesel::delete(
        personal_access_tokens::table
            .filter(personal_access_tokens::expires_at.lt(before).or(personal_access_tokens::revoked_at.lt(before))),
    )
    .execute(conn)
}
