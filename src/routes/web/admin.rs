//! `GET /admin/stats`: the admin statistics page.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, web};
use askama::Template;
use chrono::{DateTime, Duration, DurationRound, Utc};

use super::WebError;
use super::charts::{Bucket, sign_in_chart};
use super::pages::{Layout, render};
use super::session::SignedInUser;
use crate::auth::guard::Requirement;
use crate::db::{
    self,
    auth_events::AuthEvent,
    stats::{BucketWidth, EventCounts, SignInBucket, UserCounts},
};
use crate::routes::AppState;

const LATEST_EVENTS: i64 = 25;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(stats);
}

#[derive(Template)]
#[template(path = "admin/stats.html")]
struct StatsPage {
    layout: Layout,
    users: UserCounts,
    last_24h: EventCounts,
    locked_now: i64,
    active_sessions: i64,
    refresh_tokens_outstanding: i64,
    hourly_chart: String,
    daily_chart: String,
    events: Vec<AuthEvent>,
}

#[get("/admin/stats")]
async fn stats(user: SignedInUser, state: web::Data<AppState>) -> Result<HttpResponse, WebError> {
    user.authorize(Requirement::ADMIN_STATS)?;
    let now = Utc::now();
    let hour_start = now.duration_trunc(Duration::hours(1)).unwrap_or(now);
    let day_start = now.duration_trunc(Duration::days(1)).unwrap_or(now);
    let first_hour = hour_start - Duration::hours(23);
    let first_day = day_start - Duration::days(29);
    let (users, last_24h, locked_now, active_sessions, refresh_tokens_outstanding, hourly, daily, events) =
        db::run(&state.pool, move |conn| {
            Ok((
                db::stats::user_counts(conn)?,
                db::stats::event_counts_since(conn, db::stats::last_day(now))?,
                db::stats::locked_now(conn, now)?,
                db::sessions::active_count(conn, now)?,
                db::refresh_tokens::outstanding_count(conn, now)?,
                db::stats::sign_ins_per(conn, BucketWidth::Hour, first_hour)?,
                db::stats::sign_ins_per(conn, BucketWidth::Day, first_day)?,
                db::auth_events::latest(conn, LATEST_EVENTS)?,
            ))
        })
        .await?;
    let hourly_buckets = fill(&hourly, first_hour, Duration::hours(1), 24, "%H:00");
    let daily_buckets = fill(&daily, first_day, Duration::days(1), 30, "%m-%d");
    let page = StatsPage {
        layout: user.layout(),
        users,
        last_24h,
        locked_now,
        active_sessions,
        refresh_tokens_outstanding,
        hourly_chart: sign_in_chart("Sign-ins and failures per hour, last 24 hours", &hourly_buckets, 3),
        daily_chart: sign_in_chart("Sign-ins and failures per day, last 30 days", &daily_buckets, 5),
        events,
    };
    render(StatusCode::OK, &page)
}

/// One bucket per step from `first`, zero where the database had no row.
fn fill(rows: &[SignInBucket], first: DateTime<Utc>, step: Duration, count: i32, label: &str) -> Vec<Bucket> {
    (0..count)
        .map(|i| {
            let start = first + step * i;
            let row = rows.iter().find(|row| row.bucket == start.naive_utc());
            Bucket {
                label: start.format(label).to_string(),
                ok: row.map_or(0, |r| r.ok),
                failed: row.map_or(0, |r| r.failed),
            }
        })
        .collect()
}
