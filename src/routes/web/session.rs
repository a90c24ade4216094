//! Who a browser is: the signed-in user as an extractor, and the header every page shows for them.

use std::future::Future;
use std::pin::Pin;

use actix_session::SessionExt;
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::error::WebError;
use super::pages::{Layout, LayoutUser};
use crate::auth::guard::Requirement;
use crate::auth::session::{self, csrf_token};
use crate::db;
use crate::db::users::User;
use crate::domain::Channel;
use crate::errors::{Message, ServerError};
use crate::routes::AppState;

/// A browser whose session belongs to an existing, active user whose sessions were not ended since.
pub struct SignedInUser {
    pub user: User,
    pub roles: Vec<String>,
    pub previous_sign_in: Option<DateTime<Utc>>,
    pub csrf_token: String,
    /// This session's public id (its row in `sessions`).
    pub session_id: Uuid,
}

impl SignedInUser {
    /// This user as the author of a change made from a page (for the audit trail).
    pub fn actor(&self, state: &AppState, req: &HttpRequest) -> crate::accounts::Actor {
        crate::accounts::Actor { user_id: Some(self.user.id), channel: Channel::Web, client: state.client_ip(req) }
    }

    pub fn is_admin(&self) -> bool {
        Requirement::ADMIN_PAGES.check(&self.roles, None).is_ok()
    }

    /// The shared authorization rule, answered the website way (the 403 page).
    pub fn authorize(&self, requirement: Requirement) -> Result<(), WebError> {
        requirement.check(&self.roles, None).map_err(|_| self.forbidden())
    }

    /// The 403 page, under this user's header.
    pub fn forbidden(&self) -> WebError {
        WebError::Forbidden { viewer: Box::new(self.layout_user()) }
    }

    pub fn layout(&self) -> Layout {
        Layout::signed_in(self.layout_user())
    }

    /// A refusal because the change contradicts the state (the last admin), shown under this user's header.
    pub fn conflict(&self, message: String) -> WebError {
        WebError::Conflict { message, viewer: Box::new(self.layout_user()) }
    }

    fn layout_user(&self) -> LayoutUser {
        LayoutUser {
            username: self.user.username.clone(),
            is_admin: self.is_admin(),
            csrf_token: self.csrf_token.clone(),
        }
    }
}

/// `Some` when signed in; never redirects.
pub struct MaybeSignedIn(pub Option<SignedInUser>);

impl FromRequest for SignedInUser {
    type Error = WebError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let next = req.uri().path_and_query().map_or("/", |pq| pq.as_str()).to_owned();
            current_user(&req).await?.ok_or(WebError::NotSignedIn { next })
        })
    }
}

impl FromRequest for MaybeSignedIn {
    type Error = WebError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { current_user(&req).await.map(MaybeSignedIn) })
    }
}

/// The pages a user the policy keeps at enrolment may still open: enrolment itself, and signing out.
fn enrolment_allowed(path: &str) -> bool {
    path == "/logout"
        || path == super::login::ENROLMENT_PAGE
        || path.starts_with("/account/second-factor/")
        || path.starts_with("/account/passkeys/")
}

async fn current_user(req: &HttpRequest) -> Result<Option<SignedInUser>, WebError> {
    let session = req.get_session();
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ServerError::internal(Message("AppState is not registered")))?;
    let Some((user, roles)) = session::current_user(&state.pool, &session).await? else { return Ok(None) };
    let Some(sign_in) = session::sign_in_of(&session) else { return Ok(None) };
    let is_admin = Requirement::ADMIN_PAGES.check(&roles, None).is_ok();
    if state.settings.second_factor.covers(is_admin) && !enrolment_allowed(req.path()) {
        let user_id = user.id;
        if !db::run(&state.pool, move |conn| db::second_factors::has_any(conn, user_id)).await? {
            return Err(WebError::SecondFactorRequired);
        }
    }
    let csrf_token = csrf_token(&session).map_err(WebError::session)?;
    let previous_sign_in = session::previous_sign_in(&session);
    Ok(Some(SignedInUser { user, roles, previous_sign_in, csrf_token, session_id: sign_in.session_id }))
}
