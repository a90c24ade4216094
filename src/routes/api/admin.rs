//! Statistics for admins: the same numbers the admin page shows.

use actix_web::{get, web};
use chrono::Utc;
use serde::Serialize;

use crate::auth::bearer::Caller;
use crate::auth::guard::Requirement;
use crate::db::{
    self,
    stats::{EventCounts, UserCounts},
};
use crate::routes::docs::ErrorResponse;
use crate::routes::{ApiError, AppState};
use utoipa::ToSchema;

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(stats);
}

#[derive(Serialize, ToSchema)]
struct AdminStats {
    users: UserCounts,
    items: i64,
    /// Sign-ins, failures, tokens issued and lockouts in the last 24 hours.
    last_24h: EventCounts,
    /// Refresh tokens that could still be exchanged; a live family has exactly one, so this is
    /// also the number of live families.
    refresh_tokens_outstanding: i64,
}

/// The numbers the admin statistics page shows.
#[utoipa::path(
    get,
    path = "/admin/stats",
    tag = "admin",
    security(("oauth2" = ["admin:stats"])),
    responses(
        (status = 200, description = "Statistics", body = AdminStats),
        (status = 401, description = "No token (`WWW-Authenticate: Bearer`) or an invalid one (`invalid_token`)", body = ErrorResponse,
            headers(("WWW-Authenticate" = String, description = "RFC 6750 challenge"))),
        (status = 403, description = "`insufficient_scope`: the token lacks `admin:stats`, or the user lacks role `admin`", body = ErrorResponse,
            headers(("WWW-Authenticate" = String, description = "`Bearer error=\"insufficient_scope\"`"))),
    )
)]
#[get("/admin/stats")]
async fn stats(caller: Caller, state: web::Data<AppState>) -> Result<web::Json<AdminStats>, ApiError> {
    caller.authorize(Requirement::ADMIN_STATS)?;
    let now = Utc::now();
    let stats = db::run(&state.pool, move |conn| {
        Ok(AdminStats {
            users: db::stats::user_counts(conn)?,
            items: db::stats::item_count(conn)?,
            last_24h: db::stats::event_counts_since(conn, db::stats::last_day(now))?,
            refresh_tokens_outstanding: db::refresh_tokens::outstanding_count(conn, now)?,
        })
    })
    .await?;
    Ok(web::Json(stats))
}
