//! The route table: the one list of what the server answers, used by `startup` and by the tests.

pub mod api;
pub(crate) mod body;
pub mod docs;
pub mod health;
pub mod oauth;
pub mod web;

use crate::errors::ApiError;

/// The routes described by the OpenAPI document: OAuth2 endpoints, the API, health checks.
pub fn documented(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.configure(oauth::configure).configure(api::configure).configure(health::configure);
}

/// Anything under `/api` no route matched.
pub async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound)
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
