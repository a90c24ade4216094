//! `/admin/users…`: find, create and change users (role `admin`). Every change goes through
//! `accounts`, as the admin API and the command line do; every POST is CSRF-checked first.

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use askama::Template;
use chrono::Utc;
use secrecy::SecretString;

use super::WebError;
use super::forms::{FieldErrors, checked_form, notice, user_path};
use super::login::see_other;
use super::pages::{Layout, render};
use super::session::SignedInUser;
use super::sign_ins::{FamilyRow, SessionRow, TokenRow, datetime};
use crate::accounts::{AccountDraft, AccountError};
use crate::auth::guard::Requirement;
use crate::db::passkeys::PasskeyRow;
use crate::db::second_factors::Factors;
use crate::db::{
    self,
    personal_tokens::PersonalToken,
    refresh_tokens::Family,
    sessions::SessionInfo,
    users::{AccountChange, User},
};
use crate::domain::form::FormFields;
use crate::routes::AppState;

const PER_PAGE: i64 = 50;
const MAX_PAGE: i64 = 100_000;
const MAX_QUERY_CHARS: usize = 100;
/// Checkboxes of roles are named `role.<name>`.
const ROLE_FIELD: &str = "role.";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list)
        .service(create)
        .service(show)
        .service(set_roles)
        .service(set_active)
        .service(set_password)
        .service(sign_out_all)
        .service(reset_second_factors)
        .service(send_reset_link)
        .service(revoke_token);
}

/// One user in the list.
struct UserRow {
    username: String,
    path: String,
    email: String,
    full_name: String,
    roles: String,
    is_active: bool,
    last_login: String,
}

/// What the create form shows again after a refusal (never the password).
#[derive(Default)]
struct CreateForm {
    username: String,
    email: String,
    full_name: String,
    roles: Vec<String>,
}

#[derive(Template)]
#[template(path = "admin/users.html")]
struct UsersPage {
    layout: Layout,
    csrf_token: String,
    q: String,
    users: Vec<UserRow>,
    previous_page: Option<String>,
    next_page: Option<String>,
    page: i64,
    form: CreateForm,
    errors: FieldErrors,
    all_roles: Vec<String>,
    /// Mail is on: the password may be left empty, and the user is invited by mail to choose one.
    mail_on: bool,
}

impl UsersPage {
    fn role_checked(&self, role: &str) -> bool {
        self.form.roles.iter().any(|chosen| chosen == role)
    }
}

fn list_link(q: &str, page: i64) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if !q.is_empty() {
        query.append_pair("q", q);
    }
    query.append_pair("page", &page.to_string());
    format!("/admin/users?{}", query.finish())
}

/// The role checkboxes that were ticked.
async fn users_page(
    user: &SignedInUser,
    state: &AppState,
    q: String,
    page: i64,
    form: CreateForm,
    errors: FieldErrors,
    status: StatusCode,
) -> Result<HttpResponse, WebError> {
    let offset = (page - 1) * PER_PAGE;
    let search = q.clone();
    let (mut found, all_roles) = db::run(&state.pool, move |conn| {
        Ok((db::users::search(conn, Some(&search), offset, Some(PER_PAGE + 1))?, db::users::all_role_names(conn)?))
    })
    .await?;
    let has_more = found.len() as i64 > PER_PAGE;
    found.truncate(PER_PAGE as usize);
    let users = found
        .into_iter()
        .map(|(user, roles)| UserRow {
            path: user_path(&user.username),
            username: user.username,
            email: user.email.unwrap_or_default(),
            full_name: user.full_name.unwrap_or_default(),
            roles: roles.join(", "),
            is_active: user.is_active,
            last_login: user.last_login_at.map(datetime).unwrap_or_default(),
        })
        .collect();
    let page_view = UsersPage {
        layout: user.layout(),
        csrf_token: user.csrf_token.clone(),
        previous_page: (page > 1).then(|| list_link(&q, page - 1)),
        next_page: has_more.then(|| list_link(&q, page + 1)),
        q,
        users,
        page,
        form,
        errors,
        all_roles,
        mail_on: state.mail.is_some(),
    };
    render(status, &page_view)
}

