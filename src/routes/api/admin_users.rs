//! `/api/admin/users…`: user administration for programs (scope `admin:users`, role `admin`). Every
//! change goes through `accounts`, as the admin pages and the command line do.

use actix_web::{HttpRequest, HttpResponse, delete, get, patch, post, web};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::extract::{JsonAfterAuth, query_after_auth};
use crate::accounts::{AccountDraft, Actor};
use crate::auth::bearer::Caller;
use crate::auth::guard::Requirement;
use crate::db::{
    self,
    users::{AccountChange, User},
};
use crate::domain::Channel;
use crate::routes::docs::ErrorResponse;
use crate::routes::{ApiError, AppState};

/// Users per page of the list.
pub const PER_PAGE: i64 = 50;
/// The highest page number asked for (50 users a page: room for five million users).
const MAX_PAGE: i64 = 100_000;
const MAX_QUERY_CHARS: usize = 100;

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(list).service(create).service(change).service(sign_out_all).service(reset_second_factors);
}

/// A user as an administrator sees them.
#[derive(Serialize, ToSchema)]
pub struct AdminUserView {
    id: Uuid,
    username: String,
    email: Option<String>,
    /// The address was proven by a link mailed to it (a confirmation, an invitation or a reset link).
    email_verified: bool,
    full_name: Option<String>,
    roles: Vec<String>,
    is_active: bool,
    created_at: DateTime<Utc>,
    last_login_at: Option<DateTime<Utc>>,
}

impl AdminUserView {
    fn new(user: User, roles: Vec<String>) -> Self {
        Self {
            id: user.id,
            username: user.username,
            email: user.email,
            email_verified: user.email_verified,
            full_name: user.full_name,
            roles,
            is_active: user.is_active,
            created_at: user.created_at,
            last_login_at: user.last_login_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
struct UserPage {
    users: Vec<AdminUserView>,
    page: i64,
    per_page: i64,
    /// Whether the next page has users too.
    has_more: bool,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct UserQuery {
    /// Only users whose username or email address contains this text (any case).
    #[param(max_length = 100)]
    q: Option<String>,
    // 1 is the first page (also when empty): described by `page_schema`.
    #[param(schema_with = page_schema)]
    #[serde(default, deserialize_with = "empty_as_none")]
    page: Option<i64>,
}

/// `page` in the document: a number from 1 to [`MAX_PAGE`], or nothing at all (`page=`).
fn page_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{AnyOfBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
    let page = AnyOfBuilder::new()
        .description(Some("1 is the first page (also when empty)."))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(1))
                .maximum(Some(MAX_PAGE)),
        )
        .item(ObjectBuilder::new().schema_type(Type::String).max_length(Some(0)))
        .build();
    Schema::AnyOf(page)
}

/// `page=` with nothing after it, as a form or a URL template leaves it, means no page given.
fn empty_as_none<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    match Option::<String>::deserialize(deserializer)?.filter(|text| !text.is_empty()) {
        None => Ok(None),
        Some(text) => text.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

fn actor(caller: &Caller, state: &AppState, req: &HttpRequest) -> Result<Actor, ApiError> {
    Ok(Actor { user_id: Some(caller.user()?.id), channel: Channel::Api, client: state.client_ip(req) })
}

/// Users by username, 50 a page, optionally only those matching `q`.
#[utoipa::path(
    get,
    path = "/admin/users",
    tag = "admin",
    params(UserQuery),
    security(("oauth2" = ["admin:users"])),
    responses(
        (status = 200, description = "One page of users", body = UserPage),
        (status = 400, description = "`invalid_request`: a page out of range, a search over 100 characters, an unknown or repeated parameter", body = ErrorResponse),
        (status = 401, description = "No token (`WWW-Authenticate: Bearer`) or an invalid one (`invalid_token`)", body = ErrorResponse,
            headers(("WWW-Authenticate" = String, description = "RFC 6750 challenge"))),
        (status = 403, description = "`insufficient_scope`: the token lacks `admin:users`, or the user lacks role `admin`", body = ErrorResponse,
            headers(("WWW-Authenticate" = String, description = "`Bearer error=\"insufficient_scope\"`"))),
    )
)]
#[get("/admin/users")]
async fn list(req: HttpRequest, caller: Caller, state: web::Data<AppState>) -> Result<web::Json<UserPage>, ApiError> {
    caller.authorize(Requirement::ADMIN_USERS)?;
    let UserQuery { q, page } = query_after_auth(&req)?;
    let page = page.unwrap_or(1);
    if !(1..=MAX_PAGE).contains(&page) {
        return Err(ApiError::InvalidRequest(format!("page must be between 1 and {MAX_PAGE}")));
    }
    if q.as_ref().is_some_and(|q| q.chars().count() > MAX_QUERY_CHARS) {
        return Err(ApiError::InvalidRequest(format!("q must be at most {MAX_QUERY_CHARS} characters")));
    }
    let offset = (page - 1) * PER_PAGE;
    let mut found =
        db::run(&state.pool, move |conn| db::users::search(conn, q.as_deref(), offset, Some(PER_PAGE + 1))).await?;
    let has_more = found.len() as i64 > PER_PAGE;
    found.truncate(PER_PAGE as usize);
    let users = found.into_iter().map(|(user, roles)| AdminUserView::new(user, roles)).collect();
    Ok(web::Json(UserPage { users, page, per_page: PER_PAGE, has_more }))
}

/// The roles the migrations create. Which roles exist is data (an operator may add some); the
/// document lists these so that what it allows is what a fresh server accepts.
#[derive(ToSchema)]
#[schema(as = Role)]
#[allow(dead_code)] // Describes the role names for the document; never built.
enum KnownRole {
    #[schema(rename = "user")]
    User,
    #[schema(rename = "admin")]
    Admin,
    #[schema(rename = "service")]
    Service,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewUserBody {
    /// Letters, digits and `. _ - @ +`, at most 64 characters as sent (surrounding spaces are trimmed);
    /// unique without regard to case.
    #[schema(example = "bob", max_length = 64, pattern = r"^\s*[\p{L}\p{N}._@+-]{1,64}\s*$")]
    username: String,
    /// 8 characters to 72 bytes, and not easy to guess: a zxcvbn strength of at least 3 of 4, counting the
    /// username, email address and full name as known to an attacker (a refusal carries the estimator's advice).
    /// Omitted or null: the user gets an invitation mailed to `email` whose link (72 hours) sets it; this
    /// needs mail to be on and an `email` (else `400`).
    #[schema(example = "quartz-lantern-97-drifts-upward", min_length = 8, max_length = 72)]
    password: Option<String>,
    /// An address with one `@` and a dot in its domain, at most 254 characters as sent; blank or null: none.
    #[schema(
        example = "bob@example.org",
        max_length = 254,
        pattern = r"^\s*([^@\s\x00-\x1f\x7f-\x9f]+@[^@\s\x00-\x1f\x7f-\x9f]*\.[^@\s\x00-\x1f\x7f-\x9f]*[^@.\s\x00-\x1f\x7f-\x9f])?\s*$"
    )]
    email: Option<String>,
    /// At most 200 characters, no control characters; blank or null: none.
    #[schema(example = "Bob Example", max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    full_name: Option<String>,
    /// Role names; none when absent.
    #[serde(default)]
    #[schema(value_type = Vec<KnownRole>, example = json!(["user"]))]
    roles: Vec<String>,
}

