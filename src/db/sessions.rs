//! The `sessions` table behind signed-in browser sessions (anonymous visitors have no row).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::auth_events::{self, NewEvent};
use super::schema::sessions;

/// `least(expires_at, absolute_expires_at)`: the idle timeout never outlives the absolute one.
macro_rules! capped {
    ($expires_at:expr) => {
        diesel::dsl::sql::<diesel::sql_types::Timestamptz>("least(")
            .bind::<diesel::sql_types::Timestamptz, _>($expires_at)
            .sql(", absolute_expires_at)")
    };
}

#[derive(Insertable)]
#[diesel(table_name = sessions)]
pub struct NewSession<'a> {
    pub id: Uuid,
    pub key_hash: &'a [u8],
    pub user_id: Uuid,
    pub state: serde_json::Value,
    pub expires_at: DateTime<Utc>,
    pub absolute_expires_at: DateTime<Utc>,
    pub client_addr: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

/// A session as its owner sees it on their account page.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = sessions, check_for_backend(diesel::pg::Pg))]
pub struct SessionInfo {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub client_addr: Option<String>,
    pub user_agent: Option<String>,
}

/// A live session's state and user (neither idle-expired nor past its absolute lifetime), its idle
/// expiry pushed to `expires_at` (never past the absolute one) in the same statement: every request
/// that brings the session is activity, and one round trip instead of a read now and a touch after
/// the response.
pub fn load_live_and_touch(
    conn: &mut PgConnection,
    key_hash: &[u8],
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> QueryResult<Option<(serde_json::Value, Uuid)>> {
    diesel::update(
        sessions::table
            .find(key_hash)
            .filter(sessions::expires_at.gt(now))
            .filter(sessions::absolute_expires_at.gt(now)),
    )
    .set((sessions::expires_at.eq(capped!(expires_at)), sessions::last_seen_at.eq(now)))
    .returning((sessions::state, sessions::user_id))
    .get_result(conn)
    .optional()
}

pub fn insert(conn: &mut PgConnection, session: &NewSession<'_>) -> QueryResult<()> {
    diesel::insert_into(sessions::table).values(session).execute(conn).map(|_| ())
}

/// Stores new state and pushes the idle expiry (never past the absolute one); false when the
/// session no longer exists (it was ended meanwhile).
pub fn update_state(
    conn: &mut PgConnection,
    key_hash: &[u8],
    state: serde_json::Value,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> QueryResult<bool> {
    diesel::update(sessions::table.find(key_hash))
        .set((sessions::state.eq(state), sessions::expires_at.eq(capped!(expires_at)), sessions::last_seen_at.eq(now)))
        .execute(conn)
        .map(|rows| rows == 1)
}

pub fn delete(conn: &mut PgConnection, key_hash: &[u8]) -> QueryResult<()> {
    diesel::delete(sessions::table.find(key_hash)).execute(conn).map(|_| ())
}

/// The user's live sessions, the most recently used first.
pub fn live_of_user(conn: &mut PgConnection, user_id: Uuid, now: DateTime<Utc>) -> QueryResult<Vec<SessionInfo>> {
    sessions::table
        .filter(sessions::user_id.eq(user_id))
        .filter(sessions::expires_at.gt(now))
        .filter(sessions::absolute_expires_at.gt(now))
        .select(SessionInfo::as_select())
        .order(sessions::last_seen_at.desc())
        .load(conn)
}

/// Ends the user's session with this public id (its row goes, so it ends at once on every
/// instance) and records `event`; false when the user has no such session.
pub fn end_of_user(conn: &mut PgConnection, user_id: Uuid, session_id: Uuid, event: &NewEvent) -> QueryResult<bool> {
    conn.transaction(|conn| {
        let ended =
            diesel::delete(sessions::table.filter(sessions::id.eq(session_id)).filter(sessions::user_id.eq(user_id)))
                .execute(conn)?;
        if ended == 0 {
            return Ok(false);
        }
        auth_events::record(conn, event)?;
        Ok(true)
    })
}

/// Ends every session of the user (sign out everywhere, password change, deactivation).
pub fn delete_all_of_user(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<usize> {
    diesel::delete(sessions::table.filter(sessions::user_id.eq(user_id))).execute(conn)
}

pub fn purge_expired(conn: &mut PgConnection, now: DateTime<Utc>) -> QueryResult<usize> {
    diesel::delete(sessions::table.filter(sessions::expires_at.le(now).or(sessions::absolute_expires_at.le(now))))
        .execute(conn)
}

/// Signed-in sessions that are still live.
pub fn active_count(conn: &mut PgConnection, now: DateTime<Utc>) -> QueryResult<i64> {
    sessions::table
        .filter(sessions::expires_at.gt(now))
        .filter(sessions::absolute_expires_at.gt(now))
        .count()
        .get_result(conn)
}
