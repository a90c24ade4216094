//! Bearer authentication as extractors: a handler that takes a [`Caller`] cannot run for an
//! unauthenticated request, and one that takes [`MaybeCaller`] sees anonymous requests as `None`
//! but still refuses a bad token.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use chrono::Utc;

use crate::auth::bearer::{self, Caller, Verifier};
use crate::auth::jwt::{TokenRejection, VerifiedTokens};
use crate::auth::token_checks::TokenChecks;
use crate::errors::{Message, ServerError};
use crate::routes::{ApiError, AppState};

/// A JSON body whose refusal (`415`, `413`, `400`) is told only after the caller's authorization.
/// actix extracts a handler's arguments together and answers with the first that fails: a
/// malformed body fails at once, while the bearer token is still being looked up, so a caller
/// without the scope would hear about the body instead of getting `403`. This extractor never
/// fails; the handler takes the body with [`JsonAfterAuth::into_inner`] once `authorize` passed.
pub struct JsonAfterAuth<T>(Result<T, ApiError>);

impl<T> JsonAfterAuth<T> {
    pub fn into_inner(self) -> Result<T, ApiError> {
        self.0
    }
}

impl<T: serde::de::DeserializeOwned + 'static> FromRequest for JsonAfterAuth<T> {
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = web::JsonBody::<T>::new(req, payload, None, true).limit(super::JSON_LIMIT);
        Box::pin(async move { Ok(Self(body.await.map_err(super::json_error))) })
    }
}

/// A query string read after the caller's authorization, for the reason of [`JsonAfterAuth`].
pub fn query_after_auth<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    web::Query::<T>::from_query(req.query_string()).map(web::Query::into_inner).map_err(super::query_error)
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
        .ok_or_else(|| ServerError::internal(Message("AppState is not registered")))?;
    let checks = req
        .app_data::<Rc<TokenChecks>>()
        .ok_or_else(|| ServerError::internal(Message("TokenChecks is not registered")))?;
    let verified = req
        .app_data::<Rc<VerifiedTokens>>()
        .ok_or_else(|| ServerError::internal(Message("VerifiedTokens is not registered")))?;
    let verifier = Verifier {
        keys: &state.grants.keys,
        pool: &state.pool,
        verified,
        checks,
        client: state.client_ip(req),
        role_scopes: &state.role_scopes,
    };
    Ok(Some(bearer::authenticate(&verifier, token, Utc::now()).await?))
}