/// Creates a user.
#[utoipa::path(
    post,
    path = "/admin/users",
    tag = "admin",
    security(("oauth2" = ["admin:users"])),
    request_body = NewUserBody,
    responses(
        (status = 201, description = "Created", body = AdminUserView),
        (status = 400, description = "`invalid_request`: a malformed username, email or full name, a short, over-long or easily guessed password (the description carries the estimator's advice), no password without mail or without an email address, an unknown role, bad JSON", body = ErrorResponse),
        (status = 401, description = "No token (`WWW-Authenticate: Bearer`) or an invalid one (`invalid_token`)", body = ErrorResponse,
            headers(("WWW-Authenticate" = String, description = "RFC 6750 challenge"))),
        (status = 403, description = "`insufficient_scope`: the token lacks `admin:users`, or the user lacks role `admin`", body = ErrorResponse),
        (status = 409, description = "`username_taken`", body = ErrorResponse),
        (status = 413, description = "Body over 256 KiB", body = ErrorResponse),
        (status = 415, description = "Not `application/json`", body = ErrorResponse),
    )
)]
#[post("/admin/users")]
async fn create(
    req: HttpRequest,
    caller: Caller,
    body: JsonAfterAuth<NewUserBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.authorize(Requirement::ADMIN_USERS)?;
    let NewUserBody { username, password, email, full_name, roles } = body.into_inner()?;
    let draft = AccountDraft {
        username,
        password: password.map(SecretString::from),
        password_again: None,
        email,
        full_name,
        roles: roles.clone(),
    };
    let created = state.accounts().create(&actor(&caller, &state, &req)?, draft).await?;
    let mut roles = roles;
    roles.sort();
    roles.dedup();
    Ok(HttpResponse::Created().json(AdminUserView::new(created.user, roles)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1)]
struct ChangeBody {
    /// Exactly these roles (an empty list removes every role).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Vec<KnownRole>, nullable = false, example = json!(["user", "admin"]))]
    roles: Option<Vec<String>>,
    /// `false` deactivates: every token and session of the user stops working at once.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = bool, nullable = false)]
    is_active: Option<bool>,
}

/// A field that may be left out but, when given, must not be `null` (so `{"roles": null}` is refused
/// rather than read as "leave the roles alone").
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// Sets a user's roles and/or active flag, in one transaction.
#[utoipa::path(
    patch,
    path = "/admin/users/{username}",
    tag = "admin",
    params(("username" = String, Path, description = "The user's username (any case)")),
    security(("oauth2" = ["admin:users"])),
    request_body = ChangeBody,
    responses(
        (status = 200, description = "The user as changed", body = AdminUserView),
        (status = 400, description = "`invalid_request`: neither field given, an unknown or malformed role, bad JSON", body = ErrorResponse),
        (status = 401, description = "No token (`WWW-Authenticate: Bearer`) or an invalid one (`invalid_token`)", body = ErrorResponse,
            headers(("WWW-Authenticate" = String, description = "RFC 6750 challenge"))),
        (status = 403, description = "`insufficient_scope`: the token lacks `admin:users`, or the user lacks role `admin`", body = ErrorResponse),
        (status = 404, description = "`not_found`: no such user", body = ErrorResponse),
        (status = 409, description = "`last_admin`: the change would leave no active admin", body = ErrorResponse),
        (status = 413, description = "Body over 256 KiB", body = ErrorResponse),
        (status = 415, description = "Not `application/json`", body = ErrorResponse),
    )
)]
#[patch("/admin/users/{username}")]
async fn change(
    req: HttpRequest,
    caller: Caller,
    username: web::Path<String>,
    body: JsonAfterAuth<ChangeBody>,
    state: web::Data<AppState>,
) -> Result<web::Json<AdminUserView>, ApiError> {
    caller.authorize(Requirement::ADMIN_USERS)?;
    let ChangeBody { roles, is_active } = body.into_inner()?;
    if roles.is_none() && is_active.is_none() {
        return Err(ApiError::InvalidRequest("give `roles`, `is_active` or both".to_owned()));
    }
    let change = AccountChange { roles, active: is_active };
    let user = state.accounts().change(&actor(&caller, &state, &req)?, &username, change).await?;
    let user_id = user.id;
    let roles = db::run(&state.pool, move |conn| db::users::roles_of(conn, user_id)).await?;
    Ok(web::Json(AdminUserView::new(user, roles)))
}

