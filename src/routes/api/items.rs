//! Items: a small resource to show optional authentication and the read/write scopes.

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::extract::{JsonAfterAuth, MaybeCaller};
use crate::auth::bearer::Caller;
use crate::auth::guard::Requirement;
use crate::db::{self, items::Item};
use crate::domain::{ItemDraft, ScopeName};
use crate::routes::docs::ErrorResponse;
use crate::routes::{ApiError, AppState};
use utoipa::ToSchema;

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(list).service(create);
}

#[derive(Serialize, ToSchema)]
struct ItemView {
    id: Uuid,
    owner_id: Uuid,
    title: String,
    body: String,
    public: bool,
    created_at: DateTime<Utc>,
}

impl From<Item> for ItemView {
    fn from(item: Item) -> Self {
        Self {
            id: item.id,
            owner_id: item.owner_id,
            title: item.title,
            body: item.body,
            public: item.public,
            created_at: item.created_at,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewItemBody {
    // The class is Rust's White_Space, what the server trims: `\S` differs in ECMA-262 and in Python.
    /// 1–200 characters as sent, at least one of them not white space; no NUL characters.
    #[schema(
        example = "Groceries",
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00]*[^\x00\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00]*$"
    )]
    title: String,
    /// At most 10,000 characters; no NUL characters.
    #[schema(max_length = 10000, pattern = r"^[^\x00]*$")]
    body: Option<String>,
    /// Visible to everybody; default false.
    public: Option<bool>,
}

/// Anonymous callers see public items; a token with `items:read` adds the caller's own.
#[utoipa::path(
    get,
    path = "/items",
    tag = "items",
    security((), ("oauth2" = ["items:read"])),
    responses(
        (status = 200, description = "Newest first, at most 100", body = Vec<ItemView>),
        (status = 401, description = "A token was sent and is invalid (`invalid_token`)", body = ErrorResponse),
    )
)]
#[get("/items")]
async fn list(caller: MaybeCaller, state: web::Data<AppState>) -> Result<web::Json<Vec<ItemView>>, ApiError> {
    let viewer =
        caller.0.filter(|c| c.scopes().contains(ScopeName::ITEMS_READ)).and_then(|c| c.user().ok().map(|user| user.id));
    let items = db::run(&state.pool, move |conn| db::items::visible_to(conn, viewer)).await?;
    Ok(web::Json(items.into_iter().map(ItemView::from).collect()))
}

/// Creates an item owned by the caller.
#[utoipa::path(
    post,
    path = "/items",
    tag = "items",
    security(("oauth2" = ["items:write"])),
    request_body = NewItemBody,
    responses(
        (status = 201, description = "Created", body = ItemView),
        (status = 400, description = "`invalid_request`: bad JSON or an empty or over-long title", body = ErrorResponse),
        (status = 401, description = "No token (`WWW-Authenticate: Bearer`) or an invalid one (`invalid_token`)", body = ErrorResponse,
            headers(("WWW-Authenticate" = String, description = "RFC 6750 challenge"))),
        (status = 403, description = "`insufficient_scope` (needs `items:write`)", body = ErrorResponse),
        (status = 413, description = "Body over 256 KiB", body = ErrorResponse),
        (status = 415, description = "Not `application/json`", body = ErrorResponse),
    )
)]
#[post("/items")]
async fn create(
    caller: Caller,
    body: JsonAfterAuth<NewItemBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.authorize(Requirement::ITEMS_WRITE)?;
    let body = body.into_inner()?;
    let draft = ItemDraft::new(&body.title, body.body.as_deref(), body.public)
        .map_err(|err| ApiError::InvalidRequest(err.to_string()))?;
    let owner = caller.user()?.id;
    let item = db::run(&state.pool, move |conn| db::items::create(conn, owner, &draft)).await?;
    Ok(HttpResponse::Created().json(ItemView::from(item)))
}