#[get("/admin/users")]
async fn list(req: HttpRequest, user: SignedInUser, state: web::Data<AppState>) -> Result<HttpResponse, WebError> {
    user.authorize(Requirement::ADMIN_PAGES)?;
    let query = FormFields::parse_query(req.query_string()).map_err(|_| WebError::BadRequest)?;
    let q = query.get("q").unwrap_or_default().trim().to_owned();
    // An empty `page=` (a form submitted with the field blank) is the first page.
    let page = match query.get("page").filter(|page| !page.is_empty()) {
        Some(page) => {
            page.parse::<i64>().ok().filter(|page| (1..=MAX_PAGE).contains(page)).ok_or(WebError::BadRequest)?
        }
        None => 1,
    };
    if q.chars().count() > MAX_QUERY_CHARS {
        return Err(WebError::BadRequest);
    }
    users_page(&user, &state, q, page, CreateForm::default(), FieldErrors::default(), StatusCode::OK).await
}

#[post("/admin/users")]
async fn create(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    user: SignedInUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    user.authorize(Requirement::ADMIN_PAGES)?;
    let form = checked_form(&req, payload, &session).await?;
    let shown = CreateForm {
        username: form.get("username").unwrap_or_default().to_owned(),
        email: form.get("email").unwrap_or_default().to_owned(),
        full_name: form.get("full_name").unwrap_or_default().to_owned(),
        roles: form.ticked(ROLE_FIELD),
    };
    let draft = AccountDraft {
        username: shown.username.clone(),
        // Both password fields left empty: the user is invited by mail to choose one.
        password: Some(form.raw("password").unwrap_or_default())
            .filter(|password| !password.is_empty() || !form.raw("password_again").unwrap_or_default().is_empty())
            .map(|password| SecretString::from(password.to_owned())),
        password_again: Some(SecretString::from(form.raw("password_again").unwrap_or_default().to_owned())),
        email: form.get("email").map(str::to_owned),
        full_name: form.get("full_name").map(str::to_owned),
        roles: shown.roles.clone(),
    };
    match state.accounts().create(&user.actor(&state, &req), draft).await {
        Ok(created) => Ok(see_other(&format!("{}?done=created", user_path(&created.user.username)))),
        Err(AccountError::Server(err)) => Err(err.into()),
        Err(AccountError::NoLongerAdmin) => Err(user.forbidden()),
        Err(err) => {
            let status = if matches!(err, AccountError::UsernameTaken(_)) {
                StatusCode::CONFLICT
            } else {
                StatusCode::BAD_REQUEST
            };
            users_page(&user, &state, String::new(), 1, shown, FieldErrors::of(&err), status).await
        }
    }
}

#[derive(Template)]
#[template(path = "admin/user.html")]
struct UserPage {
    layout: Layout,
    csrf_token: String,
    notice: Option<&'static str>,
    path: String,
    user: User,
    roles: Vec<String>,
    all_roles: Vec<String>,
    sessions: Vec<SessionRow>,
    families: Vec<FamilyRow>,
    tokens: Vec<TokenRow>,
    /// When the user's authenticator app was added (`None`: no second factor).
    second_factor_added: Option<String>,
    recovery_codes_left: i64,
    /// The user's passkeys: name and when added.
    passkeys: Vec<(String, String)>,
    /// Mail is on: offer "Send a password-reset link".
    mail: bool,
    errors: FieldErrors,
}

impl UserPage {
    fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|held| held == role)
    }
}

