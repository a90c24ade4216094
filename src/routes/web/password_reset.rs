//! "Forgot your password?": `/password-reset` asks for a username or email address and always
//! answers the same (the lookup and the mail happen after the answer, so neither the page nor its
//! timing says whether an account exists); `/password-reset/{token}` shows the new-password form
//! (opening it spends nothing) and sets the password once. `/invitation/{token}` is the same form
//! for the first password of an invited user.

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use askama::Template;
use secrecy::SecretString;

use super::WebError;
use super::forms::{FieldErrors, checked_form, spend_password_budget};
use super::pages::{Layout, render};
use crate::accounts::AccountError;
use crate::accounts::password_reset::ResetError;
use crate::auth::session::csrf_token;
use crate::db::password_resets::LinkPurpose;
use crate::domain::Channel;
use crate::routes::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(request_form)
        .service(request)
        .service(reset_form)
        .service(reset)
        .service(invitation_form)
        .service(accept_invitation);
}

#[derive(Template)]
#[template(path = "password_reset.html")]
struct RequestPage {
    layout: Layout,
    csrf_token: String,
    /// The request was taken: "if an account matches, a mail is on its way".
    sent: bool,
}

#[derive(Template)]
#[template(path = "password_reset_form.html")]
struct ResetPage {
    layout: Layout,
    csrf_token: String,
    /// An invitation's first password (else a reset).
    invitation: bool,
    /// Where the form posts: the link's own address.
    action: String,
    username: String,
    errors: FieldErrors,
    /// The link no longer works (the page says so, with a way to ask for a new one).
    dead: bool,
    /// The password was set.
    done: bool,
}

/// Mail is off (no SMTP, not `--dev`): these pages do not exist.
pub(super) fn mail_on(state: &AppState) -> Result<(), WebError> {
    if state.mail.is_some() { Ok(()) } else { Err(WebError::NotFound) }
}

#[get("/password-reset")]
async fn request_form(session: Session, state: web::Data<AppState>) -> Result<HttpResponse, WebError> {
    mail_on(&state)?;
    let csrf_token = csrf_token(&session).map_err(WebError::session)?;
    render(StatusCode::OK, &RequestPage { layout: Layout::anonymous(), csrf_token, sent: false })
}

#[post("/password-reset")]
async fn request(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    mail_on(&state)?;
    let form = checked_form(&req, payload, &session).await?;
    spend_password_budget(&req, &state).await?;
    let who = form.get("username_or_email").unwrap_or_default().to_owned();
    let actor = crate::accounts::Actor { user_id: None, channel: Channel::Web, client: state.client_ip(&req) };
    // After the answer: the page and its timing are the same whether or not an account matched.
    let worker = state.clone();
    actix_web::rt::spawn(async move {
        if let Err(err) = worker.accounts().request_password_reset(&who, &actor).await {
            log::error!("password reset request failed: {err}");
        }
    });
    let csrf_token = csrf_token(&session).map_err(WebError::session)?;
    render(StatusCode::OK, &RequestPage { layout: Layout::anonymous(), csrf_token, sent: true })
}

/// A link's token: what the mail carries (43 base64url characters); anything else is no link.
pub(super) fn plausible(token: &str) -> bool {
    (20..=128).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The page a link opens (`purpose` says which), and where its form posts.
fn link_path(purpose: LinkPurpose, token: &str) -> String {
    match purpose {
        LinkPurpose::Reset => format!("/password-reset/{token}"),
        LinkPurpose::Invitation => format!("/invitation/{token}"),
    }
}

#[get("/password-reset/{token}")]
async fn reset_form(
    session: Session,
    token: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    link_form(&session, LinkPurpose::Reset, &token, &state).await
}

#[post("/password-reset/{token}")]
async fn reset(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    token: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    use_link(&req, payload, &session, LinkPurpose::Reset, token.into_inner(), &state).await
}

#[get("/invitation/{token}")]
async fn invitation_form(
    session: Session,
    token: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    link_form(&session, LinkPurpose::Invitation, &token, &state).await
}

#[post("/invitation/{token}")]
async fn accept_invitation(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    token: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    use_link(&req, payload, &session, LinkPurpose::Invitation, token.into_inner(), &state).await
}

/// `GET` of a link: the form, or why the link is dead. Spends nothing.
async fn link_form(
    session: &Session,
    purpose: LinkPurpose,
    token: &str,
    state: &AppState,
) -> Result<HttpResponse, WebError> {
    mail_on(state)?;
    let csrf_token = csrf_token(session).map_err(WebError::session)?;
    let user = if plausible(token) { state.accounts().password_link_user(purpose, token).await? } else { None };
    let dead = user.is_none();
    let page = ResetPage {
        layout: Layout::anonymous(),
        csrf_token,
        invitation: purpose == LinkPurpose::Invitation,
        action: link_path(purpose, token),
        username: user.map(|user| user.username).unwrap_or_default(),
        errors: FieldErrors::default(),
        dead,
        done: false,
    };
    render(if dead { StatusCode::BAD_REQUEST } else { StatusCode::OK }, &page)
}

/// `POST` of a link's form: sets the password once.
async fn use_link(
    req: &HttpRequest,
    payload: web::Payload,
    session: &Session,
    purpose: LinkPurpose,
    token: String,
    state: &AppState,
) -> Result<HttpResponse, WebError> {
    mail_on(state)?;
    let form = checked_form(req, payload, session).await?;
    spend_password_budget(req, state).await?;
    let field = |name: &str| SecretString::from(form.raw(name).unwrap_or_default().to_owned());
    let actor = crate::accounts::Actor { user_id: None, channel: Channel::Web, client: state.client_ip(req) };
    let outcome = if plausible(&token) {
        state
            .accounts()
            .set_password_by_link(&actor, purpose, &token, field("new_password"), field("new_password_again"))
            .await
    } else {
        Err(ResetError::DeadLink)
    };
    let csrf_token = csrf_token(session).map_err(WebError::session)?;
    let page = |errors, dead, done, username: String| ResetPage {
        layout: Layout::anonymous(),
        csrf_token: csrf_token.clone(),
        invitation: purpose == LinkPurpose::Invitation,
        action: link_path(purpose, &token),
        username,
        errors,
        dead,
        done,
    };
    match outcome {
        Ok(user) => render(StatusCode::OK, &page(FieldErrors::default(), false, true, user.username)),
        Err(ResetError::DeadLink) => {
            render(StatusCode::BAD_REQUEST, &page(FieldErrors::default(), true, false, String::new()))
        }
        Err(ResetError::Account(AccountError::Server(err))) => Err(err.into()),
        Err(ResetError::Account(err)) => {
            let username =
                state.accounts().password_link_user(purpose, &token).await?.map(|u| u.username).unwrap_or_default();
            render(StatusCode::BAD_REQUEST, &page(FieldErrors::of(&err), false, false, username))
        }
    }
}
