//! `/api/users/me/tokens`: the caller's personal access tokens. Making one needs an OAuth access
//! token (never a personal access token); listing and revoking take any credential of the owner
//! with scope `profile`.

use actix_web::{HttpRequest, HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::admin_clients::KnownScope;
use super::extract::JsonAfterAuth;
use crate::accounts::Actor;
use crate::accounts::personal_tokens::{TokenDraft, TokenError};
use crate::auth::bearer::Caller;
use crate::auth::guard::Requirement;
use crate::auth::jwt::TokenRejection;
use crate::db::personal_tokens::PersonalToken;
use crate::domain::Channel;
use crate::routes::docs::ErrorResponse;
use crate::routes::errors::no_store;
use crate::routes::{ApiError, AppState};

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(create).service(list).service(revoke);
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewTokenBody {
    // The pattern is `NewClientBody.name`'s (`api::admin_clients`), as the rule is the same.
    /// What you will recognise it by: 1 to 100 characters once surrounding spaces are trimmed; no
    /// control characters.
    #[schema(
        example = "deploy script",
        pattern = r"^[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000](?:[^\x00-\x1f\x7f-\x9f]{0,98}[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000])?[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    name: String,
    /// At least one; each must be allowed by one of your roles.
    #[schema(value_type = Vec<KnownScope>, min_items = 1, example = json!(["profile", "items:read"]))]
    scopes: Vec<String>,
    /// 1 to 365; 30 when left out.
    #[schema(minimum = 1, maximum = 365, default = 30)]
    #[serde(default, deserialize_with = "whole_days")]
    expires_in_days: Option<i64>,
}

/// A whole number of days, however JSON writes it: JSON Schema (and many clients) count `196.0` as
/// the integer 196, so the server does too; `196.5` is no whole number and is refused.
fn whole_days<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else { return Ok(None) };
    if let Some(days) = number.as_i64() {
        return Ok(Some(days));
    }
    match number.as_f64() {
        // Beyond ±2^53 a float is not exact; far beyond 365 either way, so the range check refuses it.
        Some(days) if days.fract() == 0.0 && days.abs() < 9.0e15 => Ok(Some(days as i64)),
        _ => Err(serde::de::Error::custom(format!("expires_in_days must be a whole number of days, not {number}"))),
    }
}

