//! The `auth_events` table: the audit trail of every authentication attempt and token event.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::sql_types::{BigInt, Bool, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

use super::schema::{auth_events, users};
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
    /// Who made an administrative change (`None`: the command line, or the event is a sign-in's own).
    pub actor_id: Option<Uuid>,
    /// The request that caused it (its `X-Request-Id`); `None` outside a request.
    pub request_id: Option<String>,
}

impl NewEvent {
    pub fn new(kind: EventKind, channel: Channel) -> Self {
        Self {
            kind,
            channel,
            user_id: None,
            attempted_username: None,
            client_addr: None,
            reason: None,
            detail: None,
            actor_id: None,
            request_id: None,
        }
    }

    pub fn actor(mut self, actor_id: Option<Uuid>) -> Self {
        self.actor_id = actor_id;
        self
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
    pub actor_id: Option<Uuid>,
}

pub fn record(conn: &mut PgConnection, event: &NewEvent) -> QueryResult<()> {
    record_many(conn, std::slice::from_ref(event))
}

/// Records `events`, each naming the request being served now (if the caller named none).
pub fn record_many(conn: &mut PgConnection, events: &[NewEvent]) -> QueryResult<()> {
    let request_id = current_request_id();
    let events: Vec<NewEvent> = events
        .iter()
        .cloned()
        .map(|event| NewEvent { request_id: event.request_id.or_else(|| request_id.clone()), ..event })
        .collect();
    diesel::insert_into(auth_events::table).values(&events).execute(conn).map(|_| ())
}

/// The id of the request being served now, for the events it causes.
fn current_request_id() -> Option<String> {
    crate::log_context::current().map(|id| id.as_str().to_owned())
}

/// The columns [`bind_event`] binds, in its order: for a statement that writes an audit row along
/// with other rows (one round trip instead of two).
pub const EVENT_COLUMNS: &str =
    "kind, channel, user_id, attempted_username, client_addr, reason, detail, actor_id, request_id";

/// Binds `event`'s [`EVENT_COLUMNS`] as the next nine parameters of `query` (naming the request
/// being served now, as [`record_many`] does, if the event names none).
pub fn bind_event<'f>(query: BoxedSqlQuery<'f, Pg, SqlQuery>, event: &'f NewEvent) -> BoxedSqlQuery<'f, Pg, SqlQuery> {
    query
        .bind::<Text, _>(event.kind)
        .bind::<Text, _>(event.channel)
        .bind::<Nullable<SqlUuid>, _>(event.user_id)
        .bind::<Nullable<Text>, _>(event.attempted_username.as_deref())
        .bind::<Nullable<Text>, _>(event.client_addr.as_deref())
        .bind::<Nullable<Text>, _>(event.reason)
        .bind::<Nullable<Text>, _>(event.detail.as_deref())
        .bind::<Nullable<SqlUuid>, _>(event.actor_id)
        .bind::<Nullable<Text>, _>(event.request_id.clone().or_else(current_request_id))
}

/// The newest `limit` events, newest first.
pub fn latest(conn: &mut PgConnection, limit: i64) -> QueryResult<Vec<AuthEvent>> {
    auth_events::table.select(AuthEvent::as_select()).order(auth_events::id.desc()).limit(limit).load(conn)
}

/// Which events an admin is looking for; every part is optional.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Events about this user (the user signed in, was changed, …).
    pub user_id: Option<Uuid>,
    pub kind: Option<EventKind>,
    /// From this instant on (inclusive).
    pub from: Option<DateTime<Utc>>,
    /// Before this instant (exclusive).
    pub until: Option<DateTime<Utc>>,
}

/// Where a page of the trail starts: just after (older than) this event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventCursor {
    pub occurred_at: DateTime<Utc>,
    pub id: i64,
}

/// One page of the audit trail, newest first, and whether older events match too.
#[derive(Debug, Clone)]
pub struct EventPage {
    pub events: Vec<AuthEvent>,
    /// The cursor of the next (older) page, if there is one.
    pub next: Option<EventCursor>,
}

/// The events that match `filter`, newest first, `limit` at most, older than `after` when given.
/// Keyset paging on `(occurred_at, id)`: each filter has an index in that order (migration 7), so
/// the thousandth page costs what the first does, which OFFSET could not promise on millions of rows.
pub fn page(
    conn: &mut PgConnection,
    filter: &EventFilter,
    after: Option<EventCursor>,
    limit: i64,
) -> QueryResult<EventPage> {
    let mut query = auth_events::table.select(AuthEvent::as_select()).into_boxed();
    if let Some(user_id) = filter.user_id {
        query = query.filter(auth_events::user_id.eq(user_id));
    }
    if let Some(kind) = filter.kind {
        query = query.filter(auth_events::kind.eq(kind));
    }
    if let Some(from) = filter.from {
        query = query.filter(auth_events::occurred_at.ge(from));
    }
    if let Some(until) = filter.until {
        query = query.filter(auth_events::occurred_at.lt(until));
    }
    if let Some(cursor) = after {
        // A row comparison, so that PostgreSQL reads it as one index range.
        query = query.filter(
            diesel::dsl::sql::<Bool>("(auth_events.occurred_at, auth_events.id) < (")
                .bind::<Timestamptz, _>(cursor.occurred_at)
                .sql(", ")
                .bind::<BigInt, _>(cursor.id)
                .sql(")"),
        );
    }
    let mut events: Vec<AuthEvent> = query
        .order((auth_events::occurred_at.desc(), auth_events::id.desc()))
        .limit(limit.saturating_add(1))
        .load(conn)?;
    let more = events.len() as i64 > limit;
    events.truncate(usize::try_from(limit).unwrap_or(0));
    let next = if more {
        events.last().map(|event| EventCursor { occurred_at: event.occurred_at, id: event.id })
    } else {
        None
    };
    Ok(EventPage { events, next })
}

/// The usernames of these users (for showing who an event is about and who acted).
pub fn usernames(conn: &mut PgConnection, ids: &[Uuid]) -> QueryResult<Vec<(Uuid, String)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    users::table.filter(users::id.eq_any(ids)).select((users::id, users::username)).load(conn)
}
