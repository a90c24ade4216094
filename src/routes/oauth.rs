//! `POST /token`, `POST /revoke` and the RFC 8414 metadata document.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use secrecy::SecretString;
use serde::Serialize;

use chrono::Utc;

use super::AppState;
use super::body::{BodyError, read_limited};
use super::docs::ErrorResponse;
use super::errors::{ApiError, TokenError, no_store};
use crate::auth::bearer::Caller;
use crate::auth::credentials::Attempt;
use crate::auth::guard::Requirement;
use crate::auth::keys::JWKS_MAX_AGE;
use crate::auth::throttle::retry_after_secs;
use crate::domain::{AddressBucket, Channel};
use crate::oauth::GrantError;
use crate::oauth::form::FormFields;
use crate::oauth::grant::IssuedTokens;
use crate::oauth::introspect::Introspection;
use crate::oauth::request::TokenRequest;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

/// Token requests are a handful of short fields; anything bigger is not one.
const FORM_LIMIT: usize = 4 * 1024;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(token).service(revoke).service(introspection).service(metadata).service(jwks);
}

/// The fields of a token request (documentation only: the body is parsed strictly by `FormFields`).
#[derive(ToSchema)]
#[allow(dead_code)]
struct TokenForm {
    /// `password` (may be omitted unless strict mode is on) or `refresh_token`.
    #[schema(example = "password")]
    grant_type: Option<String>,
    /// For the password grant.
    #[schema(example = "alice")]
    username: Option<String>,
    /// For the password grant.
    #[schema(format = Password)]
    password: Option<String>,
    /// Space-separated scopes; omitted: everything the user's roles allow (on refresh: the original scopes).
    #[schema(example = "profile items:read")]
    scope: Option<String>,
    /// For the refresh-token grant.
    refresh_token: Option<String>,
    /// Accepted and ignored (first-party public clients).
    client_id: Option<String>,
    /// Accepted and ignored.
    client_secret: Option<String>,
}

/// The fields of a revocation request (RFC 7009 §2.1).
#[derive(ToSchema)]
#[allow(dead_code)]
struct RevokeForm {
    /// An access token or a refresh token (no form field may hold U+0000).
    #[schema(pattern = r"^[^\x00]*$")]
    token: String,
    /// `access_token` or `refresh_token`; only a hint.
    token_type_hint: Option<String>,
}

/// Password grant (RFC 6749 §4.3) and refresh-token grant (§6).
///
/// Success and errors carry `Cache-Control: no-store` and `Pragma: no-cache`. A refresh token is
/// rotated on every use; presenting one that was already used revokes its whole family.
#[utoipa::path(
    post,
    path = "/token",
    tag = "oauth",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Tokens issued", body = IssuedTokens),
        (status = 400, description = "`invalid_request`, `invalid_grant`, `unsupported_grant_type` or `invalid_scope`", body = ErrorResponse),
        (status = 413, description = "Body over 4 KiB", body = ErrorResponse),
        (status = 429, description = "Too many attempts from this address (`slow_down`); see `Retry-After`", body = ErrorResponse,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "The database is unavailable", body = ErrorResponse),
    )
)]
#[post("/token")]
async fn token(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, TokenError> {
    let now = Utc::now();
    let attempt = api_attempt(&req, &state);
    let form = read_form(&req, payload).await?;
    let request = TokenRequest::from_form(&form, state.settings.strict_grant_type)?;
    let issued = match request {
        TokenRequest::Password { username, password, scope } => {
            // Only password attempts are throttled: a refresh token has 256 bits, nothing to guess.
            let bucket = attempt.client.map(AddressBucket::of);
            if let Err(wait) = state.login_throttle.check(&state.pool, bucket).await? {
                state.grants.metrics.throttled.inc();
                return Err(TokenError::SlowDown { retry_after_secs: retry_after_secs(wait) });
            }
            state.grants.password(&username, password, scope, &attempt, now).await?
        }
        TokenRequest::RefreshToken { refresh_token, scope } => {
            state.grants.refresh(refresh_token, scope, &attempt, now).await?
        }
    };
    Ok(no_store(HttpResponse::Ok()).json(issued))
}

/// Token revocation (RFC 7009): `200` for any well-formed request, known token or not.
#[utoipa::path(
    post,
    path = "/revoke",
    tag = "oauth",
    request_body(content = RevokeForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Revoked, or there was nothing to revoke"),
        (status = 400, description = "`invalid_request`: no `token`, or not a form body", body = ErrorResponse),
        (status = 503, description = "The database is unavailable", body = ErrorResponse),
    )
)]
#[post("/revoke")]
async fn revoke(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, TokenError> {
    let attempt = api_attempt(&req, &state);
    let form = read_form(&req, payload).await?;
    let presented = form.get("token").ok_or_else(|| GrantError::InvalidRequest("token is required".to_owned()))?;
    // token_type_hint is only a hint (RFC 7009 §2.1): both kinds are looked for either way.
    state.grants.revoke(SecretString::from(presented), &attempt, Utc::now()).await?;
    Ok(no_store(HttpResponse::Ok()).finish())
}

/// The fields of an introspection request (RFC 7662 §2.1).
#[derive(ToSchema)]
#[allow(dead_code)]
struct IntrospectForm {
    /// An access token or a refresh token.
    #[schema(min_length = 1)]
    token: String,
    /// `access_token` or `refresh_token`; only decides which is looked for first.
    token_type_hint: Option<String>,
}

/// Token introspection (RFC 7662) for other services: the caller's bearer token needs scope
/// `tokens:introspect` (role `service`). A live access or refresh token is described;
/// anything else (expired, revoked, malformed, foreign) is `{"active": false}` and nothing more.
#[utoipa::path(
    post,
    path = "/introspect",
    tag = "oauth",
    security(("oauth2" = ["tokens:introspect"])),
    request_body(content = IntrospectForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The token's state", body = Introspection),
        (status = 400, description = "`invalid_request`: no `token`, or not a form body", body = ErrorResponse),
        (status = 401, description = "No bearer token, or an invalid one", body = ErrorResponse,
            headers(("WWW-Authenticate" = String, description = "RFC 6750 challenge"))),
        (status = 403, description = "`insufficient_scope`: the caller's token lacks `tokens:introspect`", body = ErrorResponse),
    )
)]
#[post("/introspect")]
async fn introspection(
    req: HttpRequest,
    caller: Caller,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.authorize(Requirement::INTROSPECT)?;
    let body = read_limited(payload, FORM_LIMIT).await.map_err(|err| match err {
        BodyError::TooLarge => ApiError::PayloadTooLarge,
        BodyError::Unreadable => ApiError::InvalidRequest(err.to_string()),
    })?;
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok());
    let form = FormFields::parse(content_type, &body).map_err(|err| ApiError::InvalidRequest(err.to_string()))?;
    let presented = form.get("token").ok_or_else(|| ApiError::InvalidRequest("token is required".to_owned()))?;
    let answer = crate::oauth::introspect::introspect(
        &state.pool,
        &state.grants.keys,
        &state.issuer,
        SecretString::from(presented),
        form.get("token_type_hint"),
        Utc::now(),
    )
    .await?;
    Ok(no_store(HttpResponse::Ok()).json(answer))
}

