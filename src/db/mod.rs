//! Everything that talks to PostgreSQL: the pool, migrations, and one module of queries per table.
//!
//! Diesel is synchronous, and so is taking a connection out of the pool, so every query runs through
//! [`run`], which moves the work onto actix's blocking thread pool.

pub mod auth_events;
pub mod items;
pub mod refresh_tokens;
pub mod roles;
pub mod schema;
pub mod sessions;
pub mod stats;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, PooledConnection};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use tokio::sync::Semaphore;

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
pub const MIGRATIONS_COUNT: usize = 4;

/// How long a request waits for a pooled connection before the database counts as unavailable.
/// Short, so an outage answers 503 quickly instead of piling up requests.
pub const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had, or it broke: the database is down or unreachable.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Query(DieselError),
    /// A query failed, as told to every request that shared it (a batch): diesel's errors are not `Clone`.
    #[error("{0}")]
    Failed(String),
    #[error("the blocking thread pool is gone")]
    Canceled,
}

impl DbError {
    /// The same failure, for another request waiting on the same query.
    pub fn for_another_waiter(&self) -> DbError {
        match self {
            DbError::Unavailable(cause) => DbError::Unavailable(cause.clone()),
            DbError::Query(err) => DbError::Failed(err.to_string()),
            DbError::Failed(cause) => DbError::Failed(cause.clone()),
            DbError::Canceled => DbError::Canceled,
        }
    }
}

impl From<DieselError> for DbError {
    fn from(err: DieselError) -> Self {
        match &err {
            DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                info,
            ) => DbError::Unavailable(info.message().to_owned()),
            DieselError::BrokenTransactionManager => DbError::Unavailable(err.to_string()),
            _ => DbError::Query(err),
        }
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

/// Runs `work` with a pooled connection on the blocking thread pool.
pub async fn run<T, F>(pool: &PgPool, work: F) -> Result<T, DbError>
where
    F: FnOnce(&mut PgConnection) -> Result<T, DbError> + Send + 'static,
    T: Send + 'static,
{
    let permit = tokio::time::timeout(CHECKOUT_TIMEOUT, pool.permits.clone().acquire_owned())
        .await
        .map_err(|_| DbError::Unavailable("timed out waiting for a database connection".to_owned()))?
        .map_err(|_| DbError::Canceled)?;
    let connections = pool.connections.clone();
    web::block(move || {
        let _permit = permit;
        let mut conn = checkout(&connections)?;
        work(&mut conn)
    })
    .await
    .map_err(|_| DbError::Canceled)?
}

fn checkout(connections: &diesel::r2d2::Pool<ConnectionManager<PgConnection>>) -> Result<PgConn, DbError> {
    connections.get().map_err(|err| DbError::Unavailable(err.to_string()))
}

/// Applies pending migrations; returns how many ran.
pub fn migrate(conn: &mut PgConnection) -> Result<usize, String> {
    conn.run_pending_migrations(MIGRATIONS)
        .map(|applied| applied.len())
        .map_err(|err| format!("migrations failed: {err}"))
}

/// Creates the database `database_url` names if it does not exist yet, through the server's
/// `postgres` maintenance database.
pub fn ensure_database(database_url: &str) -> Result<(), String> {
    if PgConnection::establish(database_url).is_ok() {
        return Ok(());
    }
    let mut url = url::Url::parse(database_url).map_err(|err| format!("DATABASE_URL is not a URL: {err}"))?;
    let name = url.path().trim_start_matches('/').to_owned();
    if name.is_empty() {
        return Err("DATABASE_URL names no database".to_owned());
    }
    url.set_path("/postgres");
    let mut admin = PgConnection::establish(url.as_str())
        .map_err(|err| format!("cannot reach the database server: {}", one_line(&err.to_string())))?;
    let exists = diesel::select(diesel::dsl::exists(
        schema_pg::pg_database::table.filter(schema_pg::pg_database::datname.eq(&name)),
    ))
    .get_result::<bool>(&mut admin)
    .map_err(|err| format!("cannot list databases: {err}"))?;
    if !exists {
        diesel::sql_query(format!("CREATE DATABASE {}", quote_identifier(&name)))
            .execute(&mut admin)
            .map_err(|err| format!("cannot create database {name}: {err}"))?;
        log::info!("created database {name}");
    }
    PgConnection::establish(database_url)
        .map(|_| ())
        .map_err(|err| format!("cannot connect to the database: {}", one_line(&err.to_string())))
}

/// Quotes an SQL identifier (for the few statements, like CREATE DATABASE, that take no bind parameters).
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The one catalog table `ensure_database` reads; kept apart from the generated schema.
mod schema_pg {
    diesel::table! {
        pg_database (datname) {
            datname -> Text,
        }
    }
}

/// True when the database answers a trivial query (for `/readyz`).
pub async fn is_ready(pool: &PgPool) -> bool {
    run(pool, |conn| {
        diesel::sql_query("SELECT 1").execute(conn)?;
        Ok(())
    })
    .await
    .is_ok()
}
