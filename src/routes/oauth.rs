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
use crate::domain::form::FormFields;
use crate::domain::{AddressBucket, Channel, GrantType, ScopeSet};
use crate::oauth::GrantError;
use crate::oauth::client_auth::{self, ClientFailure, ClientRefusal, ClientVerdict};
use crate::oauth::grant::{GrantClient, IssuedTokens};
use crate::oauth::introspect::Introspection;
use crate::oauth::request::TokenRequest;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

/// Token requests are a handful of short fields; anything bigger is not one.
const FORM_LIMIT: usize = 4 * 1024;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(token)
        .service(revoke)
        .service(introspection)
        .service(metadata)
        .service(jwks)
        .service(device_authorization);
}

/// The fields of a token request (documentation only: the body is parsed strictly by `FormFields`).
#[derive(ToSchema)]
#[allow(dead_code)]
struct TokenForm {
    /// `password` (may be omitted unless strict mode is on), `refresh_token` or `client_credentials`.
    #[schema(example = "password")]
    grant_type: Option<String>,
    /// For the password grant.
    #[schema(example = "alice")]
    username: Option<String>,
    /// For the password grant.
    #[schema(format = Password)]
    password: Option<String>,
    /// Space-separated scopes; omitted: everything the user's roles allow (on refresh: the original
    /// scopes; for client credentials: everything the client is registered for).
    #[schema(example = "profile items:read")]
    scope: Option<String>,
    /// For the refresh-token grant.
    refresh_token: Option<String>,
    /// A registered client (`client_secret_post`, or a public client); may come in HTTP Basic
    /// instead (`client_secret_basic`). A value naming no registered client is ignored by the
    /// password and refresh grants.
    client_id: Option<String>,
    /// The registered client's secret (`client_secret_post`).
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

/// Password grant (RFC 6749 §4.3), refresh-token grant (§6) and client-credentials grant (§4.4).
///
/// Success and errors carry `Cache-Control: no-store` and `Pragma: no-cache`. A refresh token is
/// rotated on every use; presenting one that was already used revokes its whole family. A request
/// naming a registered client must authenticate it (HTTP Basic or `client_secret`) and the client
/// must be allowed the grant. Client credentials give the client's own token, without refresh token.
#[utoipa::path(
    post,
    path = "/token",
    tag = "oauth",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Tokens issued", body = IssuedTokens),
        (status = 400, description = "`invalid_request`, `invalid_grant`, `unsupported_grant_type`, `unauthorized_client` or `invalid_scope`", body = ErrorResponse),
        (status = 401, description = "`invalid_client`: client authentication failed", body = ErrorResponse,
            headers(("WWW-Authenticate" = String, description = "`Basic realm=\"gatehouse\"`"))),
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
    let presented = presented_client(&req, &form)?;
    if let TokenRequest::AuthorizationCode { code, redirect_uri, code_verifier } = request {
        // The client is looked up in the exchange's own trip to the database: every app's sign-in
        // ends here (docs/performance.md, f).
        let client_id = presented.as_ref().map(|presented| presented.client_id.clone());
        let password_grant = state.settings.password_grant;
        let exchanged = state
            .grants
            .authorization_code(presented, password_grant, code, redirect_uri, code_verifier, &attempt, now)
            .await?;
        return match exchanged {
            Ok(issued) => {
                state.grants.count_client_authentication("ok");
                Ok(no_store(HttpResponse::Ok()).json(issued))
            }
            Err(refusal) => Err(client_refused(refusal, client_id.as_deref(), &state, &attempt).await),
        };
    }
    let verdict = authenticate_client(presented, request.grant_type(), &state, &attempt, now).await?;
    let client = match &verdict {
        ClientVerdict::Client { client_id, id_token_alg, first_party, .. } => {
            Some(GrantClient { client_id: client_id.clone(), id_token_alg: *id_token_alg, first_party: *first_party })
        }
        ClientVerdict::Anonymous => None,
    };
    let issued = match request {
        TokenRequest::Password { username, password, otp, scope } => {
            // Only password attempts are throttled: a refresh token has 256 bits, nothing to guess.
            let bucket = attempt.client.map(AddressBucket::of);
            if let Err(wait) = state.login_throttle.check(&state.pool, bucket).await? {
                state.grants.metrics.throttled.inc();
                return Err(TokenError::SlowDown { retry_after_secs: retry_after_secs(wait) });
            }
            state.grants.password(&username, password, otp, scope, client, &attempt, now).await?
        }
        TokenRequest::RefreshToken { refresh_token, scope } => {
            state.grants.refresh(refresh_token, scope, client, &attempt, now).await?
        }
        // Answered above, with its client.
        TokenRequest::AuthorizationCode { .. } => return Err(GrantError::InvalidClient(ClientFailure::NoClient).into()),
        TokenRequest::DeviceCode { device_code } => {
            let client = client.ok_or(GrantError::InvalidClient(ClientFailure::NoClient))?;
            state.grants.device_code(client, device_code, &attempt, now).await?
        }
        TokenRequest::ClientCredentials { scope } => match verdict {
            ClientVerdict::Client { client_id, scope: client_scope, .. } => {
                state.grants.client_credentials(client_id, &client_scope, scope, &attempt, now).await?
            }
            // `decide` lets no anonymous client_credentials request through; answer as it would.
            ClientVerdict::Anonymous => return Err(GrantError::InvalidClient(ClientFailure::NoClient).into()),
        },
    };
    Ok(no_store(HttpResponse::Ok()).json(issued))
}

