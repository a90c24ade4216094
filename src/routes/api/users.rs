//! The caller's own account.

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use serde::Serialize;
use uuid::Uuid;

use crate::accounts::Actor;
use crate::auth::bearer::Caller;
use crate::auth::guard::Requirement;
use crate::domain::Channel;
use crate::routes::docs::ErrorResponse;
use crate::routes::{ApiError, AppState};
use utoipa::ToSchema;

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(me).service(sign_out_all);
}

#[derive(Serialize, ToSchema)]
struct Profile {
    id: Uuid,
    username: String,
    email: Option<String>,
    /// The address was proven by a link mailed to it (a confirmation, an invitation or a reset link).
    email_verified: bool,
    full_name: Option<String>,
    roles: Vec<String>,
    scopes: Vec<String>,
    is_active: bool,
}

/// Your own profile, with the scopes of the token you used.
#[utoipa::path(
    get,
    path = "/users/me",
    tag = "users",
    security(("oauth2" = ["profile"])),
    responses(
        (status = 200, description = "The caller", body = Profile),
        (status = 401, description = "No token (`WWW-Authenticate: Bearer`) or an invalid one (`invalid_token`)", body = ErrorResponse,
            headers(("WWW-Authenticate" = String, description = "RFC 6750 challenge"))),
        (status = 403, description = "`insufficient_scope` (needs `profile`), or `inactive_user`", body = ErrorResponse,
            headers(("WWW-Authenticate" = String, description = "`Bearer error=\"insufficient_scope\", scope=\"profile\"`"))),
    )
)]
#[get("/users/me")]
async fn me(caller: Caller) -> Result<web::Json<Profile>, ApiError> {
    caller.authorize(Requirement::PROFILE)?;
    let scopes = caller.scopes().to_vec();
    let (user, roles) = (caller.user()?.clone(), caller.roles().to_vec());
    Ok(web::Json(Profile {
        id: user.id,
        username: user.username,
        email: user.email,
        email_verified: user.email_verified,
        full_name: user.full_name,
        roles,
        scopes,
        is_active: user.is_active,
    }))
}

/// Ends every access token, refresh token and session of the caller, this request's token included.
#[utoipa::path(
    post,
    path = "/users/me/sign-out-all",
    tag = "users",
    security(("oauth2" = ["profile"])),
    responses(
        (status = 204, description = "Signed out everywhere"),
        (status = 401, description = "No token (`WWW-Authenticate: Bearer`) or an invalid one (`invalid_token`)", body = ErrorResponse,
            headers(("WWW-Authenticate" = String, description = "RFC 6750 challenge"))),
        (status = 403, description = "`insufficient_scope` (needs `profile`), or `inactive_user`", body = ErrorResponse),
    )
)]
#[post("/users/me/sign-out-all")]
async fn sign_out_all(caller: Caller, state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    caller.authorize(Requirement::PROFILE)?;
    let user_id = caller.user()?.id;
    let actor = Actor { user_id: Some(user_id), channel: Channel::Api, client: state.client_ip(&req) };
    state.accounts().sign_out_own(&actor, user_id).await?;
    Ok(HttpResponse::NoContent().finish())
}
