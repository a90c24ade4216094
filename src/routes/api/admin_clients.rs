//! `/api/admin/clients…`: the client registry for programs (scope `admin:users` and role `admin`,
//! as `/api/admin/users`). Every change goes through `accounts::clients`, as the admin page and the
//! command line do.

use actix_web::{HttpRequest, HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::JsonAfterAuth;
use crate::accounts::Actor;
use crate::accounts::clients::ClientError;
use crate::auth::bearer::Caller;
use crate::auth::guard::Requirement;
use crate::db::clients::Client;
use crate::domain::Channel;
use crate::domain::ClientDraft;
use crate::routes::docs::ErrorResponse;
use crate::routes::{ApiError, AppState};

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(list).service(create).service(show).service(rotate_secret).service(remove);
}

/// The registry's refusals, as the API states them.
impl From<ClientError> for ApiError {
    fn from(err: ClientError) -> Self {
        match err {
            ClientError::UnknownClient(_) => ApiError::NotFound,
            ClientError::NoLongerAdmin => ApiError::MissingRole,
            ClientError::Invalid(_) | ClientError::PublicClient(_) => ApiError::InvalidRequest(err.to_string()),
            ClientError::Server(server) => ApiError::Server(server),
        }
    }
}

/// A registered client (never its secret).
#[derive(Serialize, ToSchema)]
pub struct ClientView {
    #[schema(example = "gc_3q2d9XkP0aLr7vYw1ZbN4A")]
    client_id: String,
    name: String,
    /// `confidential` or `public`.
    #[schema(example = "confidential")]
    kind: &'static str,
    first_party: bool,
    /// The scopes it may be given.
    scopes: Vec<String>,
    redirect_uris: Vec<String>,
    post_logout_redirect_uris: Vec<String>,
    /// Grant types, as named at `/token`.
    #[schema(example = json!(["client_credentials"]))]
    grant_types: Vec<&'static str>,
    #[schema(example = "RS256")]
    id_token_alg: &'static str,
    created_at: DateTime<Utc>,
}

