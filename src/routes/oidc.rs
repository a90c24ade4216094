//! OpenID Connect's own endpoints: `/userinfo` (Core §5.3), discovery (Discovery §4) and
//! RP-initiated logout (RP-Initiated Logout 1.0). The ID token itself is issued at `/token`.

use actix_session::Session;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, route, web};
use chrono::Utc;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::AppState;
use super::docs::ErrorResponse;
use super::errors::ApiError;
use crate::auth::bearer::Caller;
use crate::auth::guard::Requirement;
use crate::auth::keys::ID_TOKEN_ALGS;
use crate::db::auth_events::NewEvent;
use crate::domain::form::FormFields;
use crate::domain::{Channel, EventKind};
use crate::oauth::id_token::{Person, PersonClaims};

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(userinfo).service(discovery);
}

/// RP-initiated logout sits with the pages: it ends the browser session (the session middleware's scope).
pub fn configure_pages(cfg: &mut web::ServiceConfig) {
    cfg.service(end_session);
}

/// The signed-in person's claims, chosen by the token's scopes (`profile`: names; `email`: address
/// and `email_verified`). `GET` or `POST`, bearer token with `openid` (RFC 6750 errors).
#[utoipa::path(
    method(get, post),
    path = "/userinfo",
    tag = "oidc",
    security(("oauth2" = ["openid"])),
    responses(
        (status = 200, description = "The person's claims", body = PersonClaims),
        (status = 401, description = "No token, or an invalid one", body = ErrorResponse,
            headers(("WWW-Authenticate" = String, description = "RFC 6750 challenge"))),
        (status = 403, description = "`insufficient_scope`: the token lacks `openid`", body = ErrorResponse),
    )
)]
#[route("/userinfo", method = "GET", method = "POST")]
async fn userinfo(caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.authorize(Requirement::OPENID)?;
    let user = caller.user()?;
    let person = Person {
        user_id: user.id,
        username: &user.username,
        full_name: user.full_name.as_deref(),
        email: user.email.as_deref(),
        email_verified: user.email_verified,
    };
    let claims = PersonClaims::of(&person, caller.scopes());
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(claims))
}

