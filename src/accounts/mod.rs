//! User administration and self-service: one set of rules behind the admin pages, the admin API, the
//! command line and `/account`. Whoever asks, a change is validated the same way, has the same
//! effect, is refused for the same reasons ([`AccountError`]) and leaves the same audit row, written
//! in the transaction that makes the change and naming the acting user and the channel.
//!
//! The server hashes on the shared [`PasswordHasher`] (never on the async executor); the command
//! line hashes on its own thread ([`blocking`]). Both go through the same validation and the same
//! database transactions.

pub mod blocking;
pub mod clients;
pub mod password_reset;
pub mod personal_tokens;
pub mod profile;
pub mod second_factor;
mod validate;

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use uuid::Uuid;

use crate::auth::credentials::{self, Attempt, LoginError};
use crate::auth::password::PasswordHasher;
use crate::db::{
    self, PgPool,
    auth_events::NewEvent,
    outbox::NewMail,
    password_resets::LinkPurpose,
    users::{AccountChange, NewUser, User, UserWrite},
};
use crate::domain::{Channel, EventKind, NewPassword, WeakPassword};
use crate::errors::ServerError;
use crate::mail::{Notice, Recipient, Sender};
use crate::metrics::Metrics;
use password_reset::MailedLink;
pub use validate::{AccountDraft, Field, Invalid, ValidAccount, sentence};

/// Who is making a change, and through which door.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The signed-in user acting (an admin, or the user themselves); `None` on the command line.
    pub user_id: Option<Uuid>,
    pub channel: Channel,
    pub client: Option<IpAddr>,
}

impl Actor {
    /// The operator at the command line: no user, no address.
    pub fn command_line() -> Self {
        Self { user_id: None, channel: Channel::Cli, client: None }
    }

    /// The audit row of a change this actor makes to `user_id`.
    fn event(&self, kind: EventKind, user_id: Uuid) -> NewEvent {
        NewEvent::new(kind, self.channel).user(user_id).actor(self.user_id).client(self.client.map(|ip| ip.to_string()))
    }

    /// A password people choose on a page or through the API must pass the strength check; the
    /// operator at the command line is warned instead (they may be restoring a known password).
    fn refuses_weak_passwords(&self) -> bool {
        self.channel != Channel::Cli
    }
}

/// Why a change was not made. Nothing of it was written.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("no user named {0}")]
    UnknownUser(String),
    #[error("a user named {0} already exists")]
    UsernameTaken(String),
    #[error("no role named {0}")]
    UnknownRole(String),
    #[error("this would leave no active admin: make another user an admin first")]
    LastAdmin,
    /// The acting user lost the admin role (or was deactivated) while their request ran.
    #[error("you are no longer an active admin")]
    NoLongerAdmin,
    /// Input that does not pass validation: each problem with the field it belongs to.
    #[error("{}", .0.iter().map(|invalid| invalid.message.as_str()).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Invalid>),
    #[error(transparent)]
    Server(#[from] ServerError),
}

impl AccountError {
    fn invalid(field: Field, message: impl Into<String>) -> Self {
        AccountError::Invalid(vec![Invalid { field, message: message.into() }])
    }

    /// The message for `field`, if the input was refused because of it.
    pub fn message_for(&self, field: Field) -> Option<&str> {
        match self {
            AccountError::Invalid(problems) => {
                problems.iter().find(|invalid| invalid.field == field).map(|invalid| invalid.message.as_str())
            }
            AccountError::UsernameTaken(_) if field == Field::Username => Some("This username is taken."),
            AccountError::UnknownRole(_) if field == Field::Roles => Some("One of these roles does not exist."),
            _ => None,
        }
    }
}

/// A user created, and what the strength estimate said about a password the command line let through.
#[derive(Debug)]
pub struct Created {
    pub user: User,
    pub weak_password: Option<WeakPassword>,
}

/// A password set: when earlier tokens and sessions stopped working, and the command line's warning.
#[derive(Debug)]
pub struct PasswordSet {
    pub user: User,
    pub cutoff: DateTime<Utc>,
    pub weak_password: Option<WeakPassword>,
}

/// The strength estimate's verdict under the actor's rule: refused, or let through with a warning.
fn judge_strength(
    actor: &Actor,
    password: &NewPassword,
    user_inputs: &[&str],
    field: Field,
) -> Result<Option<WeakPassword>, AccountError> {
    match password.strength(user_inputs) {
        Ok(()) => Ok(None),
        Err(weak) if actor.refuses_weak_passwords() => Err(AccountError::invalid(field, validate::sentence(&weak))),
        Err(weak) => Ok(Some(weak)),
    }
}

