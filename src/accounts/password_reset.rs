//! Links that set a password: "Forgot your password?" (a link mailed to the account's address, 30
//! minutes) and the invitation of a user created without one (72 hours). A link and its mail are
//! written in one transaction (the mail goes out from the outbox, never while the request waits);
//! using a link is one conditional update, so it works once.

use chrono::{Duration, Utc};
use diesel::Connection as _;
use secrecy::SecretString;
use sha2::{Digest, Sha256};

use super::{AccountError, Accounts, Actor, Field, user_inputs, validate};
use crate::db::password_resets::{LinkPurpose, NewLink};
use crate::db::{self, outbox::NewMail, users::User};
use crate::domain::EventKind;
use crate::errors::ServerError;
use crate::mail::{Recipient, Sender};
use uuid::Uuid;

/// A reset link works this long.
pub const LINK_LIFETIME: Duration = Duration::minutes(30);
/// An invitation works this long.
pub const INVITATION_LIFETIME: Duration = Duration::hours(72);
/// At most this many reset mails per account per hour (plus the per-address budget of the form).
pub const MAILS_PER_HOUR: i64 = 3;

impl LinkPurpose {
    fn lifetime(self) -> Duration {
        match self {
            LinkPurpose::Reset => LINK_LIFETIME,
            LinkPurpose::Invitation => INVITATION_LIFETIME,
        }
    }
}

/// A link about to be stored, and the mail that carries it.
pub(super) struct MailedLink {
    pub mail: NewMail,
    hash: Vec<u8>,
    purpose: LinkPurpose,
}

impl MailedLink {
    /// A new link of `purpose` for `user`, mailed to their address (`None` without one).
    pub(super) fn new(sender: &Sender, user: &User, purpose: LinkPurpose) -> Result<Option<Self>, ServerError> {
        let Some(email) = user.email.as_deref() else { return Ok(None) };
        Self::to(sender, user.id, &user.username, email, purpose).map(Some)
    }

    pub(super) fn to(
        sender: &Sender,
        user_id: Uuid,
        username: &str,
        email: &str,
        purpose: LinkPurpose,
    ) -> Result<Self, ServerError> {
        let token = crate::random::token(32);
        let to = Recipient { user_id, username, email };
        let mail = match purpose {
            LinkPurpose::Reset => sender.password_reset(&to, &token),
            LinkPurpose::Invitation => sender.invitation(&to, &token),
        }
        .map_err(ServerError::internal)?;
        Ok(Self { mail, hash: link_hash(&token), purpose })
    }

    /// Stores the link (killing the user's older ones) and queues its mail, in the caller's transaction.
    pub(super) fn store(&self, conn: &mut diesel::PgConnection, user_id: Uuid) -> diesel::QueryResult<()> {
        let link = NewLink {
            user_id,
            purpose: self.purpose,
            token_hash: &self.hash,
            sent_to: &self.mail.recipient,
            expires_at: Utc::now() + self.purpose.lifetime(),
        };
        db::password_resets::issue(conn, &link)?;
        db::outbox::queue(conn, &self.mail).map(|_| ())
    }
}