impl From<Client> for ClientView {
    fn from(client: Client) -> Self {
        Self {
            client_id: client.client_id,
            name: client.name,
            kind: client.kind.as_str(),
            first_party: client.first_party,
            scopes: client.scope.to_vec(),
            redirect_uris: client.redirect_uris,
            post_logout_redirect_uris: client.post_logout_redirect_uris,
            grant_types: client.grants.iter().map(|grant| grant.as_str()).collect(),
            id_token_alg: client.id_token_alg.as_str(),
            created_at: client.created_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
struct ClientList {
    clients: Vec<ClientView>,
}

/// A client just registered: the only answer that carries its secret.
#[derive(Serialize, ToSchema)]
struct RegisteredClient {
    #[serde(flatten)]
    client: ClientView,
    /// For a confidential client; shown this once, stored only as a hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct RotatedSecret {
    client_id: String,
    /// The new secret; shown this once.
    client_secret: String,
    /// Until when the previous secret keeps working.
    previous_secret_expires_at: Option<DateTime<Utc>>,
}

/// The scopes the migrations create (which scopes exist is data, as roles are; the document lists
/// these so that what it allows is what a fresh server accepts).
#[derive(ToSchema)]
#[schema(as = Scope)]
#[allow(dead_code)] // Describes the scope names for the document; never built.
pub(super) enum KnownScope {
    #[schema(rename = "profile")]
    Profile,
    #[schema(rename = "items:read")]
    ItemsRead,
    #[schema(rename = "items:write")]
    ItemsWrite,
    #[schema(rename = "admin:stats")]
    AdminStats,
    #[schema(rename = "admin:users")]
    AdminUsers,
    #[schema(rename = "tokens:introspect")]
    TokensIntrospect,
}

/// Grant types, as named at `/token`.
#[derive(ToSchema)]
#[schema(as = GrantType)]
#[allow(dead_code)] // Describes the grant names for the document; never built.
enum KnownGrant {
    #[schema(rename = "authorization_code")]
    AuthorizationCode,
    #[schema(rename = "refresh_token")]
    RefreshToken,
    #[schema(rename = "client_credentials")]
    ClientCredentials,
    #[schema(rename = "password")]
    Password,
    #[schema(rename = "urn:ietf:params:oauth:grant-type:device_code")]
    DeviceCode,
}

// The patterns below spell out what `domain::ClientDraft::validate` accepts. `[\t\n\x0b\x0c\r \x85\xa0
// \u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]` is Rust's White_Space (what `trim` removes);
// `\s` will not do, as JSON Schema (ECMA-262) and Python disagree with Rust about it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewClientBody {
    /// 1–100 characters once surrounding spaces are trimmed; no control characters.
    #[schema(
        example = "billing service",
        pattern = r"^[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000](?:[^\x00-\x1f\x7f-\x9f]{0,98}[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000])?[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    name: String,
    /// A public client (no secret, no `client_credentials`).
    #[serde(default)]
    public: bool,
    #[serde(default)]
    first_party: bool,
    #[serde(default)]
    #[schema(value_type = Vec<KnownScope>, example = json!(["tokens:introspect"]))]
    scopes: Vec<String>,
    // Described by `redirect_uris_schema`.
    #[serde(default)]
    #[schema(schema_with = redirect_uris_schema)]
    redirect_uris: Vec<String>,
    // Described by `redirect_uris_schema`.
    #[serde(default)]
    #[schema(schema_with = redirect_uris_schema)]
    post_logout_redirect_uris: Vec<String>,
    /// Replaces the default: `client_credentials` (plus `authorization_code` and `refresh_token` with
    /// redirect URIs) for a confidential client, `authorization_code` and `refresh_token` for a public one.
    #[serde(default)]
    #[schema(value_type = Vec<KnownGrant>, example = json!(["client_credentials"]))]
    grant_types: Vec<String>,
    /// `RS256` (default, also when blank), `ES256` or `EdDSA`.
    #[schema(
        example = "RS256",
        pattern = r"^[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*(?:RS256|ES256|EdDSA)?[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    id_token_alg: Option<String>,
}

/// Redirect URIs as the document states them: at most 20, each at most 2,000 characters, of a kind a
/// generator can produce from the pattern (`http(s)://host[:port][/path][?query]`, or a private-use
/// scheme with a dot and a path), all of which the server accepts. The server accepts more: any
/// absolute URI a browser can be sent back to, without fragment.
fn redirect_uris_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    const URI: &str = r"^(?:https?://[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?)*(?::[0-9]{1,4})?(?:/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?|[a-z][a-z0-9+-]*(?:\.[a-z0-9+-]+)+:/(?:[A-Za-z0-9._~!$&'()*+,;=:@%-][A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?)(?:\?[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*)?$";
    ArrayBuilder::new()
        .description(Some(
            "At most 20, each absolute, without fragment and at most 2,000 characters: \
             `http(s)://host[:port][/path][?query]`, or a native app's private-use scheme with a dot \
             (`com.example.app:/callback`).",
        ))
        .items(ObjectBuilder::new().schema_type(Type::String).max_length(Some(2000)).pattern(Some(URI)))
        .max_items(Some(20))
        .build()
}

fn actor(caller: &Caller, state: &AppState, req: &HttpRequest) -> Result<Actor, ApiError> {
    Ok(Actor { user_id: Some(caller.user()?.id), channel: Channel::Api, client: state.client_ip(req) })
}

/// The registered clients, oldest first.
#[utoipa::path(
    get,
    path = "/admin/clients",
    tag = "admin",
    security(("oauth2" = ["admin:users"])),
    responses(
        (status = 200, description = "Every registered client", body = ClientList),
        (status = 401, description = "No token (`WWW-Authenticate: Bearer`) or an invalid one (`invalid_token`)", body = ErrorResponse,
            headers(("WWW-Authenticate" = String, description = "RFC 6750 challenge"))),
        (status = 403, description = "`insufficient_scope`: the token lacks `admin:users`, or the user lacks role `admin`", body = ErrorResponse),
    )
)]
#[get("/admin/clients")]
async fn list(caller: Caller, state: web::Data<AppState>) -> Result<web::Json<ClientList>, ApiError> {
    caller.authorize(Requirement::ADMIN_USERS)?;
    let clients = state.clients().list().await?;
    Ok(web::Json(ClientList { clients: clients.into_iter().map(ClientView::from).collect() }))
}

/// Registers a client; a confidential one's secret is in this answer and never again.
#[utoipa::path(
    post,
    path = "/admin/clients",
    tag = "admin",
    security(("oauth2" = ["admin:users"])),
    request_body = NewClientBody,
    responses(
        (status = 201, description = "Registered", body = RegisteredClient),
        (status = 400, description = "`invalid_request`: an empty name, an unknown scope or grant, a relative redirect URI or one with a fragment, a public client with `client_credentials`, bad JSON", body = ErrorResponse),
        (status = 401, description = "No token (`WWW-Authenticate: Bearer`) or an invalid one (`invalid_token`)", body = ErrorResponse,
            headers(("WWW-Authenticate" = String, description = "RFC 6750 challenge"))),
        (status = 403, description = "`insufficient_scope`: the token lacks `admin:users`, or the user lacks role `admin`", body = ErrorResponse),
        (status = 413, description = "Body over 256 KiB", body = ErrorResponse),
        (status = 415, description = "Not `application/json`", body = ErrorResponse),
    )
)]
#[post("/admin/clients")]
async fn create(
    req: HttpRequest,
    caller: Caller,
    body: JsonAfterAuth<NewClientBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.authorize(Requirement::ADMIN_USERS)?;
    let body = body.into_inner()?;
    let draft = ClientDraft {
        name: body.name,
        public: body.public,
        first_party: body.first_party,
        scopes: body.scopes,
        redirect_uris: body.redirect_uris,
        post_logout_redirect_uris: body.post_logout_redirect_uris,
        grants: body.grant_types,
        id_token_alg: body.id_token_alg,
    };
    let registered = state.clients().register(&actor(&caller, &state, &req)?, draft).await?;
    // Its ID-token key, published now: a relying party set up next reads a JWKS that has it.
    state.grants.ensure_id_token_key(registered.client.id_token_alg, Utc::now()).await?;
    Ok(HttpResponse::Created().json(RegisteredClient {
        client: ClientView::from(registered.client),
        client_secret: registered.secret.map(|secret| secret.expose_secret().to_owned()),
    }))
}

