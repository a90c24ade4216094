//! A user's live browser sessions and refresh-token families as rows of a page: `/account` shows
//! its own (with buttons to end them), an admin's user page anyone's; personal access tokens likewise.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::auth::pat;
use crate::db::{personal_tokens::PersonalToken, refresh_tokens::Family, sessions::SessionInfo};

pub(super) struct SessionRow {
    pub id: Uuid,
    pub address: String,
    pub agent: String,
    pub started: String,
    pub last_seen: String,
    /// The session this page is being shown to.
    pub is_this_one: bool,
}

impl SessionRow {
    pub fn new(session: SessionInfo, current: Option<Uuid>) -> Self {
        Self {
            is_this_one: current == Some(session.id),
            id: session.id,
            address: session.client_addr.unwrap_or_default(),
            agent: session.user_agent.unwrap_or_default(),
            started: datetime(session.created_at),
            last_seen: datetime(session.last_seen_at),
        }
    }
}

pub(super) struct FamilyRow {
    pub id: Uuid,
    pub scopes: String,
    pub created: String,
    pub last_used: String,
    pub address: String,
}

impl From<Family> for FamilyRow {
    fn from(family: Family) -> Self {
        Self {
            id: family.id,
            scopes: family.scope.to_string(),
            created: datetime(family.created_at),
            last_used: family.last_used_at.map(datetime).unwrap_or_default(),
            address: family.client_addr.unwrap_or_default(),
        }
    }
}

/// To the minute, in UTC: what a person scanning a list of sign-ins needs.
pub(super) fn datetime(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M").to_string()
}

/// A personal access token as a row of `/account/tokens` or an admin's user page (never its secret).
pub(super) struct TokenRow {
    pub id: Uuid,
    pub name: String,
    pub scopes: String,
    pub created: String,
    pub expires: String,
    pub last_used: String,
    pub address: String,
    /// Expired, or ended by a cut-off (password change, sign-out everywhere, deactivation).
    pub state: &'static str,
}

impl TokenRow {
    pub fn new(token: PersonalToken, tokens_valid_after: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        let stored = pat::StoredToken {
            created_at: token.created_at,
            expires_at: token.expires_at,
            revoked_at: token.revoked_at,
            tokens_valid_after,
        };
        Self {
            state: match pat::judge(&stored, now) {
                Ok(()) => "live",
                Err(pat::Dead::Expired) => "expired",
                Err(pat::Dead::CutOff) => "ended by a sign-out",
                Err(pat::Dead::Revoked) => "revoked",
            },
            id: token.id,
            name: token.name,
            scopes: token.scope.to_string(),
            created: datetime(token.created_at),
            expires: datetime(token.expires_at),
            last_used: token.last_used_at.map(datetime).unwrap_or_default(),
            address: token.last_used_address.unwrap_or_default(),
        }
    }
}