/// Stores the link and queues its mail, unless the account had [`MAILS_PER_HOUR`] reset mails in the
/// last hour: `false` then. The user's row is locked first, so the limit holds for racing requests.
fn queue_reset(
    conn: &mut diesel::PgConnection,
    user_id: Uuid,
    link: &MailedLink,
    event: &crate::db::auth_events::NewEvent,
) -> diesel::QueryResult<bool> {
    conn.transaction(|conn| {
        db::password_resets::lock_user(conn, user_id)?;
        let since = Utc::now() - Duration::hours(1);
        if db::outbox::queued_since(conn, user_id, link.mail.kind, since)? >= MAILS_PER_HOUR {
            return Ok(false);
        }
        link.store(conn, user_id)?;
        db::auth_events::record(conn, event)?;
        Ok(true)
    })
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

pub(super) fn link_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

impl Accounts<'_> {
    /// Queues a reset link for each active account named `who` (a username, or an email address,
    /// which several accounts may share) that has an email address and has not had
    /// [`MAILS_PER_HOUR`] reset mails in the last hour. Says nothing about what it found: the caller
    /// answers the same in every case. Nothing happens while mail is off.
    pub async fn request_password_reset(&self, who: &str, actor: &Actor) -> Result<(), ServerError> {
        let Some(sender) = self.mail else { return Ok(()) };
        let who = who.trim().to_owned();
        if who.is_empty() || who.len() > 320 {
            return Ok(());
        }
        let accounts = db::run(self.pool, move |conn| db::users::active_by_username_or_email(conn, &who)).await?;
        for user in accounts {
            let Some(link) = MailedLink::new(sender, &user, LinkPurpose::Reset)? else { continue };
            let event = actor.event(EventKind::PasswordResetRequested, user.id);
            let user_id = user.id;
            db::run(self.pool, move |conn| queue_reset(conn, user_id, &link, &event)).await?;
        }
        Ok(())
    }

    /// An admin mails `username` a reset link (the page's "Send a password-reset link"), under the
    /// same per-account limit. `Ok(false)`: nothing sent (mail off, no email address, inactive, or
    /// the limit).
    pub async fn send_reset_link(&self, actor: &Actor, username: &str) -> Result<bool, AccountError> {
        let user = self.find(username).await?;
        let Some(sender) = self.mail else { return Ok(false) };
        if !user.is_active {
            return Ok(false);
        }
        let Some(link) = MailedLink::new(sender, &user, LinkPurpose::Reset)? else { return Ok(false) };
        let event = actor.event(EventKind::PasswordResetRequested, user.id).detail("sent by an admin");
        let user_id = user.id;
        self.write_as(actor, move |conn| queue_reset(conn, user_id, &link, &event)).await
    }

    /// The account a link would set the password of, without using the link (`GET` of the link:
    /// mail scanners open links, and must not spend them).
    pub async fn password_link_user(&self, purpose: LinkPurpose, token: &str) -> Result<Option<User>, ServerError> {
        let (hash, now) = (link_hash(token), Utc::now());
        db::run(self.pool, move |conn| match db::password_resets::live_user(conn, purpose, &hash, now)? {
            Some(user_id) => db::users::find_by_id(conn, user_id),
            None => Ok(None),
        })
        .await
    }

    /// Sets the new password through a link (used once): every session and token of the user ends,
    /// their second factor stays, a notice is mailed (after a reset; an invitation's first password
    /// needs none); the person is not signed in. The address the link went to is now proven.
    pub async fn set_password_by_link(
        &self,
        actor: &Actor,
        purpose: LinkPurpose,
        token: &str,
        new: SecretString,
        again: SecretString,
    ) -> Result<User, ResetError> {
        let user = self.password_link_user(purpose, token).await?.ok_or(ResetError::DeadLink)?;
        let password = validate::new_password(new, Some(again), Field::NewPassword)?;
        let inputs = user_inputs(&user).into_iter().map(str::to_owned).collect();
        super::judge_strength_off_executor(actor, &password, inputs, Field::NewPassword).await?;
        let hash = self.hasher.hash(password.secret().clone(), &user.username).await?;
        let notice = match purpose {
            LinkPurpose::Reset => self.password_changed_notice(&user)?,
            LinkPurpose::Invitation => None,
        };
        let detail = match purpose {
            LinkPurpose::Reset => "reset link",
            LinkPurpose::Invitation => "invitation",
        };
        let event = actor.event(EventKind::PasswordChanged, user.id).detail(detail);
        let (link, now) = (link_hash(token), Utc::now());
        let done = db::run(self.pool, move |conn| {
            conn.transaction(|conn| {
                // One conditional update: of racing uses of the link, one gets the user.
                let Some(user_id) = db::password_resets::consume(conn, purpose, &link, now)? else {
                    return Ok(None);
                };
                db::users::set_password_recorded(conn, user_id, &hash, &event)?;
                db::outbox::queue_each(conn, &notice)?;
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
