//! The `auth_events` table: the audit trail of every authentication attempt and token event.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::schema::auth_events;
use crate::domain::{Channel, EventKind, FailureReason};

/// Attempted usernames are attacker-controlled: only a bounded prefix is stored.
const ATTEMPTED_USERNAME_CHARS: usize = 128;

/// An event to record.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = auth_events)]
pub struct NewEvent {
    pub kind: EventKind,
    pub channel: Channel,
    pub user_id: Option<Uuid>,
    pub attempted_username: Option<String>,
    pub client_addr: Option<String>,
    pub reason: Option<FailureReason>,
    pub detail: Option<String>,
}

impl NewEvent {
    pub fn new(kind: EventKind, channel: Channel) -> Self {
        Self { kind, channel, user_id: None, attempted_username: None, client_addr: None, reason: None, detail: None }
    }

    pub fn user(mut self, user_id: Uuid) -> Self {
        self.user_id = Some(user_id);
        self
    }

    pub fn attempted(mut self, username: &str) -> Self {
        // PostgreSQL text cannot hold U+0000.
        self.attempted_username = Some(
            username.chars().take(ATTEMPTED_USERNAME_CHARS).map(|c| if c == '\0' { '\u{fffd}' } else { c }).collect(),
        );
        self
    }

    pub fn client(mut self, addr: Option<String>) -> Self {
        self.client_addr = addr;
        self
    }

    pub fn reason(mut self, reason: FailureReason) -> Self {
        self.reason = Some(reason);
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = auth_events, check_for_backend(diesel::pg::Pg))]
pub struct AuthEvent {
    pub id: i64,
    pub occurred_at: DateTime<Utc>,
    pub kind: EventKind,
    pub user_id: Option<Uuid>,
    pub attempted_username: Option<String>,
    pub client_addr: Option<String>,
    pub channel: Channel,
    pub reason: Option<FailureReason>,
    pub detail: Option<String>,
}

pub fn record(conn: &mut PgConnection, event: &NewEvent) -> QueryResult<()> {
    record_many(conn, std::slice::from_ref(event))
}

pub fn record_many(conn: &mut PgConnection, events: &[NewEvent]) -> QueryResult<()> {
    diesel::insert_into(auth_events::table).values(events).execute(conn).map(|_| ())
}

/// The newest `limit` events, newest first.
pub fn latest(conn: &mut PgConnection, limit: i64) -> QueryResult<Vec<AuthEvent>> {
    auth_events::table.select(AuthEvent::as_select()).order(auth_events::id.desc()).limit(limit).load(conn)
}