async fn user_page(
    viewer: &SignedInUser,
    state: &AppState,
    username: &str,
    notice: Option<&'static str>,
    errors: FieldErrors,
    status: StatusCode,
) -> Result<HttpResponse, WebError> {
    let name = username.to_owned();
    let now = Utc::now();
    type Found = Option<(
        User,
        Vec<String>,
        Vec<String>,
        Vec<SessionInfo>,
        Vec<Family>,
        Vec<PersonalToken>,
        Factors,
        Vec<PasskeyRow>,
    )>;
    let found: Found = db::run(&state.pool, move |conn| {
        let Some(user) = db::users::find_by_username(conn, &name)? else { return Ok(None) };
        Ok(Some((
            user.clone(),
            db::users::roles_of(conn, user.id)?,
            db::users::all_role_names(conn)?,
            db::sessions::live_of_user(conn, user.id, now)?,
            db::refresh_tokens::live_families_of_user(conn, user.id, now)?,
            db::personal_tokens::of_user(conn, user.id)?,
            db::second_factors::of_user(conn, user.id)?,
            db::passkeys::of_user(conn, user.id)?,
        )))
    })
    .await?;
    let Some((user, roles, all_roles, sessions, families, tokens, factors, passkeys)) = found else {
        return Err(WebError::NotFound);
    };
    let tokens = tokens.into_iter().map(|token| TokenRow::new(token, user.tokens_valid_after, now)).collect();
    let page = UserPage {
        layout: viewer.layout(),
        csrf_token: viewer.csrf_token.clone(),
        notice,
        path: user_path(&user.username),
        user,
        roles,
        all_roles,
        sessions: sessions.into_iter().map(|session| SessionRow::new(session, None)).collect(),
        families: families.into_iter().map(FamilyRow::from).collect(),
        tokens,
        second_factor_added: factors
            .app
            .and_then(|app| app.confirmed_at)
            .map(|at| at.format("%Y-%m-%d %H:%M").to_string()),
        recovery_codes_left: factors.recovery_codes_left,
        passkeys: passkeys
            .into_iter()
            .map(|passkey| (passkey.name, passkey.created_at.format("%Y-%m-%d %H:%M").to_string()))
            .collect(),
        mail: state.mail.is_some(),
        errors,
    };
    render(status, &page)
}

#[get("/admin/users/{username}")]
async fn show(
    req: HttpRequest,
    username: web::Path<String>,
    user: SignedInUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    user.authorize(Requirement::ADMIN_PAGES)?;
    let query = FormFields::parse_query(req.query_string()).map_err(|_| WebError::BadRequest)?;
    user_page(&user, &state, &username, notice(query.get("done")), FieldErrors::default(), StatusCode::OK).await
}

/// What a change's refusal looks like on the user page: the last admin is the 409 page, an input
/// problem the page again with the message next to its field.
async fn refused(
    viewer: &SignedInUser,
    state: &AppState,
    username: &str,
    err: AccountError,
) -> Result<HttpResponse, WebError> {
    match err {
        AccountError::Server(err) => Err(err.into()),
        AccountError::UnknownUser(_) => Err(WebError::NotFound),
        AccountError::LastAdmin => Err(viewer.conflict(crate::accounts::sentence(&err))),
        AccountError::NoLongerAdmin => Err(viewer.forbidden()),
        other => user_page(viewer, state, username, None, FieldErrors::of(&other), StatusCode::BAD_REQUEST).await,
    }
}

/// Where a change sends the browser when it is done.
fn done(username: &str, what: &str) -> HttpResponse {
    see_other(&format!("{}?done={what}", user_path(username)))
}

#[post("/admin/users/{username}/roles")]
async fn set_roles(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    username: web::Path<String>,
    user: SignedInUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    user.authorize(Requirement::ADMIN_PAGES)?;
    let form = checked_form(&req, payload, &session).await?;
    let change = AccountChange { roles: Some(form.ticked(ROLE_FIELD)), active: None };
    match state.accounts().change(&user.actor(&state, &req), &username, change).await {
        Ok(changed) => Ok(done(&changed.username, "roles")),
        Err(err) => refused(&user, &state, &username, err).await,
    }
}

