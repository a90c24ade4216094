//! The `user_totp` and `recovery_codes` tables. The rules are `auth::second_factor`'s; here rows are
//! read and written, each spend of a step or a code being ONE conditional update, so that of racing
//! requests on any number of instances exactly one spends it.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::auth_events::{self, NewEvent};
use super::schema::{recovery_codes, user_totp};

/// A user's authenticator app row.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = user_totp, check_for_backend(diesel::pg::Pg))]
pub struct AppRow {
    pub user_id: Uuid,
    pub secret_sealed: Vec<u8>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub last_used_step: Option<i64>,
    pub enrol_failures: i32,
    pub created_at: DateTime<Utc>,
}

/// What a user has as a second factor, as their pages and the sign-in need it.
#[derive(Debug, Clone)]
pub struct Factors {
    /// The confirmed app (`None`: none, or enrolment not finished).
    pub app: Option<AppRow>,
    /// An enrolment begun and not confirmed.
    pub pending: Option<AppRow>,
    pub recovery_codes_left: i64,
    pub passkeys: i64,
}

impl Factors {
    /// Whether a sign-in needs a second step.
    pub fn any(&self) -> bool {
        self.app.is_some() || self.passkeys > 0
    }
}

pub fn of_user(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<Factors> {
    of_user_and_admin(conn, user_id).map(|(factors, _)| factors)
}

/// [`of_user`], and whether the user holds the `admin` role (the second-factor policy may cover
/// admins only), in one statement: every password sign-in reads this before its bcrypt check.
pub fn of_user_and_admin(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<(Factors, bool)> {
    use super::schema::{passkeys, user_roles, users};
    let recovery_codes_left = recovery_codes::table
        .filter(recovery_codes::user_id.eq(user_id))
        .filter(recovery_codes::used_at.is_null())
        .count()
        .single_value();
    let passkeys = passkeys::table.filter(passkeys::user_id.eq(user_id)).count().single_value();
    let is_admin = diesel::dsl::exists(
        user_roles::table
            .filter(user_roles::user_id.eq(user_id))
            .filter(user_roles::role_name.eq(crate::domain::RoleName::ADMIN)),
    );
    // The app row (if any), unused recovery codes, passkeys, and the admin role.
    type Found = (Option<AppRow>, Option<i64>, Option<i64>, bool);
    let found: Option<Found> = users::table
        .left_join(user_totp::table)
        .filter(users::id.eq(user_id))
        .select((Option::<AppRow>::as_select(), recovery_codes_left, passkeys, is_admin))
        .first(conn)
        .optional()?;
    // A user removed meanwhile has nothing (the caller finds them gone elsewhere).
    let (row, recovery_codes_left, passkeys, is_admin) = found.unwrap_or((None, None, None, false));
    let (app, pending) = match row {
        Some(row) if row.confirmed_at.is_some() => (Some(row), None),
        Some(row) => (None, Some(row)),
        None => (None, None),
    };
    let factors = Factors {
        app,
        pending,
        recovery_codes_left: recovery_codes_left.unwrap_or(0),
        passkeys: passkeys.unwrap_or(0),
    };
    Ok((factors, is_admin))
}

/// Whether the user has a second factor (a confirmed app or a passkey): the one fact the pages'
/// guard needs.
pub fn has_any(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<bool> {
    use super::schema::passkeys;
    let app = diesel::dsl::exists(
        user_totp::table.filter(user_totp::user_id.eq(user_id)).filter(user_totp::confirmed_at.is_not_null()),
    );
    let passkey = diesel::dsl::exists(passkeys::table.filter(passkeys::user_id.eq(user_id)));
    diesel::select(app.or(passkey)).get_result(conn)
}

/// Whether the user has a confirmed app (recovery codes come with one).
pub fn has_app(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        user_totp::table.filter(user_totp::user_id.eq(user_id)).filter(user_totp::confirmed_at.is_not_null()),
    ))
    .get_result(conn)
}

/// Starts (or restarts) an enrolment with a new sealed secret. `false`, and nothing written, when
/// the user already has a confirmed app (remove it first).
pub fn begin_enrolment(conn: &mut PgConnection, user_id: Uuid, sealed: &[u8]) -> QueryResult<bool> {
    let written = diesel::sql_query(
        "INSERT INTO user_totp (user_id, secret_sealed) VALUES ($1, $2) \
         ON CONFLICT (user_id) DO UPDATE SET secret_sealed = EXCLUDED.secret_sealed, enrol_failures = 0, \
             last_used_step = NULL, created_at = clock_timestamp() \
         WHERE user_totp.confirmed_at IS NULL",
    )
    .bind::<diesel::sql_types::Uuid, _>(user_id)
    .bind::<diesel::sql_types::Bytea, _>(sealed)
    .execute(conn)?;
    Ok(written == 1)
}

/// Confirms a pending enrolment (whose sealed secret is `checked_secret`) with a code of `step`, which
/// is spent by the same update; stores a new set of recovery codes (any old set dies) and records the
/// events. `false`, nothing written, when there was no such pending enrolment (another request
/// confirmed, cancelled or restarted it).
pub fn confirm_enrolment(
    conn: &mut PgConnection,
    user_id: Uuid,
    checked_secret: &[u8],
    step: u64,
    code_hashes: &[Vec<u8>],
    events: &[NewEvent],
) -> QueryResult<bool> {
    conn.transaction(|conn| {
        // Only the sealed secret the code was checked against: an enrolment restarted meanwhile (a
        // second tab) has another secret, which no app holds yet.
        let pending = user_totp::table
            .find(user_id)
            .filter(user_totp::confirmed_at.is_null())
            .filter(user_totp::secret_sealed.eq(checked_secret));
        let confirmed = diesel::update(pending)
            .set((user_totp::confirmed_at.eq(diesel::dsl::now), user_totp::last_used_step.eq(step_value(step))))
            .execute(conn)?;
        if confirmed == 0 {
            return Ok(false);
        }
        replace_recovery_codes(conn, user_id, code_hashes)?;
        auth_events::record_many(conn, events)?;
        Ok(true)
    })
}

/// A wrong code while enrolling: counted; the fifth cancels the enrolment (its row goes). Returns
/// whether the enrolment is still open.
pub fn enrol_failure(conn: &mut PgConnection, user_id: Uuid, limit: i32, event: &NewEvent) -> QueryResult<bool> {
    conn.transaction(|conn| {
        let failures: Option<i32> =
            diesel::update(user_totp::table.find(user_id).filter(user_totp::confirmed_at.is_null()))
                .set(user_totp::enrol_failures.eq(user_totp::enrol_failures + 1))
                .returning(user_totp::enrol_failures)
                .get_result(conn)
                .optional()?;
        auth_events::record(conn, event)?;
        match failures {
            Some(failures) if failures >= limit => {
                diesel::delete(user_totp::table.find(user_id).filter(user_totp::confirmed_at.is_null()))
                    .execute(conn)?;
                Ok(false)
            }
            Some(_) => Ok(true),
            None => Ok(false),
        }
    })
}

fn step_value(step: u64) -> i64 {
    i64::try_from(step).unwrap_or(i64::MAX)
}

/// Spends `step` of the user's confirmed app: one conditional update (`last_used_step < step`), so
/// of racing requests with the same code on any number of instances exactly one gets `true`.
pub fn spend_step(conn: &mut PgConnection, user_id: Uuid, step: u64) -> QueryResult<bool> {
    let step = step_value(step);
    let spent = diesel::update(
        user_totp::table
            .find(user_id)
            .filter(user_totp::confirmed_at.is_not_null())
            .filter(user_totp::last_used_step.is_null().or(user_totp::last_used_step.lt(step))),
    )
    .set(user_totp::last_used_step.eq(step))
    .execute(conn)?;
    Ok(spent == 1)
}

/// Spends the recovery code whose hash is `code_hash`: one conditional update of `used_at`, so a
/// code raced from many requests passes once.
pub fn spend_recovery_code(conn: &mut PgConnection, user_id: Uuid, code_hash: &[u8]) -> QueryResult<bool> {
    let spent =
        diesel::update(recovery_codes::table.find((user_id, code_hash)).filter(recovery_codes::used_at.is_null()))
            .set(recovery_codes::used_at.eq(diesel::dsl::now))
            .execute(conn)?;
    Ok(spent == 1)
}

fn replace_recovery_codes(conn: &mut PgConnection, user_id: Uuid, code_hashes: &[Vec<u8>]) -> QueryResult<()> {
    diesel::delete(recovery_codes::table.filter(recovery_codes::user_id.eq(user_id))).execute(conn)?;
    let rows: Vec<_> = code_hashes
        .iter()
        .map(|hash| (recovery_codes::user_id.eq(user_id), recovery_codes::code_hash.eq(hash.as_slice())))
        .collect();
    diesel::insert_into(recovery_codes::table).values(&rows).execute(conn)?;
    Ok(())
}

/// A new set of recovery codes for a user with a confirmed app (the old set dies). `false`, nothing
/// written, without one.
pub fn regenerate_recovery_codes(
    conn: &mut PgConnection,
    user_id: Uuid,
    code_hashes: &[Vec<u8>],
    event: &NewEvent,
) -> QueryResult<bool> {
    conn.transaction(|conn| {
        if !has_app(conn, user_id)? {
            return Ok(false);
        }
        replace_recovery_codes(conn, user_id, code_hashes)?;
        auth_events::record(conn, event)?;
        Ok(true)
    })
}

/// Removes the user's app (confirmed or pending) and their recovery codes, recording `event`;
/// `false` when there was nothing to remove.
pub fn remove_all(conn: &mut PgConnection, user_id: Uuid, event: &NewEvent) -> QueryResult<bool> {
    conn.transaction(|conn| {
        let apps = diesel::delete(user_totp::table.find(user_id)).execute(conn)?;
        let codes = diesel::delete(recovery_codes::table.filter(recovery_codes::user_id.eq(user_id))).execute(conn)?;
        if apps + codes == 0 {
            return Ok(false);
        }
        auth_events::record(conn, event)?;
        Ok(true)
    })
}

/// An admin's reset: every second factor of the user goes (app, recovery codes, passkeys), and with
/// it (a cut-off, like a password change) every session and token. `false`, nothing written, when
/// they had none.
pub fn reset(conn: &mut PgConnection, user_id: Uuid, event: &NewEvent) -> QueryResult<bool> {
    use super::schema::passkeys;
    conn.transaction(|conn| {
        let passkeys = diesel::delete(passkeys::table.filter(passkeys::user_id.eq(user_id))).execute(conn)?;
        // `remove_all` records the event when it removed something; passkeys alone record it here.
        let app_removed = remove_all(conn, user_id, event)?;
        if passkeys > 0 && !app_removed {
            auth_events::record(conn, event)?;
        }
        let removed = app_removed || passkeys > 0;
        if removed {
            super::users::invalidate_credentials(conn, user_id)?;
        }
        Ok(removed)
    })
}

/// Every sealed secret, for `gatehouse keys re-encrypt`.
pub fn all_sealed(conn: &mut PgConnection) -> QueryResult<Vec<(Uuid, Vec<u8>)>> {
    user_totp::table.select((user_totp::user_id, user_totp::secret_sealed)).load(conn)
}

pub fn set_sealed(conn: &mut PgConnection, user_id: Uuid, sealed: &[u8]) -> QueryResult<()> {
    diesel::update(user_totp::table.find(user_id)).set(user_totp::secret_sealed.eq(sealed)).execute(conn).map(|_| ())
}
