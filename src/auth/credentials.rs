//! Checking a username and password: the one routine behind `POST /token` and `POST /login`.
//!
//! Every path costs one bcrypt verification (unknown users are checked against a dummy hash), the
//! database connection is released before hashing starts, and every outcome lands in `auth_events`.

use chrono::Utc;
use secrecy::SecretString;
use uuid::Uuid;

use crate::auth::password::Verification;

/// Consecutive failures that lock an account.
pub const LOCKOUT_THRESHOLD: i32 = 5;
const FIRST_LOCK_SECS: i64 = 60;
const LONGEST_LOCK_SECS: i64 = 3600;

/// How long the next lock lasts after `earlier` lockouts: one minute, doubling, at most an hour.
pub fn lock_duration(earlier: i32) -> chrono::Duration {
    let factor = 1_i64 << earlier.clamp(0, 16);
    chrono::Duration::seconds((FIRST_LOCK_SECS * factor).min(LONGEST_LOCK_SECS))
}
use crate::db::{
    self, DbError,
    auth_events::{Channel, EventKind, NewEvent},
};
use crate::state::AppState;

/// Who signed in.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user_id: Uuid,
    pub username: String,
    /// The sign-in before this one, if any.
    pub previous_sign_in: Option<chrono::DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::lock_duration;

    #[test]
    fn locks_grow_from_a_minute_to_at_most_an_hour() {
        assert_eq!(lock_duration(0).num_seconds(), 60);
        assert_eq!(lock_duration(1).num_seconds(), 120);
        assert_eq!(lock_duration(5).num_seconds(), 1920);
        assert_eq!(lock_duration(6).num_seconds(), 3600);
        assert_eq!(lock_duration(40).num_seconds(), 3600);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Unknown user, wrong password or inactive account: deliberately one case.
    #[error("incorrect username or password")]
    InvalidCredentials,
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Hash(#[from] crate::auth::password::HashError),
}

/// Where an attempt came from, for the audit trail.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub channel: Channel,
    pub client_addr: Option<String>,
}

pub async fn check_password(
    state: &AppState,
    username: &str,
    password: SecretString,
    attempt: &Attempt,
) -> Result<SignedIn, LoginError> {
    let lookup_name = username.to_owned();
    let found = db::run(&state.pool, move |conn| Ok(db::users::credentials_by_username(conn, &lookup_name)?)).await?;

    let stored_hash = found.as_ref().map(|user| user.password_hash.clone());
    let verification = state.hasher.verify(password, stored_hash.clone()).await?;

    let now = Utc::now();
    // A locked account answers exactly like a wrong password, after the same bcrypt work.
    let failure = match (&found, &verification) {
        (None, _) => Some("unknown_user"),
        (Some(user), _) if user.locked_until.is_some_and(|until| until > now) => Some("locked"),
        (Some(_), Verification::Mismatch) => Some("wrong_password"),
        (Some(user), _) if !user.is_active => Some("inactive_user"),
        _ => None,
    };

    let base_event =
        |kind| NewEvent::new(kind, attempt.channel).attempted(username).client(attempt.client_addr.clone());
    match (found, failure) {
        (Some(user), None) => {
            let event = base_event(EventKind::LoginOk).user(user.id);
            let upgraded = match verification {
                Verification::MatchRehashed(new_hash) => Some(new_hash),
                _ => None,
            };
            let user_id = user.id;
            let old_hash = user.password_hash;
            db::run(&state.pool, move |conn| {
                if let Some(new_hash) = upgraded {
                    db::users::upgrade_password_hash(conn, user_id, &old_hash, &new_hash)?;
                }
                db::users::record_login(conn, user_id, now)?;
                db::auth_events::record(conn, &event)?;
                Ok(())
            })
            .await?;
            Ok(SignedIn { user_id: user.id, username: user.username, previous_sign_in: user.last_login_at })
        }
        (found, reason) => {
            let reason = reason.unwrap_or("unknown");
            let mut event = base_event(EventKind::LoginFailed).detail(reason);
            let counts_towards_lock = found.as_ref().filter(|_| reason == "wrong_password").map(|user| user.id);
            if let Some(user) = &found {
                event = event.user(user.id);
            }
            let lockout_event = base_event(EventKind::Lockout);
            db::run(&state.pool, move |conn| {
                db::auth_events::record(conn, &event)?;
                if let Some(user_id) = counts_towards_lock {
                    let locked = db::users::record_failure(conn, user_id, now, LOCKOUT_THRESHOLD, lock_duration)?;
                    if let Some(until) = locked {
                        let lockout =
                            lockout_event.user(user_id).detail(format!("locked until {}", until.to_rfc3339()));
                        db::auth_events::record(conn, &lockout)?;
                    }
                }
                Ok(())
            })
            .await?;
            Err(LoginError::InvalidCredentials)
        }
    }
}
