//! `GET /login`, `POST /login`, `POST /logout`.

use actix_session::Session;
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use askama::Template;
use secrecy::SecretString;

use super::WebError;
use super::forms::{checked_form, spend_password_budget};
use super::pages::{Layout, render};
use super::session::{MaybeSignedIn, SignedInUser};
use crate::auth::credentials::{self, Attempt, LoginError, SecondStep, SecondStepError, SignIn};
use crate::auth::second_factor::SECOND_STEP_WINDOW;
use crate::auth::session::{self, Device, csrf_matches, csrf_token};
use crate::db::{self, auth_events::NewEvent};
use crate::domain::form::FormFields;
use crate::domain::{Channel, EventKind};
use crate::routes::AppState;
use crate::routes::body::read_limited;

const FORM_LIMIT: usize = 4 * 1024;
const GENERIC_FAILURE: &str = "Incorrect username or password.";
const WRONG_CODE: &str = "That code did not work. Try the current code from your app, or a recovery code.";
/// Where a user the second-factor policy covers is kept until they add one.
pub const ENROLMENT_PAGE: &str = "/account/second-factor";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(login_form).service(login).service(verify_form).service(verify).service(logout);
}

#[derive(Template)]
#[template(path = "login_verify.html")]
struct VerifyPage<'a> {
    layout: Layout,
    csrf_token: String,
    next: Option<String>,
    error: Option<&'a str>,
    /// The user has an authenticator app (the code field), and a passkey usable here.
    app: bool,
    passkey: bool,
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    layout: Layout,
    csrf_token: String,
    username: &'a str,
    next: Option<String>,
    error: Option<&'a str>,
    /// Passkeys are on: offer "Sign in with a passkey".
    passkeys: bool,
    /// Mail is on: offer "Forgot your password?".
    mail: bool,
}

#[get("/login")]
async fn login_form(
    req: HttpRequest,
    session: Session,
    user: MaybeSignedIn,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    // Strictly parsed, like every form here: `?next=a&next=b` is a bad request, not a guess.
    let query = FormFields::parse_query(req.query_string()).map_err(|_| WebError::BadRequest)?;
    let next = query.get("next").and_then(safe_next);
    // `again=1`: an app asked for a new sign-in (prompt=login, max_age): the form, signed in or not;
    // the session is replaced only when the new sign-in succeeds.
    if user.0.is_some() && query.get("again") != Some("1") {
        return Ok(see_other(next.as_deref().unwrap_or("/")));
    }
    let csrf_token = csrf_token(&session).map_err(WebError::session)?;
    let passkeys = state.grants.second_factors.passkeys.is_some();
    let mail = state.mail.is_some();
    // OpenID Connect's login_hint, passed on by /authorize: only a pre-filled field.
    let hint = query.get("login_hint").unwrap_or_default();
    let page = LoginPage { layout: Layout::anonymous(), csrf_token, username: hint, next, error: None, passkeys, mail };
    render(StatusCode::OK, &page)
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
    spend_password_budget(&req, &state).await?;
    let client = state.client_ip(&req);

    let attempt = Attempt { channel: Channel::Web, client };
    let failure = |username: &str| -> Result<HttpResponse, WebError> {
        let csrf_token = csrf_token(&session).map_err(WebError::session)?;
        let page = LoginPage {
            layout: Layout::anonymous(),
            csrf_token,
            username,
            next: next.clone(),
            error: Some(GENERIC_FAILURE),
            passkeys: state.grants.second_factors.passkeys.is_some(),
            mail: state.mail.is_some(),
        };
        render(StatusCode::UNAUTHORIZED, &page)
    };
    if username.is_empty() || password.is_empty() {
        return failure(&username);
    }
    let (hasher, metrics) = (&state.grants.hasher, &state.grants.metrics);
    let password = SecretString::from(password);
    let factors = &state.grants.second_factors;
    let checked = match credentials::admit(hasher, metrics, &username, &attempt).await {
        Ok(ticket) => {
            credentials::check_password(
                &state.pool,
                ticket,
                metrics,
                factors,
                &username,
                password,
                SecondStep::NextPage,
                &attempt,
            )
            .await
        }
        Err(refused) => Err(refused),
    };
    let user_agent = req.headers().get(header::USER_AGENT).and_then(|value| value.to_str().ok());
    let device = Device { client, user_agent };
    match checked {
        Ok(SignIn::Complete(signed_in)) => {
            session::sign_in(&session, &signed_in, &device).map_err(WebError::session)?;
            Ok(see_other(next.as_deref().unwrap_or("/")))
        }
        Ok(SignIn::MustEnrol(signed_in)) => {
            session::sign_in(&session, &signed_in, &device).map_err(WebError::session)?;
            Ok(see_other(ENROLMENT_PAGE))
        }
        Ok(SignIn::SecondStepDue(signed_in)) => {
            let until = chrono::Utc::now() + SECOND_STEP_WINDOW;
            session::begin_second_step(&session, &signed_in, &device, until).map_err(WebError::session)?;
            Ok(see_other(&verify_path(next.as_deref())))
        }
        Err(LoginError::InvalidCredentials) => failure(&username),
        Err(LoginError::Server(err)) => Err(err.into()),
    }
}

