//! The `email_change_tokens` table: a new email address waiting for the link mailed to it. Stored as
//! SHA-256 only; 24 hours; single use (one conditional UPDATE); a newer change and any cut-off of the
//! user kill older links.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::schema::{email_change_tokens, users};

/// Stores a link that will set `user_id`'s address to `new_email`, killing their older unused ones.
/// The user's row is locked first, so of two changes asked at once the later one's link is the only
/// one left.
pub fn issue(
    conn: &mut PgConnection,
    user_id: Uuid,
    token_hash: &[u8],
    new_email: &str,
    expires_at: DateTime<Utc>,
) -> QueryResult<()> {
    super::password_resets::lock_user(conn, user_id)?;
    kill_unused(conn, user_id)?;
    diesel::insert_into(email_change_tokens::table)
        .values((
            email_change_tokens::token_hash.eq(token_hash),
            email_change_tokens::user_id.eq(user_id),
            email_change_tokens::new_email.eq(new_email),
            email_change_tokens::expires_at.eq(expires_at),
        ))
        .execute(conn)
        .map(|_| ())
}

/// Kills the user's unused links (a newer change, or the address removed).
pub fn kill_unused(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<usize> {
    diesel::delete(
        email_change_tokens::table
            .filter(email_change_tokens::user_id.eq(user_id))
            .filter(email_change_tokens::used_at.is_null()),
    )
    .execute(conn)
}

/// The user and new address of a live link, without using it (`GET` of the link: mail scanners open
/// links). Live: unused, unexpired, made after the user's latest cut-off, its user active.
pub fn live(conn: &mut PgConnection, token_hash: &[u8], now: DateTime<Utc>) -> QueryResult<Option<(Uuid, String)>> {
    email_change_tokens::table
        .inner_join(users::table)
        .filter(email_change_tokens::token_hash.eq(token_hash))
        .filter(email_change_tokens::used_at.is_null())
        .filter(email_change_tokens::expires_at.gt(now))
        .filter(email_change_tokens::created_at.ge(users::tokens_valid_after))
        .filter(users::is_active.eq(true))
        .select((users::id, email_change_tokens::new_email))
        .first(conn)
        .optional()
}

/// Uses the link: one conditional UPDATE (of racing uses, one wins), then the address takes effect,
/// verified. `None` when the link is not live (see [`live`]).
pub fn consume(conn: &mut PgConnection, token_hash: &[u8], now: DateTime<Utc>) -> QueryResult<Option<(Uuid, String)>> {
    let used = diesel::sql_query(
        "UPDATE email_change_tokens t SET used_at = $2 FROM users u \
         WHERE t.token_hash = $1 AND t.used_at IS NULL AND t.expires_at > $2 AND u.id = t.user_id \
           AND t.created_at >= u.tokens_valid_after AND u.is_active \
         RETURNING t.user_id, t.new_email",
    )
    .bind::<diesel::sql_types::Bytea, _>(token_hash)
    .bind::<diesel::sql_types::Timestamptz, _>(now)
    .get_result::<UsedLink>(conn)
    .optional()?;
    let Some(UsedLink { user_id, new_email }) = used else { return Ok(None) };
    diesel::update(users::table.find(user_id))
        .set((users::email.eq(&new_email), users::email_verified.eq(true), users::updated_at.eq(now)))
        .execute(conn)?;
    // Reset links went to the old address: they die with it.
    super::password_resets::kill_unused(conn, user_id)?;
    Ok(Some((user_id, new_email)))
}

#[derive(QueryableByName)]
struct UsedLink {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    user_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Text)]
    new_email: String,
}

/// Deletes links that can no longer be used.
pub fn purge_expired(conn: &mut PgConnection, now: DateTime<Utc>) -> QueryResult<usize> {
    diesel::delete(email_change_tokens::table.filter(email_change_tokens::expires_at.le(now))).execute(conn)
}
