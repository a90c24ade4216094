//! Everything that talks to PostgreSQL: the pool, migrations, and one module of queries per table.
//!
//! Diesel is synchronous, and so is taking a connection out of the pool, so every query runs through
//! [`run`], which moves the work onto actix's blocking thread pool. A query function returns
//! `QueryResult<T>`, where `T` may be an outcome enum (`Rotation`, `Claim` …) when a rule has
//! several answers; transactions that must hold together live here, in one function each.

pub mod auth_events;
pub mod authorizations;
pub mod clients;
pub mod dev;
pub mod email_changes;
pub mod items;
pub mod locks;
pub mod outbox;
pub mod passkeys;
pub mod password_resets;
pub mod personal_tokens;
pub mod refresh_tokens;
pub mod roles;
pub mod schema;
pub mod second_factors;
pub mod sessions;
pub mod signing_keys;
mod sql_types;
pub mod stats;
pub mod throttle;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, PooledConnection};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use tokio::sync::Semaphore;

use crate::errors::{Message, ServerError};

pub type PgConn = PooledConnection<ConnectionManager<PgConnection>>;

/// The connection pool, plus one permit per connection. A request waits for a permit on the async
/// executor, so only as many blocking threads run queries as there are connections: without it,
/// every in-flight request parks a blocking thread on the pool's lock, and the machine spends its
/// time switching between them.
#[derive(Clone)]
pub struct PgPool {
    connections: diesel::r2d2::Pool<ConnectionManager<PgConnection>>,
    permits: Arc<Semaphore>,
}

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");
/// How many migrations the binary carries (for the reversibility test).
pub const MIGRATIONS_COUNT: usize = 16;

/// How long a request waits for a pooled connection before the database counts as unavailable.
/// Short, so an outage answers 503 quickly instead of piling up requests.
pub const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(2);

/// A failed query, told apart: a connection the outage broke means "unavailable", a transaction
/// that lost a race is "busy, try again", anything else is ours.
impl From<DieselError> for ServerError {
    fn from(err: DieselError) -> Self {
        match &err {
            DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _,
            )
            | DieselError::BrokenTransactionManager => ServerError::unavailable(err),
            _ if lost_a_race(&err) => {
                log::warn!("a transaction lost a race and was rolled back: {err}");
                ServerError::Busy { retry_after_secs: RETRY_AFTER_LOST_RACE_SECS }
            }
            _ => ServerError::internal(err),
        }
    }
}

/// How long a client whose transaction lost a race waits before trying again.
const RETRY_AFTER_LOST_RACE_SECS: u64 = 1;

/// A transaction PostgreSQL aborted because it raced another: a deadlock's victim or a
/// serialization failure. Nothing of it was written and the same request a moment later succeeds,
/// so the answer is `503` with a short `Retry-After`, not a `500`.
fn lost_a_race(err: &DieselError) -> bool {
    match err {
        DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => true,
        // SQLSTATE 40P01, which diesel does not name; the server's message text is fixed (in the
        // default English messages: a server set to another language answers 500 as before).
        DieselError::DatabaseError(DatabaseErrorKind::Unknown, info) => info.message().starts_with("deadlock detected"),
        _ => false,
    }
}

/// Builds the pool without connecting, so the server starts (and reports 503) while the database is down.
pub fn pool(database_url: &str, max_size: u32) -> PgPool {
    let manager = ConnectionManager::<PgConnection>::new(database_url);
    let connections = diesel::r2d2::Pool::builder()
        .max_size(max_size)
        .min_idle(Some(1))
        .connection_timeout(CHECKOUT_TIMEOUT)
        // No liveness query per checkout (it would double the round trips of an API request): a
        // connection that an outage killed fails its next query, diesel then reports it broken
        // (libpq's transaction status turns "unknown"), and r2d2 replaces it. The outage test
        // pins this down.
        .test_on_check_out(false)
        .build_unchecked(manager);
    PgPool { connections, permits: Arc::new(Semaphore::new(max_size as usize)) }
}

impl PgPool {
    /// Connections open now, and how many of them are idle (for the metrics).
    pub fn connection_counts(&self) -> (u32, u32) {
        let state = self.connections.state();
        (state.connections, state.idle_connections)
    }
}

/// Runs `work` with a pooled connection on the blocking thread pool.
pub async fn run<T, F>(pool: &PgPool, work: F) -> Result<T, ServerError>
where
    F: FnOnce(&mut PgConnection) -> QueryResult<T> + Send + 'static,
    T: Send + 'static,
{
    let permit = tokio::time::timeout(CHECKOUT_TIMEOUT, pool.permits.clone().acquire_owned())
        .await
        .map_err(|_| ServerError::unavailable(Message("timed out waiting for a database connection")))?
        .map_err(ServerError::internal)?;
    let connections = pool.connections.clone();
    // The request's id goes along, for the log lines and the audit rows the work writes.
    web::block(crate::log_context::carry(move || {
        let _permit = permit;
        let mut conn = connections.get().map_err(ServerError::unavailable)?;
        Ok(work(&mut conn)?)
    }))
    .await
    .map_err(ServerError::internal)?
}

