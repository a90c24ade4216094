//! Passkey ceremonies for `static/passkeys.js` (JSON in, JSON out), and the forms that rename and
//! remove passkeys. Each POST carries the session's CSRF token (`X-CSRF-Token` for the JSON calls).
//! A ceremony's state is in PostgreSQL: begun on one instance, it finishes on any other.

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, post, web};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::WebError;
use super::forms::{FieldErrors, checked_form, spend_password_budget};
use super::login::see_other;
use super::session::SignedInUser;
use crate::accounts::AccountError;
use crate::auth::credentials::{self, Attempt, PasskeyAnswer, PasskeyFailure};
use crate::auth::session::{self, Device, csrf_matches, pending_sign_in};
use crate::db::passkeys::Ceremony;
use crate::domain::Channel;
use crate::routes::AppState;
use crate::routes::body::read_limited;

/// A WebAuthn answer is a few KiB at most.
const JSON_LIMIT: usize = 64 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(register_begin)
        .service(register_finish)
        .service(rename)
        .service(remove)
        .service(verify_begin)
        .service(verify_finish)
        .service(sign_in_begin)
        .service(sign_in_finish);
}

#[derive(Deserialize)]
struct Finish {
    ceremony: Uuid,
    credential: serde_json::Value,
    #[serde(default)]
    name: String,
    #[serde(default)]
    next: Option<String>,
}

/// A JSON answer for the script: `{"error": …}` with a status.
fn failure(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).insert_header(("Cache-Control", "no-store")).json(json!({ "error": message }))
}

fn answer(result: Result<HttpResponse, PasskeyFailure>) -> Result<HttpResponse, WebError> {
    match result {
        Ok(response) => Ok(response),
        Err(PasskeyFailure::Server(err)) => Err(err.into()),
        Err(PasskeyFailure::Off) => Ok(failure(StatusCode::NOT_FOUND, "Passkeys are not available here.")),
        Err(PasskeyFailure::NoCeremony) => {
            Ok(failure(StatusCode::BAD_REQUEST, "The passkey request expired: try again."))
        }
        Err(PasskeyFailure::Refused) => Ok(failure(StatusCode::UNAUTHORIZED, "That passkey did not work.")),
        Err(PasskeyFailure::Locked) => Ok(failure(StatusCode::UNAUTHORIZED, "That passkey did not work.")),
        Err(PasskeyFailure::WrongPassword) => {
            Ok(failure(StatusCode::BAD_REQUEST, "This is not your current password."))
        }
    }
}

/// The CSRF header, checked before anything else.
fn csrf_checked(req: &HttpRequest, session: &Session) -> Result<(), WebError> {
    let sent = req.headers().get("X-CSRF-Token").and_then(|value| value.to_str().ok());
    if csrf_matches(session, sent) { Ok(()) } else { Err(WebError::CsrfRejected) }
}

async fn finish_body(payload: web::Payload) -> Result<Finish, WebError> {
    let body = read_limited(payload, JSON_LIMIT).await.map_err(|_| WebError::BadRequest)?;
    serde_json::from_slice(&body).map_err(|_| WebError::BadRequest)
}

fn begun(ceremony: Uuid, options: serde_json::Value) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(json!({ "ceremony": ceremony, "options": options }))
}

#[derive(Deserialize)]
struct BeginRegistration {
    #[serde(default)]
    current_password: String,
}

#[post("/account/passkeys/begin")]
async fn register_begin(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    user: SignedInUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    csrf_checked(&req, &session)?;
    let body = read_limited(payload, JSON_LIMIT).await.map_err(|_| WebError::BadRequest)?;
    let begin: BeginRegistration = serde_json::from_slice(&body).map_err(|_| WebError::BadRequest)?;
    // A password is checked: the sign-in's per-address budget.
    spend_password_budget(&req, &state).await?;
    let (actor, password) = (user.actor(&state, &req), secrecy::SecretString::from(begin.current_password));
    let service = state.second_factor_accounts();
    answer(service.begin_passkey(&actor, &user.user, password).await.map(|(id, options)| begun(id, options)))
}

#[post("/account/passkeys/finish")]
async fn register_finish(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    user: SignedInUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    csrf_checked(&req, &session)?;
    let finish = finish_body(payload).await?;
    let actor = user.actor(&state, &req);
    let service = state.second_factor_accounts();
    let added = service.finish_passkey(&actor, &user.user, finish.ceremony, &finish.name, finish.credential).await;
    answer(added.map(|()| HttpResponse::Ok().json(json!({ "added": true }))))
}

fn parse_id(raw: &str) -> Result<Uuid, WebError> {
    raw.parse().map_err(|_| WebError::NotFound)
}

