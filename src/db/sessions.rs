//! The `sessions` table behind the browser sessions.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::schema::sessions;

#[derive(Insertable)]
#[diesel(table_name = sessions)]
pub struct NewSession<'a> {
    pub key_hash: &'a [u8],
    pub user_id: Option<Uuid>,
    pub state: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub absolute_expires_at: DateTime<Utc>,
}

/// The state of a live session (neither idle-expired nor past its absolute lifetime).
pub fn load_live(
    conn: &mut PgConnection,
    key_hash: &[u8],
    now: DateTime<Utc>,
) -> QueryResult<Option<serde_json::Value>> {
    sessions::table
        .find(key_hash)
        .filter(sessions::expires_at.gt(now))
        .filter(sessions::absolute_expires_at.gt(now))
        .select(sessions::state)
        .first(conn)
        .optional()
}

pub fn insert(conn: &mut PgConnection, session: &NewSession<'_>) -> QueryResult<()> {
    diesel::insert_into(sessions::table).values(session).execute(conn).map(|_| ())
}

/// Stores new state; false when the session no longer exists (it was ended meanwhile).
pub fn update_state(
    conn: &mut PgConnection,
    key_hash: &[u8],
    user_id: Option<Uuid>,
    state: serde_json::Value,
    expires_at: DateTime<Utc>,
) -> QueryResult<bool> {
    diesel::update(sessions::table.find(key_hash))
        .set((
            sessions::user_id.eq(user_id),
            sessions::state.eq(state),
            sessions::expires_at.eq(diesel::dsl::sql::<diesel::sql_types::Timestamptz>("least(")
                .bind::<diesel::sql_types::Timestamptz, _>(expires_at)
                .sql(", absolute_expires_at)")),
        ))
        .execute(conn)
        .map(|rows| rows == 1)
}

pub fn touch(conn: &mut PgConnection, key_hash: &[u8], expires_at: DateTime<Utc>) -> QueryResult<()> {
    diesel::update(sessions::table.find(key_hash)).set(sessions::expires_at.eq(expires_at)).execute(conn).map(|_| ())
}

pub fn delete(conn: &mut PgConnection, key_hash: &[u8]) -> QueryResult<()> {
    diesel::delete(sessions::table.find(key_hash)).execute(conn).map(|_| ())
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
        .filter(sessions::user_id.is_not_null())
        .filter(sessions::expires_at.gt(now))
        .filter(sessions::absolute_expires_at.gt(now))
        .count()
        .get_result(conn)
}
