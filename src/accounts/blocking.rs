//! The same rules for the command line, which owns one connection and may block: it hashes on its
//! own thread and runs the very transactions the server runs.

use diesel::{Connection as _, PgConnection};
use secrecy::SecretString;

use super::{AccountDraft, AccountError, Actor, Created, Field, PasswordSet, judge_strength, user_inputs, validate};
use crate::auth::password::hash_blocking;
use crate::db::{
    self,
    users::{AccountChange, User},
};
use crate::domain::EventKind;
use crate::errors::ServerError;
use crate::mail::{Notice, Sender};

fn query_failed(err: diesel::result::Error) -> AccountError {
    AccountError::Server(ServerError::from(err))
}

fn hash(password: &crate::domain::NewPassword, cost: u32) -> Result<String, AccountError> {
    hash_blocking(password.secret(), cost).map_err(|err| AccountError::Server(ServerError::internal(err)))
}

pub fn create(conn: &mut PgConnection, cost: u32, actor: &Actor, draft: AccountDraft) -> Result<Created, AccountError> {
    let account = draft.validate()?;
    // The command line mails nothing: a user it creates needs a password.
    let Some(password) = &account.password else {
        return Err(AccountError::invalid(Field::Password, "a password is required"));
    };
    let weak_password = judge_strength(actor, password, &account.user_inputs(), Field::Password)?;
    let password_hash = hash(password, cost)?;
    let id = uuid::Uuid::now_v7();
    let outcome = super::write_new_user(conn, actor, id, &account, &password_hash).map_err(query_failed)?;
    Ok(Created { user: super::written(outcome, account.username.as_str())?, weak_password })
}

pub fn change(
    conn: &mut PgConnection,
    actor: &Actor,
    username: &str,
    change: &AccountChange,
) -> Result<User, AccountError> {
    validate::role_names(change.roles.as_deref().unwrap_or_default())?;
    let outcome =
        db::users::change(conn, username, change, &super::change_event(actor), actor.user_id).map_err(query_failed)?;
    super::written(outcome, username)
}

/// `read_password` is asked only once the user is known to exist (it may prompt).
pub fn set_password(
    conn: &mut PgConnection,
    cost: u32,
    actor: &Actor,
    username: &str,
    read_password: impl FnOnce() -> Result<SecretString, AccountError>,
    mail: Option<&Sender>,
) -> Result<PasswordSet, AccountError> {
    let user = find(conn, username)?;
    let password = validate::new_password(read_password()?, None, Field::Password)?;
    let weak_password = judge_strength(actor, &password, &user_inputs(&user), Field::Password)?;
    let password_hash = hash(&password, cost)?;
    // The cut-off is the moment the new hash is stored, not when the prompt began: a sign-in during
    // the prompt ends too.
    let event = actor.event(EventKind::PasswordChanged, user.id);
    let notice = super::notice_for(mail, &user, Notice::PasswordChanged)?;
    let cutoff = conn
        .transaction(|conn| {
            let cutoff = db::users::set_password_recorded(conn, user.id, &password_hash, &event)?;
            db::outbox::queue_each(conn, &notice)?;
            Ok::<_, diesel::result::Error>(cutoff)
        })
        .map_err(query_failed)?;
    Ok(PasswordSet { user, cutoff, weak_password })
}

pub fn sign_out_everywhere(conn: &mut PgConnection, actor: &Actor, username: &str) -> Result<User, AccountError> {
    let user = find(conn, username)?;
    let event = actor.event(EventKind::SignOutAll, user.id);
    db::users::sign_out_everywhere(conn, user.id, &event).map_err(query_failed)?;
    Ok(user)
}

/// `gatehouse user reset-second-factor`: see [`db::second_factors::reset`].
pub fn reset_second_factors(
    conn: &mut PgConnection,
    actor: &Actor,
    username: &str,
    mail: Option<&Sender>,
) -> Result<(User, bool), AccountError> {
    let user = find(conn, username)?;
    let event = actor.event(EventKind::SecondFactorsReset, user.id);
    let notice = super::notice_for(mail, &user, Notice::SecondFactorRemoved(super::second_factor::RESET_NOTICE))?;
    let removed = super::with_notice(conn, &notice, |conn| db::second_factors::reset(conn, user.id, &event))
        .map_err(query_failed)?;
    Ok((user, removed))
}

fn find(conn: &mut PgConnection, username: &str) -> Result<User, AccountError> {
    db::users::find_by_username(conn, username)
        .map_err(query_failed)?
        .ok_or_else(|| AccountError::UnknownUser(username.to_owned()))
}
