//! The `users` and `user_roles` tables.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::schema::{role_scopes, roles, user_roles, users};

diesel::define_sql_function! {
    /// SQL `lower()`, for case-insensitive username lookups that use `users_username_lower_key`.
    fn lower(text: diesel::sql_types::Text) -> diesel::sql_types::Text;
}

/// A user as the rest of the service sees it: never carries the password hash.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg))]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub email: Option<String>,
    pub full_name: Option<String>,
    pub is_active: bool,
    pub tokens_valid_after: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
}

/// What a login needs to check a password, and nothing more.
#[derive(Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg))]
pub struct UserCredentials {
    pub id: Uuid,
    pub username: String,
    pub password_hash: String,
    pub is_active: bool,
    pub locked_until: Option<DateTime<Utc>>,
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

#[derive(Debug, thiserror::Error)]
pub enum UserWriteError {
    #[error("a user named {0} already exists")]
    UsernameTaken(String),
    #[error("no role named {0}")]
    UnknownRole(String),
    #[error("no user named {0}")]
    UnknownUser(String),
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
}

pub fn find_by_id(conn: &mut PgConnection, id: Uuid) -> QueryResult<Option<User>> {
    users::table.find(id).select(User::as_select()).first(conn).optional()
}

pub fn find_by_username(conn: &mut PgConnection, username: &str) -> QueryResult<Option<User>> {
    users::table
        .filter(lower(users::username).eq(username.to_lowercase()))
        .select(User::as_select())
        .first(conn)
        .optional()
}

pub fn credentials_by_username(conn: &mut PgConnection, username: &str) -> QueryResult<Option<UserCredentials>> {
    users::table
        .filter(lower(users::username).eq(username.to_lowercase()))
        .select(UserCredentials::as_select())
        .first(conn)
        .optional()
}

diesel::define_sql_function! {
    /// The user's role names, sorted (a SQL function from the migrations).
    fn user_role_names(user_id: diesel::sql_types::Uuid) -> diesel::sql_types::Array<diesel::sql_types::Text>;
}

/// What a bearer-token check needs: the user, their roles, and whether the token's `jti` was revoked.
#[derive(Debug, Clone)]
pub struct TokenHolder {
    pub user: User,
    pub roles: Vec<String>,
    pub token_revoked: bool,
}

/// The bearer checks of many concurrent API requests at once: one answer per `(user id, jti)` pair,
/// in order, `None` where the user does not exist. Every API request needs this, so a batch costs
/// two cached prepared statements whatever its size, instead of a round trip per request.
pub fn token_holders(conn: &mut PgConnection, checks: &[(Uuid, Uuid)]) -> QueryResult<Vec<Option<TokenHolder>>> {
    use super::schema::revoked_access_tokens;
    let user_ids: Vec<Uuid> = checks.iter().map(|&(user_id, _)| user_id).collect();
    let holders: HashMap<Uuid, (User, Vec<String>)> = users::table
        .filter(users::id.eq_any(&user_ids))
        .select((User::as_select(), user_role_names(users::id)))
        .load::<(User, Vec<String>)>(conn)?
        .into_iter()
        .map(|(user, roles)| (user.id, (user, roles)))
        .collect();
    let revoked: HashSet<Uuid> = if holders.is_empty() {
        HashSet::new()
    } else {
        let jtis: Vec<Uuid> = checks.iter().map(|&(_, jti)| jti).collect();
        revoked_access_tokens::table
            .filter(revoked_access_tokens::jti.eq_any(&jtis))
            .select(revoked_access_tokens::jti)
            .load::<Uuid>(conn)?
            .into_iter()
            .collect()
    };
    Ok(checks
        .iter()
        .map(|(user_id, jti)| {
            holders.get(user_id).map(|(user, roles)| TokenHolder {
                user: user.clone(),
                roles: roles.clone(),
                token_revoked: revoked.contains(jti),
            })
        })
        .collect())
}

/// The user with their current roles, in one statement (every page view of a signed-in browser).
pub fn with_roles(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<Option<(User, Vec<String>)>> {
    users::table.find(user_id).select((User::as_select(), user_role_names(users::id))).first(conn).optional()
}

/// The user's role names, sorted.
pub fn roles_of(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<Vec<String>> {
    user_roles::table
        .filter(user_roles::user_id.eq(user_id))
        .select(user_roles::role_name)
        .order(user_roles::role_name)
        .load(conn)
}

/// Every scope one of the user's roles allows, sorted and without repeats.
pub fn allowed_scopes(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<Vec<String>> {
    user_roles::table
        .inner_join(roles::table.inner_join(role_scopes::table))
        .filter(user_roles::user_id.eq(user_id))
        .select(role_scopes::scope_name)
        .distinct()
        .order(role_scopes::scope_name)
        .load(conn)
}

/// Inserts the user and their roles in one transaction: either all of it is stored or none.
pub fn create(conn: &mut PgConnection, new_user: &NewUser<'_>, role_names: &[String]) -> Result<User, UserWriteError> {
    conn.transaction(|conn| {
        let user = diesel::insert_into(users::table)
            .values(new_user)
            .returning(User::as_returning())
            .get_result(conn)
            .map_err(|err| match err {
                diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _) => {
                    UserWriteError::UsernameTaken(new_user.username.to_owned())
                }
                other => other.into(),
            })?;
        replace_roles(conn, user.id, role_names)?;
        Ok(user)
    })
}

/// Sets exactly these roles (an empty list removes all of them).
pub fn set_roles(conn: &mut PgConnection, username: &str, role_names: &[String]) -> Result<User, UserWriteError> {
    conn.transaction(|conn| {
        let user = find_by_username(conn, username)?.ok_or_else(|| UserWriteError::UnknownUser(username.to_owned()))?;
        replace_roles(conn, user.id, role_names)?;
        Ok(user)
    })
}

fn replace_roles(conn: &mut PgConnection, user_id: Uuid, role_names: &[String]) -> Result<(), UserWriteError> {
    let known: Vec<String> = roles::table.filter(roles::name.eq_any(role_names)).select(roles::name).load(conn)?;
    if let Some(missing) = role_names.iter().find(|name| !known.contains(name)) {
        return Err(UserWriteError::UnknownRole(missing.clone()));
    }
    diesel::delete(user_roles::table.filter(user_roles::user_id.eq(user_id))).execute(conn)?;
    let rows: Vec<_> =
        known.iter().map(|role| (user_roles::user_id.eq(user_id), user_roles::role_name.eq(role))).collect();
    diesel::insert_into(user_roles::table).values(&rows).on_conflict_do_nothing().execute(conn)?;
    Ok(())
}

/// Stores a new password hash and makes every earlier token of the user invalid.
pub fn set_password_hash(
    conn: &mut PgConnection,
    user_id: Uuid,
    password_hash: &str,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    conn.transaction(|conn| {
        diesel::update(users::table.find(user_id))
            .set((users::password_hash.eq(password_hash), users::updated_at.eq(now)))
            .execute(conn)?;
        invalidate_credentials(conn, user_id, now)
    })
}

/// Replaces a hash only if it is still the one that was verified, so a concurrent password change wins.
pub fn upgrade_password_hash(
    conn: &mut PgConnection,
    user_id: Uuid,
    old_hash: &str,
    new_hash: &str,
) -> QueryResult<bool> {
    diesel::update(users::table.find(user_id).filter(users::password_hash.eq(old_hash)))
        .set(users::password_hash.eq(new_hash))
        .execute(conn)
        .map(|rows| rows == 1)
}

/// Ends every access token, refresh token and session the user holds: tokens whose issue time is
/// before `now` are refused from here on.
pub fn invalidate_credentials(conn: &mut PgConnection, user_id: Uuid, now: DateTime<Utc>) -> QueryResult<()> {
    diesel::update(users::table.find(user_id)).set(users::tokens_valid_after.eq(now)).execute(conn)?;
    super::refresh_tokens::revoke_all_of_user(conn, user_id, now)?;
    super::sessions::delete_all_of_user(conn, user_id)?;
    Ok(())
}

pub fn set_active(
    conn: &mut PgConnection,
    username: &str,
    active: bool,
    now: DateTime<Utc>,
) -> Result<User, UserWriteError> {
    conn.transaction(|conn| {
        let user = find_by_username(conn, username)?.ok_or_else(|| UserWriteError::UnknownUser(username.to_owned()))?;
        diesel::update(users::table.find(user.id))
            .set((users::is_active.eq(active), users::updated_at.eq(now)))
            .execute(conn)?;
        if !active {
            // Reactivating later must not bring old tokens back to life.
            invalidate_credentials(conn, user.id, now)?;
        }
        Ok(user)
    })
}

/// A successful sign-in: remembers when, and forgets earlier failures and lockouts.
pub fn record_login(conn: &mut PgConnection, user_id: Uuid, now: DateTime<Utc>) -> QueryResult<()> {
    diesel::update(users::table.find(user_id))
        .set((
            users::last_login_at.eq(now),
            users::failed_logins.eq(0),
            users::lockouts.eq(0),
            users::locked_until.eq(None::<DateTime<Utc>>),
        ))
        .execute(conn)
        .map(|_| ())
}

/// Counts a failed sign-in. When the count reaches `threshold`, the account is locked for
/// `lock_for(earlier lockouts)` and the instant the lock ends is returned.
pub fn record_failure(
    conn: &mut PgConnection,
    user_id: Uuid,
    now: DateTime<Utc>,
    threshold: i32,
    lock_for: impl Fn(i32) -> chrono::Duration,
) -> QueryResult<Option<DateTime<Utc>>> {
    conn.transaction(|conn| {
        // The UPDATE takes the row lock, so concurrent failures are counted one after another.
        let (failed, lockouts): (i32, i32) = diesel::update(users::table.find(user_id))
            .set(users::failed_logins.eq(users::failed_logins + 1))
            .returning((users::failed_logins, users::lockouts))
            .get_result(conn)?;
        if failed < threshold {
            return Ok(None);
        }
        let until = now + lock_for(lockouts);
        diesel::update(users::table.find(user_id))
            .set((users::failed_logins.eq(0), users::lockouts.eq(lockouts + 1), users::locked_until.eq(until)))
            .execute(conn)?;
        Ok(Some(until))
    })
}

/// Every user with their roles, by username.
pub fn list_with_roles(conn: &mut PgConnection) -> QueryResult<Vec<(User, Vec<String>)>> {
    let all: Vec<User> = users::table.select(User::as_select()).order(lower(users::username)).load(conn)?;
    let pairs: Vec<(Uuid, String)> = user_roles::table
        .select((user_roles::user_id, user_roles::role_name))
        .order(user_roles::role_name)
        .load(conn)?;
    Ok(all
        .into_iter()
        .map(|user| {
            let roles = pairs.iter().filter(|(id, _)| *id == user.id).map(|(_, r)| r.clone()).collect();
            (user, roles)
        })
        .collect())
}
