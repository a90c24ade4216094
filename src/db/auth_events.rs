//! The `auth_events` table: the audit trail of every authentication attempt and token event.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::schema::auth_events;

/// What happened. The database CHECK constraint lists the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    LoginOk,
    LoginFailed,
    TokenIssued,
    Refresh,
    ReuseDetected,
    Revoke,
    Logout,
    Lockout,
    SignOutAll,
    PasswordChanged,
    Deactivated,
    Activated,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::LoginOk => "login_ok",
            EventKind::LoginFailed => "login_failed",
            EventKind::TokenIssued => "token_issued",
            EventKind::Refresh => "refresh",
            EventKind::ReuseDetected => "reuse_detected",
            EventKind::Revoke => "revoke",
            EventKind::Logout => "logout",
            EventKind::Lockout => "lockout",
            EventKind::SignOutAll => "sign_out_all",
            EventKind::PasswordChanged => "password_changed",
            EventKind::Deactivated => "deactivated",
            EventKind::Activated => "activated",
        }
    }
}

/// Where the event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Web,
    Api,
    Cli,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Web => "web",
            Channel::Api => "api",
            Channel::Cli => "cli",
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: EventKind,
    pub channel: Channel,
    pub user_id: Option<Uuid>,
    pub attempted_username: Option<String>,
    pub client_addr: Option<String>,
    pub detail: Option<String>,
}

impl NewEvent {
    pub fn new(kind: EventKind, channel: Channel) -> Self {
        Self { kind, channel, user_id: None, attempted_username: None, client_addr: None, detail: None }
    }

    pub fn user(mut self, user_id: Uuid) -> Self {
        self.user_id = Some(user_id);
        self
    }

    pub fn attempted(mut self, username: &str) -> Self {
        // Attempted usernames are attacker-controlled: store a bounded prefix.
        // PostgreSQL text cannot hold U+0000.
        self.attempted_username =
            Some(username.chars().take(128).map(|c| if c == '\0' { '\u{fffd}' } else { c }).collect());
        self
    }

    pub fn client(mut self, addr: Option<String>) -> Self {
        self.client_addr = addr;
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
    pub kind: String,
    pub user_id: Option<Uuid>,
    pub attempted_username: Option<String>,
    pub client_addr: Option<String>,
    pub channel: String,
    pub detail: Option<String>,
}

pub fn record(conn: &mut PgConnection, event: &NewEvent) -> QueryResult<()> {
    record_many(conn, std::slice::from_ref(event))
}

pub fn record_many(conn: &mut PgConnection, events: &[NewEvent]) -> QueryResult<()> {
    let rows: Vec<_> = events
        .iter()
        .map(|event| {
            (
                auth_events::kind.eq(event.kind.as_str()),
                auth_events::channel.eq(event.channel.as_str()),
                auth_events::user_id.eq(event.user_id),
                auth_events::attempted_username.eq(event.attempted_username.as_deref()),
                auth_events::client_addr.eq(event.client_addr.as_deref()),
                auth_events::detail.eq(event.detail.as_deref()),
            )
        })
        .collect();
    diesel::insert_into(auth_events::table).values(&rows).execute(conn).map(|_| ())
}

/// The newest `limit` events, newest first.
pub fn latest(conn: &mut PgConnection, limit: i64) -> QueryResult<Vec<AuthEvent>> {
    auth_events::table.select(AuthEvent::as_select()).order(auth_events::id.desc()).limit(limit).load(conn)
}