/// The public keys that verify access tokens (RFC 7517). Verifiers may cache it for five minutes; a
/// new key appears here before it signs, and an old one stays until its tokens have expired.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "oauth",
    responses((status = 200, description = "JWK set (public keys only; empty when tokens are HS256)"))
)]
#[get("/.well-known/jwks.json")]
async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, format!("public, max-age={}", JWKS_MAX_AGE.as_secs())))
        .json(state.grants.keys.jwks(Utc::now()))
}

#[derive(Serialize, ToSchema)]
struct ServerMetadata {
    issuer: String,
    token_endpoint: String,
    revocation_endpoint: String,
    introspection_endpoint: String,
    jwks_uri: String,
    grant_types_supported: [&'static str; 2],
    scopes_supported: Vec<String>,
    token_endpoint_auth_methods_supported: [&'static str; 1],
    revocation_endpoint_auth_methods_supported: [&'static str; 1],
    response_types_supported: [&'static str; 0],
}

/// Authorization server metadata (RFC 8414 §3).
#[utoipa::path(
    get,
    path = "/.well-known/oauth-authorization-server",
    tag = "oauth",
    responses((status = 200, description = "Server metadata", body = ServerMetadata))
)]
#[get("/.well-known/oauth-authorization-server")]
async fn metadata(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let scopes = crate::db::run(&state.pool, crate::db::roles::all_scopes).await?;
    let issuer = state.issuer.clone();
    Ok(HttpResponse::Ok().json(ServerMetadata {
        token_endpoint: format!("{issuer}/token"),
        revocation_endpoint: format!("{issuer}/revoke"),
        introspection_endpoint: format!("{issuer}/introspect"),
        jwks_uri: format!("{issuer}/.well-known/jwks.json"),
        issuer,
        grant_types_supported: ["password", "refresh_token"],
        scopes_supported: scopes.into_iter().map(|scope| scope.name).collect(),
        // First-party public clients: no client authentication (client_id is accepted and ignored).
        token_endpoint_auth_methods_supported: ["none"],
        revocation_endpoint_auth_methods_supported: ["none"],
        response_types_supported: [],
    }))
}

async fn read_form(req: &HttpRequest, payload: web::Payload) -> Result<FormFields, TokenError> {
    let body = read_limited(payload, FORM_LIMIT).await.map_err(|err| match err {
        BodyError::TooLarge => TokenError::PayloadTooLarge,
        BodyError::Unreadable => GrantError::InvalidRequest(err.to_string()).into(),
    })?;
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok());
    Ok(FormFields::parse(content_type, &body).map_err(GrantError::from)?)
}

fn api_attempt(req: &HttpRequest, state: &AppState) -> Attempt {
    Attempt { channel: Channel::Api, client: state.client_ip(req) }
}
