//! A user's live browser sessions and refresh-token families as rows of a page: `/account` shows
//! its own (with buttons to end them), an admin's user page anyone's.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::db::{refresh_tokens::Family, sessions::SessionInfo};

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