/// [`run`] for work whose failures are not only queries (a transaction that also signs): its error
/// becomes a [`ServerError`] the same way.
pub async fn run_with<T, E, F>(pool: &PgPool, work: F) -> Result<T, ServerError>
where
    F: FnOnce(&mut PgConnection) -> Result<T, E> + Send + 'static,
    E: Into<ServerError> + Send + 'static,
    T: Send + 'static,
{
    run(pool, move |conn| Ok(work(conn))).await?.map_err(Into::into)
}

/// Why the database could not be prepared (by `serve`, `migrate` and the other commands).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("DATABASE_URL is not a URL")]
    NotAUrl(#[source] url::ParseError),
    #[error("DATABASE_URL names no database")]
    NoDatabaseName,
    #[error("cannot reach the database server")]
    Unreachable(#[source] ConnectionError),
    #[error("cannot create database {0}")]
    Create(String, #[source] DieselError),
    #[error("migrations failed")]
    Migrations(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Applies pending migrations; returns how many ran.
pub fn migrate(conn: &mut PgConnection) -> Result<usize, SetupError> {
    conn.run_pending_migrations(MIGRATIONS).map(|applied| applied.len()).map_err(SetupError::Migrations)
}

/// Connects to the database `database_url` names, creating it first (through the server's
/// `postgres` maintenance database) if it does not exist yet.
pub fn connect_creating(database_url: &str) -> Result<PgConnection, SetupError> {
    if let Ok(conn) = PgConnection::establish(database_url) {
        return Ok(conn);
    }
    let mut url = url::Url::parse(database_url).map_err(SetupError::NotAUrl)?;
    let name = url.path().trim_start_matches('/').to_owned();
    if name.is_empty() {
        return Err(SetupError::NoDatabaseName);
    }
    url.set_path("/postgres");
    let mut admin = PgConnection::establish(url.as_str()).map_err(SetupError::Unreachable)?;
    let exists = diesel::select(diesel::dsl::exists(
        schema_pg::pg_database::table.filter(schema_pg::pg_database::datname.eq(&name)),
    ))
    .get_result::<bool>(&mut admin)
    .map_err(|err| SetupError::Create(name.clone(), err))?;
    if !exists {
        // A concurrent creator (another instance starting) makes this fail; connecting below decides.
        match diesel::sql_query(format!("CREATE DATABASE {}", quote_identifier(&name))).execute(&mut admin) {
            Ok(_) => log::info!("created database {name}"),
            Err(err) if PgConnection::establish(database_url).is_err() => return Err(SetupError::Create(name, err)),
            Err(_) => {}
        }
    }
    PgConnection::establish(database_url).map_err(SetupError::Unreachable)
}

/// Quotes an SQL identifier (for the few statements, like CREATE DATABASE, that take no bind parameters).
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The one catalog table `connect_creating` reads; kept apart from the generated schema.
mod schema_pg {
    diesel::table! {
        pg_database (datname) {
            datname -> Text,
        }
    }
}

/// True when the database answers a trivial query (for `/readyz`).
pub async fn is_ready(pool: &PgPool) -> bool {
    run(pool, |conn| diesel::sql_query("SELECT 1").execute(conn)).await.is_ok()
}

/// Deletes rows that can no longer matter (expired tokens, families, revocations, personal access
/// tokens a month after they ended, sessions, recovered throttle state, client secrets past their
/// overlap), unless another instance is doing it right now (`Ok(None)`).
pub fn purge_expired(conn: &mut PgConnection, now: chrono::DateTime<chrono::Utc>) -> QueryResult<Option<usize>> {
    locks::exclusively(conn, locks::Job::Purge, |conn| {
        Ok(refresh_tokens::purge_expired(conn, now)?
            + personal_tokens::purge_expired(conn, now)?
            + sessions::purge_expired(conn, now)?
            + passkeys::purge_expired(conn, now)?
            + password_resets::purge_expired(conn, now)?
            + email_changes::purge_expired(conn, now)?
            + authorizations::purge_expired_codes(conn, now)?
            + authorizations::purge_expired_devices(conn, now)?
            + throttle::purge_recovered(conn)?
            + clients::purge_expired_secrets(conn, now)?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database_error(kind: DatabaseErrorKind, message: &str) -> DieselError {
        DieselError::DatabaseError(kind, Box::new(message.to_owned()))
    }

    #[test]
    fn a_transaction_that_lost_a_race_is_busy_and_anything_else_broken_is_internal() {
        let deadlock = database_error(DatabaseErrorKind::Unknown, "deadlock detected");
        let serialization = database_error(DatabaseErrorKind::SerializationFailure, "could not serialize access");
        for lost in [deadlock, serialization] {
            assert!(matches!(ServerError::from(lost), ServerError::Busy { retry_after_secs: 1 }));
        }
        let other = database_error(DatabaseErrorKind::Unknown, "division by zero");
        assert!(matches!(ServerError::from(other), ServerError::Internal(_)));
        let unique = database_error(DatabaseErrorKind::UniqueViolation, "duplicate key value");
        assert!(matches!(ServerError::from(unique), ServerError::Internal(_)));
        let closed = database_error(DatabaseErrorKind::ClosedConnection, "server closed the connection");
        assert!(matches!(ServerError::from(closed), ServerError::Unavailable(_)));
    }
}