/// Ends every access token, refresh token and browser session of the user.
#[utoipa::path(
    post,
    path = "/admin/users/{username}/sign-out-all",
    tag = "admin",
    params(("username" = String, Path, description = "The user's username (any case)")),
    security(("oauth2" = ["admin:users"])),
    responses(
        (status = 204, description = "Signed out everywhere"),
        (status = 401, description = "No token (`WWW-Authenticate: Bearer`) or an invalid one (`invalid_token`)", body = ErrorResponse,
            headers(("WWW-Authenticate" = String, description = "RFC 6750 challenge"))),
        (status = 403, description = "`insufficient_scope`: the token lacks `admin:users`, or the user lacks role `admin`", body = ErrorResponse),
        (status = 404, description = "`not_found`: no such user", body = ErrorResponse),
    )
)]
#[post("/admin/users/{username}/sign-out-all")]
async fn sign_out_all(
    req: HttpRequest,
    caller: Caller,
    username: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.authorize(Requirement::ADMIN_USERS)?;
    state.accounts().sign_out_everywhere(&actor(&caller, &state, &req)?, &username).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Removes every second factor of the user (authenticator app, recovery codes). A cut-off, like a
/// password change: every session and token of the user ends. `204` also when they had none.
#[utoipa::path(
    delete,
    path = "/admin/users/{username}/second-factors",
    tag = "admin",
    params(("username" = String, Path, description = "The user's username (any case)")),
    security(("oauth2" = ["admin:users"])),
    responses(
        (status = 204, description = "The user has no second factor now; their sessions and tokens ended"),
        (status = 401, description = "No token (`WWW-Authenticate: Bearer`) or an invalid one (`invalid_token`)", body = ErrorResponse,
            headers(("WWW-Authenticate" = String, description = "RFC 6750 challenge"))),
        (status = 403, description = "`insufficient_scope`: the token lacks `admin:users`, or the user lacks role `admin`", body = ErrorResponse),
        (status = 404, description = "`not_found`: no such user", body = ErrorResponse),
    )
)]
#[delete("/admin/users/{username}/second-factors")]
async fn reset_second_factors(
    req: HttpRequest,
    caller: Caller,
    username: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.authorize(Requirement::ADMIN_USERS)?;
    state.accounts().reset_second_factors(&actor(&caller, &state, &req)?, &username).await?;
    Ok(HttpResponse::NoContent().finish())
}
