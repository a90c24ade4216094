//! The bottom of the error layers: what every layer may return when the failure is on our side, and
//! the body shape every JSON error answer shares.
//!
//! Each layer has its own error enum (`db`'s queries, `auth::LoginError`, `oauth::GrantError`, and the
//! HTTP answers in `routes`); a failure that is not the client's fault travels up as a
//! [`ServerError`] that keeps its cause chain. Only `routes` turns errors into HTTP, and a 5xx logs
//! [`report`] of its cause once while the client sees only the contract's body.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::sync::Arc;

use serde::Serialize;

/// A cause, shareable: a batched database lookup hands one failure to every request that waited on it.
pub type Cause = Arc<dyn StdError + Send + Sync + 'static>;

/// A failure on the server's side, as a client must be told about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServerError {
    /// A dependency (PostgreSQL) cannot be reached now: `503` with `Retry-After`; it passes by itself.
    #[error("the service is temporarily unavailable")]
    Unavailable(#[source] Cause),
    /// Too much work is already waiting (the password-hashing queue is full): `503`.
    #[error("the service is busy")]
    Busy { retry_after_secs: u64 },
    /// One client address, or one attempted username, already holds its share of the waiting
    /// work: `429`, since that client sent too many (a `503` would tell a load balancer this
    /// instance is unwell). Nothing about the account is told: any username has a share.
    #[error("too many sign-ins from this address or for this username are waiting")]
    TooMany { retry_after_secs: u64 },
    /// Anything else that broke: `500`.
    #[error("internal server error")]
    Internal(#[source] Cause),
}

impl ServerError {
    pub fn unavailable(cause: impl StdError + Send + Sync + 'static) -> Self {
        ServerError::Unavailable(Arc::new(cause))
    }

    pub fn internal(cause: impl StdError + Send + Sync + 'static) -> Self {
        ServerError::Internal(Arc::new(cause))
    }

    /// Seconds a client should wait before trying again, for the `Retry-After` of a 503.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ServerError::Unavailable(_) => Some(RETRY_AFTER_UNAVAILABLE_SECS),
            ServerError::Busy { retry_after_secs } | ServerError::TooMany { retry_after_secs } => {
                Some(*retry_after_secs)
            }
            ServerError::Internal(_) => None,
        }
    }
}

/// A message of our own as an error cause (for the few failures that have no error value of their own).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Message(pub &'static str);

/// A cause known only by its text: for errors that cannot travel between threads (actix's own).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Described(pub String);

/// How long a client should wait after an outage answer.
pub const RETRY_AFTER_UNAVAILABLE_SECS: u64 = 5;

/// `{"error": "...", "error_description": "..."}`, the body of RFC 6749 §5.2 and RFC 6750 §3.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

/// The error and every cause under it, on one line: what a 5xx writes to the log.
pub fn report(err: &(dyn StdError + 'static)) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        let _ = write!(line, ": {inner}");
        cause = inner.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("connection refused")]
    struct Refused;

    #[derive(Debug, thiserror::Error)]
    #[error("no database connection could be had")]
    struct Checkout(#[source] Refused);

    #[test]
    fn a_report_names_every_cause_in_order() {
        let err = ServerError::unavailable(Checkout(Refused));
        assert_eq!(
            report(&err),
            "the service is temporarily unavailable: no database connection could be had: connection refused"
        );
    }

    #[test]
    fn only_outages_and_a_full_queue_ask_the_client_to_retry() {
        assert_eq!(ServerError::unavailable(Refused).retry_after_secs(), Some(5));
        assert_eq!(ServerError::Busy { retry_after_secs: 2 }.retry_after_secs(), Some(2));
        assert_eq!(ServerError::internal(Refused).retry_after_secs(), None);
    }
}