fn verify_path(next: Option<&str>) -> String {
    match next {
        Some(next) => format!(
            "/login/verify?next={}",
            percent_encoding::utf8_percent_encode(next, percent_encoding::NON_ALPHANUMERIC)
        ),
        None => "/login/verify".to_owned(),
    }
}

/// The half-signed-in session's pending sign-in, if it is still within its window; otherwise the
/// session ends (`None`: back to `/login`).
fn live_pending(session: &Session) -> Option<session::PendingSignIn> {
    let pending = session::pending_sign_in(session);
    match pending {
        Some(pending) if pending.until > chrono::Utc::now() => Some(pending),
        Some(_) => {
            session.purge();
            None
        }
        None => None,
    }
}

/// The second step of a sign-in: a code from the authenticator app, or a recovery code.
#[get("/login/verify")]
async fn verify_form(req: HttpRequest, session: Session, state: web::Data<AppState>) -> Result<HttpResponse, WebError> {
    let query = FormFields::parse_query(req.query_string()).map_err(|_| WebError::BadRequest)?;
    let next = query.get("next").and_then(safe_next);
    let Some(pending) = live_pending(&session) else { return Ok(see_other("/login")) };
    let csrf_token = csrf_token(&session).map_err(WebError::session)?;
    let (app, passkey) = factors_of(&state, pending.user_id).await?;
    render(StatusCode::OK, &VerifyPage { layout: Layout::anonymous(), csrf_token, next, error: None, app, passkey })
}

/// What the verify page offers the user: the code field (an app), the passkey button (a passkey,
/// and passkeys on).
async fn factors_of(state: &AppState, user_id: uuid::Uuid) -> Result<(bool, bool), WebError> {
    let factors = db::run(&state.pool, move |conn| db::second_factors::of_user(conn, user_id)).await?;
    let passkeys_on = state.grants.second_factors.passkeys.is_some();
    Ok((factors.app.is_some(), passkeys_on && factors.passkeys > 0))
}

#[post("/login/verify")]
async fn verify(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let form = checked_form(&req, payload, &session).await?;
    let next = form.get("next").and_then(safe_next);
    let Some(pending) = live_pending(&session) else { return Ok(see_other("/login")) };
    // A code is guessed like a password: the same per-address budget.
    spend_password_budget(&req, &state).await?;
    let attempt = Attempt { channel: Channel::Web, client: state.client_ip(&req) };
    let code = form.get("code").map(|code| SecretString::from(code.to_owned()));
    let (metrics, factors) = (&state.grants.metrics, &state.grants.second_factors);
    match credentials::check_second_step(&state.pool, metrics, factors, pending.user_id, code, &attempt).await {
        Ok(signed_in) => {
            session::complete_second_step(&session, &signed_in).map_err(WebError::session)?;
            Ok(see_other(next.as_deref().unwrap_or("/")))
        }
        Err(SecondStepError::Wrong) => {
            let csrf_token = csrf_token(&session).map_err(WebError::session)?;
            let (app, passkey) = factors_of(&state, pending.user_id).await?;
            let layout = Layout::anonymous();
            let page = VerifyPage { layout, csrf_token, next, error: Some(WRONG_CODE), app, passkey };
            render(StatusCode::UNAUTHORIZED, &page)
        }
        Err(SecondStepError::Locked) => {
            session.purge();
            Ok(see_other("/login"))
        }
        Err(SecondStepError::Server(err)) => Err(err.into()),
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
