//! `/email-confirm/{token}`: the link mailed to a new email address. `GET` shows a button and spends
//! nothing (mail scanners open links); `POST` makes the address the account's, once.

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use askama::Template;

use super::WebError;
use super::forms::checked_form;
use super::pages::{Layout, render};
use super::password_reset::{mail_on, plausible};
use crate::accounts::profile::EmailLinkError;
use crate::auth::session::csrf_token;
use crate::domain::Channel;
use crate::routes::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(confirm_form).service(confirm);
}

#[derive(Template)]
#[template(path = "email_confirm.html")]
struct ConfirmPage {
    layout: Layout,
    csrf_token: String,
    token: String,
    username: String,
    new_email: String,
    /// The link no longer works.
    dead: bool,
    /// The address was confirmed.
    done: bool,
}

impl ConfirmPage {
    fn dead(csrf_token: String) -> Self {
        Self {
            layout: Layout::anonymous(),
            csrf_token,
            token: String::new(),
            username: String::new(),
            new_email: String::new(),
            dead: true,
            done: false,
        }
    }
}

#[get("/email-confirm/{token}")]
async fn confirm_form(
    session: Session,
    token: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    mail_on(&state)?;
    let csrf_token = csrf_token(&session).map_err(WebError::session)?;
    let target = if plausible(&token) { state.accounts().email_link_target(&token).await? } else { None };
    let Some((user, new_email)) = target else {
        return render(StatusCode::BAD_REQUEST, &ConfirmPage::dead(csrf_token));
    };
    let page = ConfirmPage {
        layout: Layout::anonymous(),
        csrf_token,
        token: token.into_inner(),
        username: user.username,
        new_email,
        dead: false,
        done: false,
    };
    render(StatusCode::OK, &page)
}

#[post("/email-confirm/{token}")]
async fn confirm(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    token: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    mail_on(&state)?;
    checked_form(&req, payload, &session).await?;
    let actor = crate::accounts::Actor { user_id: None, channel: Channel::Web, client: state.client_ip(&req) };
    let outcome = if plausible(&token) {
        state.accounts().confirm_email_change(&actor, &token).await
    } else {
        Err(EmailLinkError::DeadLink)
    };
    let csrf_token = csrf_token(&session).map_err(WebError::session)?;
    match outcome {
        Ok((_, new_email)) => {
            let page = ConfirmPage {
                layout: Layout::anonymous(),
                csrf_token,
                token: String::new(),
                username: String::new(),
                new_email,
                dead: false,
                done: true,
            };
            render(StatusCode::OK, &page)
        }
        Err(EmailLinkError::DeadLink) => render(StatusCode::BAD_REQUEST, &ConfirmPage::dead(csrf_token)),
        Err(EmailLinkError::Server(err)) => Err(err.into()),
    }
}