/// The client credentials a token request presents (`oauth::client_auth::presented`): at most one
/// `Authorization` header.
fn presented_client(req: &HttpRequest, form: &FormFields) -> Result<Option<client_auth::PresentedClient>, TokenError> {
    let mut authorization = req.headers().get_all(header::AUTHORIZATION);
    let first = authorization.next();
    if authorization.next().is_some() {
        return Err(GrantError::InvalidRequest("more than one Authorization header".to_owned()).into());
    }
    let header_value = first
        .map(|value| value.to_str())
        .transpose()
        .map_err(|_| GrantError::InvalidRequest("the Authorization header is not valid".to_owned()))?;
    Ok(client_auth::presented(header_value, form)?)
}

/// The client rule at `/token` (`oauth::client_auth::decide`): loads the registered client the
/// presented credentials name, and refuses what the rule refuses ([`client_refused`]).
async fn authenticate_client(
    presented: Option<client_auth::PresentedClient>,
    grant: GrantType,
    state: &AppState,
    attempt: &Attempt,
    now: chrono::DateTime<Utc>,
) -> Result<ClientVerdict, TokenError> {
    // A request that names no client costs no lookup (the password grant's path stays as it was).
    let registered = match &presented {
        Some(presented) => {
            let client_id = presented.client_id.clone();
            crate::db::run(&state.pool, move |conn| crate::db::clients::with_live_secrets(conn, &client_id, now))
                .await?
                .map(|(client, secrets)| client_auth::ClientAtToken::new(client, secrets))
        }
        None => None,
    };
    match client_auth::decide(grant, presented.as_ref(), registered.as_ref(), state.settings.password_grant, now) {
        Ok(verdict) => {
            if matches!(verdict, ClientVerdict::Client { .. }) {
                state.grants.count_client_authentication("ok");
            }
            Ok(verdict)
        }
        Err(refusal) => {
            let client_id = presented.as_ref().map(|presented| presented.client_id.as_str());
            Err(client_refused(refusal, client_id, state, attempt).await)
        }
    }
}

/// The answer to a refused client. A failed client authentication spends the address's sign-in
/// budget (successes spend nothing) and is audited and counted; once the budget is spent it is
/// answered `429` instead, not audited, as for passwords.
async fn client_refused(
    refusal: ClientRefusal,
    client_id: Option<&str>,
    state: &AppState,
    attempt: &Attempt,
) -> TokenError {
    match refusal {
        ClientRefusal::PasswordGrantOff => GrantError::UnsupportedGrantType.into(),
        ClientRefusal::UnauthorizedClient(grant) => GrantError::UnauthorizedClient(grant).into(),
        ClientRefusal::InvalidClient(failure) => {
            let bucket = attempt.client.map(AddressBucket::of);
            match state.login_throttle.check(&state.pool, bucket).await {
                Err(err) => return err.into(),
                Ok(Err(wait)) => {
                    state.grants.metrics.throttled.inc();
                    return TokenError::SlowDown { retry_after_secs: retry_after_secs(wait) };
                }
                Ok(Ok(())) => {}
            }
            state.grants.count_client_authentication(failure.as_str());
            if let Err(err) = state.grants.client_failed(client_id, failure, attempt).await {
                return err.into();
            }
            GrantError::InvalidClient(failure).into()
        }
    }
}

/// What a device shows its person (RFC 8628 §3.2).
#[derive(Serialize, ToSchema)]
struct DeviceAuthorization {
    /// The device polls `/token` with it.
    device_code: String,
    /// `XXXX-XXXX`: the person types it at `verification_uri` (case and dash do not matter).
    #[schema(example = "WDJB-MJHT")]
    user_code: String,
    verification_uri: String,
    /// The same page with the code filled in (for a QR code).
    verification_uri_complete: String,
    #[schema(example = 600)]
    expires_in: i64,
    /// Seconds between polls.
    #[schema(example = 5)]
    interval: i32,
}

