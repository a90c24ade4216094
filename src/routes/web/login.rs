//! `GET /login`, `POST /login`, `POST /logout`.

use actix_session::Session;
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use askama::Template;
use secrecy::SecretString;

use super::WebError;
use super::pages::{Layout, render};
use super::session::{MaybeSignedIn, SignedInUser};
use crate::auth::credentials::{self, Attempt, LoginError};
use crate::auth::session::{self, Device, csrf_matches, csrf_token};
use crate::auth::throttle::retry_after_secs;
use crate::db::{self, auth_events::NewEvent};
use crate::domain::form::FormFields;
use crate::domain::{AddressBucket, Channel, EventKind};
use crate::routes::AppState;
use crate::routes::body::read_limited;

const FORM_LIMIT: usize = 4 * 1024;
const GENERIC_FAILURE: &str = "Incorrect username or password.";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(login_form).service(login).service(logout);
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    layout: Layout,
    csrf_token: String,
    username: &'a str,
    next: Option<String>,
    error: Option<&'a str>,
}

#[get("/login")]
async fn login_form(req: HttpRequest, session: Session, user: MaybeSignedIn) -> Result<HttpResponse, WebError> {
    // Strictly parsed, like every form here: `?next=a&next=b` is a bad request, not a guess.
    let query = FormFields::parse_query(req.query_string()).map_err(|_| WebError::BadRequest)?;
    let next = query.get("next").and_then(safe_next);
    if user.0.is_some() {
        return Ok(see_other(next.as_deref().unwrap_or("/")));
    }
    let csrf_token = csrf_token(&session).map_err(WebError::session)?;
    render(StatusCode::OK, &LoginPage { layout: Layout::anonymous(), csrf_token, username: "", next, error: None })
}

#[post("/login")]
async fn login(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let form = read_form(&req, payload).await?;
    if !csrf_matches(&session, form.get("csrf_token")) {
        return Err(WebError::CsrfRejected);
    }
    let next = form.get("next").and_then(safe_next);
    let username = form.get("username").unwrap_or_default().trim().to_owned();
    let password = form.get("password").unwrap_or_default().to_owned();
    let client = state.client_ip(&req);
    if let Err(wait) = state.login_throttle.check(&state.pool, client.map(AddressBucket::of)).await? {
        state.grants.metrics.throttled.inc();
        return Err(WebError::TooManyRequests { retry_after_secs: retry_after_secs(wait) });
    }

    let attempt = Attempt { channel: Channel::Web, client };
    let failure = |username: &str| -> Result<HttpResponse, WebError> {
        let csrf_token = csrf_token(&session).map_err(WebError::session)?;
        let page = LoginPage {
            layout: Layout::anonymous(),
            csrf_token,
            username,
            next: next.clone(),
            error: Some(GENERIC_FAILURE),
        };
        render(StatusCode::UNAUTHORIZED, &page)
    };
    if username.is_empty() || password.is_empty() {
        return failure(&username);
    }
    let (hasher, metrics) = (&state.grants.hasher, &state.grants.metrics);
    let password = SecretString::from(password);
    let checked = match credentials::admit(hasher, metrics, &username, &attempt).await {
        Ok(ticket) => credentials::check_password(&state.pool, ticket, metrics, &username, password, &attempt).await,
        Err(refused) => Err(refused),
    };
    match checked {
        Ok(signed_in) => {
            let user_agent = req.headers().get(header::USER_AGENT).and_then(|value| value.to_str().ok());
            let device = Device { client, user_agent };
            session::sign_in(&session, &signed_in, &device).map_err(WebError::session)?;
            Ok(see_other(next.as_deref().unwrap_or("/")))
        }
        Err(LoginError::InvalidCredentials) => failure(&username),
        Err(LoginError::Server(err)) => Err(err.into()),
    }
}

#[post("/logout")]
async fn logout(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    user: MaybeSignedIn,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let form = read_form(&req, payload).await?;
    if !csrf_matches(&session, form.get("csrf_token")) {
        return Err(WebError::CsrfRejected);
    }
    if let Some(SignedInUser { user, .. }) = user.0 {
        let event = NewEvent::new(EventKind::Logout, Channel::Web)
            .user(user.id)
            .attempted(&user.username)
            .client(state.client_ip(&req).map(|ip| ip.to_string()));
        db::run(&state.pool, move |conn| db::auth_events::record(conn, &event)).await?;
    }
    // Deletes the server-side row, so the old cookie is worth nothing even if replayed.
    session.purge();
    Ok(see_other("/login"))
}

pub(super) async fn read_form(req: &HttpRequest, payload: web::Payload) -> Result<FormFields, WebError> {
    let body = read_limited(payload, FORM_LIMIT).await.map_err(|_| WebError::BadRequest)?;
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok());
    FormFields::parse(content_type, &body).map_err(|_| WebError::BadRequest)
}

pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((header::LOCATION, location)).finish()
}

/// `next` is followed only to a path on this site: `/x`, never `//host`, `/\host`, `https://…`,
/// nor anything with control characters or backslashes that a browser might read as a host.
pub fn safe_next(raw: &str) -> Option<String> {
    let local = raw.starts_with('/')
        && !raw.starts_with("//")
        && !raw.contains('\\')
        && raw.len() <= 2048
        && !raw.chars().any(|c| c.is_control() || c.is_whitespace());
    local.then(|| raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(safe_next("/admin/stats?x=1").as_deref(), Some("/admin/stats?x=1"));
        assert_eq!(safe_next("/"), Some("/".to_owned()));
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/\\evil.example",
            "\\\\evil",
            "evil",
            "/\tx",
            "",
            "/ /x",
            "/%0a",
        ] {
            if bad == "/%0a" {
                // Percent-encoded bytes stay in the path: harmless.
                assert!(safe_next(bad).is_some());
                continue;
            }
            assert_eq!(safe_next(bad), None, "{bad}");
        }
    }
}
