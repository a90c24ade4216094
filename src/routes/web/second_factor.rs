//! `/account/second-factor`: add an authenticator app (current password, then a QR code drawn here
//! and a code from the app), see and regenerate recovery codes, remove the app. A user the policy
//! requires a second factor of is kept on these pages until they add one.

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use askama::Template;
use secrecy::SecretString;

use super::WebError;
use super::forms::{FieldErrors, checked_form, spend_password_budget};
use super::login::see_other;
use super::pages::{Layout, render};
use super::session::SignedInUser;
use crate::accounts::AccountError;
use crate::accounts::second_factor::{CodeError, OpenEnrolment};
use crate::auth::second_factor::recovery::FEW_LEFT;
use crate::domain::form::FormFields;
use crate::routes::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(show).service(begin).service(confirm).service(regenerate).service(remove);
}

#[derive(Template)]
#[template(path = "second_factor.html")]
struct SecondFactorPage {
    layout: Layout,
    csrf_token: String,
    /// Added, with when.
    app_added: Option<String>,
    recovery_codes_left: i64,
    few_left: bool,
    enrolment: Option<OpenEnrolment>,
    /// The policy keeps this user here until they add a factor.
    required: bool,
    /// Passkeys are on (a relying party is configured), and the user's passkeys.
    passkeys_on: bool,
    passkeys: Vec<PasskeyView>,
    errors: FieldErrors,
    message: Option<String>,
}

/// One passkey on the page.
struct PasskeyView {
    id: String,
    name: String,
    added: String,
    last_used: String,
}

#[derive(Template)]
#[template(path = "recovery_codes.html")]
struct RecoveryCodesPage {
    layout: Layout,
    codes: Vec<String>,
    /// Just enrolled (rather than a new set).
    enrolled: bool,
}

async fn page(
    user: &SignedInUser,
    state: &AppState,
    errors: FieldErrors,
    message: Option<String>,
    status: StatusCode,
) -> Result<HttpResponse, WebError> {
    let service = state.second_factor_accounts();
    let factors = service.status(user.user.id).await?;
    let enrolment = service.open_enrolment(&user.user, &factors);
    let stamp = |at: chrono::DateTime<chrono::Utc>| at.format("%Y-%m-%d %H:%M").to_string();
    let passkeys = service
        .passkeys(user.user.id)
        .await?
        .into_iter()
        .map(|row| PasskeyView {
            id: row.id.to_string(),
            name: row.name,
            added: stamp(row.created_at),
            last_used: row.last_used_at.map_or_else(|| "never".to_owned(), stamp),
        })
        .collect();
    let page = SecondFactorPage {
        layout: user.layout(),
        csrf_token: user.csrf_token.clone(),
        app_added: factors
            .app
            .as_ref()
            .and_then(|app| app.confirmed_at)
            .map(|at| at.format("%Y-%m-%d %H:%M").to_string()),
        recovery_codes_left: factors.recovery_codes_left,
        few_left: factors.app.is_some() && factors.recovery_codes_left <= FEW_LEFT,
        enrolment,
        required: !factors.any() && state.settings.second_factor.covers(user.is_admin()),
        passkeys_on: state.grants.second_factors.passkeys.is_some(),
        passkeys,
        errors,
        message,
    };
    render(status, &page)
}

#[get("/account/second-factor")]
async fn show(req: HttpRequest, user: SignedInUser, state: web::Data<AppState>) -> Result<HttpResponse, WebError> {
    let query = FormFields::parse_query(req.query_string()).map_err(|_| WebError::BadRequest)?;
    let message = match query.get("done") {
        Some("passkey-added") => Some("The passkey was added.".to_owned()),
        Some("passkey-renamed") => Some("The passkey was renamed.".to_owned()),
        Some("passkey-removed") => Some("The passkey was removed.".to_owned()),
        _ => None,
    };
    page(&user, &state, FieldErrors::default(), message, StatusCode::OK).await
}

fn secret_field(form: &FormFields, name: &str) -> SecretString {
    SecretString::from(form.raw(name).unwrap_or_default().to_owned())
}

async fn refused(user: &SignedInUser, state: &AppState, err: AccountError) -> Result<HttpResponse, WebError> {
    match err {
        AccountError::Server(err) => Err(err.into()),
        err => page(user, state, FieldErrors::of(&err), None, StatusCode::BAD_REQUEST).await,
    }
}

/// The current password opens an enrolment; the page then shows its QR code.
#[post("/account/second-factor")]
async fn begin(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    user: SignedInUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let form = checked_form(&req, payload, &session).await?;
    spend_password_budget(&req, &state).await?;
    let actor = user.actor(&state, &req);
    match state
        .second_factor_accounts()
        .begin_enrolment(&actor, &user.user, secret_field(&form, "current_password"))
        .await
    {
        Ok(()) => Ok(see_other("/account/second-factor")),
        Err(err) => refused(&user, &state, err).await,
    }
}

/// A code from the app confirms the enrolment; the recovery codes are shown, once.
#[post("/account/second-factor/confirm")]
async fn confirm(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    user: SignedInUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let form = checked_form(&req, payload, &session).await?;
    let actor = user.actor(&state, &req);
    let code = form.get("code").unwrap_or_default();
    match state.second_factor_accounts().confirm_enrolment(&actor, &user.user, code).await {
        Ok(codes) => render(StatusCode::OK, &RecoveryCodesPage { layout: user.layout(), codes, enrolled: true }),
        Err(CodeError::Account(err)) => refused(&user, &state, err).await,
        Err(err) => {
            let errors = FieldErrors { code: Some(err.to_string()), ..FieldErrors::default() };
            page(&user, &state, errors, None, StatusCode::BAD_REQUEST).await
        }
    }
}

/// A new set of recovery codes (the current password first); the old set dies.
#[post("/account/second-factor/recovery-codes")]
async fn regenerate(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    user: SignedInUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let form = checked_form(&req, payload, &session).await?;
    spend_password_budget(&req, &state).await?;
    let actor = user.actor(&state, &req);
    let password = secret_field(&form, "current_password");
    match state.second_factor_accounts().regenerate_recovery_codes(&actor, &user.user, password).await {
        Ok(codes) => render(StatusCode::OK, &RecoveryCodesPage { layout: user.layout(), codes, enrolled: false }),
        Err(err) => refused(&user, &state, err).await,
    }
}

/// Removes the app and the recovery codes: the current password and a current code.
#[post("/account/second-factor/remove")]
async fn remove(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    user: SignedInUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let form = checked_form(&req, payload, &session).await?;
    spend_password_budget(&req, &state).await?;
    let actor = user.actor(&state, &req);
    let (password, code) = (secret_field(&form, "current_password"), secret_field(&form, "code"));
    match state.second_factor_accounts().remove(&actor, &user.user, password, code).await {
        Ok(()) => Ok(see_other("/account?done=second-factor-removed")),
        Err(err) => refused(&user, &state, err).await,
    }
}