#[post("/account/passkeys/{id}/rename")]
async fn rename(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    id: web::Path<String>,
    user: SignedInUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let form = checked_form(&req, payload, &session).await?;
    let id = parse_id(&id)?;
    let name = form.get("name").unwrap_or_default();
    match state.second_factor_accounts().rename_passkey(user.user.id, id, name).await {
        Ok(true) => Ok(see_other("/account/second-factor?done=passkey-renamed")),
        Ok(false) => Err(WebError::NotFound),
        Err(AccountError::Server(err)) => Err(err.into()),
        Err(err) => Err(user.conflict(crate::accounts::sentence(&err))),
    }
}

#[post("/account/passkeys/{id}/remove")]
async fn remove(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    id: web::Path<String>,
    user: SignedInUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let form = checked_form(&req, payload, &session).await?;
    let id = parse_id(&id)?;
    let password = secrecy::SecretString::from(form.raw("current_password").unwrap_or_default().to_owned());
    let actor = user.actor(&state, &req);
    match state.second_factor_accounts().remove_passkey(&actor, &user.user, id, password).await {
        Ok(true) => Ok(see_other("/account/second-factor?done=passkey-removed")),
        Ok(false) => Err(WebError::NotFound),
        Err(AccountError::Server(err)) => Err(err.into()),
        Err(err) => {
            let errors = FieldErrors::of(&err);
            Err(user.conflict(errors.current_password.unwrap_or_else(|| crate::accounts::sentence(&err))))
        }
    }
}

/// Where a finished sign-in goes: `next` when it is a local path.
fn redirect_to(next: Option<&str>) -> HttpResponse {
    let next = next.and_then(super::login::safe_next).unwrap_or_else(|| "/".to_owned());
    HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(json!({ "redirect": next }))
}

/// The half-signed-in session's user, while its five minutes last.
fn pending_user(session: &Session) -> Option<Uuid> {
    pending_sign_in(session).filter(|pending| pending.until > chrono::Utc::now()).map(|pending| pending.user_id)
}

#[post("/login/verify/passkey/begin")]
async fn verify_begin(
    req: HttpRequest,
    session: Session,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    csrf_checked(&req, &session)?;
    let Some(user_id) = pending_user(&session) else { return answer(Err(PasskeyFailure::NoCeremony)) };
    let factors = &state.grants.second_factors;
    answer(credentials::begin_passkey_second_step(&state.pool, factors, user_id).await.map(|(id, o)| begun(id, o)))
}

#[post("/login/verify/passkey/finish")]
async fn verify_finish(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    csrf_checked(&req, &session)?;
    let finish = finish_body(payload).await?;
    let Some(user_id) = pending_user(&session) else { return answer(Err(PasskeyFailure::NoCeremony)) };
    let attempt = Attempt { channel: Channel::Web, client: state.client_ip(&req) };
    let (metrics, factors) = (&state.grants.metrics, &state.grants.second_factors);
    let answer_to = PasskeyAnswer {
        kind: Ceremony::SecondStep,
        ceremony: finish.ceremony,
        expected_user: Some(user_id),
        credential: finish.credential,
    };
    let finished = credentials::finish_passkey(&state.pool, metrics, factors, answer_to, &attempt).await;
    match finished {
        Ok(signed_in) => {
            session::complete_second_step(&session, &signed_in).map_err(WebError::session)?;
            Ok(redirect_to(finish.next.as_deref()))
        }
        Err(PasskeyFailure::Locked) => {
            session.purge();
            answer(Err(PasskeyFailure::Locked))
        }
        Err(err) => answer(Err(err)),
    }
}

#[post("/login/passkey/begin")]
async fn sign_in_begin(
    req: HttpRequest,
    session: Session,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    csrf_checked(&req, &session)?;
    let factors = &state.grants.second_factors;
    answer(credentials::begin_passkey_sign_in(&state.pool, factors).await.map(|(id, options)| begun(id, options)))
}

#[post("/login/passkey/finish")]
async fn sign_in_finish(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    csrf_checked(&req, &session)?;
    let finish = finish_body(payload).await?;
    let client = state.client_ip(&req);
    let attempt = Attempt { channel: Channel::Web, client };
    let (metrics, factors) = (&state.grants.metrics, &state.grants.second_factors);
    let answer_to = PasskeyAnswer {
        kind: Ceremony::SignIn,
        ceremony: finish.ceremony,
        expected_user: None,
        credential: finish.credential,
    };
    let finished = credentials::finish_passkey(&state.pool, metrics, factors, answer_to, &attempt).await;
    match finished {
        Ok(signed_in) => {
            let user_agent = req.headers().get(actix_web::http::header::USER_AGENT).and_then(|v| v.to_str().ok());
            session::sign_in(&session, &signed_in, &Device { client, user_agent }).map_err(WebError::session)?;
            Ok(redirect_to(finish.next.as_deref()))
        }
        Err(err) => answer(Err(err)),
    }
}
