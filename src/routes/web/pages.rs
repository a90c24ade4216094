//! What every page shares: the layout's data, rendering, the stylesheet.

use std::sync::LazyLock;

use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::{HttpResponse, get};
use askama::Template;
use sha2::{Digest, Sha256};

use super::error::WebError;
use crate::errors::ServerError;

const STYLESHEET: &str = include_str!("../../../static/style.css");
/// The passkey buttons' browser side (WebAuthn has no form-only way).
const PASSKEYS_SCRIPT: &str = include_str!("../../../static/passkeys.js");

/// Part of the static files' hash, put in their URLs so a changed file is never served from cache.
pub static ASSET_VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut digest = Sha256::new();
    digest.update(STYLESHEET.as_bytes());
    digest.update(PASSKEYS_SCRIPT.as_bytes());
    digest.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect()
});

/// What `base.html` needs.
pub struct Layout {
    pub user: Option<LayoutUser>,
    pub asset_version: &'static str,
}

#[derive(Debug, Clone)]
pub struct LayoutUser {
    pub username: String,
    pub is_admin: bool,
    /// For the sign-out form in the header.
    pub csrf_token: String,
}

impl Layout {
    pub fn anonymous() -> Self {
        Self { user: None, asset_version: ASSET_VERSION.as_str() }
    }

    pub fn signed_in(user: LayoutUser) -> Self {
        Self { user: Some(user), asset_version: ASSET_VERSION.as_str() }
    }
}

/// No inline script anywhere; everything comes from this origin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
/// The same without `form-action`, for the pages whose forms end at an app (sign-in, its second
/// step, consent, device, logout): Chromium and Safari hold every redirect after a form's submission
/// to `form-action`, and the last one goes to the app's registered redirect URI, another origin.
const SIGN_IN_CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// Whether the page at `path` may post a form whose redirects end at an app.
pub fn leads_to_apps(path: &str) -> bool {
    matches!(path, "/login" | "/login/verify" | "/authorize" | "/device" | "/end_session")
}

/// `nosniff` on everything; on HTML also a strict CSP, no framing and a same-origin referrer.
/// `sign_in`: the page's forms may end at an app (see [`leads_to_apps`]).
pub fn secure_headers(headers: &mut HeaderMap, sign_in: bool) {
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    let is_html = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/html"));
    if is_html && !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        let policy = if sign_in { SIGN_IN_CONTENT_SECURITY_POLICY } else { CONTENT_SECURITY_POLICY };
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(policy));
    }
    if is_html {
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    }
}

/// Renders a page; pages are personal (and carry CSRF tokens), so none may be cached.
pub fn render(status: actix_web::http::StatusCode, page: &impl Template) -> Result<HttpResponse, WebError> {
    let html = page.render().map_err(|err| WebError::Server(ServerError::internal(err)))?;
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(html))
}

#[get("/static/style.css")]
async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .body(STYLESHEET)
}

#[get("/static/passkeys.js")]
async fn passkeys_script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .body(PASSKEYS_SCRIPT)
}

pub fn configure_static(cfg: &mut actix_web::web::ServiceConfig) {
    cfg.service(stylesheet).service(passkeys_script);
}
