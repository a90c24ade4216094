//! `/admin/clients…`: register, list, rotate and remove OAuth clients (role `admin`). Every change
//! goes through `accounts::clients`, as the admin API and the command line do; every POST is
//! CSRF-checked first. A new secret is shown on the page that answers the POST, once: it is never
//! put in a URL or the session.

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use askama::Template;
use secrecy::ExposeSecret;

use super::WebError;
use super::forms::checked_form;
use super::login::see_other;
use super::pages::{Layout, render};
use super::session::SignedInUser;
use super::sign_ins::datetime;
use crate::accounts::clients::ClientError;
use crate::auth::guard::Requirement;
use crate::db::{self, clients::Client};
use crate::domain::form::FormFields;
use crate::domain::{ClientDraft, ClientField, ClientKind, GrantType, IdTokenAlg};
use crate::routes::AppState;

/// Checkboxes of scopes are named `scope.<name>`, of grants `grant.<name>`.
const SCOPE_FIELD: &str = "scope.";
const GRANT_FIELD: &str = "grant.";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list).service(create).service(rotate_secret).service(remove);
}

struct ClientRow {
    client_id: String,
    name: String,
    kind: &'static str,
    confidential: bool,
    first_party: bool,
    grants: String,
    scopes: String,
    redirect_uris: String,
    created: String,
}

impl From<Client> for ClientRow {
    fn from(client: Client) -> Self {
        Self {
            confidential: client.kind == ClientKind::Confidential,
            kind: client.kind.as_str(),
            first_party: client.first_party,
            grants: client.grants.iter().map(|grant| grant.as_str()).collect::<Vec<_>>().join(" "),
            scopes: client.scope.to_string(),
            redirect_uris: client.redirect_uris.join(" "),
            created: datetime(client.created_at),
            client_id: client.client_id,
            name: client.name,
        }
    }
}

/// What the create form shows again after a refusal.
#[derive(Default)]
struct CreateForm {
    name: String,
    public: bool,
    first_party: bool,
    scopes: Vec<String>,
    redirect_uris: String,
    post_logout_redirect_uris: String,
    grants: Vec<String>,
    id_token_alg: String,
}

/// A secret to show once, with the client it belongs to.
struct ShownSecret {
    client_id: String,
    secret: String,
    /// `true` after a rotation (the previous secret works one more hour).
    rotated: bool,
}

#[derive(Template)]
#[template(path = "admin/clients.html")]
struct ClientsPage {
    layout: Layout,
    csrf_token: String,
    notice: Option<&'static str>,
    clients: Vec<ClientRow>,
    shown: Option<ShownSecret>,
    /// A registered public client's id (no secret to show).
    created_public: Option<String>,
    form: CreateForm,
    error: Option<String>,
    error_field: Option<&'static str>,
    all_scopes: Vec<String>,
    all_grants: Vec<&'static str>,
    all_algs: Vec<&'static str>,
}

impl ClientsPage {
    fn scope_checked(&self, scope: &str) -> bool {
        self.form.scopes.iter().any(|chosen| chosen == scope)
    }

    fn grant_checked(&self, grant: &str) -> bool {
        self.form.grants.iter().any(|chosen| chosen == grant)
    }

    fn is_error_field(&self, field: &str) -> bool {
        self.error_field == Some(field)
    }
}

/// The notices after a redirect: a fixed set, so a link cannot make the page say anything else.
fn notice(done: Option<&str>) -> Option<&'static str> {
    match done? {
        "removed" => Some("The client was removed; its tokens no longer work."),
        _ => None,
    }
}

fn field_name(field: ClientField) -> &'static str {
    match field {
        ClientField::Name => "name",
        ClientField::Kind => "kind",
        ClientField::Scopes => "scopes",
        ClientField::RedirectUris => "redirect_uris",
        ClientField::PostLogoutRedirectUris => "post_logout_redirect_uris",
        ClientField::Grants => "grants",
        ClientField::IdTokenAlg => "id_token_alg",
    }
}

