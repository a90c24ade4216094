//! The bearer checks of many concurrent API requests at once.

use std::collections::{HashMap, HashSet};

use diesel::prelude::*;
use diesel::sql_types::{Bool, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

use super::*;

/// What a bearer-token check needs: the user, their roles, whether the token's `jti` was revoked,
/// and whether the registered client it was issued to (if any) is gone.
#[derive(Debug, Clone)]
pub struct TokenHolder {
    pub user: User,
    pub roles: Vec<String>,
    pub token_revoked: bool,
    /// The token names a client (`client_id`) that is not registered now: it was removed.
    pub client_removed: bool,
}

/// One bearer check of a person's access token: whose it is, its `jti`, and the registered client
/// it was issued to (a token of the password grant without a client names none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessCheck {
    pub user_id: Uuid,
    pub jti: Uuid,
    pub client_id: Option<String>,
}

/// The bearer checks of many concurrent API requests at once: one answer per check, in order, `None`
/// where the user does not exist. Every API request needs this, so a batch is one round trip
/// whatever its size: [`TokenHoldersQuery`], a statement PostgreSQL keeps prepared.
pub fn token_holders(conn: &mut PgConnection, checks: &[AccessCheck]) -> QueryResult<Vec<Option<TokenHolder>>> {
    let mut client_ids: Vec<String> = checks.iter().filter_map(|check| check.client_id.clone()).collect();
    client_ids.sort_unstable();
    client_ids.dedup();
    let query = TokenHoldersQuery {
        user_ids: checks.iter().map(|check| check.user_id).collect(),
        jtis: checks.iter().map(|check| check.jti).collect(),
        client_ids,
    };
    let (mut revoked, mut live_clients): (HashSet<Uuid>, HashSet<String>) = Default::default();
    let holders: HashMap<Uuid, (User, Vec<String>)> = query
        .load::<(User, Vec<String>, Vec<Uuid>, Vec<String>)>(conn)?
        .into_iter()
        .map(|(user, roles, revoked_jtis, live)| {
            // Every row carries the same lists: the batch's revoked jtis and its live clients.
            revoked.extend(revoked_jtis);
            live_clients.extend(live);
            (user.id, (user, roles))
        })
        .collect();
    Ok(checks
        .iter()
        .map(|check| {
            holders.get(&check.user_id).map(|(user, roles)| TokenHolder {
                user: user.clone(),
                roles: roles.clone(),
                token_revoked: revoked.contains(&check.jti),
                client_removed: check.client_id.as_ref().is_some_and(|client_id| !live_clients.contains(client_id)),
            })
        })
        .collect())
}

/// The users of a batch of bearer tokens with their roles, which of the batch's `jti`s were revoked
/// and which of its clients are registered (not removed), in one statement. Written by hand because Diesel's query builder has no `array_agg`, and
/// a statement Diesel can keep prepared (a fixed text: `QueryId` says so) costs PostgreSQL no
/// planning per batch; `user_role_names()` in the select list, which it replaces here, ran the SQL
/// function executor once per row and took half the statement's time.
#[derive(Debug, Clone)]
pub struct TokenHoldersQuery {
    pub user_ids: Vec<Uuid>,
    pub jtis: Vec<Uuid>,
    /// Distinct; empty when no token of the batch names a client.
    pub client_ids: Vec<String>,
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
        diesel::sql_types::Array<Text>,
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
        // Uncorrelated, like the one above: PostgreSQL runs it once per statement, not per row.
        out.push_sql(")), '{}'), \
                    coalesce((SELECT array_agg(client_id) FROM oauth_clients WHERE removed_at IS NULL AND client_id = ANY(");
        out.push_bind_param::<diesel::sql_types::Array<Text>, _>(&self.client_ids)?;
        out.push_sql(")), '{}') FROM users u WHERE u.id = ANY(");
        out.push_bind_param::<diesel::sql_types::Array<SqlUuid>, _>(&self.user_ids)?;
        out.push_sql(")");
        Ok(())
    }
}

impl RunQueryDsl<PgConnection> for TokenHoldersQuery {}
