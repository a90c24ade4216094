//! The JSON error answers: [`ApiError`] for `/api/*` and the operational endpoints (RFC 6750 §3),
//! [`TokenError`] for `/token` and `/revoke` (RFC 6749 §5.2, RFC 7009 §2.2.1). The website's HTML
//! answers are `web::WebError`. A 5xx body never carries the cause: the cause chain goes to the log,
//! once, here.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, HttpResponseBuilder, ResponseError};

use crate::accounts::AccountError;
use crate::auth::bearer::BearerError;
use crate::auth::guard::Denial;
use crate::auth::jwt::TokenRejection;
use crate::errors::{ErrorBody, ServerError, report};
use crate::oauth::GrantError;

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
    /// A client's own token (client credentials) at an endpoint that acts for a person.
    #[error("This endpoint acts for a person; a client's own access token has none")]
    NotAPerson,
    #[error("This request needs an OAuth access token; a personal access token cannot make it")]
    AccessTokenRequired,
    #[error("This account is inactive")]
    InactiveUser,
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidScope(String),
    #[error("No such resource")]
    NotFound,
    #[error("This address does not accept that method; it accepts {}", .allowed.join(", "))]
    MethodNotAllowed { allowed: Vec<&'static str> },
    #[error("The request body is too large")]
    PayloadTooLarge,
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    #[error("A user named {0} already exists")]
    UsernameTaken(String),
    #[error("This would leave no active admin: make another user an admin first")]
    LastAdmin,
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// The accounts layer's refusals, as the API states them.
impl From<AccountError> for ApiError {
    fn from(err: AccountError) -> Self {
        match err {
            AccountError::UnknownUser(_) => ApiError::NotFound,
            AccountError::UsernameTaken(username) => ApiError::UsernameTaken(username),
            AccountError::LastAdmin => ApiError::LastAdmin,
            AccountError::NoLongerAdmin => ApiError::MissingRole,
            AccountError::UnknownRole(_) | AccountError::Invalid(_) => ApiError::InvalidRequest(err.to_string()),
            AccountError::Server(server) => ApiError::Server(server),
        }
    }
}

impl From<BearerError> for ApiError {
    fn from(err: BearerError) -> Self {
        match err {
            BearerError::Invalid(rejection) => ApiError::InvalidToken(rejection),
            BearerError::Inactive => ApiError::InactiveUser,
            BearerError::Server(err) => ApiError::Server(err),
        }
    }
}

impl From<Denial> for ApiError {
    fn from(denial: Denial) -> Self {
        match denial {
            Denial::MissingScope(scope) => ApiError::InsufficientScope { required: scope },
            Denial::MissingRole => ApiError::MissingRole,
            Denial::NotAPerson => ApiError::NotAPerson,
            Denial::AccessTokenRequired => ApiError::AccessTokenRequired,
        }
    }
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::MissingCredentials => "unauthorized",
            ApiError::InvalidToken(_) => "invalid_token",
            ApiError::InsufficientScope { .. }
            | ApiError::MissingRole
            | ApiError::NotAPerson
            | ApiError::AccessTokenRequired => "insufficient_scope",
            ApiError::InactiveUser => "inactive_user",
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::InvalidScope(_) => "invalid_scope",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::UsernameTaken(_) => "username_taken",
            ApiError::LastAdmin => "last_admin",
            ApiError::Server(err) => server_code(err),
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
            ApiError::MissingRole | ApiError::NotAPerson => Some(r#"Bearer error="insufficient_scope""#.to_owned()),
            // RFC 6750 §3.1: "higher privileges than provided by the access token"; no `scope`, as
            // no scope would make a personal access token acceptable here.
            ApiError::AccessTokenRequired => {
                Some(format!(r#"Bearer error="insufficient_scope", error_description="{self}""#))
            }
            _ => None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::MissingCredentials | ApiError::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            ApiError::InsufficientScope { .. }
            | ApiError::MissingRole
            | ApiError::NotAPerson
            | ApiError::AccessTokenRequired
            | ApiError::InactiveUser => StatusCode::FORBIDDEN,
            ApiError::InvalidRequest(_) | ApiError::InvalidScope(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::UsernameTaken(_) | ApiError::LastAdmin => StatusCode::CONFLICT,
            ApiError::Server(err) => server_status(err),
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        let description = match self {
            ApiError::Server(err) => {
                server_headers(&mut response, err);
                busy_description(err)
            }
            other => Some(other.to_string()),
        };
        if let Some(challenge) = self.challenge() {
            response.insert_header((header::WWW_AUTHENTICATE, challenge));
        }
        if let ApiError::MethodNotAllowed { allowed } = self {
            response.insert_header((header::ALLOW, allowed.join(", ")));
        }
        response.json(ErrorBody { error: self.code(), error_description: description })
    }
}

/// Errors of the OAuth2 endpoints (RFC 6749 §5.2, RFC 7009 §2.2.1), always with `no-store`.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Grant(#[from] GrantError),
    #[error("The request body is too large")]
    PayloadTooLarge,
    #[error("Too many requests; retry after {retry_after_secs} seconds")]
    SlowDown { retry_after_secs: u64 },
}

impl From<ServerError> for TokenError {
    fn from(err: ServerError) -> Self {
        TokenError::Grant(GrantError::Server(err))
    }
}

impl TokenError {
    fn code(&self) -> &'static str {
        match self {
            TokenError::Grant(GrantError::InvalidRequest(_)) | TokenError::PayloadTooLarge => "invalid_request",
            TokenError::Grant(
                GrantError::InvalidCredentials | GrantError::InvalidRefreshToken | GrantError::InvalidGrant(_),
            ) => "invalid_grant",
            TokenError::Grant(GrantError::AuthorizationPending) => "authorization_pending",
            TokenError::Grant(GrantError::SlowDown) => "slow_down",
            TokenError::Grant(GrantError::AccessDenied) => "access_denied",
            TokenError::Grant(GrantError::ExpiredToken) => "expired_token",
            TokenError::Grant(GrantError::UnsupportedGrantType) => "unsupported_grant_type",
            TokenError::Grant(GrantError::InvalidClient(_)) => "invalid_client",
            TokenError::Grant(GrantError::UnauthorizedClient(_)) => "unauthorized_client",
            TokenError::Grant(GrantError::InvalidScope(_)) => "invalid_scope",
            TokenError::Grant(GrantError::Server(err)) => server_code(err),
            TokenError::SlowDown { .. } => "slow_down",
        }
    }
}

impl ResponseError for TokenError {
    fn status_code(&self) -> StatusCode {
        match self {
            TokenError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            TokenError::SlowDown { .. } => StatusCode::TOO_MANY_REQUESTS,
            TokenError::Grant(GrantError::Server(err)) => server_status(err),
            TokenError::Grant(GrantError::InvalidClient(_)) => StatusCode::UNAUTHORIZED,
            TokenError::Grant(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = no_store(HttpResponse::build(self.status_code()));
        let description = match self {
            TokenError::Grant(GrantError::Server(err)) => {
                server_headers(&mut response, err);
                busy_description(err)
            }
            other => Some(other.to_string()),
        };
        if let TokenError::SlowDown { retry_after_secs } = self {
            response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
        }
        // RFC 6749 §5.2: a 401 names the scheme the client may authenticate with.
        if let TokenError::Grant(GrantError::InvalidClient(_)) = self {
            response.insert_header((header::WWW_AUTHENTICATE, r#"Basic realm="gatehouse""#));
        }
        response.json(ErrorBody { error: self.code(), error_description: description })
    }
}

/// RFC 6749 §5.1: token responses must not be cached.
pub fn no_store(mut builder: HttpResponseBuilder) -> HttpResponseBuilder {
    builder
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .insert_header((header::PRAGMA, HeaderValue::from_static("no-cache")));
    builder
}

pub(crate) fn server_status(err: &ServerError) -> StatusCode {
    match err {
        ServerError::Unavailable(_) | ServerError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
        ServerError::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
        ServerError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn server_code(err: &ServerError) -> &'static str {
    match err {
        ServerError::Unavailable(_) | ServerError::Busy { .. } => "temporarily_unavailable",
        ServerError::TooMany { .. } => "slow_down",
        ServerError::Internal(_) => "server_error",
    }
}

/// A full queue is told as such (it says nothing about the server's insides); other failures on our
/// side get no description at all.
fn busy_description(err: &ServerError) -> Option<String> {
    match err {
        ServerError::Busy { retry_after_secs } => {
            Some(format!("Too many sign-ins are waiting to be checked; try again in {retry_after_secs} seconds"))
        }
        ServerError::TooMany { retry_after_secs } => Some(format!(
            "Too many sign-ins from this address or for this username are waiting; try again in {retry_after_secs} seconds"
        )),
        _ => None,
    }
}

/// Logs the cause chain once and adds `Retry-After` where the client may retry.
pub(crate) fn server_headers(response: &mut HttpResponseBuilder, err: &ServerError) {
    log_server_error(err);
    if let Some(secs) = err.retry_after_secs() {
        response.insert_header((header::RETRY_AFTER, secs.to_string()));
    }
}

pub(crate) fn log_server_error(err: &ServerError) {
    match err {
        ServerError::Unavailable(_) => log::warn!("answering 503: {}", report(err)),
        ServerError::Busy { .. } => log::info!("answering 503: {}", report(err)),
        ServerError::TooMany { .. } => log::info!("answering 429: {}", report(err)),
        ServerError::Internal(_) => log::error!("answering 500: {}", report(err)),
    }
}
