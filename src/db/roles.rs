//! The `roles`, `scopes` and `role_scopes` tables.

use diesel::prelude::*;

use super::schema::scopes;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = scopes, check_for_backend(diesel::pg::Pg))]
pub struct Scope {
    pub name: String,
    pub description: String,
}

/// Every scope that exists, by name.
pub fn all_scopes(conn: &mut PgConnection) -> QueryResult<Vec<Scope>> {
    scopes::table.select(Scope::as_select()).order(scopes::name).load(conn)
}
