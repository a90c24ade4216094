//! `/account/tokens`: your personal access tokens. Make one (shown once, on the answer to the POST
//! itself, which is never cached), see them, revoke them. Every change goes through `accounts`, as
//! the API and the command line do; every POST is CSRF-checked first.

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use askama::Template;
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::WebError;
use super::forms::checked_form;
use super::login::see_other;
use super::pages::{Layout, render};
use super::session::SignedInUser;
use super::sign_ins::TokenRow;
use crate::accounts::personal_tokens::{TokenDraft, TokenError};
use crate::auth::{pat, session};
use crate::db;
use crate::domain::form::FormFields;
use crate::routes::AppState;

/// Checkboxes of scopes are named `scope.<name>`.
const SCOPE_FIELD: &str = "scope.";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(show).service(create).service(revoke);
}

/// What the create form shows again after a refusal.
struct CreateForm {
    name: String,
    scopes: Vec<String>,
    expires_in_days: u16,
}

impl Default for CreateForm {
    fn default() -> Self {
        Self { name: String::new(), scopes: Vec::new(), expires_in_days: pat::DEFAULT_EXPIRY_DAYS }
    }
}

#[derive(Template)]
#[template(path = "account_tokens.html")]
struct TokensPage {
    layout: Layout,
    csrf_token: String,
    notice: Option<&'static str>,
    /// The token just made: shown this once.
    new_token: Option<SecretString>,
    tokens: Vec<TokenRow>,
    /// The scopes your roles allow: the checkboxes.
    allowed_scopes: Vec<String>,
    expiry_choices: [u16; 4],
    form: CreateForm,
    error: Option<String>,
}

impl TokensPage {
    fn scope_checked(&self, scope: &str) -> bool {
        self.form.scopes.iter().any(|chosen| chosen == scope)
    }

    fn new_token_text(&self) -> &str {
        self.new_token.as_ref().map_or("", |token| token.expose_secret())
    }
}

async fn tokens_page(
    user: &SignedInUser,
    state: &AppState,
    notice: Option<&'static str>,
    new_token: Option<SecretString>,
    form: CreateForm,
    error: Option<String>,
    status: StatusCode,
) -> Result<HttpResponse, WebError> {
    let user_id = user.user.id;
    let (tokens, allowed) = db::run(&state.pool, move |conn| {
        Ok((db::personal_tokens::of_user(conn, user_id)?, db::users::allowed_scopes(conn, user_id)?))
    })
    .await?;
    let now = Utc::now();
    let page = TokensPage {
        layout: user.layout(),
        csrf_token: user.csrf_token.clone(),
        notice,
        new_token,
        tokens: tokens.into_iter().map(|token| TokenRow::new(token, user.user.tokens_valid_after, now)).collect(),
        allowed_scopes: allowed.to_vec(),
        expiry_choices: pat::OFFERED_EXPIRY_DAYS,
        form,
        error,
    };
    render(status, &page)
}

fn notice(done: Option<&str>) -> Option<&'static str> {
    match done? {
        "revoked" => Some("The token was revoked; it no longer works."),
        _ => None,
    }
}

#[get("/account/tokens")]
async fn show(req: HttpRequest, user: SignedInUser, state: web::Data<AppState>) -> Result<HttpResponse, WebError> {
    let query = FormFields::parse_query(req.query_string()).map_err(|_| WebError::BadRequest)?;
    tokens_page(&user, &state, notice(query.get("done")), None, CreateForm::default(), None, StatusCode::OK).await
}

/// Makes a token from the form: name, ticked scopes, lifetime in days. The answer shows it once.
#[post("/account/tokens")]
async fn create(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    user: SignedInUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let form = checked_form(&req, payload, &session).await?;
    let scopes = form.ticked(SCOPE_FIELD);
    let days = form.get("expires_in_days").unwrap_or_default();
    let shown = CreateForm {
        name: form.get("name").unwrap_or_default().to_owned(),
        scopes: scopes.clone(),
        expires_in_days: days.parse().unwrap_or(pat::DEFAULT_EXPIRY_DAYS),
    };
    // A value the select does not offer (a hand-made request) is the same refusal as the API's.
    let expires_in_days = Some(days.parse::<i64>().unwrap_or(0));
    let draft = TokenDraft { name: shown.name.clone(), scopes, expires_in_days };
    // The session's sign-in is the credential: a sign-out everywhere racing this form ends it first.
    let signed_in_at =
        session::sign_in_of(&session).map(|sign_in| sign_in.signed_in_at).ok_or(WebError::CsrfRejected)?;
    let actor = user.actor(&state, &req);
    match state.accounts().create_personal_token(&actor, user.user.id, draft, Some(signed_in_at)).await {
        Ok(issued) => {
            tokens_page(&user, &state, None, Some(issued.secret), CreateForm::default(), None, StatusCode::OK).await
        }
        Err(TokenError::Server(err)) => Err(err.into()),
        Err(TokenError::CredentialEnded | TokenError::UnknownUser) => {
            session.purge();
            Ok(see_other("/login"))
        }
        Err(err) => {
            let message = crate::accounts::sentence(&err);
            tokens_page(&user, &state, None, None, shown, Some(message), StatusCode::BAD_REQUEST).await
        }
    }
}

/// Revokes one of your tokens: it stops working on every instance from the next request.
#[post("/account/tokens/{id}/revoke")]
async fn revoke(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    id: web::Path<String>,
    user: SignedInUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    checked_form(&req, payload, &session).await?;
    let id: Uuid = id.parse().map_err(|_| WebError::NotFound)?;
    let revoked = state.accounts().revoke_own_personal_token(&user.actor(&state, &req), user.user.id, id).await?;
    if !revoked {
        return Err(WebError::NotFound);
    }
    Ok(see_other("/account/tokens?done=revoked"))
}
