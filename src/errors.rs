//! The one place where failures become HTTP responses.
//!
//! [`ApiError`] answers `/api/*` and the operational endpoints with RFC 6750 bodies and headers;
//! [`TokenError`] answers `/token` and `/revoke` as RFC 6749 §5.2 prescribes. A 5xx body never
//! carries the cause: the cause goes to the log, once.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, HttpResponseBuilder, ResponseError};
use serde::Serialize;

use crate::auth::jwt::TokenRejection;
use crate::auth::password::HashError;
use crate::db::DbError;

/// `{"error": "...", "error_description": "..."}`, the body shape of RFC 6749 §5.2 and RFC 6750 §3.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

/// Seconds a client should wait after a 503 before trying again.
const RETRY_AFTER_UNAVAILABLE: &str = "5";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Not authenticated")]
    MissingCredentials,
    #[error("{0}")]
    InvalidToken(TokenRejection),
    #[error("The access token lacks the scope this request needs")]
    InsufficientScope { required: &'static str },
    #[error("Your roles do not allow this request")]
    MissingRole,
    #[error("This account is inactive")]
    InactiveUser,
    #[error("{0}")]
    InvalidRequest(String),
    #[error("No such resource")]
    NotFound,
    #[error("This address does not accept that method; it accepts {}", .allowed.join(", "))]
    MethodNotAllowed { allowed: Vec<&'static str> },
    #[error("The request body is too large")]
    PayloadTooLarge,
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    #[error("The service is temporarily unavailable")]
    Unavailable(String),
    #[error("Internal server error")]
    Internal(String),
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::MissingCredentials => "unauthorized",
            ApiError::InvalidToken(_) => "invalid_token",
            ApiError::InsufficientScope { .. } | ApiError::MissingRole => "insufficient_scope",
            ApiError::InactiveUser => "inactive_user",
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Unavailable(_) => "temporarily_unavailable",
            ApiError::Internal(_) => "server_error",
        }
    }

    /// The RFC 6750 §3 challenge, where one belongs.
    fn challenge(&self) -> Option<String> {
        match self {
            ApiError::MissingCredentials => Some("Bearer".to_owned()),
            ApiError::InvalidToken(reason) => {
                Some(format!(r#"Bearer error="invalid_token", error_description="{reason}""#))
            }
            ApiError::InsufficientScope { required } => {
                Some(format!(r#"Bearer error="insufficient_scope", scope="{required}""#))
            }
            ApiError::MissingRole => Some(r#"Bearer error="insufficient_scope""#.to_owned()),
            _ => None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::MissingCredentials | ApiError::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            ApiError::InsufficientScope { .. } | ApiError::MissingRole | ApiError::InactiveUser => {
                StatusCode::FORBIDDEN
            }
            ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let description = match self {
            ApiError::Unavailable(cause) => {
                log::warn!("answering 503: {cause}");
                None
            }
            ApiError::Internal(cause) => {
                log::error!("answering 500: {cause}");
                None
            }
            other => Some(other.to_string()),
        };
        let mut response = HttpResponse::build(self.status_code());
        if let Some(challenge) = self.challenge() {
            response.insert_header((header::WWW_AUTHENTICATE, challenge));
        }
        match self {
            ApiError::Unavailable(_) => {
                response.insert_header((header::RETRY_AFTER, RETRY_AFTER_UNAVAILABLE));
            }
            ApiError::MethodNotAllowed { allowed } => {
                response.insert_header((header::ALLOW, allowed.join(", ")));
            }
            _ => {}
        }
        response.json(ErrorBody { error: self.code(), error_description: description })
    }
}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::Unavailable(cause) => ApiError::Unavailable(cause),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<HashError> for ApiError {
    fn from(err: HashError) -> Self {
        ApiError::Internal(err.to_string())
    }
}

/// Errors of the OAuth2 endpoints (RFC 6749 §5.2, RFC 7009 §2.2.1).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{0}")]
    InvalidRequest(String),
    /// One text for unknown user, wrong password, inactive or locked account: never tells which.
    #[error("Incorrect username or password")]
    InvalidCredentials,
    #[error("The refresh token is invalid, expired or revoked")]
    InvalidRefreshToken,
    #[error("grant_type must be password or refresh_token")]
    UnsupportedGrantType,
    #[error("{0}")]
    InvalidScope(String),
    #[error("The request body is too large")]
    PayloadTooLarge,
    #[error("Too many requests; retry after {retry_after_secs} seconds")]
    SlowDown { retry_after_secs: u64 },
    #[error("The service is temporarily unavailable")]
    Unavailable(String),
    #[error("Internal server error")]
    Internal(String),
}

impl TokenError {
    fn code(&self) -> &'static str {
        match self {
            TokenError::InvalidRequest(_) | TokenError::PayloadTooLarge => "invalid_request",
            TokenError::InvalidCredentials | TokenError::InvalidRefreshToken => "invalid_grant",
            TokenError::UnsupportedGrantType => "unsupported_grant_type",
            TokenError::InvalidScope(_) => "invalid_scope",
            TokenError::SlowDown { .. } => "slow_down",
            TokenError::Unavailable(_) => "temporarily_unavailable",
            TokenError::Internal(_) => "server_error",
        }
    }
}

impl ResponseError for TokenError {
    fn status_code(&self) -> StatusCode {
        match self {
            TokenError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            TokenError::SlowDown { .. } => StatusCode::TOO_MANY_REQUESTS,
            TokenError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            TokenError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let description = match self {
            TokenError::Unavailable(cause) => {
                log::warn!("answering 503 on the token endpoint: {cause}");
                None
            }
            TokenError::Internal(cause) => {
                log::error!("answering 500 on the token endpoint: {cause}");
                None
            }
            other => Some(other.to_string()),
        };
        let mut response = no_store(HttpResponse::build(self.status_code()));
        match self {
            TokenError::SlowDown { retry_after_secs } => {
                response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            TokenError::Unavailable(_) => {
                response.insert_header((header::RETRY_AFTER, RETRY_AFTER_UNAVAILABLE));
            }
            _ => {}
        }
        response.json(ErrorBody { error: self.code(), error_description: description })
    }
}

impl From<DbError> for TokenError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::Unavailable(cause) => TokenError::Unavailable(cause),
            other => TokenError::Internal(other.to_string()),
        }
    }
}

impl From<HashError> for TokenError {
    fn from(err: HashError) -> Self {
        TokenError::Internal(err.to_string())
    }
}

/// RFC 6749 §5.1: token responses must not be cached.
pub fn no_store(mut builder: HttpResponseBuilder) -> HttpResponseBuilder {
    builder
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .insert_header((header::PRAGMA, HeaderValue::from_static("no-cache")));
    builder
}

/// Errors of the website: a redirect to the login page, or an HTML error page. Never JSON.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("sign in to see this page")]
    NotSignedIn { next: String },
    #[error("You do not have access to this page.")]
    /// Signed in, but without the role: the page keeps the signed-in header.
    Forbidden { viewer: Box<crate::routes::web::pages::LayoutUser> },
    #[error("The form expired or did not come from this site. Go back, reload the page and try again.")]
    CsrfRejected,
    #[error("That request could not be understood.")]
    BadRequest,
    #[error("There is no page at this address.")]
    NotFound,
    #[error("This page cannot be used that way.")]
    MethodNotAllowed { allowed: Vec<&'static str> },
    #[error("Too many sign-in attempts from your address. Wait {retry_after_secs} seconds and try again.")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("The service is temporarily unavailable. Please try again in a moment.")]
    Unavailable(String),
    #[error("Something went wrong on our side.")]
    Internal(String),
}

impl WebError {
    pub fn session(err: actix_session::SessionInsertError) -> Self {
        WebError::Internal(format!("writing the session failed: {err}"))
    }

    fn title(&self) -> &'static str {
        match self {
            WebError::NotSignedIn { .. } => "Sign in",
            WebError::Forbidden { .. } | WebError::CsrfRejected => "Forbidden",
            WebError::BadRequest => "Bad request",
            WebError::NotFound => "Not found",
            WebError::MethodNotAllowed { .. } => "Method not allowed",
            WebError::TooManyRequests { .. } => "Slow down",
            WebError::Unavailable(_) => "Temporarily unavailable",
            WebError::Internal(_) => "Server error",
        }
    }
}

#[derive(askama::Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    layout: crate::routes::web::pages::Layout,
    status: u16,
    title: &'a str,
    message: String,
}

