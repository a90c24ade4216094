//! Items: a small resource to show optional authentication and the read/write scopes.

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::bearer::{Caller, MaybeCaller};
use crate::auth::guard::Requirement;
use crate::db::{self, items::Item};
use crate::domain::{ItemDraft, ScopeName};
use crate::errors::ApiError;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list).service(create);
}

#[derive(Serialize)]
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewItemBody {
    title: String,
    body: Option<String>,
    public: Option<bool>,
}

/// Anonymous callers see public items; a token with `items:read` adds the caller's own.
#[get("/items")]
async fn list(caller: MaybeCaller, state: web::Data<AppState>) -> Result<web::Json<Vec<ItemView>>, ApiError> {
    let viewer = caller.0.filter(|c| c.scopes.contains(ScopeName::ITEMS_READ)).map(|c| c.user.id);
    let items = db::run(&state.pool, move |conn| Ok(db::items::visible_to(conn, viewer)?)).await?;
    Ok(web::Json(items.into_iter().map(ItemView::from).collect()))
}

#[post("/items")]
async fn create(
    caller: Caller,
    body: web::Json<NewItemBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.authorize(Requirement::ITEMS_WRITE)?;
    let draft = ItemDraft::new(&body.title, body.body.as_deref(), body.public)
        .map_err(|err| ApiError::InvalidRequest(err.to_string()))?;
    let owner = caller.user.id;
    let item = db::run(&state.pool, move |conn| Ok(db::items::create(conn, owner, &draft)?)).await?;
    Ok(HttpResponse::Created().json(ItemView::from(item)))
}
