//! Personal access tokens, made, listed and revoked the same way from the API, the account page,
//! the admin page and the command line: the same validation, the same refusals ([`TokenError`]),
//! the same audit rows. The secret is returned once, to be shown once; it is never logged.

use chrono::{DateTime, Utc};
use diesel::{Connection as _, PgConnection};
use secrecy::SecretString;
use uuid::Uuid;

use super::{AccountError, Accounts, Actor};
use crate::auth::pat::{self, ExpiryDays, ExpiryError, NameError, ScopeError, TokenName};
use crate::db::{
    self,
    auth_events::NewEvent,
    outbox::NewMail,
    personal_tokens::{NewPersonalToken, PersonalToken},
};
use crate::domain::{EventKind, ScopeName, ScopeSet};
use crate::errors::ServerError;

/// What a person asks for.
#[derive(Debug, Clone, Default)]
pub struct TokenDraft {
    pub name: String,
    pub scopes: Vec<String>,
    /// `None`: the default (30 days).
    pub expires_in_days: Option<i64>,
}

/// Why no token was made. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Expiry(#[from] ExpiryError),
    /// A malformed scope, one that the owner's roles do not allow, or none at all.
    #[error("{0}")]
    Scope(String),
    /// The owner is inactive, or their credential was ended (a password change, a sign-out
    /// everywhere) while the request ran.
    #[error("your sign-in has ended; sign in again")]
    CredentialEnded,
    #[error("no such user")]
    UnknownUser,
    #[error(transparent)]
    Server(#[from] ServerError),
}

impl From<ScopeError> for TokenError {
    fn from(err: ScopeError) -> Self {
        TokenError::Scope(err.to_string())
    }
}

/// A token made: its row, and its secret, to show once.
#[derive(Debug)]
pub struct Issued {
    pub token: PersonalToken,
    pub secret: SecretString,
}

struct ValidDraft {
    name: TokenName,
    scopes: ScopeSet,
    expiry: ExpiryDays,
}

fn validate(draft: &TokenDraft) -> Result<ValidDraft, TokenError> {
    let name = TokenName::parse(&draft.name)?;
    let scopes = draft
        .scopes
        .iter()
        .map(|scope| ScopeName::parse(scope))
        .collect::<Result<ScopeSet, _>>()
        .map_err(|err| TokenError::Scope(err.to_string()))?;
    let expiry = ExpiryDays::new(draft.expires_in_days)?;
    Ok(ValidDraft { name, scopes, expiry })
}

/// Validates `draft` and makes the token for `owner`, audited as `actor`'s, in one transaction:
/// load the owner under their row's lock, decide (`auth::pat`), write. `credential_checked_at`:
/// when the asking credential was checked (an access token's issue, a session's sign-in; `None`
/// for the command line), so a credential that an invalidation ended meanwhile makes nothing.
/// `notice`: the owner's security notice, queued with the token.
pub fn create_on(
    conn: &mut PgConnection,
    actor: &Actor,
    owner: Uuid,
    draft: &TokenDraft,
    credential_checked_at: Option<DateTime<Utc>>,
    notice: &Option<NewMail>,
) -> Result<Issued, TokenError> {
    let valid = validate(draft)?;
    let new_token = pat::generate();
    let hash = new_token.hash();
    let event = actor.event(EventKind::PatCreated, owner);
    let made = conn
        .transaction(|conn| {
            let Some(locked) = db::personal_tokens::lock_owner(conn, owner)? else {
                return Ok(Err(TokenError::UnknownUser));
            };
            if !pat::may_create(locked.is_active, locked.tokens_valid_after, credential_checked_at) {
                return Ok(Err(TokenError::CredentialEnded));
            }
            let allowed = db::users::allowed_scopes(conn, owner)?;
            let scopes = match pat::grantable(&valid.scopes, &allowed) {
                Ok(scopes) => scopes,
                Err(err) => return Ok(Err(err.into())),
            };
            let row = NewPersonalToken {
                id: Uuid::now_v7(),
                user_id: owner,
                name: valid.name.as_str(),
                token_hash: &hash,
                scope: &scopes,
                created_at: locked.now,
                expires_at: valid.expiry.expires_at(locked.now),
            };
            let token = db::personal_tokens::insert(conn, &row, event)?;
            db::outbox::queue_each(conn, notice)?;
            Ok::<_, diesel::result::Error>(Ok(token))
        })
        .map_err(ServerError::from)?;
    made.map(|token| Issued { token, secret: new_token.secret().clone() })
}

/// Revokes token `id`: `owner` `Some` only if it is theirs (an admin or the owner acting), `None`
/// whoever's it is (the command line). `None` back when there is no such live token.
pub fn revoke_on(
    conn: &mut PgConnection,
    actor: &Actor,
    owner: Option<Uuid>,
    id: Uuid,
) -> diesel::QueryResult<Option<PersonalToken>> {
    let event = NewEvent::new(EventKind::PatRevoked, actor.channel)
        .actor(actor.user_id)
        .client(actor.client.map(|ip| ip.to_string()));
    db::personal_tokens::revoke(conn, id, owner, Utc::now(), event)
}

impl Accounts<'_> {
    /// Makes a personal access token for `owner` (see [`create_on`]).
    pub async fn create_personal_token(
        &self,
        actor: &Actor,
        owner: Uuid,
        draft: TokenDraft,
        credential_checked_at: Option<DateTime<Utc>>,
    ) -> Result<Issued, TokenError> {
        let actor = actor.clone();
        let notice = match db::run(self.pool, move |conn| db::users::find_by_id(conn, owner)).await? {
            Some(user) => self.notice(&user, crate::mail::Notice::PersonalTokenCreated(draft.name.trim()))?,
            None => None,
        };
        db::run(self.pool, move |conn| Ok(create_on(conn, &actor, owner, &draft, credential_checked_at, &notice)))
            .await?
    }

    /// `owner`'s tokens that are not revoked, newest first.
    pub async fn personal_tokens(&self, owner: Uuid) -> Result<Vec<PersonalToken>, ServerError> {
        db::run(self.pool, move |conn| db::personal_tokens::of_user(conn, owner)).await
    }

    /// The owner revokes one of their tokens; false when they have no such live token.
    pub async fn revoke_own_personal_token(&self, actor: &Actor, owner: Uuid, id: Uuid) -> Result<bool, ServerError> {
        let actor = actor.clone();
        let revoked = db::run(self.pool, move |conn| revoke_on(conn, &actor, Some(owner), id)).await?;
        Ok(revoked.is_some())
    }

    /// An admin revokes a user's token, re-checked as an admin when the write commits; false when
    /// the user has no such live token.
    pub async fn revoke_personal_token_as_admin(
        &self,
        actor: &Actor,
        owner: Uuid,
        id: Uuid,
    ) -> Result<bool, AccountError> {
        let writer = actor.clone();
        let revoked = self.write_as(actor, move |conn| revoke_on(conn, &writer, Some(owner), id)).await?;
        Ok(revoked.is_some())
    }
}
