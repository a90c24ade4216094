//! The bearer checks of many concurrent API requests at once.

use std::collections::{HashMap, HashSet};

use diesel::prelude::*;
use diesel::sql_types::{Bool, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

use super::*;

/// What a bearer-token check needs: the user, their roles, and whether the token's `jti` was revoked.
#[derive(Debug, Clone)]
pub struct TokenHolder {
    pub user: User,
    pub roles: Vec<String>,
    pub token_revoked: bool,
}

/// The bearer checks of many concurrent API requests at once: one answer per `(user id, jti)` pair,
/// in order, `None` where the user does not exist. Every API request needs this, so a batch is one
/// round trip whatever its size: [`TokenHoldersQuery`], a statement PostgreSQL keeps prepared.
pub fn token_holders(conn: &mut PgConnection, checks: &[(Uuid, Uuid)]) -> QueryResult<Vec<Option<TokenHolder>>> {
    let query = TokenHoldersQuery {
        user_ids: checks.iter().map(|&(user_id, _)| user_id).collect(),
        jtis: checks.iter().map(|&(_, jti)| jti).collect(),
    };
    let mut revoked: HashSet<Uuid> = HashSet::new();
    let holders: HashMap<Uuid, (User, Vec<String>)> = query
        .load::<(User, Vec<String>, Vec<Uuid>)>(conn)?
        .into_iter()
        .map(|(user, roles, revoked_jtis)| {
            // Every row carries the same list: the batch's revoked jtis.
            revoked.extend(revoked_jtis);
            (user.id, (user, roles))
        })
        .collect();
    Ok(checks
        .iter()
        .map(|(user_id, jti)| {
            holders.get(user_id).map(|(user, roles)| TokenHolder {
                user: user.clone(),
                roles: roles.clone(),
                token_revoked: revoked.contains(jti),
            })
        })
        .collect())
}

/// The users of a batch of bearer tokens with their roles, and which of the batch's `jti`s were
/// revoked, in one statement. Written by hand because Diesel's query builder has no `array_agg`, and
/// a statement Diesel can keep prepared (a fixed text: `QueryId` says so) costs PostgreSQL no
/// planning per batch; `user_role_names()` in the select list, which it replaces here, ran the SQL
/// function executor once per row and took half the statement's time.
#[derive(Debug, Clone)]
pub struct TokenHoldersQuery {
    pub user_ids: Vec<Uuid>,
    pub jtis: Vec<Uuid>,
}

impl diesel::query_builder::QueryId for TokenHoldersQuery {
    type QueryId = Self;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl diesel::query_builder::Query for TokenHoldersQuery {
    type SqlType = (
        (SqlUuid, Text, Nullable<Text>, Bool, Nullable<Text>, Bool, Timestamptz, Timestamptz, Nullable<Timestamptz>),
        diesel::sql_types::Array<Text>,
        diesel::sql_types::Array<SqlUuid>,
    );
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for TokenHoldersQuery {
    fn walk_ast<'b>(&'b self, mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>) -> QueryResult<()> {
        out.push_sql(
            "SELECT u.id, u.username, u.email, u.email_verified, u.full_name, u.is_active, u.tokens_valid_after, u.created_at, \
                    u.last_login_at, \
                    coalesce((SELECT array_agg(role_name ORDER BY role_name) FROM user_roles WHERE user_id = u.id), \
                             '{}'), \
                    coalesce((SELECT array_agg(jti) FROM revoked_access_tokens WHERE jti = ANY(",
        );
        out.push_bind_param::<diesel::sql_types::Array<SqlUuid>, _>(&self.jtis)?;
        out.push_sql(")), '{}') FROM users u WHERE u.id = ANY(");
        out.push_bind_param::<diesel::sql_types::Array<SqlUuid>, _>(&self.user_ids)?;
        out.push_sql(")");
        Ok(())
    }
}

impl RunQueryDsl<PgConnection> for TokenHoldersQuery {}