#[derive(Serialize, ToSchema)]
struct ProviderMetadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    userinfo_endpoint: String,
    jwks_uri: String,
    end_session_endpoint: String,
    device_authorization_endpoint: String,
    revocation_endpoint: String,
    introspection_endpoint: String,
    scopes_supported: Vec<String>,
    response_types_supported: [&'static str; 1],
    response_modes_supported: [&'static str; 1],
    grant_types_supported: Vec<&'static str>,
    subject_types_supported: [&'static str; 1],
    id_token_signing_alg_values_supported: Vec<&'static str>,
    token_endpoint_auth_methods_supported: [&'static str; 3],
    code_challenge_methods_supported: [&'static str; 1],
    claims_supported: [&'static str; 14],
    prompt_values_supported: [&'static str; 4],
    claims_parameter_supported: bool,
    request_parameter_supported: bool,
    request_uri_parameter_supported: bool,
    authorization_response_iss_parameter_supported: bool,
}

/// OpenID Provider metadata (OpenID Connect Discovery 1.0 §3).
#[utoipa::path(
    get,
    path = "/.well-known/openid-configuration",
    tag = "oidc",
    responses((status = 200, description = "Provider metadata", body = ProviderMetadata))
)]
#[get("/.well-known/openid-configuration")]
async fn discovery(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let scopes = crate::db::run(&state.pool, crate::db::roles::all_scopes).await?;
    let issuer = state.issuer.clone();
    let metadata = ProviderMetadata {
        authorization_endpoint: format!("{issuer}/authorize"),
        token_endpoint: format!("{issuer}/token"),
        userinfo_endpoint: format!("{issuer}/userinfo"),
        jwks_uri: format!("{issuer}/.well-known/jwks.json"),
        end_session_endpoint: format!("{issuer}/end_session"),
        device_authorization_endpoint: format!("{issuer}/device_authorization"),
        revocation_endpoint: format!("{issuer}/revoke"),
        introspection_endpoint: format!("{issuer}/introspect"),
        issuer,
        scopes_supported: scopes.into_iter().map(|scope| scope.name).collect(),
        response_types_supported: ["code"],
        response_modes_supported: ["query"],
        grant_types_supported: super::oauth::grant_types_supported(state.settings.password_grant),
        subject_types_supported: ["public"],
        id_token_signing_alg_values_supported: ID_TOKEN_ALGS.iter().map(|alg| alg.as_str()).collect(),
        token_endpoint_auth_methods_supported: ["client_secret_basic", "client_secret_post", "none"],
        code_challenge_methods_supported: ["S256"],
        claims_supported: [
            "iss",
            "sub",
            "aud",
            "azp",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "amr",
            "at_hash",
            "preferred_username",
            "name",
            "email",
            "email_verified",
        ],
        prompt_values_supported: ["none", "login", "consent", "select_account"],
        claims_parameter_supported: false,
        request_parameter_supported: false,
        request_uri_parameter_supported: false,
        authorization_response_iss_parameter_supported: true,
    };
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "public, max-age=300")).json(metadata))
}

#[derive(askama::Template)]
#[template(path = "end_session.html")]
struct ConfirmLogout {
    layout: super::web::pages::Layout,
    csrf_token: String,
    client_id: String,
    post_logout_redirect_uri: String,
    state: String,
}

/// RP-initiated logout: ends the browser's gatehouse session, then sends the person to
/// `post_logout_redirect_uri` when it is one the client registered (as a post-logout or a redirect
/// URI) and the client is known (from `client_id` or the `aud` of `id_token_hint`); otherwise to
/// the login page. Without a valid `id_token_hint` (an ID token this server signed) the person
/// confirms first, so no other site can sign them out with a link. `GET` or `POST` (a form).
#[route("/end_session", method = "GET", method = "POST")]
async fn end_session(
    req: HttpRequest,
    body: web::Bytes,
    session: Session,
    user: super::web::session::MaybeSignedIn,
    state: web::Data<AppState>,
) -> Result<HttpResponse, super::web::WebError> {
    use super::web::WebError;
    let is_post = req.method() == actix_web::http::Method::POST;
    let fields = if is_post {
        if body.len() > 8 * 1024 {
            return Err(WebError::BadRequest);
        }
        let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok());
        FormFields::parse(content_type, &body).map_err(|_| WebError::BadRequest)?
    } else {
        FormFields::parse_query(req.query_string()).map_err(|_| WebError::BadRequest)?
    };
    let hint = fields.get("id_token_hint").and_then(|hint| state.grants.keys.id_token_audience(hint, Utc::now()));
    // RP-Initiated Logout §2: a client_id beside the hint must be the hint's audience.
    if let (Some((audience, _)), Some(client_id)) = (&hint, fields.get("client_id"))
        && audience != client_id
    {
        return Err(WebError::BadRequest);
    }
    let confirmed = is_post && crate::auth::session::csrf_matches(&session, fields.get("csrf_token"));
    let client_id = fields.get("client_id").map(str::to_owned).or_else(|| hint.as_ref().map(|(aud, _)| aud.clone()));
    let wanted = fields.get("post_logout_redirect_uri").map(str::to_owned);
    // A hint skips the question only when it is about the person signed in here: anyone can get an
    // ID token of their own, and must not sign others out with a link.
    let hint_is_theirs = |signed_in: &super::web::session::SignedInUser| {
        hint.as_ref().is_some_and(|(_, subject)| *subject == signed_in.user.id.to_string())
    };
    if let Some(signed_in) = &user.0
        && !hint_is_theirs(signed_in)
        && !confirmed
    {
        let page = ConfirmLogout {
            layout: signed_in.layout(),
            csrf_token: signed_in.csrf_token.clone(),
            client_id: client_id.unwrap_or_default(),
            post_logout_redirect_uri: wanted.unwrap_or_default(),
            state: fields.get("state").unwrap_or_default().to_owned(),
        };
        return super::web::pages::render(actix_web::http::StatusCode::OK, &page);
    }
    if let Some(signed_in) = user.0 {
        let event = NewEvent::new(EventKind::Logout, Channel::Web)
            .user(signed_in.user.id)
            .attempted(&signed_in.user.username)
            .client(state.client_ip(&req).map(|ip| ip.to_string()))
            .detail("RP-initiated logout");
        crate::db::run(&state.pool, move |conn| crate::db::auth_events::record(conn, &event)).await?;
    }
    // Deletes the server-side row, so the old cookie is worth nothing even if replayed.
    session.purge();
    let allowed = match (client_id, wanted) {
        (Some(client_id), Some(uri)) if !uri.is_empty() => {
            let client = crate::db::run(&state.pool, move |conn| crate::db::clients::find(conn, &client_id)).await?;
            client
                .filter(|client| client.post_logout_redirect_uris.contains(&uri) || client.redirect_uris.contains(&uri))
                .map(|_| uri)
        }
        _ => None,
    };
    let location = match (allowed, fields.get("state").filter(|value| !value.is_empty())) {
        (Some(uri), Some(state_value)) => crate::oauth::authorize::with_query(&uri, &[("state", state_value)]),
        (Some(uri), None) => uri,
        (None, _) => "/login".to_owned(),
    };
    Ok(HttpResponse::Found()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}