/// A token just made, with its secret: shown this once.
#[derive(Serialize, ToSchema)]
struct IssuedToken {
    id: Uuid,
    name: String,
    /// `gth_` and 36 characters. Store it now: gatehouse keeps only its hash.
    token: String,
    scopes: Vec<String>,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

/// A token as listed: never its secret.
#[derive(Serialize, ToSchema)]
pub struct TokenView {
    id: Uuid,
    name: String,
    scopes: Vec<String>,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    last_used_address: Option<String>,
}

impl From<PersonalToken> for TokenView {
    fn from(token: PersonalToken) -> Self {
        Self {
            id: token.id,
            name: token.name,
            scopes: token.scope.to_vec(),
            created_at: token.created_at,
            expires_at: token.expires_at,
            last_used_at: token.last_used_at,
            last_used_address: token.last_used_address,
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(err: TokenError) -> Self {
        match err {
            TokenError::Name(_) | TokenError::Expiry(_) => ApiError::InvalidRequest(err.to_string()),
            TokenError::Scope(message) => ApiError::InvalidScope(message),
            // The caller's token was valid when checked; an invalidation committed since ended it.
            TokenError::CredentialEnded | TokenError::UnknownUser => ApiError::InvalidToken(TokenRejection::Revoked),
            TokenError::Server(err) => ApiError::Server(err),
        }
    }
}

fn actor(caller: &Caller, state: &AppState, req: &HttpRequest) -> Result<Actor, ApiError> {
    Ok(Actor { user_id: Some(caller.user()?.id), channel: Channel::Api, client: state.client_ip(req) })
}

/// Makes a personal access token for yourself. Needs an OAuth access token with `profile`: a
/// personal access token cannot make another (`403 insufficient_scope`, with a description saying so).
#[utoipa::path(
    post,
    path = "/users/me/tokens",
    tag = "tokens",
    security(("oauth2" = ["profile"])),
    request_body = NewTokenBody,
    responses(
        (status = 201, description = "Made; the `token` is shown this once (`Cache-Control: no-store`)", body = IssuedToken),
        (status = 400, description = "`invalid_request`: a missing, empty or over-long name, an expiry outside 1–365 days, bad JSON; `invalid_scope`: no scope, a malformed one, or one your roles do not allow", body = ErrorResponse),
        (status = 401, description = "No token (`WWW-Authenticate: Bearer`) or an invalid one (`invalid_token`)", body = ErrorResponse,
            headers(("WWW-Authenticate" = String, description = "RFC 6750 challenge"))),
        (status = 403, description = "`insufficient_scope`: the token lacks `profile`, or it is a personal access token; or `inactive_user`", body = ErrorResponse,
            headers(("WWW-Authenticate" = String, description = "`Bearer error=\"insufficient_scope\", …`"))),
        (status = 413, description = "Body over 256 KiB", body = ErrorResponse),
        (status = 415, description = "Not `application/json`", body = ErrorResponse),
    )
)]
#[post("/users/me/tokens")]
async fn create(
    req: HttpRequest,
    caller: Caller,
    body: JsonAfterAuth<NewTokenBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.authorize(Requirement::CREATE_PERSONAL_TOKEN)?;
    let NewTokenBody { name, scopes, expires_in_days } = body.into_inner()?;
    let draft = TokenDraft { name, scopes, expires_in_days };
    let issued = state
        .accounts()
        .create_personal_token(
            &actor(&caller, &state, &req)?,
            caller.user()?.id,
            draft,
            Some(caller.credential_checked_at()),
        )
        .await?;
    let token = issued.token;
    let body = IssuedToken {
        id: token.id,
        name: token.name,
        token: issued.secret.expose_secret().to_owned(),
        scopes: token.scope.to_vec(),
        created_at: token.created_at,
        expires_at: token.expires_at,
    };
    Ok(no_store(HttpResponse::Created()).json(body))
}

/// Your personal access tokens that are not revoked, newest first (never their secrets).
#[utoipa::path(
    get,
    path = "/users/me/tokens",
    tag = "tokens",
    security(("oauth2" = ["profile"])),
    responses(
        (status = 200, description = "Your tokens", body = Vec<TokenView>),
        (status = 401, description = "No token (`WWW-Authenticate: Bearer`) or an invalid one (`invalid_token`)", body = ErrorResponse,
            headers(("WWW-Authenticate" = String, description = "RFC 6750 challenge"))),
        (status = 403, description = "`insufficient_scope` (needs `profile`), or `inactive_user`", body = ErrorResponse),
    )
)]
#[get("/users/me/tokens")]
async fn list(caller: Caller, state: web::Data<AppState>) -> Result<web::Json<Vec<TokenView>>, ApiError> {
    caller.authorize(Requirement::PROFILE)?;
    let tokens = state.accounts().personal_tokens(caller.user()?.id).await?;
    Ok(web::Json(tokens.into_iter().map(TokenView::from).collect()))
}

/// Revokes one of your personal access tokens: it stops working on every instance from the next request.
#[utoipa::path(
    delete,
    path = "/users/me/tokens/{id}",
    tag = "tokens",
    params(("id" = Uuid, Path, description = "The token's id")),
    security(("oauth2" = ["profile"])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "No token (`WWW-Authenticate: Bearer`) or an invalid one (`invalid_token`)", body = ErrorResponse,
            headers(("WWW-Authenticate" = String, description = "RFC 6750 challenge"))),
        (status = 403, description = "`insufficient_scope` (needs `profile`), or `inactive_user`", body = ErrorResponse),
        (status = 404, description = "`not_found`: you have no live token with this id (another user's id, a malformed one)", body = ErrorResponse),
    )
)]
#[delete("/users/me/tokens/{id}")]
async fn revoke(
    req: HttpRequest,
    caller: Caller,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.authorize(Requirement::PROFILE)?;
    let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
    let revoked =
        state.accounts().revoke_own_personal_token(&actor(&caller, &state, &req)?, caller.user()?.id, id).await?;
    if !revoked {
        return Err(ApiError::NotFound);
    }
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_number_of_days_may_be_spelled_as_a_float_but_a_fraction_is_refused() {
        let days = |json: &str| serde_json::from_str::<NewTokenBody>(json).map(|body| body.expires_in_days);
        let body = |days: &str| format!(r#"{{"name":"n","scopes":["profile"],"expires_in_days":{days}}}"#);
        assert_eq!(days(&body("196")).unwrap(), Some(196));
        assert_eq!(days(&body("196.0")).unwrap(), Some(196));
        assert_eq!(days(&body("null")).unwrap(), None);
        assert_eq!(days(r#"{"name":"n","scopes":["profile"]}"#).unwrap(), None);
        assert!(days(&body("196.5")).is_err());
        assert!(days(&body("\"30\"")).is_err());
        assert_eq!(days(&body("1e300")).ok(), None, "not exact: refused rather than wrapped");
    }
}
