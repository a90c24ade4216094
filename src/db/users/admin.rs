//! Administration: creating and changing accounts under the last-admin guard, and searching them.

use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};
use uuid::Uuid;

use crate::db::auth_events::{self, NewEvent};
use crate::db::schema::{account_counts, roles, user_roles, users};
use crate::domain::EventKind;
use crate::domain::rules::{AccountState, AdminContext, ChangeDecision, RequestedChange, decide_change};

use super::*;

/// The outcome of creating a user or changing their roles or active flag.
#[derive(Debug)]
pub enum UserWrite {
    Done(User),
    UsernameTaken,
    UnknownRole(String),
    UnknownUser,
    /// The change would leave no active admin: nothing was written.
    LastAdmin,
    /// The acting admin lost the role (or was deactivated) after their request was authorized:
    /// nothing was written.
    ActorNotAdmin,
}

/// Inserts the user and their roles in one transaction: either all of it is stored or none.
pub fn create(conn: &mut PgConnection, new_user: &NewUser<'_>, role_names: &[String]) -> QueryResult<UserWrite> {
    conn.transaction(|conn| {
        if let Some(unknown) = unknown_role(conn, role_names)? {
            return Ok(UserWrite::UnknownRole(unknown));
        }
        // The unique index on lower(username) decides between concurrent creators.
        let inserted = diesel::insert_into(users::table)
            .values(new_user)
            .on_conflict_do_nothing()
            .returning(User::as_returning())
            .get_result(conn)
            .optional()?;
        let Some(user) = inserted else { return Ok(UserWrite::UsernameTaken) };
        replace_roles(conn, user.id, role_names)?;
        Ok(UserWrite::Done(user))
    })
}

/// [`create`], and `event` (about the new user) recorded in the same transaction.
pub fn create_recorded(
    conn: &mut PgConnection,
    new_user: &NewUser<'_>,
    role_names: &[String],
    event: NewEvent,
) -> QueryResult<UserWrite> {
    conn.transaction(|conn| {
        let written = create(conn, new_user, role_names)?;
        if let UserWrite::Done(user) = &written {
            auth_events::record(conn, &event.user(user.id).detail(roles_detail(role_names)))?;
        }
        Ok(written)
    })
}

/// What an administrator changes about an account in one go (`None`: leave it as it is).
#[derive(Debug, Clone, Default)]
pub struct AccountChange {
    /// Exactly these roles (an empty list removes all of them).
    pub roles: Option<Vec<String>>,
    pub active: Option<bool>,
}

/// Applies `change` to `username`'s account in one transaction, recording one event per thing that
/// changed (built from `event`), unless it would remove the last active admin, or `acting_admin`
/// (`None`: the operator) no longer is one (see [`as_admin`]; the last admin is named first, so of
/// two admins demoting each other at once, the second hears why).
///
/// Every change that could remove an admin (a role change, a deactivation) first locks the `admin`
/// role's row, so such changes run one at a time, on however many instances: two admins demoting
/// each other at the same moment cannot both see the other one still standing. The lock comes
/// before the user's row (the order nothing else takes them in reverse), and the count of the
/// other active admins is read under it.
pub fn change(
    conn: &mut PgConnection,
    username: &str,
    change: &AccountChange,
    event: &NewEvent,
    acting_admin: Option<Uuid>,
) -> QueryResult<UserWrite> {
    conn.transaction(|conn| {
        lock_admin_changes(conn)?;
        let Some(user) = lock_by_username(conn, username)? else { return Ok(UserWrite::UnknownUser) };
        if let Some(roles) = &change.roles
            && let Some(unknown) = unknown_role(conn, roles)?
        {
            return Ok(UserWrite::UnknownRole(unknown));
        }
        let before = AccountState { active: user.is_active, roles: roles_of(conn, user.id)? };
        let context = AdminContext {
            other_active_admins: other_active_admins(conn, user.id)?,
            actor_still_admin: match acting_admin {
                Some(admin) => is_active_admin(conn, admin)?,
                None => true,
            },
        };
        let requested = RequestedChange { roles: change.roles.clone(), active: change.active };
        let (active_after, roles_after) = match decide_change(&before, &requested, &context) {
            ChangeDecision::LastAdmin => return Ok(UserWrite::LastAdmin),
            ChangeDecision::ActorNotAdmin => return Ok(UserWrite::ActorNotAdmin),
            ChangeDecision::Apply { active, roles } => (active, roles),
        };
        let mut events = Vec::new();
        // The active flag before the roles: the counters' triggers take their rows in that order.
        if let Some(active_after) = active_after {
            diesel::update(users::table.find(user.id))
                .set((users::is_active.eq(active_after), users::updated_at.eq(diesel::dsl::now)))
                .execute(conn)?;
            let kind = if active_after { EventKind::Activated } else { EventKind::Deactivated };
            if !active_after {
                // Reactivating later must not bring old tokens back to life.
                invalidate_credentials(conn, user.id)?;
            }
            events.push(NewEvent { kind, ..event.clone() }.user(user.id));
        }
        if let Some(roles_after) = roles_after {
            replace_roles(conn, user.id, &roles_after)?;
            let detail = format!("{} → {}", roles_detail(&before.roles), roles_detail(&roles_after));
            events.insert(0, NewEvent { kind: EventKind::RolesChanged, ..event.clone() }.user(user.id).detail(detail));
        }
        auth_events::record_many(conn, &events)?;
        Ok(find_by_id(conn, user.id)?.map_or(UserWrite::UnknownUser, UserWrite::Done))
    })
}

