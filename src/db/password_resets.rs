//! The `password_reset_tokens` table: links that set a password, mailed to people who forgot theirs
//! (30 minutes) or invited without one (72 hours). Stored as SHA-256 only; single use, also under
//! races (using one is one conditional UPDATE). Using a link proves the address it was mailed to.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::schema::{password_reset_tokens, users};

/// Locks the user's row until the transaction ends, so that requests for the same account (on any
/// instance) count its recent mails one at a time.
pub fn lock_user(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<()> {
    users::table.find(user_id).select(users::id).for_no_key_update().first::<Uuid>(conn).optional().map(|_| ())
}

/// What a link is for: each works only at its own page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPurpose {
    /// "Forgot your password?" (or an admin's "Send a password-reset link").
    Reset,
    /// The first password of a user created without one.
    Invitation,
}

impl LinkPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkPurpose::Reset => "reset",
            LinkPurpose::Invitation => "invitation",
        }
    }
}

/// A link to store: whom it is for, what for, the address it is mailed to, until when.
pub struct NewLink<'a> {
    pub user_id: Uuid,
    pub purpose: LinkPurpose,
    pub token_hash: &'a [u8],
    pub sent_to: &'a str,
    pub expires_at: DateTime<Utc>,
}

/// Stores a new link, killing the user's older unused ones of the same purpose (a newer request
/// wins). A reset request leaves an invitation alone: anyone may ask for a reset link in an invited
/// user's name, and must not be able to void their invitation that way. Whichever link sets the
/// password, the change ends the others (they are older than the cut-off).
pub fn issue(conn: &mut PgConnection, link: &NewLink<'_>) -> QueryResult<()> {
    let user_id = link.user_id;
    diesel::delete(
        password_reset_tokens::table
            .filter(password_reset_tokens::user_id.eq(user_id))
            .filter(password_reset_tokens::purpose.eq(link.purpose.as_str()))
            .filter(password_reset_tokens::used_at.is_null()),
    )
    .execute(conn)?;
    diesel::insert_into(password_reset_tokens::table)
        .values((
            password_reset_tokens::token_hash.eq(link.token_hash),
            password_reset_tokens::user_id.eq(user_id),
            password_reset_tokens::expires_at.eq(link.expires_at),
            password_reset_tokens::purpose.eq(link.purpose.as_str()),
            password_reset_tokens::sent_to.eq(link.sent_to),
        ))
        .execute(conn)
        .map(|_| ())
}

/// The user a live link belongs to, without using it (a mail scanner opening the link spends
/// nothing). Live: unused, unexpired, made after the user's latest cut-off (any password change kills
/// older links), its user active.
pub fn live_user(
    conn: &mut PgConnection,
    purpose: LinkPurpose,
    token_hash: &[u8],
    now: DateTime<Utc>,
) -> QueryResult<Option<Uuid>> {
    password_reset_tokens::table
        .inner_join(users::table)
        .filter(password_reset_tokens::token_hash.eq(token_hash))
        .filter(password_reset_tokens::purpose.eq(purpose.as_str()))
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
/// The address the link was mailed to is proven, if it is still the user's.
pub fn consume(
    conn: &mut PgConnection,
    purpose: LinkPurpose,
    token_hash: &[u8],
    now: DateTime<Utc>,
) -> QueryResult<Option<Uuid>> {
    let used = diesel::sql_query(
        "UPDATE password_reset_tokens t SET used_at = $2 FROM users u \
         WHERE t.token_hash = $1 AND t.purpose = $3 AND t.used_at IS NULL AND t.expires_at > $2 \
           AND u.id = t.user_id AND t.created_at >= u.tokens_valid_after AND u.is_active \
         RETURNING t.user_id, t.sent_to",
    )
    .bind::<diesel::sql_types::Bytea, _>(token_hash)
    .bind::<diesel::sql_types::Timestamptz, _>(now)
    .bind::<diesel::sql_types::Text, _>(purpose.as_str())
    .get_result::<UsedLink>(conn)
    .optional()?;
    let Some(UsedLink { user_id, sent_to }) = used else { return Ok(None) };
    if let Some(address) = sent_to {
        super::users::mark_email_verified(conn, user_id, &address)?;
    }
    Ok(Some(user_id))
}

#[derive(QueryableByName)]
struct UsedLink {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    user_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    sent_to: Option<String>,
}

/// Kills the user's unused links (their address changed: links mailed to the old one must not work).
pub fn kill_unused(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<usize> {
    diesel::delete(
        password_reset_tokens::table
            .filter(password_reset_tokens::user_id.eq(user_id))
            .filter(password_reset_tokens::used_at.is_null()),
    )
    .execute(conn)
}

/// Deletes links that can no longer be used.
pub fn purge_expired(conn: &mut PgConnection, now: DateTime<Utc>) -> QueryResult<usize> {
    diesel::delete(password_reset_tokens::table.filter(password_reset_tokens::expires_at.le(now))).execute(conn)
}