struct Shown {
    notice: Option<&'static str>,
    secret: Option<ShownSecret>,
    created_public: Option<String>,
    form: CreateForm,
    error: Option<(String, &'static str)>,
}

impl Shown {
    fn plain(notice: Option<&'static str>) -> Self {
        Self { notice, secret: None, created_public: None, form: CreateForm::default(), error: None }
    }
}

async fn clients_page(
    user: &SignedInUser,
    state: &AppState,
    shown: Shown,
    status: StatusCode,
) -> Result<HttpResponse, WebError> {
    let clients = state.clients().list().await.map_err(web_error)?;
    let all_scopes = db::run(&state.pool, db::roles::all_scopes).await?;
    let (error, error_field) = match shown.error {
        Some((message, field)) => (Some(message), Some(field)),
        None => (None, None),
    };
    let page = ClientsPage {
        layout: user.layout(),
        csrf_token: user.csrf_token.clone(),
        notice: shown.notice,
        clients: clients.into_iter().map(ClientRow::from).collect(),
        shown: shown.secret,
        created_public: shown.created_public,
        form: shown.form,
        error,
        error_field,
        all_scopes: all_scopes.into_iter().map(|scope| scope.name).collect(),
        all_grants: GrantType::ALL.iter().map(|grant| grant.as_str()).collect(),
        all_algs: IdTokenAlg::ALL.iter().map(|alg| alg.as_str()).collect(),
    };
    render(status, &page)
}

fn web_error(err: ClientError) -> WebError {
    match err {
        ClientError::Server(err) => err.into(),
        ClientError::UnknownClient(_) => WebError::NotFound,
        _ => WebError::BadRequest,
    }
}

#[get("/admin/clients")]
async fn list(req: HttpRequest, user: SignedInUser, state: web::Data<AppState>) -> Result<HttpResponse, WebError> {
    user.authorize(Requirement::ADMIN_PAGES)?;
    let query = FormFields::parse_query(req.query_string()).map_err(|_| WebError::BadRequest)?;
    clients_page(&user, &state, Shown::plain(notice(query.get("done"))), StatusCode::OK).await
}

/// One URI a line (or separated by spaces): a textarea is how a person lists several.
fn uris(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

#[post("/admin/clients")]
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
        name: form.get("name").unwrap_or_default().to_owned(),
        public: form.get("kind") == Some("public"),
        first_party: form.get("first_party").is_some(),
        scopes: form.ticked(SCOPE_FIELD),
        redirect_uris: form.get("redirect_uris").unwrap_or_default().to_owned(),
        post_logout_redirect_uris: form.get("post_logout_redirect_uris").unwrap_or_default().to_owned(),
        grants: form.ticked(GRANT_FIELD),
        id_token_alg: form.get("id_token_alg").unwrap_or_default().to_owned(),
    };
    let draft = ClientDraft {
        name: shown.name.clone(),
        public: shown.public,
        first_party: shown.first_party,
        scopes: shown.scopes.clone(),
        redirect_uris: uris(&shown.redirect_uris),
        post_logout_redirect_uris: uris(&shown.post_logout_redirect_uris),
        grants: shown.grants.clone(),
        id_token_alg: Some(shown.id_token_alg.clone()),
    };
    match state.clients().register(&user.actor(&state, &req), draft).await {
        Ok(registered) => {
            // Its ID-token key, published now: a relying party set up next reads a JWKS that has it.
            state.grants.ensure_id_token_key(registered.client.id_token_alg, chrono::Utc::now()).await?;
            let client_id = registered.client.client_id;
            let (secret, created_public) = match registered.secret {
                Some(secret) => {
                    (Some(ShownSecret { client_id, secret: secret.expose_secret().to_owned(), rotated: false }), None)
                }
                None => (None, Some(client_id)),
            };
            let shown = Shown { notice: None, secret, created_public, form: CreateForm::default(), error: None };
            clients_page(&user, &state, shown, StatusCode::CREATED).await
        }
        Err(ClientError::Invalid(invalid)) => {
            let error = Some((invalid.message, field_name(invalid.field)));
            let shown = Shown { notice: None, secret: None, created_public: None, form: shown, error };
            clients_page(&user, &state, shown, StatusCode::BAD_REQUEST).await
        }
        Err(ClientError::NoLongerAdmin) => Err(user.forbidden()),
        Err(err) => Err(web_error(err)),
    }
}

#[post("/admin/clients/{client_id}/rotate-secret")]
async fn rotate_secret(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    user: SignedInUser,
    client_id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    user.authorize(Requirement::ADMIN_PAGES)?;
    checked_form(&req, payload, &session).await?;
    match state.clients().rotate_secret(&user.actor(&state, &req), &client_id).await {
        Ok(rotated) => {
            let secret = ShownSecret {
                client_id: rotated.client.client_id,
                secret: rotated.secret.expose_secret().to_owned(),
                rotated: true,
            };
            let shown = Shown { secret: Some(secret), ..Shown::plain(None) };
            clients_page(&user, &state, shown, StatusCode::OK).await
        }
        Err(ClientError::NoLongerAdmin) => Err(user.forbidden()),
        Err(err) => Err(web_error(err)),
    }
}

#[post("/admin/clients/{client_id}/remove")]
async fn remove(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    user: SignedInUser,
    client_id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    user.authorize(Requirement::ADMIN_PAGES)?;
    checked_form(&req, payload, &session).await?;
    match state.clients().remove(&user.actor(&state, &req), &client_id).await {
        Ok(()) => Ok(see_other("/admin/clients?done=removed")),
        Err(ClientError::NoLongerAdmin) => Err(user.forbidden()),
        Err(err) => Err(web_error(err)),
    }
}
