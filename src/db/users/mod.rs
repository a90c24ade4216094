//! The `users` and `user_roles` tables: accounts and their roles, and the cut-off that ends every
//! earlier token and session of a user. Split by who asks: [`signin`] (claims and the lockout's
//! counters), [`bearer`] (the batched lookups of every API request), [`admin`] (creating, changing
//! and searching accounts).

mod admin;
mod bearer;
mod signin;

pub use admin::{AccountChange, UserWrite, as_admin, change, create, create_recorded, search};
pub use bearer::{AccessCheck, TokenHolder, TokenHoldersQuery, token_holders};
pub use signin::{
    Claim, GrantedCheck, HashUpgrade, claim_check, claim_check_of, record_confirmation, record_failure, record_success,
    release_claim,
};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Text, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

use crate::db::auth_events::{self, NewEvent};
use crate::db::schema::{role_scopes, roles, user_roles, users};
use crate::domain::ScopeSet;

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
    /// The address was proven by a link mailed to it.
    pub email_verified: bool,
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

/// Marks `address` proven, if it is still the user's (a link mailed to it was used).
pub fn mark_email_verified(conn: &mut PgConnection, user_id: Uuid, address: &str) -> QueryResult<()> {
    diesel::update(users::table.find(user_id).filter(users::email.eq(address)))
        .set(users::email_verified.eq(true))
        .execute(conn)
        .map(|_| ())
}

/// A person's own profile change, with its audit row: a new full name (`None`: none).
pub fn set_full_name(
    conn: &mut PgConnection,
    user_id: Uuid,
    full_name: Option<&str>,
    event: &NewEvent,
) -> QueryResult<()> {
    conn.transaction(|conn| {
        diesel::update(users::table.find(user_id))
            .set((users::full_name.eq(full_name), users::updated_at.eq(diesel::dsl::now)))
            .execute(conn)?;
        auth_events::record(conn, event)
    })
}

/// A person removes their email address: with it go its proof, every unused link mailed to it, and
/// any change to another address still waiting for its link (a newer change kills older ones).
pub fn remove_email(conn: &mut PgConnection, user_id: Uuid, event: &NewEvent) -> QueryResult<()> {
    conn.transaction(|conn| {
        diesel::update(users::table.find(user_id))
            .set((
                users::email.eq(None::<String>),
                users::email_verified.eq(false),
                users::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)?;
        crate::db::password_resets::kill_unused(conn, user_id)?;
        crate::db::email_changes::kill_unused(conn, user_id)?;
        auth_events::record(conn, event)
    })
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

/// The user with their current roles, in one statement (every page view of a signed-in browser).
pub fn with_roles(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<Option<(User, Vec<String>)>> {
    users::table.find(user_id).select((User::as_select(), user_role_names(users::id))).first(conn).optional()
}

/// Active users named `who`: the one whose username it is (any case), and every one whose email
/// address it is (any case; several accounts may share one), each once.
pub fn active_by_username_or_email(conn: &mut PgConnection, who: &str) -> QueryResult<Vec<User>> {
    users::table
        .filter(users::is_active.eq(true))
        .filter(
            diesel::dsl::sql::<diesel::sql_types::Bool>("(lower(username) = lower(")
                .bind::<diesel::sql_types::Text, _>(who)
                .sql(") OR lower(email) = lower(")
                .bind::<diesel::sql_types::Text, _>(who)
                .sql("))"),
        )
        .select(User::as_select())
        .order(users::username)
        .load(conn)
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

/// The user's role names (sorted) and every scope they allow, in one query: what a token's claims
/// need when a family starts or rotates (after the user's row is locked: see `refresh_tokens`).
pub fn roles_and_allowed_scopes(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<(Vec<String>, ScopeSet)> {
    let rows: Vec<(String, Option<String>)> = user_roles::table
        .left_join(role_scopes::table.on(role_scopes::role_name.eq(user_roles::role_name)))
        .filter(user_roles::user_id.eq(user_id))
        .select((user_roles::role_name, role_scopes::scope_name.nullable()))
        .load(conn)?;
    let roles: std::collections::BTreeSet<String> = rows.iter().map(|(role, _)| role.clone()).collect();
    let names: Vec<String> = rows.into_iter().filter_map(|(_, scope)| scope).collect();
    // Scope names are CHECKed by the schema to be valid scope tokens.
    let allowed =
        ScopeSet::parse(&names.join(" ")).map_err(|err| diesel::result::Error::DeserializationError(Box::new(err)))?;
    Ok((roles.into_iter().collect(), allowed))
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
    notice: Option<&super::outbox::NewMail>,
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
        // The "your password was changed" mail, in the transaction of the change.
        if let Some(notice) = notice {
            super::outbox::queue(conn, notice)?;
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
