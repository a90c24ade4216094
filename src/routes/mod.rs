//! The route table: the one list of what the server answers, used by `startup` and by the tests.

pub mod api;
pub(crate) mod body;
pub mod docs;
pub mod health;
pub mod oauth;
pub mod web;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;

use crate::errors::ApiError;

/// The routes described by the OpenAPI document: OAuth2 endpoints, the API, health checks.
pub fn documented(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.configure(oauth::configure).configure(api::configure).configure(health::configure);
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
        ROUTES.iter().filter(|(_, route)| *route == path).map(|(method, _)| *method).collect();
    if allowed.contains(&"GET") {
        allowed.push("HEAD");
    }
    allowed
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
    ("GET", "/.well-known/oauth-authorization-server"),
    ("GET", "/api/users/me"),
    ("POST", "/api/users/me/sign-out-all"),
    ("GET", "/api/items"),
    ("POST", "/api/items"),
    ("GET", "/api/admin/stats"),
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
];
