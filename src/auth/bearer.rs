//! Bearer-token authentication (RFC 6750): from a presented access token or personal access token
//! to a [`Caller`], or the reason it is refused. Every kind ends as the same `Caller`, judged by the
//! same rule (`auth::guard`); the HTTP side (reading the header, the 401/403 answers) is `routes::api`'s.

use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::auth::guard::{CredentialKind, Denial, Requirement};
use crate::auth::jwt::{AccessClaims, Subject, TokenRejection, VerifiedToken, VerifiedTokens};
use crate::auth::keys::KeyRing;
use crate::auth::pat::{self, Dead, StoredToken};
use crate::auth::token_checks::TokenChecks;
use crate::db::users::{AccessCheck, TokenHolder, User};
use crate::db::{self, PgPool, personal_tokens};
use crate::domain::{RoleScopes, ScopeSet};
use crate::errors::ServerError;

/// An authenticated caller: a valid credential of an existing, active user, or a registered
/// client's own token (client credentials).
#[derive(Debug, Clone)]
pub struct Caller {
    pub holder: Holder,
    pub credential: Credential,
}

/// Whose credential it is.
#[derive(Debug, Clone)]
pub enum Holder {
    Person {
        user: User,
        /// The user's roles as they are now (not as they were when the credential was issued).
        roles: Vec<String>,
    },
    /// A registered client's own token: no person, no roles.
    Client { client_id: String },
}

/// What the caller presented.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A JWT access token, as verified (shared with the worker's cache: nothing is copied per request).
    AccessToken(Rc<VerifiedToken>),
    /// A personal access token, with the scopes it acts with now: those it was given that the
    /// owner's roles still allow.
    PersonalToken { id: Uuid, scopes: ScopeSet, created_at: DateTime<Utc> },
}

impl Caller {
    /// The person this credential acts for; a client's own token has none (`403`, see
    /// [`Denial::NotAPerson`]).
    pub fn user(&self) -> Result<&User, Denial> {
        match &self.holder {
            Holder::Person { user, .. } => Ok(user),
            Holder::Client { .. } => Err(Denial::NotAPerson),
        }
    }

    /// The caller's roles now (none for a client).
    pub fn roles(&self) -> &[String] {
        match &self.holder {
            Holder::Person { roles, .. } => roles,
            Holder::Client { .. } => &[],
        }
    }

    /// The scopes of this credential.
    pub fn scopes(&self) -> &ScopeSet {
        match &self.credential {
            Credential::AccessToken(token) => &token.scopes,
            Credential::PersonalToken { scopes, .. } => scopes,
        }
    }

    /// The access token's claims; `None` for a personal access token.
    pub fn claims(&self) -> Option<&AccessClaims> {
        match &self.credential {
            Credential::AccessToken(token) => Some(&token.claims),
            Credential::PersonalToken { .. } => None,
        }
    }

    /// When the credential was established: compared with the user's invalidation cut-off by
    /// anything this caller creates that must not outlive its credential.
    pub fn credential_checked_at(&self) -> DateTime<Utc> {
        match &self.credential {
            Credential::AccessToken(token) => token.claims.issued_at(),
            Credential::PersonalToken { created_at, .. } => *created_at,
        }
    }

    pub fn credential_kind(&self) -> CredentialKind {
        match &self.credential {
            Credential::AccessToken(_) => CredentialKind::AccessToken,
            Credential::PersonalToken { .. } => CredentialKind::PersonalToken,
        }
    }

