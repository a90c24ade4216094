//! The caller's own account.

use actix_web::{HttpResponse, get, post, web};
use chrono::Utc;
use serde::Serialize;
use uuid::Uuid;

use crate::auth::bearer::Caller;
use crate::auth::guard::Requirement;
use crate::db::{
    self,
    auth_events::{Channel, EventKind, NewEvent},
};
use crate::errors::ApiError;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(me).service(sign_out_all);
}

#[derive(Serialize)]
struct Profile {
    id: Uuid,
    username: String,
    email: Option<String>,
    full_name: Option<String>,
    roles: Vec<String>,
    scopes: Vec<String>,
    is_active: bool,
}

#[get("/users/me")]
async fn me(caller: Caller) -> Result<web::Json<Profile>, ApiError> {
    caller.authorize(Requirement::PROFILE)?;
    let Caller { user, roles, scopes, .. } = caller;
    Ok(web::Json(Profile {
        id: user.id,
        username: user.username,
        email: user.email,
        full_name: user.full_name,
        roles,
        scopes: scopes.to_vec(),
        is_active: user.is_active,
    }))
}

/// Ends every access token, refresh token and session of the caller, this request's token included.
#[post("/users/me/sign-out-all")]
async fn sign_out_all(caller: Caller, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    caller.authorize(Requirement::PROFILE)?;
    let user_id = caller.user.id;
    let event = NewEvent::new(EventKind::SignOutAll, Channel::Api).user(user_id);
    db::run(&state.pool, move |conn| {
        db::users::invalidate_credentials(conn, user_id, Utc::now())?;
        db::auth_events::record(conn, &event)?;
        Ok(())
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
