//! Bearer-token authentication (RFC 6750): from a presented access token to a [`Caller`], or the
//! reason it is refused. The HTTP side (reading the header, the 401/403 answers) is `routes::api`'s.

use std::rc::Rc;

use chrono::{DateTime, Utc};

use crate::auth::guard::{Denial, Requirement};
use crate::auth::jwt::{AccessClaims, JwtKeys, TokenRejection};
use crate::auth::token_checks::TokenChecks;
use crate::db::users::{TokenHolder, User};
use crate::domain::ScopeSet;
use crate::errors::ServerError;

/// An authenticated caller: a valid token of an existing, active user.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    /// The user's roles as they are now (not as they were when the token was issued).
    pub roles: Vec<String>,
    /// The scopes of this token.
    pub scopes: ScopeSet,
    pub claims: AccessClaims,
}

impl Caller {
    /// The shared authorization rule, for a bearer token: its scopes and the user's roles.
    pub fn authorize(&self, requirement: Requirement) -> Result<(), Denial> {
        requirement.check(&self.roles, Some(&self.scopes))
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

/// Checks `token` at `now`: signature and claims, then (batched with the worker's other requests)
/// that its user exists and is active, that it was not revoked, and that it was issued after the
/// user's latest invalidation cut-off.
pub async fn authenticate(
    keys: &JwtKeys,
    checks: &Rc<TokenChecks>,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Caller, BearerError> {
    let claims = keys.verify(token, now).map_err(BearerError::Invalid)?;
    let scopes = ScopeSet::parse(&claims.scope).map_err(|_| BearerError::Invalid(TokenRejection::Malformed))?;
    let found = checks.token_holder(claims.sub, claims.jti).await?;
    let Some(TokenHolder { user, roles, token_revoked }) = found else {
        return Err(BearerError::Invalid(TokenRejection::UnknownUser));
    };
    if !user.is_active {
        return Err(BearerError::Inactive);
    }
    if token_revoked || claims.issued_at() < user.tokens_valid_after {
        return Err(BearerError::Invalid(TokenRejection::Revoked));
    }
    Ok(Caller { user, roles, scopes, claims })
}
