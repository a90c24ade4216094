//! `POST /token`, `POST /revoke` and the RFC 8414 metadata document.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use secrecy::SecretString;
use serde::Serialize;

use super::body::{BodyError, read_limited};
use crate::auth::credentials::Attempt;
use crate::client_ip::client_ip;
use crate::db::auth_events::Channel;
use crate::errors::{TokenError, no_store};
use crate::oauth::form::FormFields;
use crate::oauth::grant;
use crate::oauth::request::TokenRequest;
use crate::state::AppState;

/// Token requests are a handful of short fields; anything bigger is not one.
const FORM_LIMIT: usize = 4 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(token).service(revoke).service(metadata);
}

#[post("/token")]
async fn token(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, TokenError> {
    let attempt = api_attempt(&req, &state);
    let form = read_form(&req, payload).await?;
    let request = TokenRequest::from_form(&form, state.settings.strict_grant_type)?;
    if let Err(wait) = state.login_throttle.check(client_ip(&req, &state.settings.trusted_proxies)) {
        return Err(TokenError::SlowDown { retry_after_secs: wait.as_secs().max(1) });
    }
    let issued = match request {
        TokenRequest::Password { username, password, scope } => {
            grant::password(&state, &username, password, scope, attempt).await?
        }
        TokenRequest::RefreshToken { refresh_token, scope } => {
            grant::refresh(&state, refresh_token, scope, attempt).await?
        }
    };
    Ok(no_store(HttpResponse::Ok()).json(issued))
}

#[post("/revoke")]
async fn revoke(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, TokenError> {
    let attempt = api_attempt(&req, &state);
    let form = read_form(&req, payload).await?;
    let presented = form.get("token").ok_or_else(|| TokenError::InvalidRequest("token is required".to_owned()))?;
    // token_type_hint is only a hint (RFC 7009 §2.1): both kinds are looked for either way.
    grant::revoke(&state, SecretString::from(presented), attempt).await?;
    Ok(no_store(HttpResponse::Ok()).finish())
}

#[derive(Serialize)]
struct ServerMetadata {
    issuer: String,
    token_endpoint: String,
    revocation_endpoint: String,
    grant_types_supported: [&'static str; 2],
    scopes_supported: Vec<String>,
    token_endpoint_auth_methods_supported: [&'static str; 1],
    revocation_endpoint_auth_methods_supported: [&'static str; 1],
    response_types_supported: [&'static str; 0],
}

/// RFC 8414 §3.
#[get("/.well-known/oauth-authorization-server")]
async fn metadata(state: web::Data<AppState>) -> Result<HttpResponse, crate::errors::ApiError> {
    let scopes = crate::db::run(&state.pool, |conn| Ok(crate::db::roles::all_scopes(conn)?)).await?;
    let issuer = state.issuer.clone();
    Ok(HttpResponse::Ok().json(ServerMetadata {
        token_endpoint: format!("{issuer}/token"),
        revocation_endpoint: format!("{issuer}/revoke"),
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
        BodyError::Unreadable => TokenError::InvalidRequest(err.to_string()),
    })?;
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok());
    Ok(FormFields::parse(content_type, &body)?)
}

fn api_attempt(req: &HttpRequest, state: &AppState) -> Attempt {
    Attempt {
        channel: Channel::Api,
        client_addr: client_ip(req, &state.settings.trusted_proxies).map(|ip| ip.to_string()),
    }
}
