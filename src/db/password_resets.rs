//! The `password_reset_tokens` table: links mailed to people who forgot their password. Stored as
//! SHA-256 only; 30 minutes; single use, also under races (using one is one conditional UPDATE).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::schema::{password_reset_tokens, users};

/// Locks the user's row until the transaction ends, so that requests for the same account (on any
/// instance) count its recent mails one at a time.
pub fn lock_user(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<()> {
    users::table.find(user_id).select(users::id).for_no_key_update().first::<Uuid>(conn).optional().map(|_| ())
}

/// Stores a new link for `user_id`, killing every older unused one (a newer request wins).
pub fn issue(conn: &mut PgConnection, user_id: Uuid, token_hash: &[u8], expires_at: DateTime<Utc>) -> QueryResult<()> {
    diesel::delete(
        password_reset_tokens::table
            .filter(password_reset_tokens::user_id.eq(user_id))
            .filter(password_reset_tokens::used_at.is_null()),
    )
    .execute(conn)?;
    diesel::insert_into(password_reset_tokens::table)
        .values((
            password_reset_tokens::token_hash.eq(token_hash),
            password_reset_tokens::user_id.eq(user_id),
            password_reset_tokens::expires_at.eq(expires_at),
        ))
        .execute(conn)
        .map(|_| ())
}

/// The user a live link belongs to, without using it (a mail scanner opening the link spends
/// nothing). Live: unused, unexpired, made after the user's latest cut-off (any password change kills
/// older links), its user active.
pub fn live_user(conn: &mut PgConnection, token_hash: &[u8], now: DateTime<Utc>) -> QueryResult<Option<Uuid>> {
    password_reset_tokens::table
        .inner_join(users::table)
        .filter(password_reset_tokens::token_hash.eq(token_hash))
        .filter(password_reset_tokens::used_at.is_null())
        .filter(password_reset_tokens::expires_at.gt(now))
        .filter(password_reset_tokens::created_at.ge(users::tokens_valid_after))
        .filter(users::is_active.eq(true))
        .select(users::id)
        .first(conn)
        .optional()
}

/// Uses the link: one conditional UPDATE, so of racing requests (on any instance) one gets the user.
/// `None` when it is unknown, used, expired, older than the user's cut-off, or the user is inactive.
pub fn consume(conn: &mut PgConnection, token_hash: &[u8], now: DateTime<Utc>) -> QueryResult<Option<Uuid>> {
    diesel::sql_query(
        "UPDATE password_reset_tokens t SET used_at = $2 FROM users u \
         WHERE t.token_hash = $1 AND t.used_at IS NULL AND t.expires_at > $2 AND u.id = t.user_id \
           AND t.created_at >= u.tokens_valid_after AND u.is_active \
         RETURNING t.user_id",
    )
    .bind::<diesel::sql_types::Bytea, _>(token_hash)
    .bind::<diesel::sql_types::Timestamptz, _>(now)
    .get_result::<UserId>(conn)
    .optional()
    .map(|found| found.map(|row| row.user_id))
}

#[derive(QueryableByName)]
struct UserId {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    user_id: Uuid,
}

/// Deletes links that can no longer be used.
pub fn purge_expired(conn: &mut PgConnection, now: DateTime<Utc>) -> QueryResult<usize> {
    diesel::delete(password_reset_tokens::table.filter(password_reset_tokens::expires_at.le(now))).execute(conn)
}
