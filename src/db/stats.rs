//! The numbers behind `/api/admin/stats` and the admin pages.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;

use super::schema::{account_counts, items, roles, users};
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

/// The counts the triggers of migration 7 keep (`account_counts`): a handful of rows to read,
/// however many users there are.
pub fn user_counts(conn: &mut PgConnection) -> QueryResult<UserCounts> {
    let counts: BTreeMap<String, i64> =
        account_counts::table.select((account_counts::name, account_counts::value)).load(conn)?.into_iter().collect();
    let count = |name: &str| counts.get(name).copied().unwrap_or(0);
    let by_role = roles::table
        .select(roles::name)
        .load::<String>(conn)?
        .into_iter()
        .map(|role| {
            let members = count(&format!("role:{role}"));
            (role, members)
        })
        .collect();
    Ok(UserCounts { total: count("users"), active: count("active_users"), by_role })
}

pub fn item_count(conn: &mut PgConnection) -> QueryResult<i64> {
    items::table.count().get_result(conn)
}

/// Counts of the main event kinds since `since`: the whole hours after it from the hourly counts a
/// trigger keeps (`event_hours`, a few hundred rows for a day), the part of its first hour from the
/// events themselves (at most an hour of them, through the time index).
pub fn event_counts_since(conn: &mut PgConnection, since: DateTime<Utc>) -> QueryResult<EventCounts> {
    #[derive(QueryableByName)]
    struct KindCount {
        #[diesel(sql_type = diesel::sql_types::Text)]
        kind: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let by_kind: Vec<KindCount> = diesel::sql_query(
        "WITH first_whole_hour AS (SELECT date_trunc('hour', $1 AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' \
                                           + interval '1 hour' AS at) \
         SELECT kind, sum(n)::bigint AS n FROM ( \
             SELECT kind, count AS n FROM event_hours WHERE hour >= (SELECT at FROM first_whole_hour) \
             UNION ALL \
             SELECT kind, count(*) AS n FROM auth_events \
             WHERE occurred_at >= $1 AND occurred_at < (SELECT at FROM first_whole_hour) GROUP BY kind \
         ) AS counted GROUP BY kind",
    )
    .bind::<diesel::sql_types::Timestamptz, _>(since)
    .load(conn)?;
    let count = |kind: EventKind| by_kind.iter().find(|counted| counted.kind == kind.as_str()).map_or(0, |c| c.n);
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

/// Sign-ins and failures per bucket since `since` (a bucket boundary); empty buckets are absent.
/// Read from the hourly counts a trigger keeps (`sign_in_hours`): 720 rows for 30 days, whatever
/// the number of sign-ins.
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
        "SELECT date_trunc($1, hour AT TIME ZONE 'UTC') AS bucket, sum(ok)::bigint AS ok, sum(failed)::bigint AS failed \
         FROM sign_in_hours \
         WHERE hour >= $2 \
         GROUP BY 1 ORDER BY 1",
    )
    .bind::<diesel::sql_types::Text, _>(unit)
    .bind::<diesel::sql_types::Timestamptz, _>(since)
    .load(conn)
}

/// Accounts whose lock has not run out yet.
pub fn locked_now(conn: &mut PgConnection, now: DateTime<Utc>) -> QueryResult<i64> {
    users::table.filter(users::locked_until.gt(now)).count().get_result(conn)
}
