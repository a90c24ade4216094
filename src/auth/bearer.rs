//! Bearer-token authentication (RFC 6750): from a presented access token to a [`Caller`], or the
//! reason it is refused. The HTTP side (reading the header, the 401/403 answers) is `routes::api`'s.

use std::rc::Rc;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::auth::guard::{Denial, Requirement};
use crate::auth::jwt::{AccessClaims, TokenRejection, VerifiedToken, VerifiedTokens};
use crate::auth::keys::KeyRing;
use crate::auth::token_checks::TokenChecks;
use crate::db::PgPool;
use crate::db::users::{TokenHolder, User};
use crate::domain::ScopeSet;
use crate::errors::ServerError;

/// An authenticated caller: a valid token of an existing, active user.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    /// The user's roles as they are now (not as they were when the token was issued).
    pub roles: Vec<String>,
    /// The token, as verified (shared with the worker's cache: nothing is copied per request).
    pub token: Rc<VerifiedToken>,
}

impl Caller {
    /// The scopes of this token.
    pub fn scopes(&self) -> &ScopeSet {
        &self.token.scopes
    }

    pub fn claims(&self) -> &AccessClaims {
        &self.token.claims
    }

    /// The shared authorization rule, for a bearer token: its scopes and the user's roles.
    pub fn authorize(&self, requirement: Requirement) -> Result<(), Denial> {
        requirement.check(&self.roles, Some(self.scopes()))
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
/// was issued after the user's latest invalidation cut-off.
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
    let found = verifier.checks.token_holder(claims.sub, claims.jti).await?;
    let Some(TokenHolder { user, roles, token_revoked }) = found else {
        return Err(BearerError::Invalid(TokenRejection::UnknownUser));
    };
    if !user.is_active {
        return Err(BearerError::Inactive);
    }
    if token_revoked || claims.issued_at() < user.tokens_valid_after {
        return Err(BearerError::Invalid(TokenRejection::Revoked));
    }
    Ok(Caller { user, roles, token: verified })
}
