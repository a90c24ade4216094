//! Liveness and readiness for orchestrators and load balancers.

use actix_web::{HttpResponse, get, web};
use serde_json::json;

use super::{ApiError, AppState};
use crate::db;
use crate::errors::{Message, ServerError};

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(healthz).service(readyz);
}

/// The process is up and answering.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive")))]
#[get("/healthz")]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// The database answers too.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready"),
        (status = 503, description = "The database is unavailable", body = crate::routes::docs::ErrorResponse),
    )
)]
#[get("/readyz")]
async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if db::is_ready(&state.pool).await {
        Ok(HttpResponse::Ok().json(json!({"status": "ok", "database": "ok"})))
    } else {
        Err(ServerError::unavailable(Message("readiness check: the database does not answer")).into())
    }
}
