//! The `items` table.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::schema::items;
use crate::domain::ItemDraft;

/// Lists are capped so one request never returns an unbounded result.
pub const LIST_LIMIT: i64 = 100;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = items, check_for_backend(diesel::pg::Pg))]
pub struct Item {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub title: String,
    pub body: String,
    pub public: bool,
    pub created_at: DateTime<Utc>,
}

pub fn create(conn: &mut PgConnection, owner_id: Uuid, draft: &ItemDraft) -> QueryResult<Item> {
    diesel::insert_into(items::table)
        .values((
            items::id.eq(Uuid::now_v7()),
            items::owner_id.eq(owner_id),
            items::title.eq(&draft.title),
            items::body.eq(&draft.body),
            items::public.eq(draft.public),
        ))
        .returning(Item::as_returning())
        .get_result(conn)
}

/// Public items, plus the viewer's own when a viewer is given; newest first.
pub fn visible_to(conn: &mut PgConnection, viewer: Option<Uuid>) -> QueryResult<Vec<Item>> {
    let query = items::table.select(Item::as_select()).order(items::created_at.desc()).limit(LIST_LIMIT);
    match viewer {
        Some(owner) => query.filter(items::public.eq(true).or(items::owner_id.eq(owner))).load(conn),
        None => query.filter(items::public.eq(true)).load(conn),
    }
}
