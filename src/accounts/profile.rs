//! A person's own profile on `/account`: the full name changes at once; a new email address only once
//! the link mailed to it is used (24 hours), so nobody can point an account's recovery at an address
//! they do not hold. Changing or removing the address takes the current password (a session left
//! open must not be enough to redirect the reset links), and the old address is told.

use chrono::{Duration, Utc};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::password_reset::link_hash;
use super::{AccountError, Accounts, Actor, Field, validate::sentence};
use crate::auth::credentials::{self, Attempt, LoginError};
use crate::db::{self, users::User};
use crate::domain::{Email, EventKind, FullName};
use crate::errors::ServerError;
use crate::mail::{Notice, Recipient};

/// A link to a new address works this long.
pub const EMAIL_LINK_LIFETIME: Duration = Duration::hours(24);

/// The profile form as typed.
pub struct ProfileEdit {
    pub full_name: String,
    pub email: String,
    /// Needed only when the email address changes.
    pub current_password: SecretString,
}

/// What an edit did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ProfileEdited {
    pub name_changed: bool,
    /// A confirmation link was mailed to this address; the old one stays until it is used.
    pub email_pending: Option<String>,
    pub email_removed: bool,
}

/// Why a confirmation link did nothing.
#[derive(Debug, thiserror::Error)]
pub enum EmailLinkError {
    /// Unknown, used, expired, replaced by a newer change, older than a cut-off, or its account was
    /// deactivated: the same answer for all.
    #[error("This link does not work any more.")]
    DeadLink,
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// What the form asks for, checked: the new full name (`None`: none) and the new address (`None`: none).
fn parse(edit: &ProfileEdit) -> Result<(Option<FullName>, Option<Email>), AccountError> {
    let mut problems = Vec::new();
    let full_name = FullName::parse(&edit.full_name)
        .map_err(|err| problems.push(super::Invalid { field: Field::FullName, message: sentence(&err) }))
        .ok()
        .flatten();
    let email = match edit.email.trim() {
        "" => None,
        typed => Email::parse(typed)
            .map_err(|err| problems.push(super::Invalid { field: Field::Email, message: sentence(&err) }))
            .ok(),
    };
    if problems.is_empty() { Ok((full_name, email)) } else { Err(AccountError::Invalid(problems)) }
}

impl Accounts<'_> {
    /// Applies `edit` to `user`'s own profile (see the module's rules).
    pub async fn edit_profile(
        &self,
        actor: &Actor,
        user: &User,
        edit: ProfileEdit,
    ) -> Result<ProfileEdited, AccountError> {
        let (full_name, email) = parse(&edit)?;
        let mut edited = ProfileEdited::default();
        let new_email = email.as_ref().map(Email::as_str).filter(|new| Some(*new) != user.email.as_deref());
        let removes_email = email.is_none() && user.email.is_some();
        if new_email.is_some() || removes_email {
            let Some(sender) = self.mail else {
                return Err(AccountError::invalid(
                    Field::Email,
                    "This server sends no mail, so it cannot confirm a new address: ask an admin.",
                ));
            };
            // No password typed: say so, without counting a failure against the account's lockout.
            if edit.current_password.expose_secret().is_empty() {
                return Err(AccountError::invalid(
                    Field::CurrentPassword,
                    "Type your current password to change your email address.",
                ));
            }
            self.confirm_own_password(actor, user, edit.current_password).await?;
            let old_address_notice = self.notice(user, Notice::EmailChanging(new_email))?;
            let user_id = user.id;
            match new_email {
                Some(new) => {
                    let token = crate::random::token(32);
                    let to = Recipient { user_id, username: &user.username, email: new };
                    let mail = sender.email_confirmation(&to, &token).map_err(ServerError::internal)?;
                    let (hash, new, expires_at) = (link_hash(&token), new.to_owned(), Utc::now() + EMAIL_LINK_LIFETIME);
                    let event = actor.event(EventKind::EmailChangeRequested, user_id).detail(format!("to {new}"));
                    db::run(self.pool, move |conn| {
                        use diesel::Connection as _;
                        conn.transaction(|conn| {
                            db::email_changes::issue(conn, user_id, &hash, &new, expires_at)?;
                            db::outbox::queue(conn, &mail)?;
                            db::outbox::queue_each(conn, &old_address_notice)?;
                            db::auth_events::record(conn, &event)
                        })
                    })
                    .await?;
                    edited.email_pending = Some(to.email.to_owned());
                }
                None => {
                    let event = actor.event(EventKind::EmailChanged, user_id).detail("removed");
                    db::run(self.pool, move |conn| {
                        use diesel::Connection as _;
                        conn.transaction(|conn| {
                            db::users::remove_email(conn, user_id, &event)?;
                            db::outbox::queue_each(conn, &old_address_notice)
                        })
                    })
                    .await?;
                    edited.email_removed = true;
                }
            }
        }
        let name = full_name.as_ref().map(FullName::as_str).map(str::to_owned);
        if name.as_deref() != user.full_name.as_deref() {
            let (user_id, event) = (user.id, actor.event(EventKind::ProfileChanged, user.id).detail("full name"));
            db::run(self.pool, move |conn| db::users::set_full_name(conn, user_id, name.as_deref(), &event)).await?;
            edited.name_changed = true;
        }
        Ok(edited)
    }

    /// Proves the current password (under the sign-in's lockout), mapping a wrong one to the field.
    pub(super) async fn confirm_own_password(
        &self,
        actor: &Actor,
        user: &User,
        password: SecretString,
    ) -> Result<(), AccountError> {
        let attempt = Attempt { channel: actor.channel, client: actor.client };
        match credentials::confirm_password(self.pool, self.hasher, self.metrics, &user.username, password, &attempt)
            .await
        {
            Ok(()) => Ok(()),
            Err(LoginError::InvalidCredentials) => {
                Err(AccountError::invalid(Field::CurrentPassword, "This is not your current password."))
            }
            Err(LoginError::Server(err)) => Err(err.into()),
        }
    }

    /// The account and new address a confirmation link would apply, without using it (`GET`: mail
    /// scanners open links).
    pub async fn email_link_target(&self, token: &str) -> Result<Option<(User, String)>, ServerError> {
        let (hash, now) = (link_hash(token), Utc::now());
        db::run(self.pool, move |conn| match db::email_changes::live(conn, &hash, now)? {
            Some((user_id, new_email)) => Ok(db::users::find_by_id(conn, user_id)?.map(|user| (user, new_email))),
            None => Ok(None),
        })
        .await
    }

    /// Uses a confirmation link (once, also under races): the new address becomes the account's,
    /// verified; reset links mailed to the old address die.
    pub async fn confirm_email_change(&self, actor: &Actor, token: &str) -> Result<(Uuid, String), EmailLinkError> {
        let (hash, now) = (link_hash(token), Utc::now());
        let actor = actor.clone();
        let applied = db::run(self.pool, move |conn| {
            use diesel::Connection as _;
            conn.transaction(|conn| {
                let Some((user_id, new_email)) = db::email_changes::consume(conn, &hash, now)? else {
                    return Ok(None);
                };
                db::auth_events::record(
                    conn,
                    &actor.event(EventKind::EmailChanged, user_id).detail(format!("to {new_email}")),
                )?;
                Ok(Some((user_id, new_email)))
            })
        })
        .await?;
        applied.ok_or(EmailLinkError::DeadLink)
    }
}