/// The fields of a device authorization request (RFC 8628 §3.1).
#[derive(ToSchema)]
#[allow(dead_code)]
struct DeviceAuthorizationForm {
    /// A client registered for the device grant (confidential clients authenticate as at `/token`).
    client_id: String,
    /// Space-separated; omitted: everything the client is registered for.
    scope: Option<String>,
}

/// Device authorization (RFC 8628 §3.1): a device without a browser (a CLI, a TV) asks to be
/// allowed, shows the person the user code, and polls `/token` with
/// `grant_type=urn:ietf:params:oauth:grant-type:device_code` until they answer at `/device`.
#[utoipa::path(
    post,
    path = "/device_authorization",
    tag = "oauth",
    request_body(content = DeviceAuthorizationForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Codes issued", body = DeviceAuthorization),
        (status = 400, description = "`invalid_request`, `unauthorized_client` or `invalid_scope`", body = ErrorResponse),
        (status = 401, description = "`invalid_client`", body = ErrorResponse),
    )
)]
#[post("/device_authorization")]
async fn device_authorization(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, TokenError> {
    let now = Utc::now();
    let attempt = api_attempt(&req, &state);
    let form = read_form(&req, payload).await?;
    let verdict =
        authenticate_client(presented_client(&req, &form)?, GrantType::DeviceCode, &state, &attempt, now).await?;
    let ClientVerdict::Client { client_id, scope: client_scope, .. } = verdict else {
        return Err(GrantError::InvalidClient(ClientFailure::NoClient).into());
    };
    let requested =
        form.get("scope").map(ScopeSet::parse).transpose().map_err(|err| GrantError::InvalidScope(err.to_string()))?;
    let scope = crate::auth::client_secret::grant_scopes(&client_scope, requested.as_ref())
        .map_err(|denied| GrantError::InvalidScope(format!("scope not allowed for this client: {denied}")))?;
    // Each request stores a row and anyone may send one for a public client: the address's sign-in
    // budget pays, as for a password.
    if let Err(wait) = state.login_throttle.check(&state.pool, attempt.client.map(AddressBucket::of)).await? {
        state.grants.metrics.throttled.inc();
        return Err(TokenError::SlowDown { retry_after_secs: retry_after_secs(wait) });
    }
    let (device_code, user_code) = state.grants.device_authorization(client_id, scope, now).await?;
    let shown = crate::oauth::device::display(&user_code);
    let verification_uri = format!("{}/device", state.issuer);
    let answer = DeviceAuthorization {
        device_code,
        verification_uri_complete: crate::oauth::authorize::with_query(&verification_uri, &[("user_code", &shown)]),
        verification_uri,
        user_code: shown,
        expires_in: crate::oauth::device::DEVICE_CODE_TTL.num_seconds(),
        interval: crate::oauth::device::INTERVAL_SECS,
    };
    Ok(no_store(HttpResponse::Ok()).json(answer))
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
    authorization_endpoint: String,
    device_authorization_endpoint: String,
    token_endpoint: String,
    revocation_endpoint: String,
    introspection_endpoint: String,
    jwks_uri: String,
    grant_types_supported: Vec<&'static str>,
    scopes_supported: Vec<String>,
    token_endpoint_auth_methods_supported: [&'static str; 3],
    revocation_endpoint_auth_methods_supported: [&'static str; 1],
    response_types_supported: [&'static str; 1],
    code_challenge_methods_supported: [&'static str; 1],
    authorization_response_iss_parameter_supported: bool,
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
        authorization_endpoint: format!("{issuer}/authorize"),
        device_authorization_endpoint: format!("{issuer}/device_authorization"),
        token_endpoint: format!("{issuer}/token"),
        revocation_endpoint: format!("{issuer}/revoke"),
        introspection_endpoint: format!("{issuer}/introspect"),
        jwks_uri: format!("{issuer}/.well-known/jwks.json"),
        issuer,
        grant_types_supported: grant_types_supported(state.settings.password_grant),
        scopes_supported: scopes.into_iter().map(|scope| scope.name).collect(),
        // `none`: the password and refresh grants without a registered client, and public clients.
        token_endpoint_auth_methods_supported: ["none", "client_secret_basic", "client_secret_post"],
        revocation_endpoint_auth_methods_supported: ["none"],
        response_types_supported: ["code"],
        code_challenge_methods_supported: ["S256"],
        authorization_response_iss_parameter_supported: true,
    }))
}

/// The grants `/token` answers. With the password grant off it is left out: only a client registered
/// for it may still use it, and such a client knows that from its registration, not from here.
pub(super) fn grant_types_supported(password_grant: bool) -> Vec<&'static str> {
    let password = password_grant.then_some("password");
    let others =
        ["authorization_code", "refresh_token", "client_credentials", "urn:ietf:params:oauth:grant-type:device_code"];
    password.into_iter().chain(others).collect()
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