/// [`judge_strength`] on the blocking thread pool: zxcvbn can take a large part of a second on a
/// long, pattern-dense password, which must never stall the async workers that answer `/token`
/// and `/api`.
async fn judge_strength_off_executor(
    actor: &Actor,
    password: &NewPassword,
    user_inputs: Vec<String>,
    field: Field,
) -> Result<Option<WeakPassword>, AccountError> {
    let candidate = password.secret().clone();
    let estimate = actix_web::web::block(move || {
        let inputs: Vec<&str> = user_inputs.iter().map(String::as_str).collect();
        NewPassword::parse(candidate).map(|password| password.strength(&inputs))
    })
    .await
    .map_err(ServerError::internal)?;
    match estimate {
        Ok(Ok(())) => Ok(None),
        Ok(Err(weak)) if actor.refuses_weak_passwords() => Err(AccountError::invalid(field, validate::sentence(&weak))),
        Ok(Err(weak)) => Ok(Some(weak)),
        // Parsed once already: the same text parses again.
        Err(err) => Err(AccountError::invalid(field, err.to_string())),
    }
}

/// The names a password must not be made of: the user's own.
fn user_inputs(user: &User) -> Vec<&str> {
    [Some(user.username.as_str()), user.email.as_deref(), user.full_name.as_deref()].into_iter().flatten().collect()
}

/// The database half of creating a user: the row, the roles and the audit event, all or nothing.
fn write_new_user(
    conn: &mut diesel::PgConnection,
    actor: &Actor,
    id: Uuid,
    account: &ValidAccount,
    password_hash: &str,
) -> diesel::QueryResult<UserWrite> {
    let new_user = NewUser {
        id,
        username: account.username.as_str(),
        email: account.email.as_ref().map(|email| email.as_str()),
        full_name: account.full_name.as_ref().map(|name| name.as_str()),
        password_hash,
    };
    let event = actor.event(EventKind::UserCreated, new_user.id);
    db::users::create_recorded(conn, &new_user, &account.roles, event)
}

/// A change's outcome as the caller sees it.
fn written(outcome: UserWrite, username: &str) -> Result<User, AccountError> {
    match outcome {
        UserWrite::Done(user) => Ok(user),
        UserWrite::UsernameTaken => Err(AccountError::UsernameTaken(username.to_owned())),
        UserWrite::UnknownRole(role) => Err(AccountError::UnknownRole(role)),
        UserWrite::UnknownUser => Err(AccountError::UnknownUser(username.to_owned())),
        UserWrite::LastAdmin => Err(AccountError::LastAdmin),
        UserWrite::ActorNotAdmin => Err(AccountError::NoLongerAdmin),
    }
}

/// A security notice to `user` from `sender` (`None`: mail is off, or they have no address).
pub fn notice_for(sender: Option<&Sender>, user: &User, notice: Notice<'_>) -> Result<Option<NewMail>, ServerError> {
    let (Some(sender), Some(email)) = (sender, user.email.as_deref()) else { return Ok(None) };
    let to = Recipient { user_id: user.id, username: &user.username, email };
    sender.security_notice(&to, &notice).map(Some).map_err(ServerError::internal)
}

/// `write`, and in the same transaction the mail `notice` if the write did something (`true`): a
/// security notice exists exactly when what it tells of does.
fn with_notice(
    conn: &mut diesel::PgConnection,
    notice: &Option<NewMail>,
    write: impl FnOnce(&mut diesel::PgConnection) -> diesel::QueryResult<bool>,
) -> diesel::QueryResult<bool> {
    use diesel::Connection as _;
    conn.transaction(|conn| {
        let done = write(conn)?;
        if done {
            db::outbox::queue_each(conn, notice)?;
        }
        Ok(done)
    })
}

/// The template of the events a [`AccountChange`] records (its kind is replaced per change).
fn change_event(actor: &Actor) -> NewEvent {
    NewEvent::new(EventKind::RolesChanged, actor.channel)
        .actor(actor.user_id)
        .client(actor.client.map(|ip| ip.to_string()))
}

/// A person's own password change, as typed: the current password and the new one twice.
pub struct PasswordChange {
    pub current: SecretString,
    pub new: SecretString,
    pub again: SecretString,
}

/// The server's side: the pool for the transactions, the hasher for new passwords, and the sender
/// of mails (`None`: mail is off).
pub struct Accounts<'a> {
    pub pool: &'a PgPool,
    pub hasher: &'a PasswordHasher,
    pub metrics: &'a Metrics,
    pub mail: Option<&'a Sender>,
}

