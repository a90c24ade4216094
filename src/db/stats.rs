//! The numbers behind `/api/admin/stats` and the admin pages.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;

use super::schema::{auth_events, items, roles, user_roles, users};
use crate::domain::EventKind;

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct UserCounts {
    pub total: i64,
    pub active: i64,
    /// Every role, including those nobody holds (count 0).
    pub by_role: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct EventCounts {
    pub logins: i64,
    pub failures: i64,
    pub tokens_issued: i64,
    pub lockouts: i64,
    pub refreshes: i64,
    /// Already-used refresh tokens presented again (each revoked its family).
    pub reuse_detections: i64,
}

pub fn user_counts(conn: &mut PgConnection) -> QueryResult<UserCounts> {
    // Both counts in one pass over the users.
    let (total, active): (i64, i64) = users::table
        .select((
            diesel::dsl::count_star(),
            diesel::dsl::sql::<diesel::sql_types::BigInt>("count(*) FILTER (WHERE is_active)"),
        ))
        .get_result(conn)?;
    let mut by_role: BTreeMap<String, i64> =
        roles::table.select(roles::name).load::<String>(conn)?.into_iter().map(|r| (r, 0)).collect();
    let held: Vec<(String, i64)> = user_roles::table
        .group_by(user_roles::role_name)
        .select((user_roles::role_name, diesel::dsl::count_star()))
        .load(conn)?;
    by_role.extend(held);
    Ok(UserCounts { total, active, by_role })
}

pub fn item_count(conn: &mut PgConnection) -> QueryResult<i64> {
    items::table.count().get_result(conn)
}

/// Counts of the main event kinds since `since`.
pub fn event_counts_since(conn: &mut PgConnection, since: DateTime<Utc>) -> QueryResult<EventCounts> {
    let by_kind: Vec<(EventKind, i64)> = auth_events::table
        .filter(auth_events::occurred_at.ge(since))
        .group_by(auth_events::kind)
        .select((auth_events::kind, diesel::dsl::count_star()))
        .load(conn)?;
    let count = |kind: EventKind| by_kind.iter().find(|(k, _)| *k == kind).map_or(0, |(_, n)| *n);
    Ok(EventCounts {
        logins: count(EventKind::LoginOk),
        failures: count(EventKind::LoginFailed),
        tokens_issued: count(EventKind::TokenIssued),
        lockouts: count(EventKind::Lockout),
        refreshes: count(EventKind::Refresh),
        reuse_detections: count(EventKind::ReuseDetected),
    })
}

pub fn last_day(now: DateTime<Utc>) -> DateTime<Utc> {
    now - Duration::hours(24)
}

/// Sign-ins and failures in one time bucket (UTC).
#[derive(Debug, Clone, QueryableByName)]
pub struct SignInBucket {
    #[diesel(sql_type = diesel::sql_types::Timestamp)]
    pub bucket: chrono::NaiveDateTime,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub ok: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub failed: i64,
}

/// The width of a chart bucket.
#[derive(Debug, Clone, Copy)]
pub enum BucketWidth {
    Hour,
    Day,
}

/// Sign-ins and failures per bucket since `since`; empty buckets are absent.
pub fn sign_ins_per(
    conn: &mut PgConnection,
    width: BucketWidth,
    since: DateTime<Utc>,
) -> QueryResult<Vec<SignInBucket>> {
    let unit = match width {
        BucketWidth::Hour => "hour",
        BucketWidth::Day => "day",
    };
    diesel::sql_query(
        "SELECT date_trunc($1, occurred_at AT TIME ZONE 'UTC') AS bucket, \
                count(*) FILTER (WHERE kind = $3) AS ok, \
                count(*) FILTER (WHERE kind = $4) AS failed \
         FROM auth_events \
         WHERE occurred_at >= $2 AND kind IN ($3, $4) \
         GROUP BY 1 ORDER BY 1",
    )
    .bind::<diesel::sql_types::Text, _>(unit)
    .bind::<diesel::sql_types::Timestamptz, _>(since)
    .bind::<diesel::sql_types::Text, _>(EventKind::LoginOk)
    .bind::<diesel::sql_types::Text, _>(EventKind::LoginFailed)
    .load(conn)
}

/// Accounts whose lock has not run out yet.
pub fn locked_now(conn: &mut PgConnection, now: DateTime<Utc>) -> QueryResult<i64> {
    users::table.filter(users::locked_until.gt(now)).count().get_result(conn)
}
