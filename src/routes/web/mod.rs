//! The website: server-rendered pages, browser sessions, CSRF-protected forms.

mod account;
mod account_tokens;
mod admin;
mod admin_clients;
mod admin_users;
mod audit;
mod authorize;
mod charts;
mod device;
mod email_confirm;
pub mod error;
mod forms;
mod home;
mod login;
pub mod pages;
mod passkeys;
mod password_reset;
mod second_factor;
pub mod session;
mod sign_ins;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{Error, web};

use crate::errors::{Described, ServerError};
pub use error::WebError;

/// Registers the pages inside `scope`, which carries the session middleware.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.configure(login::configure)
        .configure(home::configure)
        .configure(admin::configure)
        .configure(admin_users::configure)
        .configure(admin_clients::configure)
        .configure(audit::configure)
        .configure(account::configure)
        .configure(account_tokens::configure)
        .configure(second_factor::configure)
        .configure(passkeys::configure)
        .configure(password_reset::configure)
        .configure(email_confirm::configure)
        .configure(authorize::configure)
        .configure(device::configure)
        .configure(crate::routes::oidc::configure_pages)
        .app_data(web::PathConfig::default().error_handler(|_, _| WebError::NotFound.into()));
}

/// actix-session answers a failing store (the database is down) with a bare 500 before any handler
/// runs; a browser should see the 503 page instead, like every other outage answer.
pub async fn session_store_failures_as_503(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    match next.call(req).await {
        Ok(response) => Ok(response.map_into_boxed_body()),
        Err(err) if err.as_response_error().status_code().is_server_error() => {
            // actix's error cannot travel between threads: its text is the cause.
            Err(WebError::Server(ServerError::unavailable(Described(format!("session store: {err}")))).into())
        }
        Err(err) => Err(err),
    }
}

/// Every website request runs with room for the user its session brings: the session store reads
/// them in the same trip as the session (`auth::session::with_room_for_its_user`).
pub async fn with_room_for_the_session_user(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    crate::auth::session::with_room_for_its_user(next.call(req)).await
}

/// The website's own addresses: a wrong method there gets an HTML page; elsewhere (OAuth2, health,
/// documents) the JSON error body.
pub const PAGES: &[&str] = &[
    "/",
    "/login",
    "/logout",
    "/admin/stats",
    "/admin/users",
    "/admin/users/{username}",
    "/admin/users/{username}/roles",
    "/admin/users/{username}/active",
    "/admin/users/{username}/password",
    "/admin/users/{username}/sign-out-all",
    "/admin/audit",
    "/admin/clients",
    "/admin/clients/{client_id}/rotate-secret",
    "/admin/clients/{client_id}/remove",
    "/account",
    "/account/password",
    "/account/sessions/{id}/end",
    "/account/families/{id}/revoke",
    "/account/tokens",
    "/account/tokens/{id}/revoke",
    "/login/verify",
    "/account/second-factor",
    "/account/second-factor/confirm",
    "/account/second-factor/recovery-codes",
    "/account/second-factor/remove",
    "/admin/users/{username}/second-factors/remove",
    "/account/passkeys/begin",
    "/account/passkeys/finish",
    "/account/passkeys/{id}/rename",
    "/account/passkeys/{id}/remove",
    "/login/verify/passkey/begin",
    "/login/verify/passkey/finish",
    "/login/passkey/begin",
    "/login/passkey/finish",
    "/password-reset",
    "/password-reset/{token}",
    "/admin/users/{username}/password-reset",
    "/admin/users/{username}/tokens/{id}/revoke",
];

/// Whatever no route matched, outside `/api`: 405 with `Allow` where the path exists with other
/// methods, else the HTML 404 page.
pub async fn fallback(req: actix_web::HttpRequest) -> Result<actix_web::HttpResponse, actix_web::Error> {
    let allowed = super::allowed_methods(req.path());
    if allowed.is_empty() {
        Err(WebError::NotFound.into())
    } else if PAGES.iter().any(|page| super::route_matches(page, req.path())) {
        Err(WebError::MethodNotAllowed { allowed }.into())
    } else {
        Err(super::ApiError::MethodNotAllowed { allowed }.into())
    }
}

#[cfg(test)]
mod tests {
    use super::PAGES;

    /// A page missing from the route table would answer a wrong method with a 404, not a 405.
    #[test]
    fn every_page_is_in_the_route_table() {
        for page in PAGES {
            assert!(!crate::routes::allowed_methods(page).is_empty(), "{page} is not in routes::ROUTES");
        }
        assert_eq!(crate::routes::allowed_methods("/admin/users/alice"), ["GET", "HEAD"]);
        assert_eq!(crate::routes::allowed_methods("/admin/users/alice/roles"), ["POST"]);
        assert!(crate::routes::allowed_methods("/admin/users/alice/bob").is_empty());
    }
}