impl Accounts<'_> {
    /// Creates a user with roles, and a password, or, without one, an invitation mailed to their
    /// address (72 hours) whose link sets it; until then no password signs in to the account.
    pub async fn create(&self, actor: &Actor, draft: AccountDraft) -> Result<Created, AccountError> {
        let account = draft.validate()?;
        let id = Uuid::now_v7();
        let (hash, weak_password, invitation) = match &account.password {
            Some(password) => {
                let inputs = account.user_inputs().into_iter().map(str::to_owned).collect();
                let weak = judge_strength_off_executor(actor, password, inputs, Field::Password).await?;
                (self.hasher.hash(password.secret().clone(), account.username.as_str()).await?, weak, None)
            }
            None => {
                let sender = self.mail.ok_or_else(|| {
                    AccountError::invalid(
                        Field::Password,
                        "Set a password: this server sends no mail, so it cannot send an invitation.",
                    )
                })?;
                let email = account.email.as_ref().ok_or_else(|| {
                    AccountError::invalid(
                        Field::Email,
                        "An invitation is mailed: give an email address, or set a password.",
                    )
                })?;
                let link =
                    MailedLink::to(sender, id, account.username.as_str(), email.as_str(), LinkPurpose::Invitation)?;
                let event = actor.event(EventKind::InvitationSent, id);
                (crate::auth::password::NO_PASSWORD.to_owned(), None, Some((link, event)))
            }
        };
        let (writer, username) = (actor.clone(), account.username.to_string());
        let outcome = self
            .write_as(actor, move |conn| {
                use diesel::Connection as _;
                conn.transaction(|conn| {
                    let outcome = write_new_user(conn, &writer, id, &account, &hash)?;
                    if let (UserWrite::Done(_), Some((link, event))) = (&outcome, &invitation) {
                        link.store(conn, id)?;
                        db::auth_events::record(conn, event)?;
                    }
                    Ok(outcome)
                })
            })
            .await?;
        Ok(Created { user: written(outcome, &username)?, weak_password })
    }

    /// A security notice to `user` (`None`: mail is off, or they have no address), to queue in the
    /// transaction of the change it tells of.
    fn notice(&self, user: &User, notice: Notice<'_>) -> Result<Option<NewMail>, ServerError> {
        notice_for(self.mail, user, notice)
    }

    fn password_changed_notice(&self, user: &User) -> Result<Option<NewMail>, ServerError> {
        self.notice(user, Notice::PasswordChanged)
    }

    /// Sets roles and/or the active flag (see [`db::users::change`] for the last-admin guard and
    /// the re-check of the acting admin).
    pub async fn change(&self, actor: &Actor, username: &str, change: AccountChange) -> Result<User, AccountError> {
        validate::role_names(change.roles.as_deref().unwrap_or_default())?;
        let (event, name) = (change_event(actor), username.to_owned());
        let admin = actor.user_id;
        let outcome = db::run(self.pool, move |conn| db::users::change(conn, &name, &change, &event, admin)).await?;
        written(outcome, username)
    }

    /// An admin sets a user's password: every earlier token and session of the user ends.
    pub async fn set_password(
        &self,
        actor: &Actor,
        username: &str,
        password: SecretString,
        again: Option<SecretString>,
    ) -> Result<PasswordSet, AccountError> {
        let user = self.find(username).await?;
        // An admin's own password is changed like anyone's, proving the current one first: a
        // session left open must not be enough to take the account over for good.
        if actor.user_id == Some(user.id) {
            return Err(AccountError::invalid(
                Field::Password,
                "Change your own password on your account page: it asks for your current password.",
            ));
        }
        let password = validate::new_password(password, again, Field::Password)?;
        let inputs = user_inputs(&user).into_iter().map(str::to_owned).collect();
        let weak_password = judge_strength_off_executor(actor, &password, inputs, Field::Password).await?;
        let hash = self.hasher.hash(password.secret().clone(), &user.username).await?;
        let event = actor.event(EventKind::PasswordChanged, user.id);
        let notice = self.password_changed_notice(&user)?;
        let user_id = user.id;
        let cutoff = self
            .write_as(actor, move |conn| {
                use diesel::Connection as _;
                conn.transaction(|conn| {
                    let cutoff = db::users::set_password_recorded(conn, user_id, &hash, &event)?;
                    db::outbox::queue_each(conn, &notice)?;
                    Ok(cutoff)
                })
            })
            .await?;
        Ok(PasswordSet { user, cutoff, weak_password })
    }

    /// Ends every token and session of the user.
    pub async fn sign_out_everywhere(&self, actor: &Actor, username: &str) -> Result<User, AccountError> {
        let user = self.find(username).await?;
        let event = actor.event(EventKind::SignOutAll, user.id);
        let user_id = user.id;
        self.write_as(actor, move |conn| db::users::sign_out_everywhere(conn, user_id, &event)).await?;
        Ok(user)
    }

    /// A user ends every token and session of their own (`POST /api/users/me/sign-out-all`): the
    /// same write and audit row as an admin's, naming the user as the actor.
    pub async fn sign_out_own(&self, actor: &Actor, user_id: Uuid) -> Result<DateTime<Utc>, AccountError> {
        let event = actor.event(EventKind::SignOutAll, user_id);
        Ok(db::run(self.pool, move |conn| db::users::sign_out_everywhere(conn, user_id, &event)).await?)
    }

    /// A signed-in user changes their own password from the session `session_id`, proving the
    /// current one first (with the sign-in's lockout). Every token and session of theirs ends; the
    /// caller re-issues the session that asked, as begun at the returned cut-off. `None` when that
    /// session was ended while the passwords were being checked: nothing changed, and the caller
    /// signs it out.
    pub async fn change_own_password(
        &self,
        actor: &Actor,
        user: &User,
        session_id: Uuid,
        passwords: PasswordChange,
    ) -> Result<Option<DateTime<Utc>>, AccountError> {
        let PasswordChange { current, new, again } = passwords;
        let password = validate::new_password(new, Some(again), Field::NewPassword)?;
        let attempt = Attempt { channel: actor.channel, client: actor.client };
        match credentials::confirm_password(self.pool, self.hasher, self.metrics, &user.username, current, &attempt)
            .await
        {
            Ok(()) => {}
            Err(LoginError::InvalidCredentials) => {
                return Err(AccountError::invalid(Field::CurrentPassword, "This is not your current password."));
            }
            Err(LoginError::Server(err)) => return Err(err.into()),
        }
        // Only once the current password is proven (under the lockout) is the new one judged:
        // before that, anyone holding the session could spend the server's time on it.
        let inputs = user_inputs(user).into_iter().map(str::to_owned).collect();
        judge_strength_off_executor(actor, &password, inputs, Field::NewPassword).await?;
        let hash = self.hasher.hash(password.secret().clone(), &user.username).await?;
        let event = actor.event(EventKind::PasswordChanged, user.id);
        let notice = self.password_changed_notice(user)?;
        let user_id = user.id;
        Ok(db::run(self.pool, move |conn| {
            db::users::change_own_password(conn, user_id, session_id, &hash, &event, notice.as_ref())
        })
        .await?)
    }

    /// Ends one of `owner`'s browser sessions; false when they have no such session.
    pub async fn end_session(&self, actor: &Actor, owner: Uuid, session_id: Uuid) -> Result<bool, AccountError> {
        let event = actor.event(EventKind::SessionEnded, owner).detail(format!("session {session_id}"));
        Ok(db::run(self.pool, move |conn| db::sessions::end_of_user(conn, owner, session_id, &event)).await?)
    }

    /// Revokes one of `owner`'s refresh-token families; false when they have no such live family.
    pub async fn revoke_family(&self, actor: &Actor, owner: Uuid, family_id: Uuid) -> Result<bool, AccountError> {
        let event = actor.event(EventKind::Revoke, owner).detail(format!("family {family_id} revoked"));
        let now = Utc::now();
        Ok(db::run(self.pool, move |conn| {
            db::refresh_tokens::revoke_family_of_user(conn, owner, family_id, now, &event)
        })
        .await?)
    }

    /// An administrative write in one transaction. A signed-in actor was found an admin when their
    /// request began; it must still be one when the write commits (see [`db::users::as_admin`]).
    /// The operator at the command line needs no role.
    async fn write_as<T: Send + 'static>(
        &self,
        actor: &Actor,
        write: impl FnOnce(&mut diesel::PgConnection) -> diesel::QueryResult<T> + Send + 'static,
    ) -> Result<T, AccountError> {
        let admin = actor.user_id;
        let written = db::run(self.pool, move |conn| match admin {
            Some(admin) => db::users::as_admin(conn, admin, write),
            None => write(conn).map(Some),
        })
        .await?;
        written.ok_or(AccountError::NoLongerAdmin)
    }

    async fn find(&self, username: &str) -> Result<User, AccountError> {
        let name = username.to_owned();
        db::run(self.pool, move |conn| db::users::find_by_username(conn, &name))
            .await?
            .ok_or_else(|| AccountError::UnknownUser(username.to_owned()))
    }
}
