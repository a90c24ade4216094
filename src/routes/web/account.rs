//! `/account`: your profile, your browser sessions and refresh tokens (each can be ended), and a new
//! password. Every change goes through `accounts`; every POST is CSRF-checked first.

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use askama::Template;
use chrono::Utc;
use secrecy::SecretString;
use uuid::Uuid;

use super::WebError;
use super::forms::{FieldErrors, checked_form, notice, spend_password_budget};
use super::login::see_other;
use super::pages::{Layout, render};
use super::session::SignedInUser;
use super::sign_ins::{FamilyRow, SessionRow};
use crate::accounts::profile::ProfileEdit;
use crate::accounts::{AccountError, PasswordChange};
use crate::auth::second_factor::recovery::FEW_LEFT;
use crate::auth::session;
use crate::db;
use crate::domain::form::FormFields;
use crate::routes::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(show)
        .service(edit_profile)
        .service(change_password)
        .service(end_session)
        .service(revoke_family)
        .service(disconnect_app);
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    layout: Layout,
    csrf_token: String,
    notice: Option<&'static str>,
    username: String,
    email: Option<String>,
    email_verified: bool,
    full_name: Option<String>,
    /// The profile form as typed, when it was refused.
    typed: Option<(String, String)>,
    /// Mail is on: a new email address can be confirmed (else only an admin sets it).
    mail_on: bool,
    roles: Vec<String>,
    sessions: Vec<SessionRow>,
    families: Vec<FamilyRow>,
    /// Apps the person allowed through the consent page.
    apps: Vec<AppRow>,
    /// Whether an authenticator app is on, and how many recovery codes are left.
    second_factor_on: bool,
    app_on: bool,
    passkeys: i64,
    recovery_codes_left: i64,
    few_recovery_codes: bool,
    errors: FieldErrors,
}

async fn account_page(
    user: &SignedInUser,
    state: &AppState,
    notice: Option<&'static str>,
    errors: FieldErrors,
    status: StatusCode,
) -> Result<HttpResponse, WebError> {
    account_page_typed(user, state, notice, errors, None, status).await
}

async fn account_page_typed(
    user: &SignedInUser,
    state: &AppState,
    notice: Option<&'static str>,
    errors: FieldErrors,
    typed: Option<(String, String)>,
    status: StatusCode,
) -> Result<HttpResponse, WebError> {
    let (user_id, now) = (user.user.id, Utc::now());
    let (sessions, families, factors, apps) = db::run(&state.pool, move |conn| {
        Ok((
            db::sessions::live_of_user(conn, user_id, now)?,
            db::refresh_tokens::live_families_of_user(conn, user_id, now)?,
            db::second_factors::of_user(conn, user_id)?,
            db::authorizations::connected_apps(conn, user_id, now)?,
        ))
    })
    .await?;
    let page = AccountPage {
        layout: user.layout(),
        csrf_token: user.csrf_token.clone(),
        notice,
        username: user.user.username.clone(),
        email: user.user.email.clone(),
        email_verified: user.user.email_verified,
        full_name: user.user.full_name.clone(),
        typed,
        mail_on: state.mail.is_some(),
        roles: user.roles.clone(),
        sessions: sessions.into_iter().map(|session| SessionRow::new(session, Some(user.session_id))).collect(),
        families: families.into_iter().map(FamilyRow::from).collect(),
        apps: apps
            .into_iter()
            .map(|app| AppRow {
                client_id: app.client_id,
                name: app.name,
                scopes: app.scope.to_string(),
                granted: app.granted_at.format("%Y-%m-%d %H:%M").to_string(),
            })
            .collect(),
        second_factor_on: factors.any(),
        app_on: factors.app.is_some(),
        passkeys: factors.passkeys,
        recovery_codes_left: factors.recovery_codes_left,
        few_recovery_codes: factors.app.is_some() && factors.recovery_codes_left <= FEW_LEFT,
        errors,
    };
    render(status, &page)
}

#[get("/account")]
async fn show(req: HttpRequest, user: SignedInUser, state: web::Data<AppState>) -> Result<HttpResponse, WebError> {
    let query = FormFields::parse_query(req.query_string()).map_err(|_| WebError::BadRequest)?;
    account_page(&user, &state, notice(query.get("done")), FieldErrors::default(), StatusCode::OK).await
}