    /// The shared authorization rule, for a bearer credential: a person's by its kind, its scopes
    /// and their roles; a client's by its scopes alone, and never where a person is needed.
    pub fn authorize(&self, requirement: Requirement) -> Result<(), Denial> {
        match &self.holder {
            Holder::Person { roles, .. } => requirement.check_bearer(self.credential_kind(), roles, self.scopes()),
            Holder::Client { .. } => requirement.check_client(self.scopes()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BearerError {
    #[error(transparent)]
    Invalid(TokenRejection),
    #[error("this account is inactive")]
    Inactive,
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// What a worker thread checks bearer tokens with: the keys, its cache of verified signatures and its
/// batch of database lookups.
pub struct Verifier<'a> {
    pub keys: &'a Arc<KeyRing>,
    /// For a reload when a token names a key this instance has not loaded yet.
    pub pool: &'a PgPool,
    pub verified: &'a VerifiedTokens,
    pub checks: &'a Rc<TokenChecks>,
    /// The request's client address, written as a personal access token's last use.
    pub client: Option<IpAddr>,
    /// The role definitions: what a personal access token's owner's roles allow now.
    pub role_scopes: &'a RoleScopes,
}

/// Checks `token` at `now`: signature (once per token and worker: later presentations hit the cache,
/// while the signing key must still be accepted) and the time window; then, batched with the
/// worker's other requests, that its user exists and is active, that it was not revoked, that it
/// was issued after the user's latest invalidation cut-off, and that the client it was issued to (if
/// any) is still registered. A client's own token instead needs its
/// client to be registered still (one unbatched query: client tokens are for services, not the hot
/// path). A personal access token goes to [`authenticate_personal_token`].
pub async fn authenticate(verifier: &Verifier<'_>, token: &str, now: DateTime<Utc>) -> Result<Caller, BearerError> {
    if pat::is_personal_token(token) {
        return authenticate_personal_token(verifier, token, now).await;
    }
    let verified = match verifier.verified.get(token) {
        Some(verified) if verifier.keys.accepts(&verified.kid, now) => verified,
        Some(_) => return Err(BearerError::Invalid(TokenRejection::BadSignature)),
        None => {
            let (kid, claims) =
                verifier.keys.verify_signature_fresh(verifier.pool, token, now).await.map_err(BearerError::Invalid)?;
            let scopes = ScopeSet::parse(&claims.scope).map_err(|_| BearerError::Invalid(TokenRejection::Malformed))?;
            verifier.verified.insert(token, VerifiedToken { kid, claims, scopes })
        }
    };
    let claims = &verified.claims;
    claims.check_time(now).map_err(BearerError::Invalid)?;
    let user_id = match &claims.sub {
        Subject::User(user_id) => *user_id,
        Subject::Client(client_id) => {
            // Only gatehouse signs, and it names the client twice; anything else was not issued here.
            if claims.client_id.as_ref() != Some(client_id) {
                return Err(BearerError::Invalid(TokenRejection::Malformed));
            }
            // Read on every request, never cached: `client remove` ends its tokens at the next one,
            // on every instance.
            let id = client_id.clone();
            if !db::run(verifier.pool, move |conn| db::clients::is_live(conn, &id)).await? {
                return Err(BearerError::Invalid(TokenRejection::UnknownClient));
            }
            let holder = Holder::Client { client_id: client_id.clone() };
            return Ok(Caller { holder, credential: Credential::AccessToken(verified) });
        }
    };
    let check = AccessCheck { user_id, jti: claims.jti, client_id: claims.client_id.clone() };
    let found = verifier.checks.token_holder(check).await?;
    let Some(TokenHolder { user, roles, token_revoked, client_removed }) = found else {
        return Err(BearerError::Invalid(TokenRejection::UnknownUser));
    };
    if !user.is_active {
        return Err(BearerError::Inactive);
    }
    if token_revoked || claims.issued_at() < user.tokens_valid_after {
        return Err(BearerError::Invalid(TokenRejection::Revoked));
    }
    // A person's token issued to a registered client ends with the client, as the client's own do
    // (read in the same batched lookup).
    if client_removed {
        return Err(BearerError::Invalid(TokenRejection::UnknownClient));
    }
    Ok(Caller { holder: Holder::Person { user, roles }, credential: Credential::AccessToken(verified) })
}

/// Checks a personal access token at `now`: its form and checksum (no lookup for a mistyped or
/// made-up one), then, from its row read (batched with the worker's other lookups) after this call
/// began — never a cache: a revocation counts on every instance from the next request — that it is
/// live, answered in the order an access token is: expired, unknown, inactive owner (`403`),
/// revoked or cut off. A live use is written as the token's last use when [`pat::record_use`] says
/// so: the first use, then once per ten minutes, so almost every use is the lookup alone.
async fn authenticate_personal_token(
    verifier: &Verifier<'_>,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Caller, BearerError> {
    pat::check_format(token).map_err(|_| BearerError::Invalid(TokenRejection::Malformed))?;
    let found = verifier.checks.personal_token(pat::hash(token)).await?;
    let Some(row) = found else { return Err(BearerError::Invalid(TokenRejection::Unknown)) };
    let verdict = pat::judge(&stored(&row), now);
    if verdict == Err(Dead::Expired) {
        return Err(BearerError::Invalid(TokenRejection::Expired));
    }
    if !row.user.is_active {
        return Err(BearerError::Inactive);
    }
    if verdict.is_err() {
        return Err(BearerError::Invalid(TokenRejection::Revoked));
    }
    if pat::record_use(row.last_used_at, now) {
        let (id, address) = (row.id, verifier.client.map(|ip| ip.to_string()));
        db::run(verifier.pool, move |conn| {
            personal_tokens::record_use(conn, id, now, address.as_deref(), pat::stale_before(now))
        })
        .await?;
    }
    let granted = ScopeSet::parse(&row.scope).map_err(|_| BearerError::Invalid(TokenRejection::Malformed))?;
    let allowed_now = verifier.role_scopes.allowed_for(&row.roles);
    let scopes = pat::scopes_at_use(&granted, &allowed_now);
    Ok(Caller {
        holder: Holder::Person { user: row.user, roles: row.roles },
        credential: Credential::PersonalToken { id: row.id, scopes, created_at: row.created_at },
    })
}

/// The parts of a presented token's row that decide whether it works.
pub fn stored(row: &personal_tokens::PresentedToken) -> StoredToken {
    StoredToken {
        created_at: row.created_at,
        expires_at: row.expires_at,
        revoked_at: row.revoked_at,
        tokens_valid_after: row.user.tokens_valid_after,
    }
}