/// Runs `write` in one transaction, but only if `admin` still is an active admin: `None` (nothing
/// written) when they were demoted or deactivated since their request was authorized (a bcrypt run
/// may lie between the two). The admin lock is taken first, as every change that could remove an
/// admin takes it, so such a change either committed before the check or waits until this
/// transaction ends: an admin's change never lands after their own demotion.
pub fn as_admin<T>(
    conn: &mut PgConnection,
    admin: Uuid,
    write: impl FnOnce(&mut PgConnection) -> QueryResult<T>,
) -> QueryResult<Option<T>> {
    conn.transaction(|conn| {
        lock_admin_changes(conn)?;
        if !is_active_admin(conn, admin)? {
            return Ok(None);
        }
        write(conn).map(Some)
    })
}

fn is_active_admin(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        user_roles::table
            .inner_join(users::table)
            .filter(users::id.eq(user_id))
            .filter(users::is_active.eq(true))
            .filter(user_roles::role_name.eq(crate::domain::RoleName::ADMIN)),
    ))
    .get_result(conn)
}

/// Serializes every change that could remove an admin (see [`change`]), and every change an admin
/// makes with one (see [`as_admin`]): administration is rare, and its bcrypt runs happen outside.
///
/// `FOR NO KEY UPDATE`: it conflicts with itself (and with a test holding `FOR UPDATE`), but not with
/// the key-share lock that inserting a `user_roles` row takes on its role, so a creation from the
/// command line never waits for it.
fn lock_admin_changes(conn: &mut PgConnection) -> QueryResult<()> {
    roles::table
        .filter(roles::name.eq(crate::domain::RoleName::ADMIN))
        .select(roles::name)
        .for_no_key_update()
        .load::<String>(conn)
        .map(|_| ())
}

fn lock_by_username(conn: &mut PgConnection, username: &str) -> QueryResult<Option<User>> {
    if !storable(username) {
        return Ok(None);
    }
    users::table
        .filter(lower(users::username).eq(lower(username)))
        .select(User::as_select())
        .for_no_key_update()
        .first(conn)
        .optional()
}

/// Active users other than `user_id` who hold the admin role.
fn other_active_admins(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<i64> {
    user_roles::table
        .inner_join(users::table)
        .filter(user_roles::role_name.eq(crate::domain::RoleName::ADMIN))
        .filter(users::is_active.eq(true))
        .filter(users::id.ne(user_id))
        .count()
        .get_result(conn)
}

fn roles_detail(roles: &[String]) -> String {
    if roles.is_empty() { "no roles".to_owned() } else { roles.join(", ") }
}

fn unknown_role(conn: &mut PgConnection, role_names: &[String]) -> QueryResult<Option<String>> {
    let known: Vec<String> = roles::table.filter(roles::name.eq_any(role_names)).select(roles::name).load(conn)?;
    Ok(role_names.iter().find(|name| !known.contains(name)).cloned())
}

/// Roles removed one by one and added in name order: each row's trigger updates its role's counter,
/// and every writer must take those in one order (see migration 7).
fn replace_roles(conn: &mut PgConnection, user_id: Uuid, role_names: &[String]) -> QueryResult<()> {
    let held = roles_of(conn, user_id)?;
    // Removing {user} and adding {admin, user} would otherwise take `role:user` before
    // `role:admin`, the reverse of a user created with both at the same moment: a deadlock. So
    // every counter this change moves is taken first, in name order.
    let mut counters: Vec<String> = held.iter().chain(role_names).map(|role| format!("role:{role}")).collect();
    counters.sort();
    counters.dedup();
    account_counts::table
        .filter(account_counts::name.eq_any(&counters))
        .order(account_counts::name)
        .select(account_counts::name)
        .for_update()
        .load::<String>(conn)?;
    for held in held {
        diesel::delete(user_roles::table.find((user_id, &held))).execute(conn)?;
    }
    let mut sorted: Vec<&String> = role_names.iter().collect();
    sorted.sort();
    sorted.dedup();
    let rows: Vec<_> =
        sorted.iter().map(|role| (user_roles::user_id.eq(user_id), user_roles::role_name.eq(*role))).collect();
    diesel::insert_into(user_roles::table).values(&rows).on_conflict_do_nothing().execute(conn)?;
    Ok(())
}

/// Users with their roles, by username: those whose username or email address contains `search`
/// (any case), `limit` at most after skipping `offset`. The trigram indexes of migration 7 find the
/// matches; the page's ids are picked first from the (username_key, id) index, so a deep page skips
/// rows inside the index, and only the page's own users are read and get their roles looked up.
pub fn search(
    conn: &mut PgConnection,
    search: Option<&str>,
    offset: i64,
    limit: Option<i64>,
) -> QueryResult<Vec<(User, Vec<String>)>> {
    if search.is_some_and(|text| !storable(text)) {
        return Ok(Vec::new());
    }
    let mut page = users::table.select(users::id).into_boxed();
    if let Some(search) = search.filter(|text| !text.is_empty()) {
        let pattern = format!("%{}%", escape_like(&search.to_lowercase()));
        page = page.filter(
            lower(users::username)
                .like(pattern.clone())
                .or(diesel::dsl::sql::<Bool>("lower(users.email) LIKE ").bind::<Text, _>(pattern)),
        );
    }
    let page = page.order((users::username_key, users::id)).offset(offset);
    let page = match limit {
        Some(limit) => page.limit(limit),
        None => page,
    };
    users::table
        .filter(users::id.eq_any(page))
        .select((User::as_select(), user_role_names(users::id)))
        .order((users::username_key, users::id))
        .load(conn)
}

/// `text` matched literally by LIKE: its wildcards and the escape character escaped.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_wildcards_in_a_search_match_only_themselves() {
        assert_eq!(super::escape_like(r"50%_off\"), r"50\%\_off\\");
    }
}
