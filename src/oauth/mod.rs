//! The OAuth2 authorization server, without HTTP: parsing token requests and carrying out the grants.
//! `routes::oauth` reads the request and writes the RFC 6749 answer; this module decides.

pub mod client_auth;
pub mod grant;
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
    #[error("grant_type must be password, refresh_token or client_credentials")]
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
