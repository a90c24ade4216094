//! `/device`: where a person allows a device (RFC 8628 §3.3). They type the code the device shows
//! (or follow `verification_uri_complete`), see the app and the scopes, and allow or deny it.

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use askama::Template;
use chrono::Utc;

use super::WebError;
use super::forms::{checked_form, spend_password_budget};
use super::pages::render;
use super::session::SignedInUser;
use crate::auth::session::{self, amr_of};
use crate::db::{self, auth_events::NewEvent, authorizations::PendingDevice};
use crate::domain::form::FormFields;
use crate::domain::{Channel, EventKind};
use crate::oauth::device::{self, Decision};
use crate::routes::AppState;

const NO_SUCH_CODE: &str = "That code is not waiting for anyone: check it on the device, or start again there.";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(device_page).service(device_form);
}

#[derive(Template)]
#[template(path = "device.html")]
struct DevicePage {
    layout: super::pages::Layout,
    csrf_token: String,
    typed: String,
    error: Option<&'static str>,
    pending: Option<PendingDevice>,
    /// The pending request's code as shown (`XXXX-XXXX`) and its scopes.
    pending_code: String,
    pending_scopes: Vec<String>,
    done: Option<&'static str>,
}

impl DevicePage {
    fn new(user: &SignedInUser) -> Self {
        Self {
            layout: user.layout(),
            csrf_token: user.csrf_token.clone(),
            typed: String::new(),
            error: None,
            pending: None,
            pending_code: String::new(),
            pending_scopes: Vec::new(),
            done: None,
        }
    }

    fn confirm(user: &SignedInUser, pending: PendingDevice) -> Self {
        Self {
            pending_code: device::display(&pending.user_code),
            pending_scopes: pending.scope.to_vec(),
            pending: Some(pending),
            ..Self::new(user)
        }
    }
}

/// The code form, or (with `?user_code=`, from `verification_uri_complete`) the request itself.
#[get("/device")]
async fn device_page(
    req: HttpRequest,
    user: SignedInUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let query = FormFields::parse_query(req.query_string()).map_err(|_| WebError::BadRequest)?;
    let Some(typed) = query.get("user_code") else { return render(StatusCode::OK, &DevicePage::new(&user)) };
    spend_password_budget(&req, &state).await?;
    match lookup(&state, typed).await? {
        Some(pending) => render(StatusCode::OK, &DevicePage::confirm(&user, pending)),
        None => {
            let page = DevicePage { typed: typed.to_owned(), error: Some(NO_SUCH_CODE), ..DevicePage::new(&user) };
            render(StatusCode::BAD_REQUEST, &page)
        }
    }
}

/// Without `decision`: looks the typed code up (a guess, so it spends the address's sign-in budget).
/// With `decision=allow|deny`: records it, once.
#[post("/device")]
async fn device_form(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    user: SignedInUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let form = checked_form(&req, payload, &session).await?;
    let typed = form.get("user_code").unwrap_or_default().to_owned();
    let decision = match form.get("decision") {
        None => None,
        Some("allow") => Some(Decision::Allowed),
        Some("deny") => Some(Decision::Denied),
        Some(_) => return Err(WebError::BadRequest),
    };
    // Every lookup is a guess at a user code (RFC 8628 §5.1): the address's sign-in budget pays.
    spend_password_budget(&req, &state).await?;
    let Some(decision) = decision else {
        return match lookup(&state, &typed).await? {
            Some(pending) => render(StatusCode::OK, &DevicePage::confirm(&user, pending)),
            None => {
                let page = DevicePage { typed, error: Some(NO_SUCH_CODE), ..DevicePage::new(&user) };
                render(StatusCode::BAD_REQUEST, &page)
            }
        };
    };
    let Some(pending) = lookup(&state, &typed).await? else {
        let page = DevicePage { typed, error: Some(NO_SUCH_CODE), ..DevicePage::new(&user) };
        return render(StatusCode::BAD_REQUEST, &page);
    };
    let user_id = user.user.id;
    let granted = pending.scope.intersection(&state.role_scopes.allowed_for(&user.roles));
    // Nothing the person may grant: allowing it would only give the device an error later.
    let decision = if granted.is_empty() { Decision::Denied } else { decision };
    let auth_time = session::sign_in_of(&session).map(|sign_in| sign_in.signed_in_at).ok_or(WebError::BadRequest)?;
    let amr = amr_of(&session);
    let event = NewEvent::new(EventKind::DeviceDecided, Channel::Web)
        .user(user_id)
        .client(state.client_ip(&req).map(|ip| ip.to_string()))
        .detail(format!("{} client {}: {granted}", decision.as_str(), pending.client_id));
    let code = pending.user_code.clone();
    let now = Utc::now();
    let decided = db::run(&state.pool, move |conn| {
        db::authorizations::decide_device(conn, &code, user_id, decision, &granted, auth_time, &amr, now, &event)
    })
    .await?;
    let done = match (decided, decision) {
        (false, _) => "That request was already answered or has expired.",
        (true, Decision::Allowed) => "Done: the device is connected. You can return to it now.",
        (true, Decision::Denied) => "Denied: the device gets no access.",
    };
    render(StatusCode::OK, &DevicePage { done: Some(done), ..DevicePage::new(&user) })
}

async fn lookup(state: &AppState, typed: &str) -> Result<Option<PendingDevice>, WebError> {
    let Some(code) = device::normalize(typed) else { return Ok(None) };
    let now = Utc::now();
    Ok(db::run(&state.pool, move |conn| db::authorizations::pending_device(conn, &code, now)).await?)
}
