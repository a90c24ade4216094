//! The `roles`, `scopes` and `role_scopes` tables.

use std::collections::HashMap;

use diesel::prelude::*;

use super::schema::{role_scopes, scopes};

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

/// Which scopes each role allows. Roles and their scopes are defined by the migrations and change
/// only with one (and a deploy restarts every instance), so a server reads this once at start;
/// which roles a *user* holds is read on every request.
pub fn scopes_by_role(conn: &mut PgConnection) -> QueryResult<HashMap<String, Vec<String>>> {
    let pairs: Vec<(String, String)> =
        role_scopes::table.select((role_scopes::role_name, role_scopes::scope_name)).load(conn)?;
    let mut by_role: HashMap<String, Vec<String>> = HashMap::new();
    for (role, scope) in pairs {
        by_role.entry(role).or_default().push(scope);
    }
    Ok(by_role)
}
