//! The `passkeys` and `webauthn_ceremonies` tables. The checks are webauthn-rs's
//! (`auth::second_factor::passkey`); here the stored passkeys are read and written, and a ceremony's
//! state is kept until one request takes it: taking deletes it, so a ceremony finishes once, on any
//! instance.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde_json::Value;
use uuid::Uuid;

use super::auth_events::{self, NewEvent};
use super::schema::{passkeys, webauthn_ceremonies};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = passkeys, check_for_backend(diesel::pg::Pg))]
pub struct PasskeyRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub credential_id: Vec<u8>,
    pub name: String,
    /// webauthn-rs's credential (public key, counter): no secret.
    pub passkey: Value,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// The user's passkeys, oldest first.
pub fn of_user(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<Vec<PasskeyRow>> {
    passkeys::table
        .filter(passkeys::user_id.eq(user_id))
        .select(PasskeyRow::as_select())
        .order((passkeys::created_at, passkeys::id))
        .load(conn)
}

pub fn by_credential(conn: &mut PgConnection, credential_id: &[u8]) -> QueryResult<Option<PasskeyRow>> {
    passkeys::table
        .filter(passkeys::credential_id.eq(credential_id))
        .select(PasskeyRow::as_select())
        .first(conn)
        .optional()
}

/// Stores a new passkey and records `event`; `false` (nothing written) when its credential is
/// registered already (to this account or another: a credential belongs to one account), or when
/// the user's credentials were cut off after `confirmed_at` (the password check that allowed it). The
/// user's row is locked `FOR SHARE` first, so a cut-off racing the insert is on one side of it.
pub fn insert(
    conn: &mut PgConnection,
    user_id: Uuid,
    confirmed_at: DateTime<Utc>,
    credential_id: &[u8],
    name: &str,
    passkey: &Value,
    event: &NewEvent,
) -> QueryResult<bool> {
    use super::schema::users;
    conn.transaction(|conn| {
        let cutoff: Option<(bool, DateTime<Utc>)> = users::table
            .find(user_id)
            .select((users::is_active, users::tokens_valid_after))
            .for_share()
            .first(conn)
            .optional()?;
        if !cutoff.is_some_and(|(active, cutoff)| active && confirmed_at >= cutoff) {
            return Ok(false);
        }
        let written = diesel::insert_into(passkeys::table)
            .values((
                passkeys::id.eq(Uuid::now_v7()),
                passkeys::user_id.eq(user_id),
                passkeys::credential_id.eq(credential_id),
                passkeys::name.eq(name),
                passkeys::passkey.eq(passkey),
            ))
            .on_conflict(passkeys::credential_id)
            .do_nothing()
            .execute(conn)?;
        if written == 1 {
            auth_events::record(conn, event)?;
        }
        Ok(written == 1)
    })
}

/// Renames the user's passkey `id`; `false` when they have no such passkey.
pub fn rename(conn: &mut PgConnection, user_id: Uuid, id: Uuid, name: &str) -> QueryResult<bool> {
    diesel::update(passkeys::table.find(id).filter(passkeys::user_id.eq(user_id)))
        .set(passkeys::name.eq(name))
        .execute(conn)
        .map(|rows| rows == 1)
}

/// Removes the user's passkey `id`, recording `event`; `false` when they have no such passkey.
pub fn remove(conn: &mut PgConnection, user_id: Uuid, id: Uuid, event: &NewEvent) -> QueryResult<bool> {
    conn.transaction(|conn| {
        let removed = diesel::delete(passkeys::table.find(id).filter(passkeys::user_id.eq(user_id))).execute(conn)?;
        if removed == 1 {
            auth_events::record(conn, event)?;
        }
        Ok(removed == 1)
    })
}

/// A use: the passkey's new counter and when.
pub fn record_use(conn: &mut PgConnection, id: Uuid, passkey: &Value) -> QueryResult<()> {
    diesel::update(passkeys::table.find(id))
        .set((passkeys::passkey.eq(passkey), passkeys::last_used_at.eq(diesel::dsl::now)))
        .execute(conn)
        .map(|_| ())
}

/// What a ceremony is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ceremony {
    Register,
    SecondStep,
    SignIn,
}

impl Ceremony {
    fn as_str(self) -> &'static str {
        match self {
            Ceremony::Register => "register",
            Ceremony::SecondStep => "second_step",
            Ceremony::SignIn => "sign_in",
        }
    }
}

/// Keeps a ceremony's state until `expires_at`; returns its id.
pub fn begin_ceremony(
    conn: &mut PgConnection,
    kind: Ceremony,
    user_id: Option<Uuid>,
    state: &Value,
    expires_at: DateTime<Utc>,
) -> QueryResult<Uuid> {
    let id = Uuid::new_v4();
    diesel::insert_into(webauthn_ceremonies::table)
        .values((
            webauthn_ceremonies::id.eq(id),
            webauthn_ceremonies::kind.eq(kind.as_str()),
            webauthn_ceremonies::user_id.eq(user_id),
            webauthn_ceremonies::state.eq(state),
            webauthn_ceremonies::expires_at.eq(expires_at),
        ))
        .execute(conn)?;
    Ok(id)
}

/// A ceremony taken: whom it is for (none for a passkey sign-in), its state, and when it expires.
pub type TakenCeremony = (Option<Uuid>, Value, DateTime<Utc>);

/// Takes the live ceremony `id` of `kind`: one DELETE … RETURNING, so of racing requests (on any
/// instance) one gets it. `None` when it is unknown, of another kind, expired or taken already.
pub fn take_ceremony(
    conn: &mut PgConnection,
    id: Uuid,
    kind: Ceremony,
    now: DateTime<Utc>,
) -> QueryResult<Option<TakenCeremony>> {
    diesel::delete(
        webauthn_ceremonies::table
            .find(id)
            .filter(webauthn_ceremonies::kind.eq(kind.as_str()))
            .filter(webauthn_ceremonies::expires_at.gt(now)),
    )
    .returning((webauthn_ceremonies::user_id, webauthn_ceremonies::state, webauthn_ceremonies::expires_at))
    .get_result(conn)
    .optional()
}

/// Deletes ceremonies that can no longer finish.
pub fn purge_expired(conn: &mut PgConnection, now: DateTime<Utc>) -> QueryResult<usize> {
    diesel::delete(webauthn_ceremonies::table.filter(webauthn_ceremonies::expires_at.le(now))).execute(conn)
}
