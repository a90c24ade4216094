//! The `signing_keys` table: every instance's signing and verification keys.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use super::schema::signing_keys;

/// A stored key. `private_key` is encrypted; only `auth::keys` can read it.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = signing_keys, check_for_backend(diesel::pg::Pg))]
pub struct StoredKey {
    pub kid: String,
    pub alg: String,
    pub public_jwk: Option<serde_json::Value>,
    pub private_key: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
    pub activates_at: DateTime<Utc>,
    /// `access` or `id_token` (`auth::keys::KeyPurpose`).
    pub purpose: String,
}

/// Every key, oldest activation first.
pub fn all(conn: &mut PgConnection) -> QueryResult<Vec<StoredKey>> {
    signing_keys::table.select(StoredKey::as_select()).order((signing_keys::activates_at, signing_keys::kid)).load(conn)
}

/// Stores a key. A kid that exists already is the same key made again, which only an HS256 secret
/// can be (its kid is the secret's thumbprint): switching back to it before its old row was deleted
/// moves that row's activation to the new one, so it signs again.
pub fn insert(conn: &mut PgConnection, key: &StoredKey) -> QueryResult<()> {
    diesel::insert_into(signing_keys::table)
        .values(key)
        .on_conflict(signing_keys::kid)
        .do_update()
        .set(signing_keys::activates_at.eq(key.activates_at))
        .execute(conn)
        .map(|_| ())
}

/// Replaces a key's encrypted private part (re-encryption under a new master secret).
pub fn set_private_key(conn: &mut PgConnection, kid: &str, private_key: &[u8]) -> QueryResult<()> {
    diesel::update(signing_keys::table.find(kid))
        .set(signing_keys::private_key.eq(private_key))
        .execute(conn)
        .map(|_| ())
}

pub fn delete(conn: &mut PgConnection, kids: &[String]) -> QueryResult<usize> {
    diesel::delete(signing_keys::table.filter(signing_keys::kid.eq_any(kids))).execute(conn)
}