#[post("/admin/users/{username}/active")]
async fn set_active(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    username: web::Path<String>,
    user: SignedInUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    user.authorize(Requirement::ADMIN_PAGES)?;
    let form = checked_form(&req, payload, &session).await?;
    let active = match form.get("active") {
        Some("true") => true,
        Some("false") => false,
        _ => return Err(WebError::BadRequest),
    };
    let change = AccountChange { roles: None, active: Some(active) };
    match state.accounts().change(&user.actor(&state, &req), &username, change).await {
        Ok(changed) => Ok(done(&changed.username, if active { "activated" } else { "deactivated" })),
        Err(err) => refused(&user, &state, &username, err).await,
    }
}

#[post("/admin/users/{username}/password")]
async fn set_password(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    username: web::Path<String>,
    user: SignedInUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    user.authorize(Requirement::ADMIN_PAGES)?;
    let form = checked_form(&req, payload, &session).await?;
    let password = SecretString::from(form.raw("password").unwrap_or_default().to_owned());
    let again = SecretString::from(form.raw("password_again").unwrap_or_default().to_owned());
    match state.accounts().set_password(&user.actor(&state, &req), &username, password, Some(again)).await {
        Ok(set) => Ok(done(&set.user.username, "password")),
        Err(err) => refused(&user, &state, &username, err).await,
    }
}

#[post("/admin/users/{username}/sign-out-all")]
async fn sign_out_all(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    username: web::Path<String>,
    user: SignedInUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    user.authorize(Requirement::ADMIN_PAGES)?;
    checked_form(&req, payload, &session).await?;
    match state.accounts().sign_out_everywhere(&user.actor(&state, &req), &username).await {
        Ok(signed_out) => Ok(done(&signed_out.username, "signed-out")),
        Err(err) => refused(&user, &state, &username, err).await,
    }
}

/// Mails the user a password-reset link (mail on only).
#[post("/admin/users/{username}/password-reset")]
async fn send_reset_link(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    username: web::Path<String>,
    user: SignedInUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    user.authorize(Requirement::ADMIN_PAGES)?;
    checked_form(&req, payload, &session).await?;
    if state.mail.is_none() {
        return Err(WebError::NotFound);
    }
    match state.accounts().send_reset_link(&user.actor(&state, &req), &username).await {
        Ok(true) => Ok(done(&username, "reset-link-sent")),
        Ok(false) => Ok(done(&username, "reset-link-not-sent")),
        Err(err) => refused(&user, &state, &username, err).await,
    }
}

/// Removes every second factor of the user: a cut-off (their sessions and tokens end).
#[post("/admin/users/{username}/second-factors/remove")]
async fn reset_second_factors(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    username: web::Path<String>,
    user: SignedInUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    user.authorize(Requirement::ADMIN_PAGES)?;
    checked_form(&req, payload, &session).await?;
    match state.accounts().reset_second_factors(&user.actor(&state, &req), &username).await {
        Ok(_) => Ok(done(&username, "second-factors-reset")),
        Err(err) => refused(&user, &state, &username, err).await,
    }
}

/// Revokes one of the user's personal access tokens, audited with the acting admin.
#[post("/admin/users/{username}/tokens/{id}/revoke")]
async fn revoke_token(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    path: web::Path<(String, String)>,
    user: SignedInUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    user.authorize(Requirement::ADMIN_PAGES)?;
    checked_form(&req, payload, &session).await?;
    let (username, id) = path.into_inner();
    let id: uuid::Uuid = id.parse().map_err(|_| WebError::NotFound)?;
    let name = username.clone();
    let owner = db::run(&state.pool, move |conn| db::users::find_by_username(conn, &name)).await?;
    let Some(owner) = owner else { return Err(WebError::NotFound) };
    match state.accounts().revoke_personal_token_as_admin(&user.actor(&state, &req), owner.id, id).await {
        Ok(true) => Ok(done(&owner.username, "token-revoked")),
        Ok(false) => Err(WebError::NotFound),
        Err(err) => refused(&user, &state, &username, err).await,
    }
}