/// Full name (at once) and email address (once the link mailed to the new address is used; with
/// the current password).
#[post("/account/profile")]
async fn edit_profile(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    user: SignedInUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let form = checked_form(&req, payload, &session).await?;
    let typed = |name: &str| form.get(name).unwrap_or_default().to_owned();
    let (full_name, email) = (typed("full_name"), typed("email"));
    let password = form.raw("current_password").unwrap_or_default();
    if !password.is_empty() {
        // A password check, like a sign-in: the same per-address budget.
        spend_password_budget(&req, &state).await?;
    }
    let edit = ProfileEdit {
        full_name: full_name.clone(),
        email: email.clone(),
        current_password: SecretString::from(password.to_owned()),
    };
    match state.accounts().edit_profile(&user.actor(&state, &req), &user.user, edit).await {
        Ok(edited) if edited.email_pending.is_some() => Ok(see_other("/account?done=email-pending")),
        Ok(edited) if edited.email_removed => Ok(see_other("/account?done=email-removed")),
        Ok(_) => Ok(see_other("/account?done=profile-saved")),
        Err(AccountError::Server(err)) => Err(err.into()),
        Err(err) => {
            let errors = FieldErrors::of(&err);
            account_page_typed(&user, &state, None, errors, Some((full_name, email)), StatusCode::BAD_REQUEST).await
        }
    }
}

/// Current password and the new one twice: every other session and token of yours ends; this
/// session is re-issued under a new key as begun at the change, so it stays.
#[post("/account/password")]
async fn change_password(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    user: SignedInUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let form = checked_form(&req, payload, &session).await?;
    // A password check, like a sign-in: the same per-address budget.
    spend_password_budget(&req, &state).await?;
    let field = |name: &str| SecretString::from(form.raw(name).unwrap_or_default().to_owned());
    let (current, new, again) = (field("current_password"), field("new_password"), field("new_password_again"));
    let actor = user.actor(&state, &req);
    let passwords = PasswordChange { current, new, again };
    match state.accounts().change_own_password(&actor, &user.user, user.session_id, passwords).await {
        Ok(Some(cutoff)) => {
            session::renew_sign_in(&session, cutoff).map_err(WebError::session)?;
            Ok(see_other("/account?done=password-changed"))
        }
        Ok(None) => {
            // This session was ended while the passwords were checked: it changed nothing.
            session.purge();
            Ok(see_other("/login"))
        }
        Err(AccountError::Server(err)) => Err(err.into()),
        Err(err) => account_page(&user, &state, None, FieldErrors::of(&err), StatusCode::BAD_REQUEST).await,
    }
}

fn parse_id(raw: &str) -> Result<Uuid, WebError> {
    raw.parse().map_err(|_| WebError::NotFound)
}

/// Ends one of your sessions: its row goes, so it ends at once on every instance. Ending this one
/// signs you out.
#[post("/account/sessions/{id}/end")]
async fn end_session(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    id: web::Path<String>,
    user: SignedInUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    checked_form(&req, payload, &session).await?;
    let session_id = parse_id(&id)?;
    let ended = state
        .accounts()
        .end_session(&user.actor(&state, &req), user.user.id, session_id)
        .await
        .map_err(server_error)?;
    if !ended {
        return Err(WebError::NotFound);
    }
    if session_id == user.session_id {
        session.purge();
        return Ok(see_other("/login"));
    }
    Ok(see_other("/account?done=session-ended"))
}

/// Revokes one of your refresh-token families (under its lock: a refresh in flight cannot leave a
/// working child).
#[post("/account/families/{id}/revoke")]
async fn revoke_family(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    id: web::Path<String>,
    user: SignedInUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    checked_form(&req, payload, &session).await?;
    let family_id = parse_id(&id)?;
    let revoked = state
        .accounts()
        .revoke_family(&user.actor(&state, &req), user.user.id, family_id)
        .await
        .map_err(server_error)?;
    if !revoked {
        return Err(WebError::NotFound);
    }
    Ok(see_other("/account?done=family-revoked"))
}

/// A connected app as "Connected apps" lists it.
struct AppRow {
    client_id: String,
    name: String,
    scopes: String,
    granted: String,
}

/// "Disconnect": forgets the consent and ends the app's refresh tokens for you (its access tokens
/// run out within their lifetime); it asks again at your next sign-in.
#[post("/account/apps/{client_id}/disconnect")]
async fn disconnect_app(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    client_id: web::Path<String>,
    user: SignedInUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    checked_form(&req, payload, &session).await?;
    let (user_id, client_id, now) = (user.user.id, client_id.into_inner(), Utc::now());
    let event =
        crate::db::auth_events::NewEvent::new(crate::domain::EventKind::ConsentRevoked, crate::domain::Channel::Web)
            .user(user_id)
            .client(state.client_ip(&req).map(|ip| ip.to_string()))
            .detail(format!("client {client_id}"));
    let ended =
        db::run(&state.pool, move |conn| db::authorizations::disconnect(conn, user_id, &client_id, now, &event))
            .await?;
    if !ended {
        return Err(WebError::NotFound);
    }
    Ok(see_other("/account?done=app-disconnected"))
}

/// Ending a session or family fails only on the server's side.
fn server_error(err: AccountError) -> WebError {
    match err {
        AccountError::Server(err) => err.into(),
        _ => WebError::NotFound,
    }
}
