//! "Forgot your password?": a link mailed to the account's address, and the new password it sets.
//! The link and the mail are written in one transaction (the mail goes out from the outbox, never
//! while the request waits); using the link is one conditional update, so it works once.

use chrono::{Duration, Utc};
use diesel::Connection as _;
use secrecy::SecretString;
use sha2::{Digest, Sha256};

use super::{AccountError, Accounts, Actor, Field, user_inputs, validate};
use crate::db::{self, outbox::NewMail, users::User};
use crate::domain::EventKind;
use crate::errors::ServerError;
use crate::mail::templates::{self, Recipient};
use uuid::Uuid;

/// A new link for `user` and the mail that carries it (`None` without an email address).
fn reset_mail(context: &MailContext, user: &User) -> Result<Option<(NewMail, Vec<u8>)>, ServerError> {
    let Some(email) = user.email.as_deref() else { return Ok(None) };
    let token = crate::random::token(32);
    let recipient = Recipient { user_id: user.id, username: &user.username, email };
    let mail = templates::password_reset(&context.issuer, &context.service, &recipient, &token)
        .map_err(ServerError::internal)?;
    Ok(Some((mail, link_hash(&token))))
}

/// Stores the link and queues its mail, unless the account had [`MAILS_PER_HOUR`] reset mails in the
/// last hour: `false` then. The user's row is locked first, so the limit holds for racing requests.
fn queue_reset(
    conn: &mut diesel::PgConnection,
    user_id: Uuid,
    hash: &[u8],
    mail: &NewMail,
    event: &crate::db::auth_events::NewEvent,
) -> diesel::QueryResult<bool> {
    conn.transaction(|conn| {
        db::password_resets::lock_user(conn, user_id)?;
        let since = Utc::now() - Duration::hours(1);
        if db::outbox::queued_since(conn, user_id, mail.kind, since)? >= MAILS_PER_HOUR {
            return Ok(false);
        }
        db::password_resets::issue(conn, user_id, hash, Utc::now() + LINK_LIFETIME)?;
        db::outbox::queue(conn, mail)?;
        db::auth_events::record(conn, event)?;
        Ok(true)
    })
}

/// A link works this long.
pub const LINK_LIFETIME: Duration = Duration::minutes(30);
/// At most this many reset mails per account per hour (plus the per-address budget of the form).
pub const MAILS_PER_HOUR: i64 = 3;

/// What a mail needs to say where it comes from.
#[derive(Debug, Clone)]
pub struct MailContext {
    /// Links start here.
    pub issuer: String,
    /// How the mail names the service (the issuer's host).
    pub service: String,
}

/// Why a new password was not set. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    /// Unknown, used, expired, replaced by a newer one, older than a password change, or its account
    /// was deactivated: the same answer for all.
    #[error("This link does not work any more: ask for a new one.")]
    DeadLink,
    #[error(transparent)]
    Account(#[from] AccountError),
}

impl From<ServerError> for ResetError {
    fn from(err: ServerError) -> Self {
        ResetError::Account(AccountError::Server(err))
    }
}

fn link_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

impl Accounts<'_> {
    /// Queues a reset link for each active account named `who` (a username, or an email address,
    /// which several accounts may share) that has an email address and has not had
    /// [`MAILS_PER_HOUR`] reset mails in the last hour. Says nothing about what it found: the caller
    /// answers the same in every case.
    pub async fn request_password_reset(
        &self,
        context: &MailContext,
        who: &str,
        actor: &Actor,
    ) -> Result<(), ServerError> {
        let who = who.trim().to_owned();
        if who.is_empty() || who.len() > 320 {
            return Ok(());
        }
        let accounts = db::run(self.pool, move |conn| db::users::active_by_username_or_email(conn, &who)).await?;
        for user in accounts {
            let Some((mail, hash)) = reset_mail(context, &user)? else { continue };
            let event = actor.event(EventKind::PasswordResetRequested, user.id);
            let user_id = user.id;
            db::run(self.pool, move |conn| queue_reset(conn, user_id, &hash, &mail, &event)).await?;
        }
        Ok(())
    }

    /// An admin mails `username` a reset link (the page's "Send a password-reset link"), under the
    /// same per-account limit. `Ok(false)`: nothing sent (no email address, inactive, or the limit).
    pub async fn send_reset_link(
        &self,
        context: &MailContext,
        actor: &Actor,
        username: &str,
    ) -> Result<bool, AccountError> {
        let user = self.find(username).await?;
        if !user.is_active {
            return Ok(false);
        }
        let Some((mail, hash)) = reset_mail(context, &user)? else { return Ok(false) };
        let event = actor.event(EventKind::PasswordResetRequested, user.id).detail("sent by an admin");
        let user_id = user.id;
        self.write_as(actor, move |conn| queue_reset(conn, user_id, &hash, &mail, &event)).await
    }

    /// The account a link would reset, without using the link (`GET` of the link: mail scanners open
    /// links, and must not spend them).
    pub async fn reset_link_user(&self, token: &str) -> Result<Option<User>, ServerError> {
        let (hash, now) = (link_hash(token), Utc::now());
        db::run(self.pool, move |conn| match db::password_resets::live_user(conn, &hash, now)? {
            Some(user_id) => db::users::find_by_id(conn, user_id),
            None => Ok(None),
        })
        .await
    }

    /// Sets the new password through the link (used once): every session and token of the user ends,
    /// their second factor stays, a notice is mailed; the person is not signed in.
    pub async fn reset_password(
        &self,
        context: &MailContext,
        actor: &Actor,
        token: &str,
        new: SecretString,
        again: SecretString,
    ) -> Result<User, ResetError> {
        let user = self.reset_link_user(token).await?.ok_or(ResetError::DeadLink)?;
        let password = validate::new_password(new, Some(again), Field::NewPassword)?;
        let inputs = user_inputs(&user).into_iter().map(str::to_owned).collect();
        super::judge_strength_off_executor(actor, &password, inputs, Field::NewPassword).await?;
        let hash = self.hasher.hash(password.secret().clone(), &user.username).await?;
        let notice = match &user.email {
            Some(email) => {
                let to = Recipient { user_id: user.id, username: &user.username, email };
                Some(
                    templates::password_changed(&context.issuer, &context.service, &to)
                        .map_err(ServerError::internal)?,
                )
            }
            None => None,
        };
        let event = actor.event(EventKind::PasswordChanged, user.id).detail("reset link");
        let (link, now) = (link_hash(token), Utc::now());
        let done = db::run(self.pool, move |conn| {
            conn.transaction(|conn| {
                // One conditional update: of racing uses of the link, one gets the user.
                let Some(user_id) = db::password_resets::consume(conn, &link, now)? else { return Ok(None) };
                db::users::set_password_recorded(conn, user_id, &hash, &event)?;
                if let Some(notice) = &notice {
                    db::outbox::queue(conn, notice)?;
                }
                Ok(Some(user_id))
            })
        })
        .await?;
        match done {
            Some(_) => Ok(user),
            None => Err(ResetError::DeadLink),
        }
    }
}
