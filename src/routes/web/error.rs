//! The website's errors: a redirect to the login page, or an HTML error page. Never JSON.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpResponse, ResponseError};

use super::pages::{Layout, LayoutUser, secure_headers};
use crate::errors::ServerError;
use crate::routes::errors::{log_server_error, server_status};

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("sign in to see this page")]
    NotSignedIn { next: String },
    /// Signed in, but the second-factor policy requires a factor this user has not added: every
    /// page but enrolment redirects there.
    #[error("Add a second factor to continue.")]
    SecondFactorRequired,
    /// Signed in, but without the role: the page keeps the signed-in header.
    #[error("You do not have access to this page.")]
    Forbidden { viewer: Box<LayoutUser> },
    #[error("The form expired or did not come from this site. Go back, reload the page and try again.")]
    CsrfRejected,
    #[error("That request could not be understood.")]
    BadRequest,
    /// An authorization request whose client or redirect URI cannot be trusted: explained here,
    /// never redirected (RFC 6749 §4.1.2.1).
    #[error("{0}")]
    InvalidAuthorization(String),
    #[error("There is no page at this address.")]
    NotFound,
    #[error("This page cannot be used that way.")]
    MethodNotAllowed { allowed: Vec<&'static str> },
    /// The change contradicts the state it would change (the last admin): nothing was written.
    #[error("{message}")]
    Conflict { message: String, viewer: Box<LayoutUser> },
    #[error("Too many sign-in attempts from your address. Wait {retry_after_secs} seconds and try again.")]
    TooManyRequests { retry_after_secs: u64 },
    #[error(transparent)]
    Server(#[from] ServerError),
}

impl WebError {
    pub fn session(err: actix_session::SessionInsertError) -> Self {
        WebError::Server(ServerError::internal(err))
    }

    fn title(&self) -> &'static str {
        match self {
            WebError::NotSignedIn { .. } => "Sign in",
            WebError::SecondFactorRequired => "Two-step sign-in",
            WebError::Forbidden { .. } | WebError::CsrfRejected => "Forbidden",
            WebError::BadRequest | WebError::InvalidAuthorization(_) => "Bad request",
            WebError::NotFound => "Not found",
            WebError::MethodNotAllowed { .. } => "Method not allowed",
            WebError::Conflict { .. } => "Conflict",
            WebError::TooManyRequests { .. } | WebError::Server(ServerError::TooMany { .. }) => "Slow down",
            WebError::Server(ServerError::Unavailable(_) | ServerError::Busy { .. }) => "Temporarily unavailable",
            WebError::Server(ServerError::Internal(_)) => "Server error",
        }
    }

    /// What the page says: never the cause of a server-side failure.
    fn message(&self) -> String {
        match self {
            WebError::Server(ServerError::Unavailable(_)) => {
                "The service is temporarily unavailable. Please try again in a moment.".to_owned()
            }
            WebError::Server(ServerError::Busy { .. }) => {
                "Too many people are signing in right now. Please try again in a few seconds.".to_owned()
            }
            WebError::Server(ServerError::TooMany { .. }) => {
                "Too many sign-ins from here are waiting. Please try again in a few seconds.".to_owned()
            }
            WebError::Server(ServerError::Internal(_)) => "Something went wrong on our side.".to_owned(),
            other => other.to_string(),
        }
    }
}

#[derive(askama::Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    layout: Layout,
    status: u16,
    title: &'a str,
    message: String,
}

impl ResponseError for WebError {
    fn status_code(&self) -> StatusCode {
        match self {
            WebError::NotSignedIn { .. } | WebError::SecondFactorRequired => StatusCode::SEE_OTHER,
            WebError::Forbidden { .. } | WebError::CsrfRejected => StatusCode::FORBIDDEN,
            WebError::BadRequest | WebError::InvalidAuthorization(_) => StatusCode::BAD_REQUEST,
            WebError::NotFound => StatusCode::NOT_FOUND,
            WebError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            WebError::Conflict { .. } => StatusCode::CONFLICT,
            WebError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            WebError::Server(err) => server_status(err),
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let WebError::NotSignedIn { next } = self {
            let query = url::form_urlencoded::Serializer::new(String::new()).append_pair("next", next).finish();
            return HttpResponse::SeeOther().insert_header((header::LOCATION, format!("/login?{query}"))).finish();
        }
        if let WebError::SecondFactorRequired = self {
            return HttpResponse::SeeOther().insert_header((header::LOCATION, super::login::ENROLMENT_PAGE)).finish();
        }
        let status = self.status_code();
        let layout = match self {
            WebError::Forbidden { viewer } | WebError::Conflict { viewer, .. } => Layout::signed_in((**viewer).clone()),
            _ => Layout::anonymous(),
        };
        let page = ErrorPage { layout, status: status.as_u16(), title: self.title(), message: self.message() };
        let mut response = HttpResponse::build(status);
        response.insert_header((header::CACHE_CONTROL, "no-store"));
        match self {
            WebError::TooManyRequests { retry_after_secs } => {
                response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            WebError::Server(err) => {
                log_server_error(err);
                if let Some(secs) = err.retry_after_secs() {
                    response.insert_header((header::RETRY_AFTER, secs.to_string()));
                }
            }
            WebError::MethodNotAllowed { allowed } => {
                response.insert_header((header::ALLOW, allowed.join(", ")));
            }
            _ => {}
        }
        let mut response = match askama::Template::render(&page) {
            Ok(html) => response.content_type("text/html; charset=utf-8").body(html),
            Err(err) => {
                log::error!("rendering the error page failed: {err}");
                response.content_type("text/plain; charset=utf-8").body(self.message())
            }
        };
        secure_headers(response.headers_mut(), false);
        response
    }
}
