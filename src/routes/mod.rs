//! HTTP: the route table (the one list of what the server answers, used by `startup` and by the
//! tests), the state handlers share, and the only place where errors become responses.

pub mod api;
pub(crate) mod body;
pub mod client;
pub mod docs;
pub mod errors;
pub mod health;
pub mod metrics;
pub mod oauth;
pub mod oidc;
pub mod web;

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;

use crate::auth::password::ApiLoad;
use crate::auth::throttle::LoginThrottle;
use crate::config::Settings;
use crate::db::PgPool;
use crate::oauth::grant::Grants;
pub use errors::ApiError;

/// What every handler shares: built once in `startup`, handed to actix as `web::Data`.
pub struct AppState {
    pub pool: PgPool,
    pub settings: Settings,
    /// The issuer as served: `GATEHOUSE_ISSUER`, or `http://` and the address actually bound.
    pub issuer: String,
    /// What authenticator apps list this service's accounts under: the issuer's host.
    pub app_label: String,
    /// The role definitions (which scopes each role allows), read at start.
    pub role_scopes: crate::domain::RoleScopes,
    /// Mail is on (SMTP configured, or `--dev`): what mails say about where they come from.
    pub mail: Option<crate::mail::Sender>,
    /// The mailer the delivery loop uses (`serve` starts the loop).
    pub mailer: Option<std::sync::Arc<crate::mail::delivery::Mailer>>,
    /// The grants, with the hasher and the signing keys they use.
    pub grants: Grants,
    pub login_throttle: LoginThrottle,
    /// Signs and encrypts the session cookie.
    pub session_key: actix_web::cookie::Key,
    /// Requests in flight, which decide whether spare threads may hash.
    pub api_load: Arc<ApiLoad>,
    /// Reloads the signing keys every minute while the server lives.
    pub key_reloader: crate::auth::keys::Reloader,
    /// `GATEHOUSE_METRICS_BIND`'s listener, if configured.
    pub metrics_endpoint: Option<metrics::MetricsEndpoint>,
}

impl AppState {
    pub fn client_ip(&self, req: &actix_web::HttpRequest) -> Option<std::net::IpAddr> {
        client::client_ip(req, &self.settings.trusted_proxies)
    }

    /// User administration and self-service, with this server's pool and hasher.
    pub fn accounts(&self) -> crate::accounts::Accounts<'_> {
        crate::accounts::Accounts {
            pool: &self.pool,
            hasher: &self.grants.hasher,
            metrics: &self.grants.metrics,
            mail: self.mail.as_ref(),
        }
    }

    /// The account pages' second factor, with this server's sealer and policy.
    pub fn second_factor_accounts(&self) -> crate::accounts::second_factor::SecondFactorAccounts<'_> {
        crate::accounts::second_factor::SecondFactorAccounts {
            accounts: self.accounts(),
            factors: &self.grants.second_factors,
            app_label: &self.app_label,
        }
    }

    /// The name authenticator apps list accounts under: the issuer's host (`gatehouse` without one).
    pub fn app_label(&self) -> &str {
        &self.app_label
    }

    /// Client administration, with this server's pool.
    pub fn clients(&self) -> crate::accounts::clients::Clients<'_> {
        crate::accounts::clients::Clients { pool: &self.pool }
    }
}

/// The routes described by the OpenAPI document: OAuth2 endpoints, the API, health checks.
pub fn documented(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.configure(oauth::configure).configure(oidc::configure).configure(api::configure).configure(health::configure);
}

/// Anything under `/api` no route matched: 405 with `Allow` where the path exists, else 404.
pub async fn api_fallback(req: actix_web::HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(match allowed_methods(req.path()) {
        allowed if allowed.is_empty() => ApiError::NotFound,
        allowed => ApiError::MethodNotAllowed { allowed },
    })
}

/// The methods served at exactly `path` (none for an unknown path): the route table's, and HEAD
/// wherever GET is.
pub fn allowed_methods(path: &str) -> Vec<&'static str> {
    let mut allowed: Vec<&'static str> =
        ROUTES.iter().filter(|(_, route)| route_matches(route, path)).map(|(method, _)| *method).collect();
    if allowed.contains(&"GET") {
        allowed.push("HEAD");
    }
    allowed
}

/// Whether `path` is an address of the route `pattern`, where a `{name}` segment stands for any one
/// non-empty segment.
pub fn route_matches(pattern: &str, path: &str) -> bool {
    let (mut patterns, mut segments) = (pattern.split('/'), path.split('/'));
    loop {
        match (patterns.next(), segments.next()) {
            (None, None) => return true,
            (Some(wanted), Some(segment)) if wanted == segment => {}
            (Some(wanted), Some(segment))
                if wanted.starts_with('{') && wanted.ends_with('}') && !segment.is_empty() => {}
            _ => return false,
        }
    }
}

