//! The OAuth2 authorization server, without HTTP: parsing token requests and carrying out the grants.
//! `routes::oauth` reads the request and writes the RFC 6749 answer; this module decides.

pub mod authorize;
pub mod client_auth;
pub mod device;
pub mod grant;
pub mod id_token;
pub mod introspect;
pub mod request;

use crate::errors::ServerError;

/// Why a token request is refused, as RFC 6749 §5.2 names the cases.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("{0}")]
    InvalidRequest(String),
    /// One text for unknown user, wrong password, inactive or locked account: never tells which.
    #[error("Incorrect username or password")]
    InvalidCredentials,
    #[error("The refresh token is invalid, expired or revoked")]
    InvalidRefreshToken,
    /// A code or device code that is unknown, expired, used, or bound to something else (§5.2
    /// `invalid_grant`); the text names no reason, the audit trail does.
    #[error("{0}")]
    InvalidGrant(&'static str),
    /// RFC 8628 §3.5: the person has not decided yet.
    #[error("The person has not yet allowed or denied this device")]
    AuthorizationPending,
    /// RFC 8628 §3.5: polling faster than the interval; it grows by 5 seconds.
    #[error("Polling too fast: wait the interval between polls")]
    SlowDown,
    /// RFC 8628 §3.5: the person denied the device.
    #[error("The person denied this device")]
    AccessDenied,
    /// RFC 8628 §3.5: the device code expired.
    #[error("The device code has expired")]
    ExpiredToken,
    #[error(
        "grant_type must be password, refresh_token, client_credentials, authorization_code or urn:ietf:params:oauth:grant-type:device_code"
    )]
    UnsupportedGrantType,
    /// Client authentication failed (§5.2): unknown client, wrong or missing secret, public client.
    /// The text never tells which; the audit trail does.
    #[error("Client authentication failed")]
    InvalidClient(client_auth::ClientFailure),
    /// The client authenticated but is not registered for this grant.
    #[error("This client is not allowed the {0} grant")]
    UnauthorizedClient(crate::domain::GrantType),
    #[error("{0}")]
    InvalidScope(String),
    #[error(transparent)]
    Server(#[from] ServerError),
}
