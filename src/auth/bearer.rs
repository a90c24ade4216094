//! Bearer-token authentication for `/api/*` (RFC 6750), as extractors: a handler that takes a
//! [`Caller`] cannot run for an unauthenticated request, and one that takes [`MaybeCaller`] sees
//! anonymous requests as `None` but still refuses a bad token.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use chrono::{DurationRound, Utc};

use crate::auth::guard::{Denial, Requirement};
use crate::auth::jwt::{AccessClaims, TokenRejection};
use crate::auth::token_checks::TokenChecks;
use crate::db::{self, users::User};
use crate::domain::ScopeSet;
use crate::errors::ApiError;
use crate::state::AppState;

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
    /// The shared authorization rule, answered the API way (403 with an RFC 6750 challenge).
    pub fn authorize(&self, requirement: Requirement) -> Result<(), ApiError> {
        requirement.check(&self.roles, Some(&self.scopes)).map_err(|denial| match denial {
            Denial::MissingScope(scope) => ApiError::InsufficientScope { required: scope },
            Denial::MissingRole => ApiError::MissingRole,
        })
    }
}

/// `Some(caller)` with a valid token, `None` without credentials; a bad token is still refused.
pub struct MaybeCaller(pub Option<Caller>);

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { authenticate(&req).await?.ok_or(ApiError::MissingCredentials) })
    }
}

impl FromRequest for MaybeCaller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { authenticate(&req).await.map(MaybeCaller) })
    }
}

/// The token of an `Authorization: Bearer …` header: `Ok(None)` when there is no such header.
pub fn bearer_token(req: &HttpRequest) -> Result<Option<&str>, ApiError> {
    let mut values = req.headers().get_all(header::AUTHORIZATION);
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(ApiError::InvalidToken(TokenRejection::Malformed));
    }
    let value = value.to_str().map_err(|_| ApiError::InvalidToken(TokenRejection::Malformed))?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Another scheme (Basic, …) is no bearer credential at all: answer as if none were sent.
        return Ok(None);
    }
    let token = token.trim();
    // RFC 6750 §2.1 b64token.
    let well_formed = !token.is_empty() && token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b));
    if !well_formed {
        return Err(ApiError::InvalidToken(TokenRejection::Malformed));
    }
    Ok(Some(token))
}

async fn authenticate(req: &HttpRequest) -> Result<Option<Caller>, ApiError> {
    let Some(token) = bearer_token(req)? else { return Ok(None) };
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal("AppState is not registered".to_owned()))?;
    let now = Utc::now();
    let claims = state.keys.verify(token, now).map_err(ApiError::InvalidToken)?;
    let scopes = ScopeSet::parse(&claims.scope).map_err(|_| ApiError::InvalidToken(TokenRejection::Malformed))?;

    let token_checks = req
        .app_data::<Rc<TokenChecks>>()
        .ok_or_else(|| ApiError::Internal("TokenChecks is not registered".to_owned()))?;
    let found = token_checks.token_holder(claims.sub, claims.jti).await?;
    let Some(db::users::TokenHolder { user, roles, token_revoked: revoked }) = found else {
        return Err(ApiError::InvalidToken(TokenRejection::UnknownUser));
    };
    if !user.is_active {
        return Err(ApiError::InactiveUser);
    }
    if revoked {
        return Err(ApiError::InvalidToken(TokenRejection::Revoked));
    }
    // Tokens carry their issue time to the millisecond; compare at that precision.
    let valid_after =
        user.tokens_valid_after.duration_trunc(chrono::Duration::milliseconds(1)).unwrap_or(user.tokens_valid_after);
    if claims.issued_at() < valid_after {
        return Err(ApiError::InvalidToken(TokenRejection::Revoked));
    }
    Ok(Some(Caller { user, roles, scopes, claims }))
}