/// One registered client.
#[utoipa::path(
    get,
    path = "/admin/clients/{client_id}",
    tag = "admin",
    params(("client_id" = String, Path, description = "The client's id")),
    security(("oauth2" = ["admin:users"])),
    responses(
        (status = 200, description = "The client", body = ClientView),
        (status = 401, description = "No token (`WWW-Authenticate: Bearer`) or an invalid one (`invalid_token`)", body = ErrorResponse,
            headers(("WWW-Authenticate" = String, description = "RFC 6750 challenge"))),
        (status = 403, description = "`insufficient_scope`: the token lacks `admin:users`, or the user lacks role `admin`", body = ErrorResponse),
        (status = 404, description = "`not_found`: no such client (or it was removed)", body = ErrorResponse),
    )
)]
#[get("/admin/clients/{client_id}")]
async fn show(
    caller: Caller,
    client_id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<web::Json<ClientView>, ApiError> {
    caller.authorize(Requirement::ADMIN_USERS)?;
    Ok(web::Json(ClientView::from(state.clients().get(&client_id).await?)))
}

/// Gives a confidential client a new secret; the previous one keeps working for an hour.
#[utoipa::path(
    post,
    path = "/admin/clients/{client_id}/rotate-secret",
    tag = "admin",
    params(("client_id" = String, Path, description = "The client's id")),
    security(("oauth2" = ["admin:users"])),
    responses(
        (status = 200, description = "The new secret (shown once)", body = RotatedSecret),
        (status = 400, description = "`invalid_request`: a public client has no secret", body = ErrorResponse),
        (status = 401, description = "No token (`WWW-Authenticate: Bearer`) or an invalid one (`invalid_token`)", body = ErrorResponse,
            headers(("WWW-Authenticate" = String, description = "RFC 6750 challenge"))),
        (status = 403, description = "`insufficient_scope`: the token lacks `admin:users`, or the user lacks role `admin`", body = ErrorResponse),
        (status = 404, description = "`not_found`: no such client", body = ErrorResponse),
    )
)]
#[post("/admin/clients/{client_id}/rotate-secret")]
async fn rotate_secret(
    req: HttpRequest,
    caller: Caller,
    client_id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.authorize(Requirement::ADMIN_USERS)?;
    let rotated = state.clients().rotate_secret(&actor(&caller, &state, &req)?, &client_id).await?;
    // The secret is in this answer: no cache may keep it.
    Ok(crate::routes::errors::no_store(HttpResponse::Ok()).json(RotatedSecret {
        client_id: rotated.client.client_id,
        client_secret: rotated.secret.expose_secret().to_owned(),
        previous_secret_expires_at: rotated.previous_expires_at,
    }))
}

/// Removes a client: it can no longer authenticate, and its tokens are refused from the next request on.
#[utoipa::path(
    delete,
    path = "/admin/clients/{client_id}",
    tag = "admin",
    params(("client_id" = String, Path, description = "The client's id")),
    security(("oauth2" = ["admin:users"])),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No token (`WWW-Authenticate: Bearer`) or an invalid one (`invalid_token`)", body = ErrorResponse,
            headers(("WWW-Authenticate" = String, description = "RFC 6750 challenge"))),
        (status = 403, description = "`insufficient_scope`: the token lacks `admin:users`, or the user lacks role `admin`", body = ErrorResponse),
        (status = 404, description = "`not_found`: no such client", body = ErrorResponse),
    )
)]
#[delete("/admin/clients/{client_id}")]
async fn remove(
    req: HttpRequest,
    caller: Caller,
    client_id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.authorize(Requirement::ADMIN_USERS)?;
    state.clients().remove(&actor(&caller, &state, &req)?, &client_id).await?;
    Ok(HttpResponse::NoContent().finish())
}
