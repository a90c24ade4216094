//! `GET /`: who you are.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, web};
use askama::Template;

use super::WebError;
use super::pages::{Layout, render};
use super::session::SignedInUser;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(home);
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    layout: Layout,
    display_name: String,
    username: String,
    email: Option<String>,
    roles: Vec<String>,
    is_admin: bool,
    previous_sign_in: Option<String>,
}

#[get("/")]
async fn home(user: SignedInUser) -> Result<HttpResponse, WebError> {
    let is_admin = user.is_admin();
    let layout = user.layout();
    let SignedInUser { user, roles, previous_sign_in, .. } = user;
    let page = HomePage {
        layout,
        display_name: user.full_name.clone().unwrap_or_else(|| user.username.clone()),
        username: user.username,
        email: user.email,
        roles,
        is_admin,
        previous_sign_in: previous_sign_in.map(|at| at.format("%Y-%m-%d %H:%M UTC").to_string()),
    };
    render(StatusCode::OK, &page)
}