/// Counts every request in flight, except those that wait for the password hasher themselves
/// (sign-ins): spare hashing threads start work only while nothing else is in flight.
pub async fn count_api_load(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let hashes = req.method() == Method::POST && matches!(req.path(), "/token" | "/login");
    let load = if hashes {
        None
    } else {
        req.app_data::<actix_web::web::Data<AppState>>().map(|state| state.api_load.start())
    };
    let response = next.call(req).await;
    drop(load);
    response
}

/// HEAD is GET without the body (RFC 9110 §9.3.2): route it as GET. The HTTP layer remembers the
/// request was HEAD and sends the GET answer's headers only.
pub async fn head_as_get(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if req.method() == Method::HEAD {
        req.head_mut().method = Method::GET;
    }
    next.call(req).await
}

/// Every `(method, path)` the service answers, for documentation checks.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/token"),
    ("POST", "/revoke"),
    ("POST", "/introspect"),
    ("GET", "/.well-known/oauth-authorization-server"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/api/users/me"),
    ("POST", "/api/users/me/sign-out-all"),
    ("GET", "/api/users/me/tokens"),
    ("POST", "/api/users/me/tokens"),
    ("DELETE", "/api/users/me/tokens/{id}"),
    ("GET", "/api/items"),
    ("POST", "/api/items"),
    ("GET", "/api/admin/stats"),
    ("GET", "/api/admin/users"),
    ("POST", "/api/admin/users"),
    ("PATCH", "/api/admin/users/{username}"),
    ("POST", "/api/admin/users/{username}/sign-out-all"),
    ("GET", "/api/admin/clients"),
    ("POST", "/api/admin/clients"),
    ("GET", "/api/admin/clients/{client_id}"),
    ("DELETE", "/api/admin/clients/{client_id}"),
    ("POST", "/api/admin/clients/{client_id}/rotate-secret"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/static/style.css"),
    ("GET", "/login"),
    ("POST", "/login"),
    ("POST", "/logout"),
    ("GET", "/"),
    ("GET", "/admin/stats"),
    ("GET", "/admin/users"),
    ("POST", "/admin/users"),
    ("GET", "/admin/users/{username}"),
    ("POST", "/admin/users/{username}/roles"),
    ("POST", "/admin/users/{username}/active"),
    ("POST", "/admin/users/{username}/password"),
    ("POST", "/admin/users/{username}/sign-out-all"),
    ("GET", "/admin/audit"),
    ("GET", "/admin/clients"),
    ("POST", "/admin/clients"),
    ("POST", "/admin/clients/{client_id}/rotate-secret"),
    ("POST", "/admin/clients/{client_id}/remove"),
    ("GET", "/account"),
    ("POST", "/account/profile"),
    ("POST", "/account/password"),
    ("POST", "/account/sessions/{id}/end"),
    ("POST", "/account/families/{id}/revoke"),
    ("GET", "/account/tokens"),
    ("POST", "/account/tokens"),
    ("POST", "/account/tokens/{id}/revoke"),
    ("GET", "/login/verify"),
    ("POST", "/login/verify"),
    ("GET", "/account/second-factor"),
    ("POST", "/account/second-factor"),
    ("POST", "/account/second-factor/confirm"),
    ("POST", "/account/second-factor/recovery-codes"),
    ("POST", "/account/second-factor/remove"),
    ("POST", "/admin/users/{username}/second-factors/remove"),
    ("DELETE", "/api/admin/users/{username}/second-factors"),
    ("POST", "/account/passkeys/begin"),
    ("POST", "/account/passkeys/finish"),
    ("POST", "/account/passkeys/{id}/rename"),
    ("POST", "/account/passkeys/{id}/remove"),
    ("POST", "/login/verify/passkey/begin"),
    ("POST", "/login/verify/passkey/finish"),
    ("POST", "/login/passkey/begin"),
    ("POST", "/login/passkey/finish"),
    ("GET", "/static/passkeys.js"),
    ("GET", "/password-reset"),
    ("POST", "/password-reset"),
    ("GET", "/password-reset/{token}"),
    ("POST", "/password-reset/{token}"),
    ("GET", "/invitation/{token}"),
    ("POST", "/invitation/{token}"),
    ("GET", "/email-confirm/{token}"),
    ("POST", "/email-confirm/{token}"),
    ("POST", "/admin/users/{username}/password-reset"),
    ("POST", "/admin/users/{username}/tokens/{id}/revoke"),
    ("GET", "/authorize"),
    ("POST", "/authorize"),
    ("GET", "/userinfo"),
    ("POST", "/userinfo"),
    ("GET", "/.well-known/openid-configuration"),
    ("GET", "/end_session"),
    ("POST", "/end_session"),
    ("POST", "/device_authorization"),
    ("GET", "/device"),
    ("POST", "/device"),
    ("POST", "/account/apps/{client_id}/disconnect"),
];
