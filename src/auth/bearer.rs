//! Bearer-token authentication (RFC 6750): from a presented access token to a [`Caller`], or the
//! reason it is refused. The HTTP side (reading the header, the 401/403 answers) is `routes::api`'s.

use std::rc::Rc;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::auth::guard::{Denial, Requirement};
use crate::auth::jwt::{AccessClaims, Subject, TokenRejection, VerifiedToken, VerifiedTokens};
use crate::auth::keys::KeyRing;
use crate::auth::token_checks::TokenChecks;
use crate::db::users::{TokenHolder, User};
use crate::db::{self, PgPool};
use crate::domain::ScopeSet;
use crate::errors::ServerError;

/// An authenticated caller: a valid token of an existing, active user, or of a registered client
/// acting for itself (client credentials).
#[derive(Debug, Clone)]
pub struct Caller {
    pub holder: Holder,
    /// The token, as verified (shared with the worker's cache: nothing is copied per request).
    pub token: Rc<VerifiedToken>,
}

/// Whose token it is.
#[derive(Debug, Clone)]
pub enum Holder {
    Person {
        user: User,
        /// The user's roles as they are now (not as they were when the token was issued).
        roles: Vec<String>,
    },
    /// A registered client's own token: no person, no roles.
    Client { client_id: String },
}

impl Caller {
    /// The person this token acts for; a client's own token has none (`403`, see [`Denial::NotAPerson`]).
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

    /// The scopes of this token.
    pub fn scopes(&self) -> &ScopeSet {
        &self.token.scopes
    }

    pub fn claims(&self) -> &AccessClaims {
        &self.token.claims
    }

    /// The shared authorization rule, for a bearer token: its scopes and the user's roles; a client
    /// has no roles and is no person.
    pub fn authorize(&self, requirement: Requirement) -> Result<(), Denial> {
        match &self.holder {
            Holder::Person { roles, .. } => requirement.check(roles, Some(self.scopes())),
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
}

/// Checks `token` at `now`: signature (once per token and worker: later presentations hit the cache,
/// while the signing key must still be accepted) and the time window; then, batched with the
/// worker's other requests, that its user exists and is active, that it was not revoked, and that it
/// was issued after the user's latest invalidation cut-off. A client's own token instead needs its
/// client to be registered still (one unbatched query: client tokens are for services, not the hot path).
pub async fn authenticate(verifier: &Verifier<'_>, token: &str, now: DateTime<Utc>) -> Result<Caller, BearerError> {
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
            return Ok(Caller { holder: Holder::Client { client_id: client_id.clone() }, token: verified });
        }
    };
    let found = verifier.checks.token_holder(user_id, claims.jti).await?;
    let Some(TokenHolder { user, roles, token_revoked }) = found else {
        return Err(BearerError::Invalid(TokenRejection::UnknownUser));
    };
    if !user.is_active {
        return Err(BearerError::Inactive);
    }
    if token_revoked || claims.issued_at() < user.tokens_valid_after {
        return Err(BearerError::Invalid(TokenRejection::Revoked));
    }
    Ok(Caller { holder: Holder::Person { user, roles }, token: verified })
}