impl ResponseError for WebError {
    fn status_code(&self) -> StatusCode {
        match self {
            WebError::NotSignedIn { .. } => StatusCode::SEE_OTHER,
            WebError::Forbidden { .. } | WebError::CsrfRejected => StatusCode::FORBIDDEN,
            WebError::BadRequest => StatusCode::BAD_REQUEST,
            WebError::NotFound => StatusCode::NOT_FOUND,
            WebError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            WebError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            WebError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            WebError::NotSignedIn { next } => {
                let query = url::form_urlencoded::Serializer::new(String::new()).append_pair("next", next).finish();
                return HttpResponse::SeeOther().insert_header((header::LOCATION, format!("/login?{query}"))).finish();
            }
            WebError::Unavailable(cause) => log::warn!("answering a page with 503: {cause}"),
            WebError::Internal(cause) => log::error!("answering a page with 500: {cause}"),
            _ => {}
        }
        let status = self.status_code();
        let layout = match self {
            WebError::Forbidden { viewer } => crate::routes::web::pages::Layout::signed_in((**viewer).clone()),
            _ => crate::routes::web::pages::Layout::anonymous(),
        };
        let page = ErrorPage { layout, status: status.as_u16(), title: self.title(), message: self.to_string() };
        let mut response = HttpResponse::build(status);
        response.insert_header((header::CACHE_CONTROL, "no-store"));
        match self {
            WebError::TooManyRequests { retry_after_secs } => {
                response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            WebError::Unavailable(_) => {
                response.insert_header((header::RETRY_AFTER, RETRY_AFTER_UNAVAILABLE));
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
                response.content_type("text/plain; charset=utf-8").body(self.to_string())
            }
        };
        crate::routes::web::pages::secure_headers(response.headers_mut());
        response
    }
}

impl From<DbError> for WebError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::Unavailable(cause) => WebError::Unavailable(cause),
            other => WebError::Internal(other.to_string()),
        }
    }
}
